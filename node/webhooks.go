package node

import (
	"context"
	"slices"
	"time"

	"github.com/patchmesh/patchmesh/federation"
	"github.com/patchmesh/patchmesh/topology"
	"github.com/patchmesh/patchmesh/webhook"
)

// watchEvery is how often the node looks for members gone dead and links
// gone failing, to tell the webhooks.
const watchEvery = time.Second

// NodeDownData is the data of a node.down event.
type NodeDownData struct {
	Name  string    `json:"name"`
	Role  string    `json:"role"`
	DC    string    `json:"dc"`
	URL   string    `json:"url"`
	Since time.Time `json:"since"`
}

// SyncFailingData is the data of a sync.failing event.
type SyncFailingData struct {
	Tier        string    `json:"tier"`
	HubTier     string    `json:"hub_tier"`
	Upstream    string    `json:"upstream"`
	LastError   string    `json:"last_error"`
	LastErrorAt time.Time `json:"last_error_at"`
}

// watchHealth emits node.down when gossip first marks a member dead and
// sync.failing when a link turns failing, each once per transition, until
// ctx ends. Members dead and links failing when the node starts are taken
// as they are: a restart does not announce them again.
func (n *Node) watchHealth(ctx context.Context) {
	dead := map[string]bool{}
	failing := map[string]bool{}
	first := true
	// seen is the gossip's change count at the last scan: with no change
	// since, no member can have died, and a scan of every member each
	// second is n² work across a mesh of n nodes.
	seen := uint64(0)
	tick := time.NewTicker(watchEvery)
	defer tick.Stop()
	for {
		var downs []NodeDownData
		var fails []SyncFailingData
		if k := n.gossipChanges(); n.gossip != nil && (first || k != seen) {
			seen = k
			now := map[string]bool{}
			for _, m := range n.gossip.topo.Members() {
				if m.Self || m.State != topology.Dead {
					continue
				}
				now[m.Name] = true
				if !dead[m.Name] {
					downs = append(downs, NodeDownData{Name: m.Name, Role: m.Role, DC: m.DC, URL: m.API, Since: m.Since.UTC()})
				}
			}
			dead = now
		}
		if n.puller != nil {
			now := map[string]bool{}
			for _, l := range n.puller.Status() {
				if l.State != federation.LinkFailing {
					continue
				}
				now[l.Tier] = true
				if !failing[l.Tier] {
					fails = append(fails, SyncFailingData{Tier: l.Tier, HubTier: l.HubTier, Upstream: l.Upstream,
						LastError: l.LastError, LastErrorAt: l.LastErrorAt.UTC()})
				}
			}
			failing = now
		}
		if !first {
			slices.SortFunc(downs, func(a, b NodeDownData) int { return a.Since.Compare(b.Since) })
			for _, d := range downs {
				n.emit(ctx, webhook.NodeDown, d)
			}
			for _, f := range fails {
				n.emit(ctx, webhook.SyncFailing, f)
			}
		}
		first = false
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (n *Node) emit(ctx context.Context, event string, data any) {
	if err := n.hooks.Emit(ctx, event, data); err != nil && ctx.Err() == nil {
		n.log.Warn("webhook_emit_failed", "event", event, "error", err.Error())
	}
}

// Webhooks is the node's webhook dispatcher. Rollouts emit their events
// through its Emit.
func (n *Node) Webhooks() *webhook.Dispatcher { return n.hooks }

// gossipChanges is the gossip's change count; 0 with gossip off.
func (n *Node) gossipChanges() uint64 {
	if n.gossip == nil {
		return 0
	}
	return n.gossip.Changes()
}
