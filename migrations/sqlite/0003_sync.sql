-- Federation sync: signed records in the change log, the links' cursors
-- and the hub keys pinned through the admin API.

-- A signed event keeps the hub's exact bytes (record), the signature over
-- them (sig) and the hub's per-tier sequence number the record carries
-- (hub_seq), so a relay serves them on unchanged. Unsigned events (tier
-- events, changes on a node without a signing key) leave all three NULL.
ALTER TABLE events ADD COLUMN record BLOB;
ALTER TABLE events ADD COLUMN sig BLOB;
ALTER TABLE events ADD COLUMN hub_seq BIGINT;

-- One tier's feed, read by this node's Seq or, for a downstream that
-- switches upstreams, by hub sequence. Partial, so the cost of a feed page
-- follows the tier's signed events, not the whole log.
CREATE INDEX events_feed ON events (tier, seq) WHERE record IS NOT NULL;
CREATE INDEX events_feed_hub ON events (tier, hub_seq) WHERE record IS NOT NULL;

-- How far each local tier has synced from its upstream. Written only inside
-- catalog changes, which hold the change-log lock, so a compare-and-set on
-- it cannot be raced.
CREATE TABLE sync_cursors (
    tier         TEXT PRIMARY KEY,
    hub_tier     TEXT NOT NULL,
    hub_seq      BIGINT NOT NULL,
    upstream     TEXT NOT NULL,
    upstream_seq BIGINT NOT NULL,
    updated_us   BIGINT NOT NULL
);

CREATE TABLE trusted_keys (
    id       TEXT PRIMARY KEY,
    key      TEXT NOT NULL,
    added_us BIGINT NOT NULL
);

-- The hub's per-tier sequences live in counters as rows named 'tier:<name>',
-- made on first use.
