-- Rollout plans: a patch version opened on a tier data centre by data
-- centre. On the hub rows are written by the rollout runner and the admin
-- API, each change sealed as a rollout.changed record; on every other node
-- by ApplySynced, keeping the latest signed state it heard, which is all
-- a node enforces when it answers a machine's offer. One row per local
-- tier: a node whose two tiers are fed from one hub tier keeps the rollout
-- on each, as it keeps the patches.
CREATE TABLE rollouts (
    id         TEXT NOT NULL,
    tier       TEXT NOT NULL REFERENCES tiers (name) ON DELETE CASCADE,
    version    TEXT NOT NULL,
    state      TEXT NOT NULL,
    data       TEXT NOT NULL, -- the catalog.Rollout as JSON
    created_us BIGINT NOT NULL,
    updated_us BIGINT NOT NULL,
    record     BLOB,
    sig        BLOB,
    PRIMARY KEY (tier, id)
);
CREATE INDEX rollouts_id ON rollouts (id);
