-- Join tokens: one-time tokens an operator makes at the hub (`patchmesh
-- admin nodes join-token NAME`) for a new node to join with. The node
-- proves it holds the token in an HMAC challenge-response over the peer
-- listener's mutual TLS; the secret itself never crosses the wire. The MAC
-- key is stored, not the secret: the hub needs it to check a response, so
-- it is as sensitive as the token for its short life, which is why a token
-- expires (1h by default) and works once. A use records who joined: the
-- node key, when and from where; the join then admits the node as an
-- operator's admission would. Local to the hub: not a catalog change, not
-- in any feed.
CREATE TABLE join_tokens (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL, -- the node name the token admits
    mac_key     TEXT NOT NULL, -- hex SHA-256 of the secret (the MAC key)
    tiers       TEXT NOT NULL, -- JSON array; empty means every tier
    created_by  TEXT NOT NULL,
    created_us  BIGINT NOT NULL,
    expires_us  BIGINT NOT NULL,
    failures    INTEGER NOT NULL DEFAULT 0,
    used_us     BIGINT,
    used_key_id TEXT,
    used_from   TEXT
);
