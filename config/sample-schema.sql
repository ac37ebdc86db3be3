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

-- Lectures and enrollments behind the `lecture-attendance` view: 100 lectures, open now;
-- 10,000 members enrolled in 10 lectures each (100,000 enrollments, 9 in 10 approved).
CREATE TABLE IF NOT EXISTS lectures (
    id         BIGINT PRIMARY KEY,
    title      TEXT NOT NULL,
    room       TEXT NOT NULL,
    opens_at   TIMESTAMPTZ NOT NULL,
    closes_at  TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS enrollments (
    lecture_id   BIGINT NOT NULL REFERENCES lectures (id),
    member_id    TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('approved', 'pending')),
    enrolled_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (lecture_id, member_id)
);
INSERT INTO lectures (id, title, room, opens_at, closes_at)
SELECT n, 'Lecture ' || n, 'Room ' || (100 + n % 20), now() - interval '1 hour',
       now() + interval '365 days'
FROM generate_series(1, 100) AS n
ON CONFLICT (id) DO NOTHING;
INSERT INTO enrollments (lecture_id, member_id, status)
SELECT 1 + (m + k * 10) % 100, 'member-' || lpad(m::text, 5, '0'),
       CASE WHEN (m + k) % 10 = 0 THEN 'pending' ELSE 'approved' END
FROM generate_series(0, 9999) AS m, generate_series(0, 9) AS k
ON CONFLICT (lecture_id, member_id) DO NOTHING;
