-- The catalog, change log, tokens, machines, admins and root keys.
-- Times are Unix microseconds (BIGINT) in both dialects, so one store
-- implementation reads them the same way; NULL means "never" where allowed.

CREATE TABLE tiers (
    name       TEXT PRIMARY KEY,
    position   INTEGER NOT NULL UNIQUE,
    created_us BIGINT NOT NULL
);
-- The default tiers are created when the database is, so that is their date.
INSERT INTO tiers (name, position, created_us)
SELECT name, position, (EXTRACT(EPOCH FROM clock_timestamp()) * 1000000)::BIGINT
FROM (VALUES ('edge', 1), ('beta', 2), ('candidate', 3), ('stable', 4)) AS t (name, position);

CREATE TABLE patches (
    digest      TEXT PRIMARY KEY,
    kernel      TEXT NOT NULL,
    arch        TEXT NOT NULL,
    version     TEXT NOT NULL,
    -- version_key orders versions numerically as text (catalog.VersionKey).
    -- Its byte order is the version order, so it compares bytewise whatever
    -- the database's locale: a locale collation may skip the dots.
    version_key TEXT COLLATE "C" NOT NULL,
    size        BIGINT NOT NULL CHECK (size > 0),
    cves        TEXT NOT NULL DEFAULT '[]', -- JSON array of CVE IDs
    description TEXT NOT NULL DEFAULT '',
    created_us  BIGINT NOT NULL,
    withdrawn   BOOLEAN NOT NULL DEFAULT FALSE,
    UNIQUE (kernel, arch, version)
);
-- Serves the check-in question: newest live patch for a kernel and arch.
-- Partial and carrying the digest, so the walk down the versions probes
-- availability without reading a table row until the answer is found.
CREATE INDEX patches_newest ON patches (kernel, arch, version_key DESC, digest) WHERE NOT withdrawn;

CREATE TABLE availability (
    digest   TEXT NOT NULL REFERENCES patches (digest) ON DELETE CASCADE,
    tier     TEXT NOT NULL REFERENCES tiers (name) ON DELETE CASCADE,
    added_us BIGINT NOT NULL,
    PRIMARY KEY (digest, tier)
);
CREATE INDEX availability_tier ON availability (tier, digest);

CREATE TABLE tokens (
    id         TEXT PRIMARY KEY,
    kind       TEXT NOT NULL CHECK (kind IN ('auth', 'machine', 'sync')),
    tier       TEXT NOT NULL REFERENCES tiers (name),
    name       TEXT NOT NULL,
    hash       BYTEA NOT NULL,
    created_us BIGINT NOT NULL,
    expires_us BIGINT,
    revoked_us BIGINT,
    machine_id TEXT
);
CREATE INDEX tokens_kind ON tokens (kind, created_us DESC);
CREATE INDEX tokens_machine ON tokens (machine_id);

CREATE TABLE machines (
    id             TEXT PRIMARY KEY,
    tier           TEXT NOT NULL REFERENCES tiers (name),
    kernel         TEXT NOT NULL DEFAULT '',
    arch           TEXT NOT NULL DEFAULT '',
    state          TEXT NOT NULL DEFAULT 'unknown',
    patch_version  TEXT NOT NULL DEFAULT '',
    client_version TEXT NOT NULL DEFAULT '',
    uptime_seconds BIGINT NOT NULL DEFAULT 0,
    registered_us  BIGINT NOT NULL,
    last_seen_us   BIGINT NOT NULL
);
CREATE INDEX machines_seen ON machines (last_seen_us DESC);
CREATE INDEX machines_tier ON machines (tier);

-- The change log. seq comes from counters('events'), taken with a row lock
-- inside the changing transaction, so events commit in seq order with no gap.
CREATE TABLE events (
    seq        BIGINT PRIMARY KEY,
    type       TEXT NOT NULL,
    tier       TEXT NOT NULL DEFAULT '',
    digest     TEXT NOT NULL DEFAULT '',
    data       TEXT NOT NULL DEFAULT '',
    created_us BIGINT NOT NULL
);

CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO counters (name, value) VALUES ('events', 0);

CREATE TABLE root_keys (
    id            TEXT PRIMARY KEY,
    key           BYTEA NOT NULL,
    created_us    BIGINT NOT NULL,
    mint_until_us BIGINT NOT NULL,
    expires_us    BIGINT NOT NULL
);

CREATE TABLE admin_users (
    name       TEXT PRIMARY KEY,
    hash       BYTEA NOT NULL,
    created_us BIGINT NOT NULL
);

CREATE TABLE secrets (
    name  TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);
