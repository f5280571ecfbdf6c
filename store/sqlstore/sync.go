package sqlstore

// The store side of federation: the signed feed this node serves per tier,
// the cursors of the links that feed its tiers, applying what a link
// fetched, and the hub keys pinned through the admin API. The record format
// and its verification are the federation package's; here records are
// opaque bytes kept and served exactly as the hub made them.

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/store"
)

// Feed page sizes: a zero or negative limit means defaultFeedLimit, and no
// page holds more than maxFeedLimit events. They match the sync API's
// (federation.DefaultFeedLimit and MaxFeedLimit), which this package sits
// below and cannot import.
const (
	defaultFeedLimit = 100
	maxFeedLimit     = 1000
)

func feedLimit(n int) int {
	switch {
	case n <= 0:
		return defaultFeedLimit
	case n > maxFeedLimit:
		return maxFeedLimit
	}
	return n
}

// feedCols selects a feed entry. Skip is worked out at read time, so a
// withdrawal or removal after an event was logged makes the old event
// skippable without rewriting it: a downstream that catches up later is
// never sent to fetch a patch this node no longer offers on the tier.
const feedCols = `e.seq, e.hub_seq, e.record, e.sig, e.digest, e.skip_record, e.skip_sig,
	(e.type IN ('` + string(catalog.EventPatchAdded) + `', '` + string(catalog.EventPatchPromoted) + `')
	 AND NOT EXISTS (SELECT 1 FROM availability a JOIN patches p ON p.digest = a.digest
	                 WHERE a.digest = e.digest AND a.tier = e.tier AND NOT p.withdrawn))`

// feedBySeq and feedByHub walk the partial index events_feed (tier, seq)
// from the position on, so a page costs the same however long the log.
// feedByHub first finds where the position falls in this node's log
// through events_feed_hub (tier, hub_seq): hub sequence numbers rise with
// seq within a tier, as both the hub and ApplySynced log them in order.
const (
	feedBySeq = `SELECT ` + feedCols + ` FROM events e
		WHERE e.tier = $1 AND e.record IS NOT NULL AND e.seq > $2
		ORDER BY e.seq LIMIT $3`
	feedByHub = `SELECT ` + feedCols + ` FROM events e
		WHERE e.tier = $1 AND e.record IS NOT NULL AND e.hub_seq > $2
		  AND e.seq >= (SELECT h.seq FROM events h
		                WHERE h.tier = $1 AND h.record IS NOT NULL AND h.hub_seq > $2
		                ORDER BY h.hub_seq LIMIT 1)
		ORDER BY e.seq LIMIT $3`
	// feedHead is the tier's newest signed event, the last entry of
	// events_feed.
	feedHead = `SELECT seq, hub_seq FROM events
		WHERE tier = $1 AND record IS NOT NULL ORDER BY seq DESC LIMIT 1`
)

// Feed returns up to limit signed events of tier from pos on, in Seq
// order, with the tier's head. An unknown tier has an empty feed.
func (s *Store) Feed(ctx context.Context, tier string, pos store.FeedPosition, limit int) (page store.FeedPage, err error) {
	defer s.done("Feed", time.Now(), &err)
	q, after := feedBySeq, pos.AfterSeq
	if pos.ByHub {
		q, after = feedByHub, pos.AfterHubSeq
	}
	rows, err := s.db.QueryContext(ctx, q, tier, after, feedLimit(limit))
	if err != nil {
		return store.FeedPage{}, mapErr("feed of "+tier, err)
	}
	defer rows.Close()
	page.Entries = []store.FeedEntry{}
	var digests []string
	for rows.Next() {
		var (
			e      store.FeedEntry
			hubSeq sql.NullInt64
			digest string
		)
		if err := rows.Scan(&e.Seq, &hubSeq, &e.Record, &e.Sig, &digest, &e.BecauseRecord, &e.BecauseSig, &e.Skip); err != nil {
			return store.FeedPage{}, mapErr("feed of "+tier, err)
		}
		e.HubSeq = hubSeq.Int64
		page.Entries = append(page.Entries, e)
		digests = append(digests, digest)
	}
	if err := rows.Err(); err != nil {
		return store.FeedPage{}, mapErr("feed of "+tier, err)
	}
	rows.Close()
	if err := s.skipReasons(ctx, tier, page.Entries, digests); err != nil {
		return store.FeedPage{}, mapErr("feed of "+tier, err)
	}
	// The head is read after the entries, so it is never behind them: an
	// event committed in between only makes the head promise more.
	var hubHead sql.NullInt64
	err = s.db.QueryRowContext(ctx, feedHead, tier).Scan(&page.Head, &hubHead)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return store.FeedPage{}, mapErr("feed head of "+tier, err)
	}
	page.HubHead = hubHead.Int64
	return page, nil
}

// skipReason finds the signed record that explains why an entry is
// skipped: the first withdrawal or removal of its patch on the tier after
// it. It walks the partial index events_unavailable (tier, digest,
// hub_seq), which holds only those records.
const skipReason = `SELECT record, sig FROM events
	WHERE tier = $1 AND digest = $2 AND hub_seq > $3 AND record IS NOT NULL
	  AND type IN ('` + string(catalog.EventPatchWithdrawn) + `', '` + string(catalog.EventPatchRemoved) + `')
	ORDER BY hub_seq LIMIT 1`

// skipReasons attaches to each skipped entry the record that explains
// the skip: the one the log holds, or else the one this node's sync loop
// verified when it passed the patch by (kept with the event, for the time
// before the record itself arrives). The skip flag itself is unsigned; the
// reason is what a downstream checks before it records the entry without
// its patch. An entry not skipped carries none.
func (s *Store) skipReasons(ctx context.Context, tier string, entries []store.FeedEntry, digests []string) error {
	for i := range entries {
		e := &entries[i]
		if !e.Skip {
			e.BecauseRecord, e.BecauseSig = nil, nil
			continue
		}
		kept, keptSig := e.BecauseRecord, e.BecauseSig
		err := s.db.QueryRowContext(ctx, skipReason, tier, digests[i], e.HubSeq).Scan(&e.BecauseRecord, &e.BecauseSig)
		if errors.Is(err, sql.ErrNoRows) {
			e.BecauseRecord, e.BecauseSig, err = kept, keptSig, nil
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// typeMarks are the placeholders of n event types in signedEventsQuery,
// after its three fixed arguments.
func typeMarks(n int) []string {
	marks := make([]string, n)
	for i := range marks {
		marks[i] = fmt.Sprintf("$%d", i+4)
	}
	return marks
}

// signedEventsQuery selects a tier's signed events about one digest, of
// the types whose placeholders are marks, newest first.
func signedEventsQuery(marks []string) string {
	return `SELECT seq, hub_seq, record, sig FROM events
		WHERE tier = $1 AND digest = $2 AND record IS NOT NULL AND type IN (` + strings.Join(marks, ", ") + `)
		ORDER BY seq DESC LIMIT $3`
}

// SignedEvents returns the signed events of q.Tier about q.Digest of one
// of q.Types, newest first. It walks the partial index events_subject
// (tier, digest, seq), so a machine's check-in costs one short index
// range whatever the log's length.
func (s *Store) SignedEvents(ctx context.Context, q store.SignedQuery) (out []store.FeedEntry, err error) {
	defer s.done("SignedEvents", time.Now(), &err)
	if len(q.Types) == 0 {
		return nil, fmt.Errorf("sqlstore: signed events: %w", &catalog.InvalidError{Field: "types", Message: "at least one event type"})
	}
	limit := q.Limit
	if limit <= 0 {
		limit = 1
	}
	limit = min(limit, maxFeedLimit)
	args := []any{q.Tier, q.Digest, limit}
	for _, typ := range q.Types {
		args = append(args, string(typ))
	}
	var rows *sql.Rows
	if n := len(q.Types); n <= len(s.signed) && s.signed[n-1] != nil {
		rows, err = s.signed[n-1].QueryContext(ctx, args...)
	} else {
		rows, err = s.db.QueryContext(ctx, signedEventsQuery(typeMarks(n)), args...)
	}
	if err != nil {
		return nil, mapErr("signed events of "+q.Tier, err)
	}
	defer rows.Close()
	out = []store.FeedEntry{}
	for rows.Next() {
		var (
			e      store.FeedEntry
			hubSeq sql.NullInt64
		)
		if err := rows.Scan(&e.Seq, &hubSeq, &e.Record, &e.Sig); err != nil {
			return nil, mapErr("signed events of "+q.Tier, err)
		}
		e.HubSeq = hubSeq.Int64
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, mapErr("signed events of "+q.Tier, err)
	}
	return out, nil
}

// Cursor returns the local tier's cursor, the zero Cursor with Tier set if
// the tier never synced.
func (s *Store) Cursor(ctx context.Context, tier string) (c store.Cursor, err error) {
	defer s.done("Cursor", time.Now(), &err)
	c, err = cursor(ctx, s.db, tier)
	if err != nil {
		return store.Cursor{}, mapErr("cursor of "+tier, err)
	}
	return c, nil
}

func cursor(ctx context.Context, q querier, tier string) (store.Cursor, error) {
	c := store.Cursor{Tier: tier}
	var updated int64
	err := q.QueryRowContext(ctx,
		`SELECT hub_tier, hub_seq, upstream, upstream_seq, updated_us FROM sync_cursors WHERE tier = $1`, tier).
		Scan(&c.HubTier, &c.HubSeq, &c.Upstream, &c.UpstreamSeq, &updated)
	if errors.Is(err, sql.ErrNoRows) {
		return c, nil
	}
	if err != nil {
		return store.Cursor{}, err
	}
	c.Updated = fromUS(updated)
	return c, nil
}

// sameCursor compares what a cursor says, not when it last moved: a caller
// holding a Cursor read earlier compares by position.
func sameCursor(a, b store.Cursor) bool {
	return a.HubTier == b.HubTier && a.HubSeq == b.HubSeq && a.Upstream == b.Upstream && a.UpstreamSeq == b.UpstreamSeq
}

// ApplySynced applies events to the local tier next.Tier and moves its
// cursor from prev to next in one catalog change; see store.Syncer.
//
// Withdrawals, removals, token, node and machine events are applied whatever their
// Apply says: the interface promises they always are. Dropping a withdrawal
// would keep offering a patch the hub took back, dropping a revocation
// would keep accepting a token it took back, and a token costs no blob. Every event, applied or not, is logged under
// next.Tier with the upstream's record, never re-sealed, so this node's
// downstreams receive the hub's own bytes.
func (s *Store) ApplySynced(ctx context.Context, prev, next store.Cursor, events []store.SyncedEvent) (err error) {
	defer s.done("ApplySynced", time.Now(), &err)
	if err := checkSynced(prev, next, events); err != nil {
		return fmt.Errorf("sqlstore: apply synced to %q: %w", next.Tier, err)
	}
	err = s.change(ctx, func(c *changeTx) error {
		if _, err := tier(ctx, c.tx, next.Tier); err != nil {
			return err
		}
		cur, err := cursor(ctx, c.tx, next.Tier)
		if err != nil {
			return err
		}
		if !sameCursor(cur, prev) {
			return fmt.Errorf("cursor is at hub seq %d (upstream %q seq %d), not the %d (upstream %q seq %d) expected: %w",
				cur.HubSeq, cur.Upstream, cur.UpstreamSeq, prev.HubSeq, prev.Upstream, prev.UpstreamSeq, catalog.ErrConflict)
		}
		for _, ev := range events {
			if err := c.applySynced(ctx, next.Tier, ev); err != nil {
				return fmt.Errorf("hub seq %d (%s of %s): %w", ev.HubSeq, ev.Type, syncedSubject(ev), err)
			}
		}
		_, err = c.tx.ExecContext(ctx,
			`INSERT INTO sync_cursors (tier, hub_tier, hub_seq, upstream, upstream_seq, updated_us)
			 VALUES ($1, $2, $3, $4, $5, $6)
			 ON CONFLICT (tier) DO UPDATE SET hub_tier = excluded.hub_tier, hub_seq = excluded.hub_seq,
			   upstream = excluded.upstream, upstream_seq = excluded.upstream_seq, updated_us = excluded.updated_us`,
			next.Tier, next.HubTier, next.HubSeq, next.Upstream, next.UpstreamSeq, us(c.now))
		if err != nil {
			return fmt.Errorf("move cursor: %w", err)
		}
		return nil
	})
	return mapErr("apply synced to "+next.Tier, err)
}

// checkSynced checks what ApplySynced can check without the database: the
// events continue prev's hub sequence with no gap, next ends where they
// end, and each event is one the store can log and, if asked, apply.
func checkSynced(prev, next store.Cursor, events []store.SyncedEvent) error {
	if err := catalog.ValidName("tier", next.Tier); err != nil {
		return err
	}
	if prev.Tier != "" && prev.Tier != next.Tier {
		return &catalog.InvalidError{Field: "prev.tier", Message: fmt.Sprintf("is %q, next is for %q", prev.Tier, next.Tier)}
	}
	for i, ev := range events {
		if want := prev.HubSeq + 1 + int64(i); ev.HubSeq != want {
			return fmt.Errorf("event %d has hub seq %d, want %d: %w", i, ev.HubSeq, want, catalog.ErrConflict)
		}
		if err := checkSyncedEvent(ev); err != nil {
			return fmt.Errorf("event %d (hub seq %d): %w", i, ev.HubSeq, err)
		}
	}
	last := prev.HubSeq
	if len(events) > 0 {
		last = events[len(events)-1].HubSeq
	}
	if next.HubSeq != last {
		return &catalog.InvalidError{Field: "next.hub_seq", Message: fmt.Sprintf("is %d, the events end at %d", next.HubSeq, last)}
	}
	return nil
}

// syncedSubject names what a synced event is about, for errors.
func syncedSubject(ev store.SyncedEvent) string {
	if ev.Token != nil {
		return "token " + ev.Token.ID
	}
	if ev.Node != nil {
		return "node " + ev.Node.Name
	}
	if ev.Rollout != nil {
		return "rollout " + ev.Rollout.ID
	}
	if ev.Machine != nil {
		return "machine " + ev.Machine.ID
	}
	return ev.Patch.Digest
}

func checkSyncedEvent(ev store.SyncedEvent) error {
	if len(ev.Record) == 0 || len(ev.Sig) == 0 {
		return &catalog.InvalidError{Field: "record", Message: "a synced event needs its record and signature"}
	}
	if ev.Machine != nil && ev.Type != catalog.EventMachineRevoked && ev.Type != catalog.EventMachineDeleted {
		return &catalog.InvalidError{Field: "machine", Message: fmt.Sprintf("must be absent for a %s event", ev.Type)}
	}
	switch ev.Type {
	case catalog.EventMachineRevoked, catalog.EventMachineDeleted:
		return checkSyncedMachine(ev)
	case catalog.EventTokenAdded, catalog.EventTokenRevoked:
		if ev.Node != nil {
			return &catalog.InvalidError{Field: "node", Message: fmt.Sprintf("must be absent for a %s event", ev.Type)}
		}
		return checkSyncedToken(ev)
	case catalog.EventNodeAdmitted, catalog.EventNodeRemoved:
		return checkSyncedNode(ev)
	case catalog.EventRolloutChanged:
		return checkSyncedRollout(ev)
	}
	if ev.Rollout != nil {
		return &catalog.InvalidError{Field: "rollout", Message: fmt.Sprintf("must be absent for a %s event", ev.Type)}
	}
	if ev.Node != nil {
		return &catalog.InvalidError{Field: "node", Message: fmt.Sprintf("must be absent for a %s event", ev.Type)}
	}
	if ev.Token != nil {
		return &catalog.InvalidError{Field: "token", Message: fmt.Sprintf("must be absent for a %s event", ev.Type)}
	}
	switch ev.Type {
	case catalog.EventPatchAdded, catalog.EventPatchPromoted:
		if ev.Apply {
			// Its facts become a local patch record.
			return ev.Patch.Validate()
		}
	case catalog.EventPatchWithdrawn, catalog.EventPatchRemoved:
	default:
		// The hub seals patch, token, node, rollout and machine events only.
		return &catalog.InvalidError{Field: "type", Message: fmt.Sprintf("%q is not a patch, token or node event", ev.Type)}
	}
	return catalog.ValidDigest(ev.Patch.Digest)
}

// checkSyncedToken checks the token of a token event against what the
// store keeps of a token: it becomes a local auth token as it is.
func checkSyncedToken(ev store.SyncedEvent) error {
	t := ev.Token
	if t == nil {
		return &catalog.InvalidError{Field: "token", Message: fmt.Sprintf("must be set for a %s event", ev.Type)}
	}
	if err := validID("token.id", t.ID); err != nil {
		return err
	}
	if err := catalog.ValidName("token.name", t.Name); err != nil {
		return err
	}
	if len(t.Hash) != sha256.Size {
		return &catalog.InvalidError{Field: "token.hash", Message: "must be a SHA-256 (32 bytes)"}
	}
	if t.Created.IsZero() {
		return &catalog.InvalidError{Field: "token.created", Message: "must be set"}
	}
	if ev.Type == catalog.EventTokenRevoked && t.Revoked.IsZero() {
		return &catalog.InvalidError{Field: "token.revoked", Message: "must be set for a token.revoked event"}
	}
	return nil
}

// applySynced applies one synced event to tierName, if it is to be
// applied, and logs it with its record.
func (c *changeTx) applySynced(ctx context.Context, tierName string, ev store.SyncedEvent) error {
	switch ev.Type {
	case catalog.EventTokenAdded, catalog.EventTokenRevoked:
		return c.applySyncedToken(ctx, tierName, ev)
	case catalog.EventNodeAdmitted, catalog.EventNodeRemoved:
		return c.applySyncedNode(ctx, tierName, ev)
	case catalog.EventRolloutChanged:
		return c.applySyncedRollout(ctx, tierName, ev)
	case catalog.EventMachineRevoked, catalog.EventMachineDeleted:
		return c.applySyncedMachine(ctx, tierName, ev)
	}
	digest := ev.Patch.Digest
	local, err := patch(ctx, c.tx, digest)
	present := err == nil
	if err != nil && !errors.Is(err, catalog.ErrNotFound) {
		return err
	}
	// The log carries the local patch as it stands after the event (as it
	// stood, for a removal), or the signed facts if there is none here.
	facts := ev.Patch
	facts.Tiers = []string{}
	facts.Withdrawn = false
	var data any = facts
	if present {
		data = local
	}
	switch ev.Type {
	case catalog.EventPatchAdded, catalog.EventPatchPromoted:
		if !ev.Apply {
			break
		}
		if !present {
			if facts.Created.IsZero() {
				facts.Created = c.now
			}
			facts.Created = facts.Created.UTC().Truncate(time.Microsecond)
			if err := c.insertPatch(ctx, facts); err != nil {
				return err
			}
		}
		// A patch withdrawn here stays withdrawn: availability records
		// where it reached, withdrawal still hides it.
		if _, err := c.makeAvailable(ctx, digest, tierName); err != nil {
			return err
		}
		if data, err = patch(ctx, c.tx, digest); err != nil {
			return err
		}
	case catalog.EventPatchWithdrawn:
		if !present {
			break
		}
		if _, err := c.tx.ExecContext(ctx, `UPDATE patches SET withdrawn = TRUE WHERE digest = $1`, digest); err != nil {
			return err
		}
		local.Withdrawn = true
		data = local
	case catalog.EventPatchRemoved:
		if !present {
			break
		}
		// Availability goes by ON DELETE CASCADE.
		if _, err := c.tx.ExecContext(ctx, `DELETE FROM patches WHERE digest = $1`, digest); err != nil {
			return err
		}
	}
	entry := logEntry{
		typ: ev.Type, tier: tierName, digest: digest, data: data,
		record: ev.Record, sig: ev.Sig, hubSeq: ev.HubSeq,
	}
	if !ev.Apply && len(ev.BecauseRecord) > 0 && len(ev.BecauseSig) > 0 {
		entry.skipRecord, entry.skipSig = ev.BecauseRecord, ev.BecauseSig
	}
	return c.append(ctx, entry)
}

// applySyncedToken applies one synced token event to tierName and logs it
// with its record. An added token becomes an auth token of the local tier,
// unless its ID is here already: the record was applied before (through
// another link, or the tier was re-synced), and what is here stays. A
// revocation revokes the auth token with that ID if it is live, and, if
// the record says so, the machines registered here with it; a token of
// another kind that shares the ID is not the hub's to revoke.
func (c *changeTx) applySyncedToken(ctx context.Context, tierName string, ev store.SyncedEvent) error {
	in := *ev.Token
	in.Kind, in.Tier, in.MachineID = catalog.TokenAuth, tierName, ""
	in.Created = in.Created.UTC().Truncate(time.Microsecond)
	if !in.Expires.IsZero() {
		in.Expires = in.Expires.UTC().Truncate(time.Microsecond)
	}
	if !in.Revoked.IsZero() {
		in.Revoked = in.Revoked.UTC().Truncate(time.Microsecond)
	}
	local, err := scanToken(c.tx.QueryRowContext(ctx, `SELECT `+tokenCols+` FROM tokens WHERE id = $1`, in.ID))
	present := err == nil
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return err
	}
	// The log carries the local token as it stands after the event, or
	// the signed facts if none of this node's auth tokens has the ID.
	data := in
	if present && local.Kind == catalog.TokenAuth {
		data = local
	}
	switch ev.Type {
	case catalog.EventTokenAdded:
		if present {
			break
		}
		// A token.added record never says revoked; the revocation is
		// its own record, later in the sequence.
		in.Revoked = time.Time{}
		if err := insertToken(ctx, c.tx, in); err != nil {
			return err
		}
		data = in
	case catalog.EventTokenRevoked:
		if !present || local.Kind != catalog.TokenAuth {
			break
		}
		if local.Revoked.IsZero() {
			if _, err := c.tx.ExecContext(ctx, `UPDATE tokens SET revoked_us = $1 WHERE id = $2`, us(in.Revoked), in.ID); err != nil {
				return err
			}
			local.Revoked = in.Revoked
		}
		// The hub revoked the token's machines: those registered here
		// with it go too, whichever node's admin revoked the token first.
		if in.RevokeMachines && !local.RevokeMachines {
			if err := c.revokeEnrolled(ctx, &local, local.Revoked); err != nil {
				return err
			}
		}
		data = local
	}
	return c.append(ctx, logEntry{
		typ: ev.Type, tier: tierName, data: data,
		record: ev.Record, sig: ev.Sig, hubSeq: ev.HubSeq,
	})
}

// TrustedKeys lists the pinned hub keys, oldest first.
func (s *Store) TrustedKeys(ctx context.Context) (ks []store.TrustedKey, err error) {
	defer s.done("TrustedKeys", time.Now(), &err)
	rows, err := s.db.QueryContext(ctx, `SELECT id, key, added_us FROM trusted_keys ORDER BY added_us, id`)
	if err != nil {
		return nil, mapErr("trusted keys", err)
	}
	defer rows.Close()
	ks = []store.TrustedKey{}
	for rows.Next() {
		var (
			k     store.TrustedKey
			added int64
		)
		if err := rows.Scan(&k.ID, &k.Key, &added); err != nil {
			return nil, mapErr("trusted keys", err)
		}
		k.Added = fromUS(added)
		ks = append(ks, k)
	}
	if err := rows.Err(); err != nil {
		return nil, mapErr("trusted keys", err)
	}
	return ks, nil
}

// keyIDRE is the form of a key ID as records name it (federation.KeyID).
var keyIDRE = regexp.MustCompile(`^[0-9a-f]{16}$`)

// keyPrefix starts a public key's text form.
const keyPrefix = "ed25519:"

// AddTrustedKey pins a key. A zero Added means now. Whether ID is the ID of
// Key is the federation package's to check: this package does not know how
// key IDs are derived.
func (s *Store) AddTrustedKey(ctx context.Context, k store.TrustedKey) (err error) {
	defer s.done("AddTrustedKey", time.Now(), &err)
	if !keyIDRE.MatchString(k.ID) {
		return fmt.Errorf("sqlstore: add trusted key: %w",
			&catalog.InvalidError{Field: "id", Message: "must be a key ID of 16 lowercase hex digits"})
	}
	if !strings.HasPrefix(k.Key, keyPrefix) || len(k.Key) == len(keyPrefix) {
		return fmt.Errorf("sqlstore: add trusted key: %w",
			&catalog.InvalidError{Field: "key", Message: `must be a public key in the form "ed25519:<base64url>"`})
	}
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO trusted_keys (id, key, added_us) VALUES ($1, $2, $3)`,
			k.ID, k.Key, us(s.orNow(k.Added)))
		return err
	})
	return mapErr("add trusted key "+k.ID, err)
}

// RemoveTrustedKey unpins a key.
func (s *Store) RemoveTrustedKey(ctx context.Context, id string) (err error) {
	defer s.done("RemoveTrustedKey", time.Now(), &err)
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM trusted_keys WHERE id = $1`, id)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		if n == 0 {
			return catalog.ErrNotFound
		}
		return nil
	})
	return mapErr("remove trusted key "+id, err)
}
