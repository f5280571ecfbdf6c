package sqlstore

// Rollout plans, each with the latest signed record of its state. The
// record format is federation's; here it is opaque bytes kept as the hub
// made them.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/store"
)

// rolloutEvent logs r's state on its tier, sealed on the hub, and writes
// the row with the record.
func (c *changeTx) rolloutEvent(ctx context.Context, r catalog.Rollout) error {
	e := logEntry{typ: catalog.EventRolloutChanged, tier: r.Tier, data: r}
	if err := c.seal(ctx, &e, store.SealRequest{Rollout: &r}, "rollout "+r.ID); err != nil {
		return err
	}
	if err := c.append(ctx, e); err != nil {
		return err
	}
	return putRollout(ctx, c.tx, r.Tier, r, e.record, e.sig)
}

// putRollout writes r as the row of its ID on tier.
func putRollout(ctx context.Context, q querier, tier string, r catalog.Rollout, record, sig []byte) error {
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	_, err = q.ExecContext(ctx, `INSERT INTO rollouts (id, tier, version, state, data, created_us, updated_us, record, sig)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
		ON CONFLICT (tier, id) DO UPDATE SET version = excluded.version, state = excluded.state,
		  data = excluded.data, updated_us = excluded.updated_us, record = excluded.record, sig = excluded.sig`,
		r.ID, tier, r.Version, string(r.State), string(data), us(r.Created), us(r.Updated), nullBytes(record), nullBytes(sig))
	if classify(err) == foreignKeyViolation {
		return fmt.Errorf("tier %q: %w", tier, catalog.ErrNotFound)
	}
	return err
}

// normRollout puts r's times in the store's precision, so what is read
// back equals what was written.
func normRollout(r catalog.Rollout) catalog.Rollout {
	tr := func(t time.Time) time.Time {
		if t.IsZero() {
			return t
		}
		return t.UTC().Truncate(time.Microsecond)
	}
	r.Created, r.Updated = tr(r.Created), tr(r.Updated)
	opened := make([]time.Time, len(r.Opened))
	for i, t := range r.Opened {
		opened[i] = tr(t)
	}
	r.Opened = opened
	r.Waves = append([]catalog.Wave{}, r.Waves...)
	return r
}

// CreateRollout stores a new plan; see store.Rollouts.
func (s *Store) CreateRollout(ctx context.Context, r catalog.Rollout) (err error) {
	defer s.done("CreateRollout", time.Now(), &err)
	r = normRollout(r)
	if err := r.Validate(); err != nil {
		return fmt.Errorf("sqlstore: create rollout: %w", err)
	}
	err = s.change(ctx, func(c *changeTx) error {
		if _, err := tier(ctx, c.tx, r.Tier); err != nil {
			return err
		}
		var live int
		if err := c.tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM rollouts WHERE tier = $1 AND state IN ($2, $3)`,
			r.Tier, string(catalog.RolloutActive), string(catalog.RolloutHalted)).Scan(&live); err != nil {
			return err
		}
		if live > 0 {
			return fmt.Errorf("tier %q has a live rollout; complete or abort it first: %w", r.Tier, catalog.ErrConflict)
		}
		var dup int
		if err := c.tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM rollouts WHERE id = $1`, r.ID).Scan(&dup); err != nil {
			return err
		}
		if dup > 0 {
			return fmt.Errorf("rollout %s exists: %w", r.ID, catalog.ErrConflict)
		}
		return c.rolloutEvent(ctx, r)
	})
	return mapErr("create rollout "+r.ID, err)
}

// UpdateRollout stores r's new state; see store.Rollouts.
func (s *Store) UpdateRollout(ctx context.Context, r catalog.Rollout, prevUpdated time.Time) (err error) {
	defer s.done("UpdateRollout", time.Now(), &err)
	r = normRollout(r)
	if err := r.Validate(); err != nil {
		return fmt.Errorf("sqlstore: update rollout: %w", err)
	}
	err = s.change(ctx, func(c *changeTx) error {
		var tierName string
		var updated int64
		// On the hub, where updates are made, a rollout has one row.
		err := c.tx.QueryRowContext(ctx, `SELECT tier, updated_us FROM rollouts WHERE id = $1 AND tier = $2`, r.ID, r.Tier).Scan(&tierName, &updated)
		if err != nil {
			return err
		}
		if tierName != r.Tier {
			return &catalog.InvalidError{Field: "tier", Message: fmt.Sprintf("rollout %s is of tier %q", r.ID, tierName)}
		}
		if updated != us(prevUpdated) {
			return fmt.Errorf("rollout %s changed since it was read: %w", r.ID, catalog.ErrConflict)
		}
		return c.rolloutEvent(ctx, r)
	})
	return mapErr("update rollout "+r.ID, err)
}

const rolloutCols = `data, record, sig, tier`

func scanRollout(sc scanner) (store.SignedRollout, error) {
	var (
		sr   store.SignedRollout
		data string
		tier string
	)
	if err := sc.Scan(&data, &sr.Record, &sr.Sig, &tier); err != nil {
		return sr, err
	}
	if err := json.Unmarshal([]byte(data), &sr.Rollout); err != nil {
		return sr, fmt.Errorf("rollout data: %w", err)
	}
	// A synced rollout is kept on the local tier its link feeds.
	sr.Rollout.Tier = tier
	return sr, nil
}

// Rollout returns one rollout; see store.Rollouts.
func (s *Store) Rollout(ctx context.Context, id string) (sr store.SignedRollout, err error) {
	defer s.done("Rollout", time.Now(), &err)
	// A downstream may hold one rollout on two local tiers, in the same
	// state once both links applied it; the newest row answers.
	sr, err = scanRollout(s.db.QueryRowContext(ctx, `SELECT `+rolloutCols+` FROM rollouts WHERE id = $1
		ORDER BY updated_us DESC, tier LIMIT 1`, id))
	return sr, mapErr("rollout "+id, err)
}

// ListRollouts returns the rollouts of tier, newest first; see
// store.Rollouts.
func (s *Store) ListRollouts(ctx context.Context, tierName string) (out []store.SignedRollout, err error) {
	defer s.done("ListRollouts", time.Now(), &err)
	out, err = queryAll(ctx, s.db, `SELECT `+rolloutCols+` FROM rollouts WHERE $1 = '' OR tier = $1
		ORDER BY created_us DESC, id, tier`, []any{tierName}, scanRollout)
	return out, mapErr("rollouts", err)
}

// checkSyncedRollout checks the rollout of a rollout event.
func checkSyncedRollout(ev store.SyncedEvent) error {
	if ev.Rollout == nil {
		return &catalog.InvalidError{Field: "rollout", Message: "must be set for a rollout.changed event"}
	}
	if ev.Token != nil || ev.Node != nil {
		return &catalog.InvalidError{Field: "rollout", Message: "a rollout.changed event carries a rollout only"}
	}
	return ev.Rollout.Validate()
}

// applySyncedRollout keeps the synced state of a rollout on tierName,
// replacing what this node held: records arrive in the hub's order, so
// the latest is the hub's word.
func (c *changeTx) applySyncedRollout(ctx context.Context, tierName string, ev store.SyncedEvent) error {
	if ev.Rollout == nil {
		return errors.New("not a rollout event")
	}
	r := normRollout(*ev.Rollout)
	if err := putRollout(ctx, c.tx, tierName, r, ev.Record, ev.Sig); err != nil {
		return err
	}
	return c.append(ctx, logEntry{
		typ: ev.Type, tier: tierName, data: r,
		record: ev.Record, sig: ev.Sig, hubSeq: ev.HubSeq,
	})
}
