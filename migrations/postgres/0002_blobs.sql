-- The PostgreSQL blob driver (blob/pgblob). SQLite has no blob driver, so
-- this version has no SQLite counterpart.
--
-- A blob is stored as numbered chunks of one upload. Chunks are written while
-- the upload is open (one row in blob_uploads); committing moves the upload
-- into blobs in one transaction, so readers, who look only at blobs, never
-- see a partial upload. Times are Unix microseconds from the database clock,
-- so that nodes with skewed clocks sharing this database agree on age.

CREATE TABLE blob_uploads (
    upload_id  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    digest     TEXT NOT NULL,
    started_us BIGINT NOT NULL,
    -- touched_us moves with every chunk written, so only uploads that have
    -- gone quiet are swept as crash leftovers.
    touched_us BIGINT NOT NULL
);
CREATE INDEX blob_uploads_touched ON blob_uploads (touched_us);

CREATE TABLE blob_chunks (
    -- The owning upload: a row in blob_uploads while open, in blobs once
    -- committed. Identity values are never reused, so a chunk can never be
    -- taken for part of a later upload of the same digest.
    upload_id BIGINT NOT NULL,
    n         INTEGER NOT NULL CHECK (n >= 0),
    data      BYTEA NOT NULL,
    PRIMARY KEY (upload_id, n)
);
-- Patch files are mostly compressed already; skipping TOAST compression
-- saves CPU on every write and lets reads stream the value as stored.
ALTER TABLE blob_chunks ALTER COLUMN data SET STORAGE EXTERNAL;

CREATE TABLE blobs (
    -- Byte order (COLLATE "C") so that Enumerate's digest order is the same
    -- in every database whatever its locale, and the key index serves it.
    digest     TEXT COLLATE "C" PRIMARY KEY,
    upload_id  BIGINT NOT NULL UNIQUE,
    size       BIGINT NOT NULL CHECK (size >= 0),
    -- Every chunk but the last holds exactly chunk_size bytes, so a reader
    -- finds the chunk for any offset by division, whatever chunk size the
    -- node is configured with today.
    chunk_size INTEGER NOT NULL CHECK (chunk_size > 0),
    created_us BIGINT NOT NULL
);
