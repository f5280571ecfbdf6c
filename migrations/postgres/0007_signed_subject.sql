-- A machine's check-in is handed the hub-signed record that put its patch
-- on its tier (and, for a rollback, the one that withdrew the newer patch;
-- at registration, the one that made its enrollment token). This index
-- finds a tier's signed events about one patch, newest first, in a short
-- range whatever the log's length. Token events have the empty digest, so
-- the same index lists a tier's signed token events.
CREATE INDEX events_subject ON events (tier, digest, seq) WHERE record IS NOT NULL;
