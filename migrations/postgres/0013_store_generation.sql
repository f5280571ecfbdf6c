-- Store generation. One row counting the committed store transactions of
-- every node sharing this database: each node bumps it inside every
-- transaction it commits (just before the commit, so the row's lock is
-- held only for the commit) and polls it, so that its token cache and
-- offer index hear of another node's writes within one poll, and not only
-- at the end of a fixed bound. A committed bump is visible only with the
-- rest of its transaction, so a node that sees the new count reads the new
-- data.
CREATE TABLE store_generation (
    id BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id),
    n  BIGINT NOT NULL
);
INSERT INTO store_generation (id, n) VALUES (TRUE, 0);
