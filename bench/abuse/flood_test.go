// Package abuse_test measures what a flood of wrong admin logins costs the
// real traffic of a node: machine check-ins per second on one real
// patchmesh process on loopback, without a flood and then with 200
// concurrent wrong logins running, in the same run. Every wrong login uses
// a fresh user name and client address (named by a trusted proxy's
// X-Forwarded-For), so that the per-name and per-address limits never
// refuse it early: only the bcrypt pool (auth.bcrypt_concurrency) stands
// between the flood and the cores. The admin hash and the unknown-user
// dummy hash are at bcrypt cost 12, the node's default.
// bench/RESULTS.md records the figures and the command.
package abuse_test

import (
	"context"
	"encoding/base64"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/auth"
	"github.com/patchmesh/patchmesh/internal/meshtest"
	"github.com/patchmesh/patchmesh/node"
)

func TestMain(m *testing.M) { os.Exit(meshtest.Main(m)) }

var (
	phase    = flag.Duration("phase", 5*time.Second, "how long each phase (without, with the flood) measures check-ins")
	checkers = flag.Int("checkers", 8, "concurrent machines checking in")
	flooders = flag.Int("flooders", 200, "concurrent wrong logins")
	pool     = flag.Int("bcrypt-concurrency", 0, "auth.bcrypt_concurrency override (0 keeps the default)")
)

func BenchmarkCheckInsUnderLoginFlood(b *testing.B) {
	hash, err := auth.HashPassword(meshtest.AdminPassword, 12)
	if err != nil {
		b.Fatal(err)
	}
	m := meshtest.New(b)
	// Plain node-to-node traffic, as bench/RESULTS.md measured it (mutual
	// TLS is meshtest's default; nodetls_test.go measures its cost).
	m.MTLS = false
	hub := m.Start(meshtest.Spec{Name: "hub", Role: node.RoleHub, Configure: func(c *node.Config) {
		c.Server.TrustedProxies = []string{"127.0.0.0/8"}
		c.Auth.Admins[0].PasswordHash = hash
		c.Auth.BcryptCost = 12
		if *pool > 0 {
			c.Auth.BcryptConcurrency = *pool
		}
	}})
	tokens := make([]string, *checkers)
	auth := hub.AuthToken(b, "stable", "bench")
	for i := range tokens {
		tokens[i] = hub.Register(b, auth, fmt.Sprintf("machine-bench-%08d", i), "5.15.0-107.117-generic", "x86_64")
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1024}}

	for b.Loop() {
		without := checkIns(b, client, hub.URL, tokens, nil)
		var floodAnswers sync.Map
		with := checkIns(b, client, hub.URL, tokens, func(ctx context.Context) { flood(ctx, client, hub.URL, &floodAnswers) })
		b.ReportMetric(without, "checkins/s-alone")
		b.ReportMetric(with, "checkins/s-flood")
		b.ReportMetric(with/without, "ratio")
		got := map[int]int64{}
		floodAnswers.Range(func(k, v any) bool { got[k.(int)] = v.(*atomic.Int64).Load(); return true })
		b.Logf("check-ins/s: %.0f alone, %.0f during %d concurrent wrong logins (ratio %.2f); flood answers by status %v",
			without, with, *flooders, with/without, got)
	}
}

// checkIns runs the checkers for one phase, with background running
// beside them if not nil, and returns check-ins per second.
func checkIns(b *testing.B, c *http.Client, base string, tokens []string, background func(context.Context)) float64 {
	ctx, cancel := context.WithTimeout(b.Context(), *phase)
	defer cancel()
	var wg sync.WaitGroup
	if background != nil {
		wg.Go(func() { background(ctx) })
	}
	var ok, bad atomic.Int64
	start := time.Now()
	for _, tok := range tokens {
		wg.Go(func() {
			for ctx.Err() == nil {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/client/patch?kernel=5.15.0-107.117-generic&arch=x86_64", nil)
				req.Header.Set("Authorization", "Bearer "+tok)
				resp, err := c.Do(req)
				if err != nil {
					continue // the phase's end
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusNotFound {
					ok.Add(1)
				} else {
					bad.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if bad.Load() > 0 {
		b.Logf("%d check-ins refused (503 under load)", bad.Load())
	}
	return float64(ok.Load()) / time.Since(start).Seconds()
}

// flood runs *flooders goroutines of wrong logins, each with a fresh name
// and address, until ctx ends, counting answers by status.
func flood(ctx context.Context, c *http.Client, base string, answers *sync.Map) {
	var seq atomic.Int64
	var wg sync.WaitGroup
	for range *flooders {
		wg.Go(func() {
			for ctx.Err() == nil {
				n := seq.Add(1)
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/admin/login", nil)
				req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString(fmt.Appendf(nil, "guess-%d:wrong-password", n)))
				req.Header.Set("X-Forwarded-For", fmt.Sprintf("198.18.%d.%d", n/250%250, n%250+1))
				resp, err := c.Do(req)
				if err != nil {
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				v, _ := answers.LoadOrStore(resp.StatusCode, new(atomic.Int64))
				v.(*atomic.Int64).Add(1)
			}
		})
	}
	wg.Wait()
}
