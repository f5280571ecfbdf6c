package api

import (
	"context"
	"sync"

	"github.com/patchmesh/patchmesh/store"
)

// feedPages shares one store read of a feed page among the requests that
// ask for the same page while the store has not changed. Every long poll
// a node holds wakes at the same commit and asks for the page after the
// same position: a relay with ten downstreams read it ten times, a hub
// with a hundred a hundred times, all at once, while its store pool
// (eight connections on SQLite) served the rest of the node. Now the
// first request reads and the others wait for its answer.
//
// A page is kept under the store generation read before the read began
// (store.Changes), so a request never gets a page older than the last
// write committed before it asked; every change starts again. Errors are
// not kept: a request that gets one reads for itself.
type feedPages struct {
	changes *store.Changes
	read    func(ctx context.Context, tier string, pos store.FeedPosition, limit int) (store.FeedPage, error)

	mu    sync.Mutex
	gen   uint64
	pages map[feedKey]*feedRead
}

// feedPagesMax bounds the pages kept in one generation: downstreams at
// many different positions (a slow one catching up, or a downstream
// asking for pages it does not need) read for themselves past it.
const feedPagesMax = 64

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

// get returns the page read, with every other request of this generation
// for the same page, once. The page is shared: callers must not modify it.
func (f *feedPages) get(ctx context.Context, tier string, pos store.FeedPosition, limit int) (store.FeedPage, error) {
	if f.changes == nil {
		return f.read(ctx, tier, pos, limit)
	}
	k := feedKey{tier, pos, limit}
	gen := f.changes.Generation()
	f.mu.Lock()
	if f.pages == nil || gen != f.gen {
		// Reads of an older generation finish for their own callers.
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
		r.page, r.err = f.read(ctx, tier, pos, limit)
		if r.err != nil {
			f.mu.Lock()
			if f.pages[k] == r {
				delete(f.pages, k)
			}
			f.mu.Unlock()
		}
		close(r.done)
		return r.page, r.err
	}
	f.mu.Unlock()
	select {
	case <-r.done:
	case <-ctx.Done():
		return store.FeedPage{}, context.Cause(ctx)
	}
	if r.err != nil {
		// The reader's own failure (its request may have gone away).
		return f.read(ctx, tier, pos, limit)
	}
	return r.page, nil
}
