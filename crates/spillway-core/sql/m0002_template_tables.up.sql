CREATE TABLE templates (
    id            TEXT        PRIMARY KEY,
    -- Grows by one whenever the object list changes; older copies are then retired.
    version       BIGINT      NOT NULL,
    pool_capacity INTEGER     NOT NULL CHECK (pool_capacity BETWEEN 0 AND 1000),
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE template_objects (
    template_id TEXT    NOT NULL REFERENCES templates (id) ON DELETE CASCADE,
    version     BIGINT  NOT NULL,
    position    INTEGER NOT NULL,
    source_key  TEXT    NOT NULL,
    PRIMARY KEY (template_id, version, position)
);
-- Every copy spillway makes, from before its first S3 call until its objects are deleted or
-- handed out: copying -> ready -> taken (pool), copying -> taken (direct),
-- ready -> expired -> deleted (TTL, retired version), copying -> deleted (failed, abandoned).
CREATE TABLE template_copies (
    copy_id     UUID        PRIMARY KEY,
    template_id TEXT        NOT NULL,
    version     BIGINT      NOT NULL,
    state       TEXT        NOT NULL CHECK (state IN ('copying', 'ready', 'taken', 'expired', 'deleted')),
    -- 'pool' (made by template-warmup) or 'direct' (made inside a request).
    origin      TEXT        NOT NULL CHECK (origin IN ('pool', 'direct')),
    -- Why an expired or deleted copy left: 'ttl', 'retired', 'failed', 'abandoned'.
    reason      TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    ready_at    TIMESTAMPTZ,
    taken_at    TIMESTAMPTZ,
    expired_at  TIMESTAMPTZ,
    deleted_at  TIMESTAMPTZ
);
CREATE INDEX template_copies_by_state ON template_copies (template_id, state);
