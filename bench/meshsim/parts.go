package main

import (
	"context"
	"encoding/json"
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
// idle costs.

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
		b, err := json.Marshal(sharedState{GossipKey: m.gossipKey, PoolKeys: m.poolKeys, AdminHash: m.adminHash})
		if err != nil {
			return err
		}
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, b, 0o600); err != nil {
			return err
		}
		return os.Rename(tmp, path)
	}
	if err := waitFile(ctx, path, m.cfg.within); err != nil {
		return err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var st sharedState
	if err := json.Unmarshal(b, &st); err != nil {
		return err
	}
	m.gossipKey, m.adminHash = st.GossipKey, st.AdminHash
	if m.pools != nil {
		m.poolKeys = st.PoolKeys
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
		case <-time.After(200 * time.Millisecond):
		}
	}
}
