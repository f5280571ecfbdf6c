package replicate

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/blob"
)

func (r *Replicator) awaiting(d blob.Digest) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if a, ok := r.awaits[d]; ok {
		return a.n
	}
	return 0
}

// Await returns when a transfer commits the blob, not at the end of its
// context, and leaves nothing registered behind.
func TestAwaitWakesWhenATransferCommits(t *testing.T) {
	up := newUpstream(t)
	l := newLocal(t)
	r := newReplicator(t, l, Config{})
	w := up.add(randomBytes(t, 20_000))
	arrived, release := holdFirst(up)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	const waiters = 3
	awaited := make(chan error, waiters)
	for range waiters {
		go func() { awaited <- r.Await(ctx, w.Digest) }()
	}
	waitFor(t, "the waiters to register", func() bool { return r.awaiting(w.Digest) == waiters })
	fetched := make(chan error, 1)
	go func() {
		_, err := r.Fetch(context.Background(), up.source(), []Want{w})
		fetched <- err
	}()
	<-arrived
	select {
	case err := <-awaited:
		t.Fatalf("Await returned before the blob was committed: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	if err := <-fetched; err != nil {
		t.Fatal(err)
	}
	for i := range waiters {
		if err := <-awaited; err != nil {
			t.Errorf("waiter %d: want nil once committed, got %v", i, err)
		}
	}
	if ctx.Err() != nil {
		t.Error("the waiters woke only when their context ended")
	}
	if n := r.awaiting(w.Digest); n != 0 {
		t.Errorf("want nothing registered after the commit, got %d waiters", n)
	}
}

func TestAwaitPresentAndAbsent(t *testing.T) {
	up := newUpstream(t)
	l := newLocal(t)
	r := newReplicator(t, l, Config{})
	w := up.add(randomBytes(t, 1000))
	if _, err := r.Fetch(context.Background(), up.source(), []Want{w}); err != nil {
		t.Fatal(err)
	}
	if err := r.Await(context.Background(), w.Digest); err != nil {
		t.Errorf("present blob: want nil at once, got %v", err)
	}
	absent := blob.FromBytes([]byte("absent"))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := r.Await(ctx, absent); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("absent blob: want the context's deadline, got %v", err)
	}
	if n := r.awaiting(absent); n != 0 {
		t.Errorf("want nothing registered after the wait ended, got %d waiters", n)
	}
}

// Has passes its wait as ?wait= and leaves the URL bare without one.
func TestHasAsksWithTheWait(t *testing.T) {
	queries := make(chan string, 2)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		queries <- r.URL.RawQuery
		w.WriteHeader(http.StatusNotFound)
	}))
	t.Cleanup(srv.Close)
	r := newReplicator(t, newLocal(t), Config{})
	src := Source{BaseURL: srv.URL, Path: PeerPath}
	d := blob.FromBytes([]byte("x"))
	for _, tc := range []struct {
		wait time.Duration
		want string
	}{{1500 * time.Millisecond, "wait=1.5s"}, {0, ""}} {
		has, err := r.Has(context.Background(), src, d, tc.wait)
		if has || err != nil {
			t.Fatalf("wait %s: want false, nil on a 404, got %v, %v", tc.wait, has, err)
		}
		if got := <-queries; got != tc.want {
			t.Errorf("wait %s: want query %q, got %q", tc.wait, tc.want, got)
		}
	}
}
