package node

import (
	"context"

	"github.com/patchmesh/patchmesh/rollout"
	"github.com/patchmesh/patchmesh/store"
)

// newRollouts builds the hub's rollout runner; nil elsewhere, where the
// admin API answers changes with not_hub and the node only enforces the
// signed state it holds.
func (n *Node) newRollouts() *rollout.Manager {
	if n.hubKey == nil {
		return nil
	}
	return rollout.New(rollout.Config{
		Store: n.store, Node: n.cfg.Node.Name, DC: n.cfg.Node.Datacenter,
		KnownDCs: n.knownDCs, Emit: n.hooks, Tick: n.cfg.Rollouts.Tick, Now: n.now, Log: n.log,
	})
}

// knownDCs lists the data centres this node has heard of: every gossip
// member's, and every one the fleet reports name. A rollout plan's waves
// must each match one, so a typo in a label is refused, not waited on.
func (n *Node) knownDCs(ctx context.Context) ([]string, error) {
	var dcs []string
	if n.gossip != nil {
		for _, m := range n.gossip.topo.Members() {
			if m.DC != "" {
				dcs = append(dcs, m.DC)
			}
		}
	}
	ts, err := n.store.FleetSummary(ctx, n.cfg.Node.Name, n.cfg.Node.Datacenter, store.FleetFilter{})
	if err != nil {
		return nil, err
	}
	for _, t := range ts {
		if t.DC != "" {
			dcs = append(dcs, t.DC)
		}
	}
	return dcs, nil
}
