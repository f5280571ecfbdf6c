package api

import (
	"context"
	"errors"
	"testing"

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
