// Package fleet_test measures fleet reports going up a mesh: the bytes a
// report round sends up each link, and what taking the pushes costs the hub.
package fleet_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/federation"
	"github.com/patchmesh/patchmesh/store"
	"github.com/patchmesh/patchmesh/store/sqlstore"
)

const (
	machines = 100_000
	relays   = 3
	perRelay = 3 // edges per relay: 9 in all
	kernel   = "5.15.0-107.117-generic"
)

func open(b *testing.B, name string) *sqlstore.Store {
	b.Helper()
	s, err := sqlstore.OpenSQLite(context.Background(), filepath.Join(b.TempDir(), name+".db"), sqlstore.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

// edgePush is what an edge of n machines pushes: its one entry, as the
// edge's Reporter builds it from its own store (built here directly, so
// that the benchmark need not register 100,000 machines through the API).
func edgePush(edge string, first, n int, rows bool, seq int64, now time.Time) federation.ReportPush {
	e := federation.ReportEntry{Node: edge, DC: "dc-" + edge[:6], AsOf: now, Rows: rows}
	states := []catalog.MachineState{catalog.StateApplied, catalog.StateApplyFailed, catalog.StateUnapplied, catalog.StateNothingToApply}
	counts := map[catalog.MachineState]int64{}
	for i := range n {
		st := states[(first+i)%len(states)]
		counts[st]++
		if rows {
			e.Machines = append(e.Machines, federation.ReportMachine{ID: fmt.Sprintf("%064x", first+i), Kernel: kernel,
				Arch: "x86_64", State: st, PatchVersion: "107.1", LastSeen: now})
		}
	}
	for _, st := range states {
		e.Counts = append(e.Counts, federation.ReportCount{Kernel: kernel, PatchVersion: "107.1", State: st, Machines: counts[st]})
	}
	return federation.ReportPush{V: federation.FormatVersion, Node: edge, Tier: "edge", Seq: seq, Entries: []federation.ReportEntry{e}}
}

// take is what a node does with a push it receives: decode, validate,
// store.
func take(b *testing.B, s *sqlstore.Store, token string, body []byte, now time.Time) {
	b.Helper()
	var p federation.ReportPush
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		b.Fatal(err)
	}
	if err := p.Validate(now); err != nil {
		b.Fatal(err)
	}
	if err := s.PutFleetReport(context.Background(), store.FleetPush{Tier: "edge", TokenID: token, Node: p.Node, Seq: p.Seq, Entries: p.StoreEntries()}); err != nil {
		b.Fatal(err)
	}
}

func cpu() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkReportRound is one report round of 100,000 machines on 9 edges
// under 3 relays, in one process over SQLite stores: each edge's push is
// taken by its relay, each relay builds its own push (its subtree) with a
// real Reporter and the hub takes it. Reported: bytes up an edge's link and
// up a relay's link per round, and the hub's CPU per round (decoding,
// validating and storing the three relay pushes). HTTP and TLS are not in
// the figures.
func BenchmarkReportRound(b *testing.B) {
	for _, rows := range []bool{false, true} {
		name := "counts"
		if rows {
			name = "rows"
		}
		b.Run(name, func(b *testing.B) {
			hub := open(b, "hub")
			rs := make([]*sqlstore.Store, relays)
			reporters := make([]*federation.Reporter, relays)
			for r := range relays {
				rs[r] = open(b, fmt.Sprintf("relay-%d", r))
				var err error
				reporters[r], err = federation.NewReporter(federation.ReporterConfig{
					Store: rs[r], Client: http.DefaultClient, Links: func() []federation.LinkUpstream { return nil },
					Node: fmt.Sprintf("relay-%d", r), DC: fmt.Sprintf("dc-relay%d", r), Machines: rows,
				})
				if err != nil {
					b.Fatal(err)
				}
			}
			per := machines / (relays * perRelay)
			var edgeBytes, relayBytes, hubCPU float64
			b.ResetTimer()
			for i := range b.N {
				now := time.Now().UTC()
				seq := int64(i + 1)
				for r := range relays {
					for e := range perRelay {
						k := r*perRelay + e
						n := per
						if k == relays*perRelay-1 {
							n = machines - per*k
						}
						body, err := json.Marshal(edgePush(fmt.Sprintf("edge-%d%d", r, e), k*per, n, rows, seq, now))
						if err != nil {
							b.Fatal(err)
						}
						edgeBytes += float64(len(body))
						take(b, rs[r], fmt.Sprintf("e%015d", k), body, now)
					}
				}
				var bodies [][]byte
				for r := range relays {
					p, err := reporters[r].Build(context.Background(), federation.LinkUpstream{Tier: "edge", HubTier: "edge"})
					if err != nil {
						b.Fatal(err)
					}
					body, err := json.Marshal(p)
					if err != nil {
						b.Fatal(err)
					}
					relayBytes += float64(len(body))
					bodies = append(bodies, body)
				}
				before := cpu()
				for r, body := range bodies {
					take(b, hub, fmt.Sprintf("r%015d", r), body, now)
				}
				hubCPU += float64(cpu() - before)
			}
			b.ReportMetric(edgeBytes/float64(b.N*relays*perRelay), "B/edge-link")
			b.ReportMetric(relayBytes/float64(b.N*relays), "B/relay-link")
			b.ReportMetric(hubCPU/float64(b.N)/1e6, "hub-cpu-ms/round")
			// The hub holds the whole fleet, once.
			ts, err := hub.FleetSummary(context.Background(), "hub", "dc-hub", store.FleetFilter{})
			if err != nil {
				b.Fatal(err)
			}
			var total int64
			for _, t := range ts {
				total += t.Machines
			}
			if total != machines {
				b.Fatalf("hub summary: want %d machines, got %d", machines, total)
			}
		})
	}
}
