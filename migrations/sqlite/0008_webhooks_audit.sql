-- The audit trail: one row per committed admin change, written in the
-- change's own transaction, so a change is never without its row and a
-- refused change leaves none.
CREATE TABLE audit_log (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at_us      BIGINT NOT NULL,
    user_name  TEXT NOT NULL,
    token_id   TEXT NOT NULL,
    request_id TEXT NOT NULL,
    client     TEXT NOT NULL,
    action     TEXT NOT NULL,
    target     TEXT NOT NULL
);
CREATE INDEX audit_log_at ON audit_log (at_us);

-- Webhooks: receivers the node posts events to. The secret is kept as is,
-- not hashed, because the node signs every delivery with it.
CREATE TABLE webhooks (
    id         TEXT PRIMARY KEY,
    url        TEXT NOT NULL,
    events     TEXT NOT NULL, -- JSON array of event names
    secret     BLOB NOT NULL,
    created_us BIGINT NOT NULL
);

-- The durable outbox: one row per (hook, event), delivered in id order per
-- hook, kept after delivery as the delivery record.
CREATE TABLE webhook_deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    hook            TEXT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event           TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    body            BLOB NOT NULL,
    created_us      BIGINT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_status     INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT NOT NULL DEFAULT '',
    last_attempt_us BIGINT,
    delivered_us    BIGINT
);
CREATE INDEX webhook_deliveries_hook ON webhook_deliveries (hook, id);
