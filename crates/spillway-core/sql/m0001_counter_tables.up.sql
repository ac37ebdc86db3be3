CREATE TABLE counter_values (
    namespace   TEXT        NOT NULL,
    entity_id   TEXT        NOT NULL,
    value       BIGINT      NOT NULL,
    -- Increases with every applied event; an UPDATE never writes a lower version.
    version     BIGINT      NOT NULL,
    -- {"<partition>": <offset>}: the last event of each partition this value includes, so a
    -- replay after Redis is rebuilt from this row skips what the value already counts.
    applied_offsets JSONB   NOT NULL DEFAULT '{}',
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (namespace, entity_id)
);
CREATE TABLE counter_members (
    namespace   TEXT        NOT NULL,
    entity_id   TEXT        NOT NULL,
    member      TEXT        NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (namespace, entity_id, member)
);
