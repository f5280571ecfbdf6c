-- Fleet operations: the mesh-wide machine-ID key and the fleet reports a
-- node receives from its downstreams.

-- The hub's mesh-wide key for machine IDs, with the hub's signed statement
-- of it (federation.SignMeshKey), which this node serves on to its own
-- downstreams unchanged. One row: there is one mesh key.
CREATE TABLE mesh_key (
    one       INTEGER PRIMARY KEY CHECK (one = 1),
    key_id    TEXT NOT NULL,
    secret    BLOB NOT NULL,
    record    BLOB NOT NULL,
    sig       BLOB NOT NULL,
    issued_us BIGINT NOT NULL
);

-- The last report push taken from each downstream link (its sync token),
-- so that a replayed or reordered push is refused.
CREATE TABLE fleet_pushes (
    token_id    TEXT PRIMARY KEY,
    tier        TEXT NOT NULL,
    node        TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    received_us BIGINT NOT NULL
);

-- One entry per node of a downstream's subtree, as the downstream (via,
-- the token of its link) last pushed it: the figures of that node as of
-- as_of. A push replaces every row of its (tier, via).
CREATE TABLE fleet_entries (
    tier         TEXT NOT NULL,
    via          TEXT NOT NULL,
    node         TEXT NOT NULL,
    dc           TEXT NOT NULL,
    as_of_us     BIGINT NOT NULL,
    received_us  BIGINT NOT NULL,
    has_machines INTEGER NOT NULL,
    PRIMARY KEY (tier, via, node)
);
CREATE INDEX fleet_entries_node ON fleet_entries (node, as_of_us);

CREATE TABLE fleet_counts (
    tier          TEXT NOT NULL,
    via           TEXT NOT NULL,
    node          TEXT NOT NULL,
    kernel        TEXT NOT NULL,
    patch_version TEXT NOT NULL,
    state         TEXT NOT NULL,
    machines      BIGINT NOT NULL
);
CREATE INDEX fleet_counts_entry ON fleet_counts (tier, via, node);

-- Per-machine rows under the mesh-wide machine ID, where the downstream
-- sends them (reports.machines).
CREATE TABLE fleet_machines (
    tier          TEXT NOT NULL,
    via           TEXT NOT NULL,
    node          TEXT NOT NULL,
    id            TEXT NOT NULL,
    dc            TEXT NOT NULL,
    kernel        TEXT NOT NULL,
    arch          TEXT NOT NULL,
    state         TEXT NOT NULL,
    patch_version TEXT NOT NULL,
    last_seen_us  BIGINT NOT NULL,
    PRIMARY KEY (tier, via, node, id)
);
CREATE INDEX fleet_machines_id ON fleet_machines (id, last_seen_us);
