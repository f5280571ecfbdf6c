-- A feed entry whose patch is withdrawn or removed on its tier is served
-- with the hub's record that says so (the skip's signed reason).

-- This index finds that record by tier and digest without walking the
-- tier's log; it holds only the signed withdrawals and removals.
CREATE INDEX events_unavailable ON events (tier, digest, hub_seq)
    WHERE record IS NOT NULL AND type IN ('patch.withdrawn', 'patch.removed');

-- A downstream that passed a patch by on the strength of such a record
-- keeps it with the event (skip_record, skip_sig, the hub's bytes), so
-- that it can serve the reason onward before the record itself has
-- reached its own log.
ALTER TABLE events ADD COLUMN skip_record BLOB;
ALTER TABLE events ADD COLUMN skip_sig BLOB;
