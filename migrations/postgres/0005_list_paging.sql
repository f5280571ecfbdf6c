-- Keyset paging of the admin listings: each listing walks one index in its
-- order and resumes after the last row of the previous page with a
-- row-value comparison, so a page costs the same at the end of a large
-- listing as at its start.

-- Patches, newest version first: (version_key, kernel, arch, digest),
-- read backwards.
CREATE INDEX patches_list ON patches (version_key, kernel, arch, digest);

-- Tokens of a kind, newest first, and machines, most recently seen first:
-- the ID breaks ties so that the order, and so the cursor, is total.
DROP INDEX tokens_kind;
CREATE INDEX tokens_kind ON tokens (kind, created_us, id);
DROP INDEX machines_seen;
CREATE INDEX machines_seen ON machines (last_seen_us, id);
