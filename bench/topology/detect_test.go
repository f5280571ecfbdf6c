package topology_test

import (
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/internal/meshtest"
)

// BenchmarkFailureDetection kills a node with SIGKILL, -trials times, a
// different non-hub node each time in turn, and times until every other
// node's view (GET /v1/topology, read every -poll) has it dead. Between
// trials the victim is restarted and the next kill waits until all 13
// count each other alive again. Reported: the time until the last node
// knew (the figure of the goal, p99 ≤ 5 s), and, over every (trial, node)
// pair, until each node knew.
func BenchmarkFailureDetection(b *testing.B) {
	x := startMesh13(b)
	all := x.all()
	var lastNode, eachNode []time.Duration
	for i := range *trials {
		victim := all[1+i%(len(all)-1)]
		others := without(all, victim)
		victim.Kill(b)
		took := x.waitViews(b, others, "seeing "+victim.Name+" dead", func(v meshtest.Topology) bool {
			return v.State(victim.Name) == "dead"
		})
		lastNode = append(lastNode, slicesMax(took))
		eachNode = append(eachNode, took...)
		b.Logf("trial %d: %s dead on all %d others after %v", i+1, victim.Name, len(others), slicesMax(took).Round(time.Millisecond))
		victim.Start(b)
		x.waitViews(b, all, "all 13 alive", allAlive(all))
	}
	report(b, "kill to dead on every other node", lastNode, "all")
	report(b, "kill to dead on one node", eachNode, "each")
}

func slicesMax(ds []time.Duration) time.Duration {
	var m time.Duration
	for _, d := range ds {
		m = max(m, d)
	}
	return m
}

func without(nodes []*meshtest.Node, drop *meshtest.Node) []*meshtest.Node {
	var out []*meshtest.Node
	for _, n := range nodes {
		if n != drop {
			out = append(out, n)
		}
	}
	return out
}
