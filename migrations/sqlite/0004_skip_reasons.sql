-- A feed entry whose patch is withdrawn or removed on its tier is served
-- with the hub's record that says so (the skip's signed reason). This
-- index finds that record by tier and digest without walking the tier's
-- log; it holds only the signed withdrawals and removals.
CREATE INDEX events_unavailable ON events (tier, digest, hub_seq)
    WHERE record IS NOT NULL AND type IN ('patch.withdrawn', 'patch.removed');
