-- Node admissions: the nodes the hub admitted, per tier, with the hub's
-- signed record of each admission. On the hub they are written by the
-- admin API (and sealed, one record per tier); on every other node by
-- ApplySynced, from those records. A node serves the live ones of a tier
-- to machines as its roster, each with the hub's exact bytes and
-- signature, so that a machine can check a node before trusting it.
CREATE TABLE node_admissions (
    tier        TEXT NOT NULL REFERENCES tiers (name) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    key         TEXT NOT NULL, -- "ed25519:<base64url>"
    key_id      TEXT NOT NULL,
    urls        TEXT NOT NULL, -- JSON array of base URLs
    admitted_us BIGINT NOT NULL,
    -- NULL while the admission is live.
    removed_us  BIGINT,
    -- The hub's node.admitted record and signature; NULL for an
    -- admission made on a node without a signing key.
    record      BYTEA,
    sig         BYTEA,
    PRIMARY KEY (tier, name)
);
CREATE INDEX node_admissions_name ON node_admissions (name);
