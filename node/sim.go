package node

import (
	"net"

	"github.com/patchmesh/patchmesh/topology"
)

// This file holds what a harness running many nodes in one process needs
// beyond what `patchmesh serve` uses (bench/meshsim): a hook on the
// listener, a crash without a goodbye, and a read of the gossip view
// without going through HTTP. A deployed node uses none of it.

// WithListener has New wrap the node's bound listener in wrap before
// anything serves on it, e.g. to count the bytes the node sends on the
// wire. wrap must keep the listener's address.
func WithListener(wrap func(net.Listener) net.Listener) Option {
	return func(o *options) { o.wrapListener = wrap }
}

// Crash stops the node as a SIGKILL would, as far as the rest of the mesh
// can tell: gossip goes silent without a leave (others see it suspect,
// then dead), and every HTTP connection, long polls included, is cut at
// once. Run then returns an error wrapping http.ErrServerClosed and
// releases the store. Crash is for harnesses that cannot kill a process
// per node; it is safe to call once the node runs, and more than once.
func (n *Node) Crash() {
	if n.gossip != nil {
		n.gossip.topo.Close()
	}
	if n.srv != nil {
		n.srv.Close()
	}
}

// Members is the node's view of the mesh's membership, sorted by name;
// nil with gossip off.
func (n *Node) Members() []topology.Member {
	if n.gossip == nil {
		return nil
	}
	return n.gossip.topo.Members()
}

// WithMemberWatch has the node call fn with every change of a member its
// gossip reports (joins, meta updates, suspect, dead, left), from the
// gossip's notifier goroutine, so that a harness times when each node
// learns something without polling every node's view. fn must be quick.
func WithMemberWatch(fn func(topology.Member)) Option {
	return func(o *options) { o.memberWatch = fn }
}

// GossipStats is the node's gossip traffic on the wire and its members by
// state; the zero Stats with gossip off.
func (n *Node) GossipStats() topology.Stats {
	if n.gossip == nil {
		return topology.Stats{}
	}
	return n.gossip.topo.Stats()
}
