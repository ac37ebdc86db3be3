-- The sample application tables the demo and the sample configuration use: a user's own
-- `videos` table whose like_count spillway keeps current (namespace video-likes, mirror).
CREATE TABLE IF NOT EXISTS videos (
    id          TEXT PRIMARY KEY,
    title       TEXT NOT NULL,
    like_count  BIGINT NOT NULL DEFAULT 0
);
INSERT INTO videos (id, title)
SELECT 'video-' || n, 'Sample video ' || n FROM generate_series(1, 10) AS n
ON CONFLICT (id) DO NOTHING;
