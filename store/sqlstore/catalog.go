package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/migrations"
	"github.com/patchmesh/patchmesh/store"
)

// change runs fn as one catalog change: a transaction that holds the change
// log's counter row from its first statement to its commit.
//
// Taking the row lock first (UPDATE on counters; SQLite's BEGIN IMMEDIATE
// already holds the database write lock) serialises catalog writers. So on
// PostgreSQL under READ COMMITTED the checks fn makes (does the tier exist,
// is the version taken) see every earlier change and cannot be raced, and no
// writer can hold another row lock while it waits for the counter, which
// rules out deadlocks among catalog writers. It is also what keeps the log
// gapless and in order: seq is taken from the locked row, the next writer
// cannot take seq+1 before this one commits, so events become visible in
// seq order; a rolled-back change rolls its increments back, leaving no gap.
func (s *Store) change(ctx context.Context, fn func(c *changeTx) error) error {
	var c *changeTx
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `UPDATE counters SET value = value WHERE name = 'events'`); err != nil {
			return fmt.Errorf("lock change log: %w", err)
		}
		c = &changeTx{tx: tx, now: s.now(), sealer: s.sealer, dialect: s.dialect}
		return fn(c)
	})
	// inTx returns nil only after the commit: a reader woken any earlier
	// would read the log before the change is visible and sleep through it.
	if err == nil && c.logged && s.changes != nil {
		s.changes.Notify()
	}
	return err
}

// changeTx is a catalog change in progress.
type changeTx struct {
	tx  *sql.Tx
	now time.Time
	// sealer signs the patch and token events this node originates; nil
	// unless this node is the hub.
	sealer store.Sealer
	// dialect is the store's, for the few locks only PostgreSQL needs.
	dialect migrations.Dialect
	// logged says the change appended an event, so its commit grows the log.
	logged bool
	// revokedMachines are the machines the change revoked with their
	// enrollment token.
	revokedMachines []string
}

// logEntry is one change-log row.
type logEntry struct {
	typ    catalog.EventType
	tier   string
	digest string
	// data is the record the event carries (the Patch or Token after the
	// change, or the Tier), as JSON.
	data any
	// record and sig are the hub's signed bytes, hubSeq the tier sequence
	// number inside them; all zero for an unsigned event.
	record, sig []byte
	hubSeq      int64
	// skipRecord and skipSig are a synced event's verified skip reason.
	skipRecord, skipSig []byte
}

// event appends one unsigned change-log event in the change's transaction.
func (c *changeTx) event(ctx context.Context, typ catalog.EventType, tier, digest string, data any) error {
	return c.append(ctx, logEntry{typ: typ, tier: tier, digest: digest, data: data})
}

// patchEvent appends a patch event on tier, p being the patch after the
// change, sealed on the hub.
func (c *changeTx) patchEvent(ctx context.Context, typ catalog.EventType, tier string, p catalog.Patch) error {
	return c.sealedEvent(ctx, logEntry{typ: typ, tier: tier, digest: p.Digest, data: p},
		store.SealRequest{Patch: p}, p.Digest)
}

// tokenEvent appends a token event on the token's tier, t being the token
// after the change, sealed on the hub in the same tier sequence as the
// tier's patch events. The log's data is t as JSON, which never carries
// the hash; the sealed record does, as a downstream needs it to check the
// token.
func (c *changeTx) tokenEvent(ctx context.Context, typ catalog.EventType, t catalog.Token) error {
	return c.sealedEvent(ctx, logEntry{typ: typ, tier: t.Tier, data: t},
		store.SealRequest{Token: &t}, "token "+t.ID)
}

// sealedEvent appends e. On the hub it is sealed first, with req's subject
// (its Patch or Token), taking the tier's next hub sequence number in this
// transaction, so a rolled-back change leaves no gap in the tier's signed
// sequence and a failed seal rolls the change back. what names the
// subject in errors.
func (c *changeTx) sealedEvent(ctx context.Context, e logEntry, req store.SealRequest, what string) error {
	if err := c.seal(ctx, &e, req, what); err != nil {
		return err
	}
	return c.append(ctx, e)
}

// seal signs e on the hub (see sealedEvent), setting its record, sig and
// hub sequence; on any other node it leaves e unsigned.
func (c *changeTx) seal(ctx context.Context, e *logEntry, req store.SealRequest, what string) error {
	if c.sealer == nil || e.tier == "" {
		return nil
	}
	var err error
	if e.hubSeq, err = c.nextHubSeq(ctx, e.tier); err != nil {
		return err
	}
	req.Tier, req.TierSeq, req.Type, req.At = e.tier, e.hubSeq, e.typ, c.now
	if e.record, e.sig, err = c.sealer.Seal(req); err != nil {
		return fmt.Errorf("seal %s of %s on tier %s: %w", e.typ, what, e.tier, err)
	}
	if len(e.record) == 0 || len(e.sig) == 0 {
		// Stored as is, it would drop out of the feed unnoticed and
		// leave a gap in the tier's sequence.
		return fmt.Errorf("seal %s of %s on tier %s: sealer returned an empty record or signature", e.typ, what, e.tier)
	}
	return nil
}

// patchEventEachTier appends one patch event per tier p is on, in tier
// order, for a change that concerns every tier (withdrawal, removal): each
// tier's feed then holds every event that concerns it, in its own hub
// sequence. A patch on no tier still gets one event, with no tier.
func (c *changeTx) patchEventEachTier(ctx context.Context, typ catalog.EventType, p catalog.Patch) error {
	tiers := p.Tiers
	if len(tiers) == 0 {
		tiers = []string{""}
	}
	for _, t := range tiers {
		if err := c.patchEvent(ctx, typ, t, p); err != nil {
			return err
		}
	}
	return nil
}

// nextHubSeq takes the tier's next hub sequence number, from a counter row
// made on first use. The row is only ever locked while the change-log
// counter is held, so it adds no deadlock.
func (c *changeTx) nextHubSeq(ctx context.Context, tier string) (int64, error) {
	var n int64
	err := c.tx.QueryRowContext(ctx, `INSERT INTO counters (name, value) VALUES ($1, 1)
		ON CONFLICT (name) DO UPDATE SET value = counters.value + 1 RETURNING value`, "tier:"+tier).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("next hub seq of tier %s: %w", tier, err)
	}
	return n, nil
}

// append writes e to the change log under the next seq.
func (c *changeTx) append(ctx context.Context, e logEntry) error {
	b, err := json.Marshal(e.data)
	if err != nil {
		return fmt.Errorf("encode %s event: %w", e.typ, err)
	}
	var seq int64
	if err := c.tx.QueryRowContext(ctx,
		`UPDATE counters SET value = value + 1 WHERE name = 'events' RETURNING value`).Scan(&seq); err != nil {
		return fmt.Errorf("next event seq: %w", err)
	}
	signed := e.record != nil
	if _, err := c.tx.ExecContext(ctx,
		`INSERT INTO events (seq, type, tier, digest, data, created_us, record, sig, hub_seq, skip_record, skip_sig)
		 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
		seq, string(e.typ), e.tier, e.digest, string(b), us(c.now),
		nullBytes(e.record), nullBytes(e.sig), sql.NullInt64{Int64: e.hubSeq, Valid: signed},
		nullBytes(e.skipRecord), nullBytes(e.skipSig)); err != nil {
		return fmt.Errorf("append %s event: %w", e.typ, err)
	}
	c.logged = true
	return nil
}

// nullBytes maps nil to NULL explicitly: a driver may bind a nil []byte as
// an empty blob, which is not NULL and would put the row in the feed.
func nullBytes(b []byte) any {
	if b == nil {
		return nil
	}
	return b
}

// Tiers returns every tier in order.
func (s *Store) Tiers(ctx context.Context) (ts []catalog.Tier, err error) {
	defer s.done("Tiers", time.Now(), &err)
	ts, err = tiers(ctx, s.db)
	return ts, mapErr("tiers", err)
}

func tiers(ctx context.Context, q querier) ([]catalog.Tier, error) {
	rows, err := q.QueryContext(ctx, `SELECT name, position, created_us FROM tiers ORDER BY position`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	ts := []catalog.Tier{}
	for rows.Next() {
		var t catalog.Tier
		var created int64
		if err := rows.Scan(&t.Name, &t.Position, &created); err != nil {
			return nil, err
		}
		t.Created = fromUS(created)
		ts = append(ts, t)
	}
	return ts, rows.Err()
}

func tier(ctx context.Context, q querier, name string) (catalog.Tier, error) {
	t := catalog.Tier{Name: name}
	var created int64
	err := q.QueryRowContext(ctx, `SELECT position, created_us FROM tiers WHERE name = $1`, name).
		Scan(&t.Position, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return t, fmt.Errorf("tier %q: %w", name, catalog.ErrNotFound)
	}
	t.Created = fromUS(created)
	return t, err
}

// AddTier appends a tier after the last one.
func (s *Store) AddTier(ctx context.Context, name string) (t catalog.Tier, err error) {
	defer s.done("AddTier", time.Now(), &err)
	if err := catalog.ValidName("name", name); err != nil {
		return catalog.Tier{}, fmt.Errorf("sqlstore: add tier: %w", err)
	}
	err = s.change(ctx, func(c *changeTx) error {
		var n int
		if err := c.tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM tiers WHERE name = $1`, name).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("tier %q exists: %w", name, catalog.ErrConflict)
		}
		t = catalog.Tier{Name: name, Created: c.now}
		if err := c.tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(position), 0) + 1 FROM tiers`).Scan(&t.Position); err != nil {
			return err
		}
		if _, err := c.tx.ExecContext(ctx, `INSERT INTO tiers (name, position, created_us) VALUES ($1, $2, $3)`,
			t.Name, t.Position, us(t.Created)); err != nil {
			return err
		}
		return c.event(ctx, catalog.EventTierAdded, name, "", t)
	})
	if err != nil {
		return catalog.Tier{}, mapErr("add tier "+name, err)
	}
	return t, nil
}

// RemoveTier deletes a tier nothing live belongs to. Tokens of the tier that
// are revoked or expired go with it: they can never be used again, and
// keeping them would pin the tier forever. The last tier stays, since a new
// patch needs a first tier to land on.
func (s *Store) RemoveTier(ctx context.Context, name string) (err error) {
	defer s.done("RemoveTier", time.Now(), &err)
	err = s.change(ctx, func(c *changeTx) error {
		t, err := tier(ctx, c.tx, name)
		if err != nil {
			return err
		}
		var count, live, machines int
		if err := c.tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM tiers`).Scan(&count); err != nil {
			return err
		}
		if count <= 1 {
			return fmt.Errorf("tier %q is the only tier: %w", name, catalog.ErrConflict)
		}
		if err := c.tx.QueryRowContext(ctx,
			`SELECT COUNT(*) FROM tokens WHERE tier = $1 AND revoked_us IS NULL AND (expires_us IS NULL OR expires_us > $2)`,
			name, us(c.now)).Scan(&live); err != nil {
			return err
		}
		if err := c.tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM machines WHERE tier = $1`, name).Scan(&machines); err != nil {
			return err
		}
		if live > 0 || machines > 0 {
			return fmt.Errorf("tier %q is in use by %d live tokens and %d machines: %w", name, live, machines, catalog.ErrConflict)
		}
		if _, err := c.tx.ExecContext(ctx, `DELETE FROM tokens WHERE tier = $1`, name); err != nil {
			return err
		}
		// Availability on the tier goes by ON DELETE CASCADE. Machines and
		// sync and machine tokens are not catalog changes, so they do not
		// wait for the change-log lock: one added since the checks above
		// makes the delete break its foreign key, and the tier is in use
		// after all.
		_, err = c.tx.ExecContext(ctx, `DELETE FROM tiers WHERE name = $1`, name)
		if classify(err) == foreignKeyViolation {
			return fmt.Errorf("tier %q came into use: %w", name, catalog.ErrConflict)
		}
		if err != nil {
			return err
		}
		return c.event(ctx, catalog.EventTierRemoved, name, "", t)
	})
	return mapErr("remove tier "+name, err)
}

// patchCols selects a patch with its tiers in tier order. Tier names cannot
// hold a comma (catalog.ValidName), so a comma-joined list is unambiguous;
// string_agg with ORDER BY is spelled the same in both dialects.
const patchCols = `p.digest, p.kernel, p.arch, p.version, p.size, p.cves, p.description, p.created_us, p.withdrawn,
	(SELECT string_agg(a.tier, ',' ORDER BY t.position) FROM availability a JOIN tiers t ON t.name = a.tier WHERE a.digest = p.digest)`

type scanner interface{ Scan(dest ...any) error }

func scanPatch(r scanner) (catalog.Patch, error) {
	var (
		p       catalog.Patch
		cves    string
		created int64
		tiers   sql.NullString
	)
	if err := r.Scan(&p.Digest, &p.Kernel, &p.Arch, &p.Version, &p.Size, &cves, &p.Description,
		&created, &p.Withdrawn, &tiers); err != nil {
		return p, err
	}
	p.CVEs = []string{}
	if err := json.Unmarshal([]byte(cves), &p.CVEs); err != nil {
		return p, fmt.Errorf("patch %s: decode cves: %w", p.Digest, err)
	}
	p.Created = fromUS(created)
	p.Tiers = []string{}
	if tiers.Valid && tiers.String != "" {
		p.Tiers = strings.Split(tiers.String, ",")
	}
	return p, nil
}

func patch(ctx context.Context, q querier, digest string) (catalog.Patch, error) {
	p, err := scanPatch(q.QueryRowContext(ctx, `SELECT `+patchCols+` FROM patches p WHERE p.digest = $1`, digest))
	if errors.Is(err, sql.ErrNoRows) {
		return p, fmt.Errorf("patch %s: %w", digest, catalog.ErrNotFound)
	}
	return p, err
}

// AddPatch records a new patch on the first tier. Created is kept if set
// (a patch that arrives by sync keeps its origin's time), else now.
func (s *Store) AddPatch(ctx context.Context, in catalog.Patch) (p catalog.Patch, err error) {
	defer s.done("AddPatch", time.Now(), &err)
	if err := in.Validate(); err != nil {
		return catalog.Patch{}, fmt.Errorf("sqlstore: add patch: %w", err)
	}
	p = in
	p.CVEs = append([]string{}, in.CVEs...)
	p.Withdrawn = false
	err = s.change(ctx, func(c *changeTx) error {
		p.Created = c.now
		if !in.Created.IsZero() {
			p.Created = in.Created.UTC().Truncate(time.Microsecond)
		}
		var first string
		err := c.tx.QueryRowContext(ctx, `SELECT name FROM tiers ORDER BY position LIMIT 1`).Scan(&first)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("no tier to land on: %w", catalog.ErrNotFound)
		}
		if err != nil {
			return err
		}
		if err := c.insertPatch(ctx, p); err != nil {
			return err
		}
		if _, err := c.tx.ExecContext(ctx, `INSERT INTO availability (digest, tier, added_us) VALUES ($1, $2, $3)`,
			p.Digest, first, us(c.now)); err != nil {
			return err
		}
		p.Tiers = []string{first}
		return c.patchEvent(ctx, catalog.EventPatchAdded, first, p)
	})
	if err != nil {
		return catalog.Patch{}, mapErr("add patch "+in.Digest, err)
	}
	return p, nil
}

// insertPatch stores p's facts as a live patch on no tier. ErrConflict if
// its digest, or its (kernel, arch, version) under another digest, exists.
func (c *changeTx) insertPatch(ctx context.Context, p catalog.Patch) error {
	var other string
	err := c.tx.QueryRowContext(ctx, `SELECT digest FROM patches WHERE digest = $1 OR (kernel = $2 AND arch = $3 AND version = $4)`,
		p.Digest, p.Kernel, p.Arch, p.Version).Scan(&other)
	switch {
	case err == nil && other == p.Digest:
		return fmt.Errorf("patch %s exists: %w", p.Digest, catalog.ErrConflict)
	case err == nil:
		return fmt.Errorf("%s %s already has version %s (patch %s): %w", p.Kernel, p.Arch, p.Version, other, catalog.ErrConflict)
	case !errors.Is(err, sql.ErrNoRows):
		return err
	}
	cves := p.CVEs
	if cves == nil {
		cves = []string{}
	}
	b, err := json.Marshal(cves)
	if err != nil {
		return err
	}
	_, err = c.tx.ExecContext(ctx,
		`INSERT INTO patches (digest, kernel, arch, version, version_key, size, cves, description, created_us, withdrawn)
		 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, FALSE)`,
		p.Digest, p.Kernel, p.Arch, p.Version, catalog.VersionKey(p.Version), p.Size, string(b),
		p.Description, us(p.Created))
	return err
}

// Patch returns the patch with this digest, withdrawn or not.
func (s *Store) Patch(ctx context.Context, digest string) (p catalog.Patch, err error) {
	defer s.done("Patch", time.Now(), &err)
	p, err = patch(ctx, s.db, digest)
	if err != nil {
		return catalog.Patch{}, mapErr("patch", err)
	}
	return p, nil
}

// patchesQuery is the listing query for f and its arguments.
func patchesQuery(f store.PatchFilter) (string, []any) {
	var (
		where []string
		args  []any
	)
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, fmt.Sprintf(cond, len(args)))
	}
	if f.Kernel != "" {
		add("p.kernel = $%d", f.Kernel)
	}
	if f.Arch != "" {
		add("p.arch = $%d", f.Arch)
	}
	if f.Version != "" {
		add("p.version = $%d", f.Version)
	}
	if f.Tier != "" {
		add("EXISTS (SELECT 1 FROM availability x WHERE x.digest = p.digest AND x.tier = $%d)", f.Tier)
	}
	if f.DigestPrefix != "" {
		// A range on the primary key: digests are lowercase hex after
		// "sha256:", all below 'g', so prefix <= digest < prefix+"g"
		// holds exactly the digests that start with prefix.
		add("p.digest >= $%d", f.DigestPrefix)
		add("p.digest < $%d", f.DigestPrefix+"g")
	}
	if !f.IncludeWithdrawn {
		where = append(where, "NOT p.withdrawn")
	}
	if a := f.After; a != nil {
		args = append(args, catalog.VersionKey(a.Version), a.Kernel, a.Arch, a.Digest)
		n := len(args)
		where = append(where, fmt.Sprintf("(p.version_key, p.kernel, p.arch, p.digest) < ($%d, $%d, $%d, $%d)", n-3, n-2, n-1, n))
	}
	q := `SELECT ` + patchCols + ` FROM patches p`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	// One direction for every key, so that the patches_list index serves
	// the order and the keyset comparison alike. The limit is written into
	// the query, not passed as a parameter: PostgreSQL's generic plan for a
	// prepared statement cannot see a parameter's value and assumes a
	// thousand rows, a cost that passes jit_above_cost, so every run paid
	// ~17 ms of JIT compilation for a page of 100 (bench/RESULTS.md).
	q += fmt.Sprintf(` ORDER BY p.version_key DESC, p.kernel DESC, p.arch DESC, p.digest DESC LIMIT %d`, limit(f.Limit))

	return q, args
}

// Patches lists patches matching f, newest version first.
func (s *Store) Patches(ctx context.Context, f store.PatchFilter) (ps []catalog.Patch, err error) {
	defer s.done("Patches", time.Now(), &err)
	q, args := patchesQuery(f)
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, mapErr("patches", err)
	}
	defer rows.Close()
	ps = []catalog.Patch{}
	for rows.Next() {
		p, err := scanPatch(rows)
		if err != nil {
			return nil, mapErr("patches", err)
		}
		ps = append(ps, p)
	}
	if err := rows.Err(); err != nil {
		return nil, mapErr("patches", err)
	}
	return ps, nil
}

// newestQuery answers the check-in question in one query. It walks the
// partial index patches_newest (kernel, arch, version_key DESC, digest) of
// live patches from the highest version down and stops at the first one
// available on the tier, probing availability by index: a few B-tree
// lookups however large the catalog. Only the answer's row and its tiers
// are read from the tables.
const newestQuery = `SELECT ` + patchCols + ` FROM patches p
	WHERE p.kernel = $1 AND p.arch = $2 AND NOT p.withdrawn
	  AND EXISTS (SELECT 1 FROM availability x WHERE x.digest = p.digest AND x.tier = $3)
	ORDER BY p.version_key DESC LIMIT 1`

// Newest returns the highest-versioned live patch for kernel and arch on tier.
func (s *Store) Newest(ctx context.Context, tier, kernel, arch string) (p catalog.Patch, err error) {
	defer s.done("Newest", time.Now(), &err)
	var row *sql.Row
	if s.newest != nil {
		row = s.newest.QueryRowContext(ctx, kernel, arch, tier)
	} else {
		row = s.db.QueryRowContext(ctx, newestQuery, kernel, arch, tier)
	}
	p, err = scanPatch(row)
	if errors.Is(err, sql.ErrNoRows) {
		return catalog.Patch{}, fmt.Errorf("sqlstore: newest for %s %s on %q: %w", kernel, arch, tier, catalog.ErrNotFound)
	}
	if err != nil {
		return catalog.Patch{}, mapErr("newest", err)
	}
	return p, nil
}

// Promote makes the patch available on tier. A withdrawn patch cannot be
// promoted (ErrConflict): withdrawal is the stronger word.
func (s *Store) Promote(ctx context.Context, digest, tierName string) (p catalog.Patch, err error) {
	defer s.done("Promote", time.Now(), &err)
	if err := catalog.ValidDigest(digest); err != nil {
		return catalog.Patch{}, fmt.Errorf("sqlstore: promote: %w", err)
	}
	if err := catalog.ValidName("tier", tierName); err != nil {
		return catalog.Patch{}, fmt.Errorf("sqlstore: promote: %w", err)
	}
	err = s.change(ctx, func(c *changeTx) error {
		var err error
		if p, err = patch(ctx, c.tx, digest); err != nil {
			return err
		}
		if _, err := tier(ctx, c.tx, tierName); err != nil {
			return err
		}
		if p.Withdrawn {
			return fmt.Errorf("patch %s is withdrawn: %w", digest, catalog.ErrConflict)
		}
		added, err := c.makeAvailable(ctx, digest, tierName)
		if err != nil || !added {
			return err
		}
		if p, err = patch(ctx, c.tx, digest); err != nil {
			return err
		}
		return c.patchEvent(ctx, catalog.EventPatchPromoted, tierName, p)
	})
	if err != nil {
		return catalog.Patch{}, mapErr("promote "+digest+" to "+tierName, err)
	}
	return p, nil
}

// makeAvailable adds the patch to tier and reports whether it was not there.
func (c *changeTx) makeAvailable(ctx context.Context, digest, tier string) (bool, error) {
	res, err := c.tx.ExecContext(ctx,
		`INSERT INTO availability (digest, tier, added_us) VALUES ($1, $2, $3) ON CONFLICT (digest, tier) DO NOTHING`,
		digest, tier, us(c.now))
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// PromoteAll makes every live patch on from available on to, one event per
// patch promoted, in (kernel, arch, version) order.
func (s *Store) PromoteAll(ctx context.Context, from, to string) (n int, err error) {
	defer s.done("PromoteAll", time.Now(), &err)
	for _, t := range []string{from, to} {
		if err := catalog.ValidName("tier", t); err != nil {
			return 0, fmt.Errorf("sqlstore: promote all: %w", err)
		}
	}
	err = s.change(ctx, func(c *changeTx) error {
		for _, t := range []string{from, to} {
			if _, err := tier(ctx, c.tx, t); err != nil {
				return err
			}
		}
		digests, err := queryAll(ctx, c.tx, `SELECT p.digest FROM patches p
			JOIN availability a ON a.digest = p.digest AND a.tier = $1
			WHERE NOT p.withdrawn
			  AND NOT EXISTS (SELECT 1 FROM availability b WHERE b.digest = p.digest AND b.tier = $2)
			ORDER BY p.kernel, p.arch, p.version_key`, []any{from, to}, scanString)
		if err != nil {
			return err
		}
		for _, d := range digests {
			added, err := c.makeAvailable(ctx, d, to)
			if err != nil {
				return err
			}
			if !added {
				continue
			}
			p, err := patch(ctx, c.tx, d)
			if err != nil {
				return err
			}
			if err := c.patchEvent(ctx, catalog.EventPatchPromoted, to, p); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	if err != nil {
		return 0, mapErr("promote all from "+from+" to "+to, err)
	}
	return n, nil
}

// Withdraw marks the patch withdrawn. Its availability rows stay, as the
// record of where it had reached; Newest and the default listing skip it.
// It logs one event per tier the patch is on (one with no tier if it is on
// none), so every tier's feed tells its downstreams. Withdrawing a
// withdrawn patch changes nothing and appends no event.
func (s *Store) Withdraw(ctx context.Context, digest string) (p catalog.Patch, err error) {
	defer s.done("Withdraw", time.Now(), &err)
	if err := catalog.ValidDigest(digest); err != nil {
		return catalog.Patch{}, fmt.Errorf("sqlstore: withdraw: %w", err)
	}
	err = s.change(ctx, func(c *changeTx) error {
		var err error
		if p, err = patch(ctx, c.tx, digest); err != nil {
			return err
		}
		if p.Withdrawn {
			return nil
		}
		if _, err := c.tx.ExecContext(ctx, `UPDATE patches SET withdrawn = TRUE WHERE digest = $1`, digest); err != nil {
			return err
		}
		p.Withdrawn = true
		return c.patchEventEachTier(ctx, catalog.EventPatchWithdrawn, p)
	})
	if err != nil {
		return catalog.Patch{}, mapErr("withdraw "+digest, err)
	}
	return p, nil
}

// RemovePatch deletes the patch record. It logs one event per tier the
// patch was on, as Withdraw does, each carrying the patch as it stood when
// removed.
func (s *Store) RemovePatch(ctx context.Context, digest string) (err error) {
	defer s.done("RemovePatch", time.Now(), &err)
	if err := catalog.ValidDigest(digest); err != nil {
		return fmt.Errorf("sqlstore: remove patch: %w", err)
	}
	err = s.change(ctx, func(c *changeTx) error {
		p, err := patch(ctx, c.tx, digest)
		if err != nil {
			return err
		}
		// Availability goes by ON DELETE CASCADE.
		if _, err := c.tx.ExecContext(ctx, `DELETE FROM patches WHERE digest = $1`, digest); err != nil {
			return err
		}
		return c.patchEventEachTier(ctx, catalog.EventPatchRemoved, p)
	})
	return mapErr("remove patch "+digest, err)
}

// Events returns up to limit events with Seq > after, in order.
func (s *Store) Events(ctx context.Context, after int64, n int) (es []catalog.Event, err error) {
	defer s.done("Events", time.Now(), &err)
	rows, err := s.db.QueryContext(ctx,
		`SELECT seq, type, tier, digest, data, created_us FROM events WHERE seq > $1 ORDER BY seq LIMIT $2`,
		after, limit(n))
	if err != nil {
		return nil, mapErr("events", err)
	}
	defer rows.Close()
	es = []catalog.Event{}
	for rows.Next() {
		var (
			e       catalog.Event
			typ     string
			data    string
			created int64
		)
		if err := rows.Scan(&e.Seq, &typ, &e.Tier, &e.Digest, &data, &created); err != nil {
			return nil, mapErr("events", err)
		}
		e.Type = catalog.EventType(typ)
		if data != "" {
			e.Data = json.RawMessage(data)
		}
		e.Created = fromUS(created)
		es = append(es, e)
	}
	if err := rows.Err(); err != nil {
		return nil, mapErr("events", err)
	}
	return es, nil
}

// Head returns the highest event seq, 0 for an empty log.
func (s *Store) Head(ctx context.Context) (h int64, err error) {
	defer s.done("Head", time.Now(), &err)
	if err := s.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq), 0) FROM events`).Scan(&h); err != nil {
		return 0, mapErr("head", err)
	}
	return h, nil
}
