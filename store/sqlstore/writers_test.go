package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/store"
)

// BenchmarkConcurrentWrites is a relay's store while its downstreams push
// fleet reports at once: writers goroutines, each pushing for a link of its
// own, on one SQLite database. It reports the writes' latency (p50, p99,
// max) beside ns/op, since a write that waits is what holds up the node's
// other work; a write is one PutFleetReport of a ten-node subtree.
// queue=off leaves the writers to SQLite's own retries (no writeLock).
func BenchmarkConcurrentWrites(b *testing.B) {
	for _, writers := range []int{1, 4, 16} {
		for _, queue := range []bool{true, false} {
			b.Run(fmt.Sprintf("writers=%d/queue=%s", writers, map[bool]string{true: "on", false: "off"}[queue]), func(b *testing.B) {
				benchWriters(b, writers, queue)
			})
		}
	}
}

func benchWriters(b *testing.B, writers int, queue bool) {
	s, err := OpenSQLite(context.Background(), filepath.Join(b.TempDir(), "bench.db"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	if !queue {
		s.writer = nil
	}
	ctx := context.Background()
	entries := make([]store.FleetEntry, 10)
	for i := range entries {
		entries[i] = store.FleetEntry{Node: fmt.Sprintf("edge-%d", i), DC: "dc1", AsOf: time.Now()}
	}
	var (
		mu   sync.Mutex
		took []time.Duration
		wg   sync.WaitGroup
	)
	next := make(chan int64, writers)
	b.ResetTimer()
	for w := range writers {
		wg.Go(func() {
			var mine []time.Duration
			for seq := range next {
				start := time.Now()
				err := s.PutFleetReport(ctx, store.FleetPush{Tier: "stable", TokenID: fmt.Sprintf("link-%d", w),
					Node: fmt.Sprintf("relay-%d", w), Seq: seq, Entries: entries})
				if err != nil {
					b.Error(err)
					return
				}
				mine = append(mine, time.Since(start))
			}
			mu.Lock()
			took = append(took, mine...)
			mu.Unlock()
		})
	}
	// Every writer's link takes its pushes in order: seq i goes to
	// whichever writer is free, and each keeps its own count.
	for i := range b.N {
		next <- int64(i + 1)
	}
	close(next)
	wg.Wait()
	b.StopTimer()
	if len(took) == 0 {
		return
	}
	slices.Sort(took)
	q := func(f float64) float64 { return float64(took[int(f*float64(len(took)-1))].Microseconds()) }
	b.ReportMetric(q(0.5), "p50-µs")
	b.ReportMetric(q(0.99), "p99-µs")
	b.ReportMetric(q(1), "max-µs")
}

// Writers waiting for their turn hold no pool connection: with one write
// in progress and twenty more queued behind it, reads still find a free
// connection at once, and every queued write commits once the first
// does. A queued write whose context ends gives up without writing.
func TestQueuedWritersLeaveThePoolToReaders(t *testing.T) {
	s, err := OpenSQLite(t.Context(), filepath.Join(t.TempDir(), "p.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := t.Context()
	holding, release := make(chan struct{}), make(chan struct{})
	first := make(chan error, 1)
	go func() {
		first <- s.inTx(ctx, func(tx *sql.Tx) error {
			close(holding)
			<-release
			return nil
		})
	}()
	<-holding
	const queued = 20
	errs := make(chan error, queued)
	for i := range queued {
		go func() {
			errs <- s.PutFleetReport(ctx, store.FleetPush{Tier: "stable", TokenID: fmt.Sprintf("link-%d", i), Node: "relay", Seq: 1})
		}()
	}
	// Let the writers reach their wait.
	time.Sleep(200 * time.Millisecond)
	if inUse := s.db.Stats().InUse; inUse > 1 {
		t.Errorf("%d pool connections in use with one write in progress and %d queued; want only the writer's", inUse, queued)
	}
	readCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := s.Head(readCtx); err != nil {
		t.Errorf("a read while writes queue: %v", err)
	}
	late, cancelLate := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancelLate()
	if err := s.PutFleetReport(late, store.FleetPush{Tier: "stable", TokenID: "late", Node: "relay", Seq: 1}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a queued write whose context ended: %v, want its deadline", err)
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	for range queued {
		if err := <-errs; err != nil {
			t.Errorf("queued write: %v", err)
		}
	}
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM fleet_pushes`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != queued {
		t.Errorf("%d pushes recorded, want the %d queued (and not the one that gave up)", n, queued)
	}
}
