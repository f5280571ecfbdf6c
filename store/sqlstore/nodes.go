package sqlstore

// The roster: nodes the hub admitted, per tier, with the hub's signed
// record of each admission. The record format is federation's; here a
// record is opaque bytes kept and served as the hub made them.

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/store"
)

const admissionCols = `a.tier, a.name, a.key, a.key_id, a.urls, a.admitted_us, a.removed_us, a.record, a.sig`

// scanAdmission reads one node_admissions row: the node with its one tier.
func scanAdmission(r scanner) (store.Admission, error) {
	var (
		a        store.Admission
		tier     string
		urls     string
		admitted int64
		removed  sql.NullInt64
	)
	if err := r.Scan(&tier, &a.Node.Name, &a.Node.Key, &a.Node.KeyID, &urls, &admitted, &removed, &a.Record, &a.Sig); err != nil {
		return a, err
	}
	if err := json.Unmarshal([]byte(urls), &a.Node.URLs); err != nil {
		return a, fmt.Errorf("node %s on tier %s: urls: %w", a.Node.Name, tier, err)
	}
	a.Node.Tiers = []string{tier}
	a.Node.Admitted = fromUS(admitted)
	a.Node.Removed = fromNullUS(removed)
	return a, nil
}

// checkNode checks a node to admit: its facts and its tiers, which must
// be named, at least one, none twice.
func checkNode(n catalog.Node) error {
	if err := n.Validate(); err != nil {
		return err
	}
	if len(n.Tiers) == 0 {
		return &catalog.InvalidError{Field: "tiers", Message: "must name at least one tier"}
	}
	for i, t := range n.Tiers {
		if err := catalog.ValidName(fmt.Sprintf("tiers[%d]", i), t); err != nil {
			return err
		}
		if slices.Contains(n.Tiers[:i], t) {
			return &catalog.InvalidError{Field: fmt.Sprintf("tiers[%d]", i), Message: "is listed twice"}
		}
	}
	return nil
}

// nodeEvent logs a node event on tier, n being the node after the change,
// sealed on the hub, and returns the record and signature (nil unsealed).
func (c *changeTx) nodeEvent(ctx context.Context, typ catalog.EventType, tier string, n catalog.Node) (record, sig []byte, err error) {
	n.Tiers = []string{tier}
	e := logEntry{typ: typ, tier: tier, data: n}
	if err := c.seal(ctx, &e, store.SealRequest{Node: &n}, "node "+n.Name); err != nil {
		return nil, nil, err
	}
	if err := c.append(ctx, e); err != nil {
		return nil, nil, err
	}
	return e.record, e.sig, nil
}

// putAdmission writes the live admission of n on tier, replacing an
// earlier (removed) one of the same name.
func putAdmission(ctx context.Context, q querier, tier string, n catalog.Node, record, sig []byte) error {
	urls, err := json.Marshal(n.URLs)
	if err != nil {
		return err
	}
	_, err = q.ExecContext(ctx, `INSERT INTO node_admissions (tier, name, key, key_id, urls, admitted_us, removed_us, record, sig)
		VALUES ($1, $2, $3, $4, $5, $6, NULL, $7, $8)
		ON CONFLICT (tier, name) DO UPDATE SET key = excluded.key, key_id = excluded.key_id, urls = excluded.urls,
		  admitted_us = excluded.admitted_us, removed_us = NULL, record = excluded.record, sig = excluded.sig`,
		tier, n.Name, n.Key, n.KeyID, string(urls), us(n.Admitted), nullBytes(record), nullBytes(sig))
	if classify(err) == foreignKeyViolation {
		return fmt.Errorf("tier %q: %w", tier, catalog.ErrNotFound)
	}
	return err
}

// AdmitNode admits n on each of its tiers; see store.Roster.
func (s *Store) AdmitNode(ctx context.Context, n catalog.Node) (catalog.Node, error) {
	// The same node (key and URLs) admitted again is admitted on the
	// tiers it lacks, and nothing is removed: a removal followed by a new
	// admission would let a downstream that applied only the first refuse
	// that node's certificate, the only node that could bring it the
	// second.
	out, err := s.signAdmissions(ctx, "AdmitNode", "admit node", n, func(live []store.Admission) ([]string, error) {
		have := map[string]bool{}
		for _, a := range live {
			if a.Node.KeyID != n.KeyID || !slices.Equal(a.Node.URLs, n.URLs) {
				return nil, fmt.Errorf("node %q is admitted already under another key or URLs; remove it first: %w", n.Name, catalog.ErrConflict)
			}
			have[a.Node.Tiers[0]] = true
		}
		var sign []string
		for _, t := range n.Tiers {
			if !have[t] {
				sign = append(sign, t)
			}
		}
		if len(sign) == 0 {
			return nil, fmt.Errorf("node %q is admitted already on every tier it names: %w", n.Name, catalog.ErrConflict)
		}
		return sign, nil
	})
	out.Tiers = n.Tiers
	return out, err
}

// UpdateNode re-signs the live admissions of n.Name under n's URLs; see
// store.Roster. It is how an operator moves a node to new URLs without
// the removal a downstream could apply alone and then refuse the only
// upstream that would bring the new admission.
func (s *Store) UpdateNode(ctx context.Context, n catalog.Node) (catalog.Node, error) {
	return s.signAdmissions(ctx, "UpdateNode", "update node", n, func(live []store.Admission) ([]string, error) {
		if len(live) == 0 {
			return nil, fmt.Errorf("node %q: %w", n.Name, catalog.ErrNotFound)
		}
		changed := false
		var tiers []string
		for _, a := range live {
			tiers = append(tiers, a.Node.Tiers[0])
			if a.Node.KeyID != n.KeyID {
				return nil, fmt.Errorf("node %q is admitted under another key; remove it and admit the new key: %w", n.Name, catalog.ErrConflict)
			}
			if !slices.Equal(a.Node.URLs, n.URLs) {
				changed = true
			}
		}
		for _, t := range n.Tiers {
			if !slices.Contains(tiers, t) {
				tiers, changed = append(tiers, t), true
			}
		}
		if !changed {
			return nil, fmt.Errorf("node %q has those URLs on every tier named: %w", n.Name, catalog.ErrConflict)
		}
		return tiers, nil
	})
}

// signAdmissions is what AdmitNode and UpdateNode share: in one change it
// reads n.Name's live admissions, asks plan on which tiers to sign n's
// admission, and logs (sealed on a hub) and stores one per tier. The node
// it returns has those tiers.
func (s *Store) signAdmissions(ctx context.Context, op, what string, n catalog.Node, plan func(live []store.Admission) ([]string, error)) (out catalog.Node, err error) {
	defer s.done(op, time.Now(), &err)
	if err := checkNode(n); err != nil {
		return catalog.Node{}, fmt.Errorf("sqlstore: %s: %w", what, err)
	}
	n.Admitted = s.orNow(n.Admitted)
	n.Removed = time.Time{}
	n.URLs = slices.Clone(n.URLs)
	err = s.change(ctx, func(c *changeTx) error {
		live, err := admissions(ctx, c.tx, `a.name = $1 AND a.removed_us IS NULL`, n.Name)
		if err != nil {
			return err
		}
		tiers, err := plan(live)
		if err != nil {
			return err
		}
		for _, t := range tiers {
			if _, err := tier(ctx, c.tx, t); err != nil {
				return err
			}
			record, sig, err := c.nodeEvent(ctx, catalog.EventNodeAdmitted, t, n)
			if err != nil {
				return err
			}
			if err := putAdmission(ctx, c.tx, t, n, record, sig); err != nil {
				return err
			}
		}
		n.Tiers = tiers
		return nil
	})
	if err != nil {
		return catalog.Node{}, mapErr(what+" "+n.Name, err)
	}
	return n, nil
}

// RemoveNode takes back every live admission of name; see store.Roster.
func (s *Store) RemoveNode(ctx context.Context, name string, at time.Time) (err error) {
	defer s.done("RemoveNode", time.Now(), &err)
	if err := catalog.ValidNodeName("name", name); err != nil {
		return fmt.Errorf("sqlstore: remove node: %w", err)
	}
	at = s.orNow(at)
	err = s.change(ctx, func(c *changeTx) error {
		live, err := admissions(ctx, c.tx, `a.name = $1 AND a.removed_us IS NULL`, name)
		if err != nil {
			return err
		}
		if len(live) == 0 {
			return fmt.Errorf("node %q has no live admission: %w", name, catalog.ErrNotFound)
		}
		for _, a := range live {
			t := a.Node.Tiers[0]
			if _, err := c.tx.ExecContext(ctx, `UPDATE node_admissions SET removed_us = $1 WHERE tier = $2 AND name = $3`,
				us(at), t, name); err != nil {
				return err
			}
			n := a.Node
			n.Removed = at
			if _, _, err := c.nodeEvent(ctx, catalog.EventNodeRemoved, t, n); err != nil {
				return err
			}
		}
		return nil
	})
	return mapErr("remove node "+name, err)
}

// admissions reads the node_admissions rows matching where (over alias a,
// with arg as $1), in name and then tier order.
func admissions(ctx context.Context, q querier, where string, arg any) ([]store.Admission, error) {
	rows, err := q.QueryContext(ctx, `SELECT `+admissionCols+` FROM node_admissions a JOIN tiers t ON t.name = a.tier
		WHERE `+where+` ORDER BY a.name, t.position`, arg)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []store.Admission{}
	for rows.Next() {
		a, err := scanAdmission(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// Nodes lists every node admitted here, by name; see store.Roster. A node
// is described by its live admissions when it has any (they share one key,
// as a name is admitted again only once removed everywhere), else by its
// latest removed one.
func (s *Store) Nodes(ctx context.Context) (ns []catalog.Node, err error) {
	defer s.done("Nodes", time.Now(), &err)
	// No name is empty: the condition keeps admissions' one-argument form.
	all, err := admissions(ctx, s.db, `a.name <> $1`, "")
	if err != nil {
		return nil, mapErr("nodes", err)
	}
	ns = []catalog.Node{}
	for i := 0; i < len(all); {
		j := i
		for j < len(all) && all[j].Node.Name == all[i].Node.Name {
			j++
		}
		ns = append(ns, describeNode(all[i:j]))
		i = j
	}
	return ns, nil
}

// describeNode folds one name's admissions (tier order) into one Node.
func describeNode(as []store.Admission) catalog.Node {
	var n catalog.Node
	var tiers []string
	for _, a := range as {
		live := a.Node.Removed.IsZero()
		switch {
		case live && len(tiers) == 0:
			n = a.Node
		case !live && len(tiers) == 0 && a.Node.Removed.After(n.Removed):
			n = a.Node
		}
		if live {
			tiers = append(tiers, a.Node.Tiers[0])
		}
	}
	n.Tiers = tiers
	if n.Tiers == nil {
		n.Tiers = []string{}
	}
	return n
}

// Admissions lists the live admissions on tier; see store.Roster.
func (s *Store) Admissions(ctx context.Context, tier string) (as []store.Admission, err error) {
	defer s.done("Admissions", time.Now(), &err)
	as, err = admissions(ctx, s.db, `a.tier = $1 AND a.removed_us IS NULL`, tier)
	if err != nil {
		return nil, mapErr("admissions on "+tier, err)
	}
	return as, nil
}

// checkSyncedNode checks the node of a node event against what the store
// keeps of an admission.
func checkSyncedNode(ev store.SyncedEvent) error {
	n := ev.Node
	if n == nil {
		return &catalog.InvalidError{Field: "node", Message: fmt.Sprintf("must be set for a %s event", ev.Type)}
	}
	if ev.Token != nil {
		return &catalog.InvalidError{Field: "token", Message: fmt.Sprintf("must be absent for a %s event", ev.Type)}
	}
	if err := n.Validate(); err != nil {
		return err
	}
	if n.Admitted.IsZero() {
		return &catalog.InvalidError{Field: "node.admitted", Message: "must be set"}
	}
	if ev.Type == catalog.EventNodeRemoved && n.Removed.IsZero() {
		return &catalog.InvalidError{Field: "node.removed", Message: "must be set for a node.removed event"}
	}
	return nil
}

// applySyncedNode applies one synced node event to tierName and logs it
// with its record. An admission replaces what this tier held of the name,
// since records arrive in the hub's order and the latest one is the
// hub's word; it keeps the hub's record, which the roster serves. A
// removal takes back the admission of that name and key, if live.
func (c *changeTx) applySyncedNode(ctx context.Context, tierName string, ev store.SyncedEvent) error {
	n := *ev.Node
	n.URLs = slices.Clone(n.URLs)
	n.Tiers = []string{tierName}
	n.Admitted = n.Admitted.UTC().Truncate(time.Microsecond)
	switch ev.Type {
	case catalog.EventNodeAdmitted:
		n.Removed = time.Time{}
		if err := putAdmission(ctx, c.tx, tierName, n, ev.Record, ev.Sig); err != nil {
			return err
		}
	case catalog.EventNodeRemoved:
		n.Removed = n.Removed.UTC().Truncate(time.Microsecond)
		_, err := c.tx.ExecContext(ctx, `UPDATE node_admissions SET removed_us = $1
			WHERE tier = $2 AND name = $3 AND key = $4 AND removed_us IS NULL`, us(n.Removed), tierName, n.Name, n.Key)
		if err != nil {
			return err
		}
	default:
		return errors.New("not a node event")
	}
	return c.append(ctx, logEntry{
		typ: ev.Type, tier: tierName, data: n,
		record: ev.Record, sig: ev.Sig, hubSeq: ev.HubSeq,
	})
}
