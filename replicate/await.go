package replicate

import (
	"context"
	"errors"
	"fmt"

	"github.com/patchmesh/patchmesh/blob"
)

// await is the waiters on one digest.
type await struct {
	done chan struct{} // closed when a transfer commits the digest
	n    int           // waiters, guarded by Replicator.mu
}

// Await returns nil once d is committed in the local store, or ctx's error
// (wrapped) when ctx ends first. It wakes when one of this Replicator's
// transfers commits d, without polling the store: a peer asking for a blob
// this node is fetching (GET /v1/peer/blobs/{digest}?wait=) is answered the
// moment the blob is in. A blob committed by other means (an upload) is
// seen only by the Stat Await starts with; the caller looks again when
// Await ends.
func (r *Replicator) Await(ctx context.Context, d blob.Digest) error {
	r.mu.Lock()
	a := r.awaits[d]
	if a == nil {
		a = &await{done: make(chan struct{})}
		r.awaits[d] = a
	}
	a.n++
	r.mu.Unlock()
	defer r.unawait(d, a)
	// Stat only once registered: a commit between the two still wakes
	// this waiter.
	if _, err := r.blobs.Stat(ctx, d); err == nil {
		return nil
	} else if !errors.Is(err, blob.ErrNotFound) {
		return fmt.Errorf("replicate: await %s: stat: %w", d, err)
	}
	select {
	case <-a.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("replicate: await %s: %w", d, ctx.Err())
	}
}

// unawait drops one waiter of a; the last one forgets the digest, so that
// waits that ended leave nothing behind.
func (r *Replicator) unawait(d blob.Digest, a *await) {
	r.mu.Lock()
	defer r.mu.Unlock()
	a.n--
	if a.n == 0 && r.awaits[d] == a {
		delete(r.awaits, d)
	}
}

// committedLocked wakes the waiters on d, which a transfer has just made
// present. Call with r.mu held.
func (r *Replicator) committedLocked(d blob.Digest) {
	if a := r.awaits[d]; a != nil {
		close(a.done)
		delete(r.awaits, d)
	}
}
