package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// A mesh split over several meshsim processes (-parts k -part i -state
// dir): every process builds the same shape and configs from one shared
// state (keys, credentials) under dir, starts the nodes of its share of
// the regions (the hub with part 0), and they meet over loopback as any
// nodes do. One process cannot host a thousand SQLite-backed nodes:
// modernc.org/sqlite keeps every connection's page cache behind one
// process-wide mutex (bench/RESULTS.md, "Gossip pools per region").
// Part 0 measures propagation and egress over every node (blob files
// are on the shared tmpfs); each part measures its own nodes' memory and
// idle costs, the kill where the victim runs, and the failover's
// arrivals on its own nodes, which part 0 gathers.

// sharedState is what every part must agree on, written by part 0.
type sharedState struct {
	GossipKey string            `json:"gossip_key"`
	PoolKeys  map[string]string `json:"pool_keys"`
	AdminHash string            `json:"admin_hash"`
}

// owns says whether this process runs node i: its region (level-1
// subtree) falls to this part; the hub is part 0's.
func (m *mesh) owns(i int) bool {
	if m.cfg.parts <= 1 {
		return true
	}
	if i == 0 {
		return m.cfg.part == 0
	}
	top := i
	for m.shape[top].Upstreams[0] != 0 {
		top = m.shape[top].Upstreams[0]
	}
	return (top-1)%m.cfg.parts == m.cfg.part
}

// shareState has part 0 write the keys and credentials, and the other
// parts wait for them and take them.
func (m *mesh) shareState(ctx context.Context) error {
	path := filepath.Join(m.dir, "state.json")
	if m.cfg.part == 0 {
		return writeShared(path, sharedState{GossipKey: m.gossipKey, PoolKeys: m.poolKeys, AdminHash: m.adminHash})
	}
	var st sharedState
	if err := readShared(ctx, path, m.cfg.within, 200*time.Millisecond, &st); err != nil {
		return err
	}
	m.gossipKey, m.adminHash = st.GossipKey, st.AdminHash
	if m.pools != nil {
		m.poolKeys = st.PoolKeys
	}
	return nil
}

// writeShared writes v as JSON to path in the shared directory, whole or
// not at all: the other parts read it as soon as it is there.
func writeShared(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// readShared waits for path, for at most within, looking every so often,
// and reads its JSON into v.
func readShared(ctx context.Context, path string, within, every time.Duration, v any) error {
	if err := waitFileEvery(ctx, path, within, every); err != nil {
		return err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// barrier marks this part as at name and waits until every part is.
func (m *mesh) barrier(ctx context.Context, name string, within time.Duration) error {
	if m.cfg.parts <= 1 {
		return nil
	}
	if err := os.WriteFile(filepath.Join(m.dir, fmt.Sprintf("%s-%d", name, m.cfg.part)), nil, 0o600); err != nil {
		return err
	}
	for p := range m.cfg.parts {
		if err := waitFile(ctx, filepath.Join(m.dir, fmt.Sprintf("%s-%d", name, p)), within); err != nil {
			return err
		}
	}
	return nil
}

// waitFile waits for path to exist, for at most within.
func waitFile(ctx context.Context, path string, within time.Duration) error {
	return waitFileEvery(ctx, path, within, 200*time.Millisecond)
}

// waitFileEvery is waitFile looking every so often: the failover's upload
// follows the kill in another part by at most that.
func waitFileEvery(ctx context.Context, path string, within, every time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not there after %v", path, within)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(every):
		}
	}
}

// failoverKill is when the part that runs the failover's victim killed
// it, on the machine's clock, which every part reads.
type failoverKill struct {
	At int64 `json:"at_unix_nano"`
}

// failoverFigures are one part's arrivals of the failover's patch on its
// own nodes, from the kill, for part 0 to report.
type failoverFigures struct {
	// SubtreeNodes counts the part's live nodes below the victim.
	SubtreeNodes int             `json:"subtree_nodes"`
	Subtree      []time.Duration `json:"subtree"`
	Rest         []time.Duration `json:"rest"`
	Err          string          `json:"err,omitempty"`
}

// measureFailoverParts is measureFailover over the parts. Part 0 makes
// the patch and tells every part its digest, so that each watches for it
// from the kill on. After a barrier (every part's kill measurement done)
// the part that runs victim kills it and writes down when; part 0 uploads
// the patch as soon as it reads that; each part times the arrivals on its
// own nodes from the kill and writes them down; part 0 reports them all.
func (m *mesh) measureFailoverParts(ctx context.Context, r *results, victim *simNode) error {
	digestPath := filepath.Join(m.dir, "failover-digest.json")
	killPath := filepath.Join(m.dir, "failover-kill.json")
	figuresPath := func(part int) string { return filepath.Join(m.dir, fmt.Sprintf("failover-figures-%d.json", part)) }
	var content []byte
	var digest string
	if m.cfg.part == 0 {
		var err error
		if content, digest, err = m.newPatch(); err != nil {
			return err
		}
		if err := writeShared(digestPath, digest); err != nil {
			return err
		}
	}
	if err := m.barrier(ctx, "failover", m.cfg.timeout); err != nil {
		return err
	}
	if m.cfg.part > 0 {
		if err := readShared(ctx, digestPath, m.cfg.within, m.cfg.poll, &digest); err != nil {
			return err
		}
	}
	if m.owns(victim.i) {
		start := time.Now()
		if err := m.crash(victim, m.cfg.within); err != nil {
			return err
		}
		if err := writeShared(killPath, failoverKill{At: start.UnixNano()}); err != nil {
			return err
		}
	}
	var kill failoverKill
	if err := readShared(ctx, killPath, m.cfg.within, m.cfg.poll, &kill); err != nil {
		return fmt.Errorf("failover: the kill of %s: %w", victim.spec.Name, err)
	}
	start := time.Unix(0, kill.At)
	var uploaded time.Duration
	if m.cfg.part == 0 {
		if err := m.put(ctx, content, digest); err != nil {
			return err
		}
		uploaded = time.Since(start)
	}
	mine := failoverFigures{SubtreeNodes: m.liveBelow(victim)}
	sub, rest, err := m.failoverArrivals(ctx, victim, digest, start)
	mine.Subtree, mine.Rest = sub, rest
	if err != nil {
		// Part 0 says which part failed rather than waiting in vain.
		mine.Err = err.Error()
	}
	if werr := writeShared(figuresPath(m.cfg.part), mine); werr != nil || err != nil {
		return fmt.Errorf("failover: %w", errors.Join(err, werr))
	}
	if m.cfg.part > 0 {
		r.printf("failover: the patch timed on %d of killed relay %s's downstreams and %d other nodes in this part, for part 0 to report",
			len(sub), victim.spec.Name, len(rest))
		return nil
	}
	// Every part's arrivals end within cfg.within of the kill, as ours did.
	subtree := 0
	sub, rest = nil, nil
	for p := range m.cfg.parts {
		var f failoverFigures
		if err := readShared(ctx, figuresPath(p), m.cfg.within, m.cfg.poll, &f); err != nil {
			return fmt.Errorf("failover: part %d's figures: %w", p, err)
		}
		if f.Err != "" {
			return fmt.Errorf("failover: part %d: %s", p, f.Err)
		}
		subtree += f.SubtreeNodes
		sub, rest = append(sub, f.Subtree...), append(rest, f.Rest...)
	}
	m.reportFailover(r, victim, uploaded, subtree, sub, rest)
	return nil
}
