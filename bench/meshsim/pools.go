package main

import (
	"encoding/base64"
	"fmt"
	"net"
	"slices"
	"strconv"

	"github.com/patchmesh/patchmesh/node"
	"github.com/patchmesh/patchmesh/topology"
)

// backbonePool is the pool of the hub and the level-1 relays.
const backbonePool = "backbone"

// poolsFor is the gossip pools of each node of s under mode: nil for one
// pool; else the hub in the backbone, each level-1 relay (a node whose
// first upstream is the hub) in the backbone and its own region's pool,
// every other node in the region of its level-1 ancestor, as docs/scale.md
// lays out a large mesh.
func poolsFor(s shape, mode string) ([][]string, error) {
	levels := 0
	for _, sp := range s {
		levels = max(levels, sp.Level+1)
	}
	switch mode {
	case "one":
		return nil, nil
	case "", "auto":
		if levels < 3 || len(s) < 300 {
			return nil, nil
		}
	case "region":
	default:
		return nil, fmt.Errorf("-pools: want one, region or auto, got %q", mode)
	}
	out := make([][]string, len(s))
	out[0] = []string{backbonePool}
	for i := 1; i < len(s); i++ {
		top := i
		for s[top].Upstreams[0] != 0 {
			top = s[top].Upstreams[0]
		}
		region := "region-" + s[top].Name
		if top == i {
			out[i] = []string{backbonePool, region}
		} else {
			out[i] = []string{region}
		}
	}
	return out, nil
}

// setPools gives each node its pools, their addresses (the node's gossip
// port, then the next ones) and a key per pool, and counts whom each node
// should see alive once the mesh converged: the members of its pools.
func (m *mesh) setPools(pools [][]string) error {
	m.pools = pools
	m.poolKeys = map[string]string{}
	m.poolMembers = map[string][]int{}
	for i, ps := range pools {
		sn := m.nodes[i]
		sn.poolAddr = map[string]string{}
		for k, p := range ps {
			sn.poolAddr[p] = net.JoinHostPort(sn.host, strconv.Itoa(m.cfg.gossipPort+k))
			m.poolMembers[p] = append(m.poolMembers[p], i)
			if _, ok := m.poolKeys[p]; !ok {
				k, err := topology.NewKey()
				if err != nil {
					return err
				}
				m.poolKeys[p] = base64.StdEncoding.EncodeToString(k)
			}
		}
	}
	return nil
}

// sharesPool lists the nodes that gossip with node i (i included): every
// node with one pool, the members of its pools with several.
func (m *mesh) sharesPool(i int) []int {
	if m.pools == nil {
		out := make([]int, len(m.nodes))
		for j := range out {
			out[j] = j
		}
		return out
	}
	var out []int
	for _, p := range m.pools[i] {
		for _, j := range m.poolMembers[p] {
			if !slices.Contains(out, j) {
				out = append(out, j)
			}
		}
	}
	slices.Sort(out)
	return out
}

// gossipConfig fills in sn's gossip pools: each joined through its first
// member (the hub or the region's level-1 relay), sn's parent if it is in
// the pool, and the member added just before sn.
func (m *mesh) gossipConfig(sn *simNode, cfg *node.Config) {
	cfg.Gossip.Bind = ""
	for _, p := range m.pools[sn.i] {
		pc := node.GossipPoolConfig{Name: p, Bind: sn.poolAddr[p], Keys: []string{m.poolKeys[p]},
			ProbeInterval: m.cfg.probeInterval, ProbeTimeout: m.cfg.probeTimeout}
		members := m.poolMembers[p]
		at := slices.Index(members, sn.i)
		var seeds []string
		if at > 0 {
			seeds = append(seeds, m.nodes[members[0]].poolAddr[p])
			if len(sn.spec.Upstreams) > 0 {
				if parent := m.nodes[sn.spec.Upstreams[0]]; parent.poolAddr[p] != "" && parent.i != members[0] {
					seeds = append(seeds, parent.poolAddr[p])
				}
			}
			if prev := members[at-1]; prev != members[0] && prev != sn.spec.Upstreams[0] {
				seeds = append(seeds, m.nodes[prev].poolAddr[p])
			}
		}
		pc.Join = seeds
		cfg.Gossip.Pools = append(cfg.Gossip.Pools, pc)
	}
}

// describePools says how gossip is split, for the run's header.
func (m *mesh) describePools() string {
	if m.pools == nil {
		return "one gossip pool"
	}
	largest := 0
	for _, ms := range m.poolMembers {
		largest = max(largest, len(ms))
	}
	return fmt.Sprintf("%d gossip pools (backbone of %d, largest %d)", len(m.poolMembers), len(m.poolMembers[backbonePool]), largest)
}
