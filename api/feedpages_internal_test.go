package api

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/store"
)

// A page is read again after a change, a failed read is not kept, and
// past feedPagesMax pages a request reads for itself.
func TestFeedPagesKeepsOnlyGoodReadsOfThisGeneration(t *testing.T) {
	ch := &store.Changes{}
	reads, fail := 0, false
	f := &feedPages{changes: ch, read: func(_ context.Context, tier string, pos store.FeedPosition, limit int) (store.FeedPage, error) {
		reads++
		if fail {
			return store.FeedPage{}, errors.New("store down")
		}
		return store.FeedPage{Head: int64(reads)}, nil
	}}
	ctx := context.Background()
	get := func(after int64) (store.FeedPage, error) {
		return f.get(ctx, "stable", store.FeedPosition{AfterSeq: after}, 100)
	}
	p1, _ := get(0)
	p2, _ := get(0)
	if reads != 1 || p1.Head != p2.Head {
		t.Fatalf("same page twice in one generation: %d reads, heads %d and %d; want one read", reads, p1.Head, p2.Head)
	}
	ch.Invalidate()
	if p3, _ := get(0); reads != 2 || p3.Head != 2 {
		t.Fatalf("after a change: %d reads, head %d; want the page read again", reads, p3.Head)
	}
	ch.Invalidate()
	fail = true
	if _, err := get(0); err == nil {
		t.Fatal("a failed read answered no error")
	}
	fail = false
	if p, err := get(0); err != nil || reads != 4 || p.Head != 4 {
		t.Fatalf("after a failed read: %v, %d reads, head %d; want a read of its own", err, reads, p.Head)
	}
	for i := range feedPagesMax + 10 {
		get(int64(100 + i))
	}
	if len(f.pages) > feedPagesMax {
		t.Errorf("%d pages kept, want at most %d", len(f.pages), feedPagesMax)
	}
	before := reads
	get(int64(100 + feedPagesMax + 5))
	if reads != before+1 {
		t.Errorf("a page past the bound was not read for its request")
	}
}

// Requests waiting on a read whose reader fails ask again, and one of them
// reads for the rest; a page longer than feedPageKeepMax goes to those who
// waited for it but is not kept.
func TestFeedPagesWaitersOutliveTheirReader(t *testing.T) {
	ch := &store.Changes{}
	var mu sync.Mutex
	reads := 0
	first, release := make(chan struct{}), make(chan struct{})
	entries := 1
	f := &feedPages{changes: ch, read: func(ctx context.Context, tier string, pos store.FeedPosition, limit int) (store.FeedPage, error) {
		mu.Lock()
		reads++
		n, e := reads, entries
		mu.Unlock()
		if n == 1 {
			close(first)
			<-release
			return store.FeedPage{}, errors.New("the reader's request went away")
		}
		return store.FeedPage{Head: int64(n), Entries: make([]store.FeedEntry, e)}, nil
	}}
	ctx := context.Background()
	get := func() (store.FeedPage, error) { return f.get(ctx, "stable", store.FeedPosition{}, 100) }
	go get()
	<-first
	const waiters = 10
	type answer struct {
		p   store.FeedPage
		err error
	}
	got := make(chan answer, waiters)
	for range waiters {
		go func() {
			p, err := get()
			got <- answer{p, err}
		}()
	}
	// Let them reach their wait on the first read.
	time.Sleep(100 * time.Millisecond)
	close(release)
	for range waiters {
		a := <-got
		if a.err != nil || a.p.Head != 2 {
			t.Errorf("waiter after the reader failed: head %d, %v; want the page of the second read", a.p.Head, a.err)
		}
	}
	if reads != 2 {
		t.Errorf("%d reads for %d waiters after one failed read, want 2", reads, waiters)
	}

	ch.Invalidate()
	mu.Lock()
	entries = feedPageKeepMax + 1
	mu.Unlock()
	get()
	get()
	if reads != 4 {
		t.Errorf("a page of %d entries was kept (%d reads for two requests), want it read for each", feedPageKeepMax+1, reads-2)
	}
}
