package api

import (
	"context"
	"errors"
	"sync"

	"github.com/patchmesh/patchmesh/store"
)

// feedPages shares one store read of a feed page among the requests that
// ask for the same page while the store has not changed. Every long poll a
// node holds wakes at the same commit and asks for the page after the same
// position: the first request reads, the others wait for its answer, so a
// hub with a hundred direct children reads the page once rather than a
// hundred times at once with its store pool (eight connections on SQLite)
// serving the rest of the node.
//
// A page is kept under the store generation read before its read began
// (store.Changes): a request shares only a read that began after every
// write the request's own generation counts, so it never gets a page older
// than the last write this node knows of. (Another node's write to a shared
// PostgreSQL database counts from the store's next poll of the generation,
// as for every cache over the store; that poll also wakes the long polls.)
// Failed reads are not kept.
type feedPages struct {
	changes *store.Changes
	read    func(ctx context.Context, tier string, pos store.FeedPosition, limit int) (store.FeedPage, error)

	mu    sync.Mutex
	gen   uint64
	pages map[feedKey]*feedRead
}

const (
	// feedPagesMax bounds the pages kept in one generation: downstreams
	// at many different positions (one catching up, or one asking for
	// pages it does not need) read for themselves past it.
	feedPagesMax = 64
	// feedPageKeepMax is the most entries a kept page holds. The pages
	// long polls share are the few new records of one commit; a longer
	// page is a downstream catching up, shared with whoever waits on it
	// but not kept, so that an idle node holds little.
	feedPageKeepMax = 32
)

type feedKey struct {
	tier  string
	pos   store.FeedPosition
	limit int
}

// feedRead is one read in flight or done: page and err are set before
// done closes, and not written after.
type feedRead struct {
	done chan struct{}
	page store.FeedPage
	err  error
}

// get returns the page, read once for every request of this generation
// that asks for it. The page is shared: callers must not modify it.
func (f *feedPages) get(ctx context.Context, tier string, pos store.FeedPosition, limit int) (store.FeedPage, error) {
	if f.changes == nil {
		return f.read(ctx, tier, pos, limit)
	}
	k := feedKey{tier, pos, limit}
	for {
		gen := f.changes.Generation()
		f.mu.Lock()
		if f.pages == nil || gen > f.gen {
			// Reads of an older generation finish for their own callers.
			// A request that read an older generation than the map's
			// joins the map: its reads began later still.
			f.pages, f.gen = map[feedKey]*feedRead{}, gen
		}
		r, ok := f.pages[k]
		if !ok {
			if len(f.pages) >= feedPagesMax {
				f.mu.Unlock()
				return f.read(ctx, tier, pos, limit)
			}
			r = &feedRead{done: make(chan struct{})}
			f.pages[k] = r
			f.mu.Unlock()
			f.fill(ctx, k, r)
			return r.page, r.err
		}
		f.mu.Unlock()
		select {
		case <-r.done:
		case <-ctx.Done():
			return store.FeedPage{}, context.Cause(ctx)
		}
		if r.err == nil {
			return r.page, nil
		}
		// The reader failed (its request may have gone away): ask again,
		// and one of those who waited reads for the rest.
	}
}

// fill reads r's page and lets its waiters go, whatever happens to the
// read; a failed read or a long page is not kept.
func (f *feedPages) fill(ctx context.Context, k feedKey, r *feedRead) {
	r.err = errors.New("api: feed page read did not finish")
	defer func() {
		if r.err != nil || len(r.page.Entries) > feedPageKeepMax {
			f.mu.Lock()
			if f.pages[k] == r {
				delete(f.pages, k)
			}
			f.mu.Unlock()
		}
		close(r.done)
	}()
	r.page, r.err = f.read(ctx, k.tier, k.pos, k.limit)
}
