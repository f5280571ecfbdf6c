package replicate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/patchmesh/patchmesh/blob"
)

// Cut-through relaying: while a transfer stages a blob, a downstream node
// may read the bytes staged so far and then each as it lands, so that a
// cascade of relays passes a large blob on while it is still arriving
// instead of one full copy per hop. Staged bytes are unverified: they are
// offered only through Stream, for the sync loop's own downstreams, which
// verify the digest themselves; the last byte is held back until this
// node's own check has passed and the blob is committed, and a failed check
// cuts every stream with an error. Nothing here makes a blob visible.

// ErrCut ends a stream of a blob whose transfer failed here (a digest
// mismatch, a broken upstream, a cancelled round): the reader must discard
// what it got.
var ErrCut = errors.New("the relayed transfer failed; discard the bytes")

// spool is the staged bytes of one transfer as they grow.
type spool struct {
	size int64 // from the signed record; 0 when unknown (never streamed)

	mu      sync.Mutex
	changed chan struct{} // closed and replaced whenever the fields below change
	f       blob.ReaderAtCloser
	refs    int   // the transfer itself, plus each open stream
	n       int64 // bytes staged
	ended   bool
	err     error // why the transfer failed; nil once ended means verified and committed
}

func newSpool(size int64) *spool {
	return &spool{size: size, changed: make(chan struct{}), refs: 1}
}

// notifyLocked wakes every stream waiting on s. Call with s.mu held.
func (s *spool) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// staged hands s the handle on the staged bytes, once the store made them.
func (s *spool) staged(f blob.ReaderAtCloser) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.f = f
	s.notifyLocked()
}

func (s *spool) grew(k int) {
	if k <= 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n += int64(k)
	s.notifyLocked()
}

// end records the transfer's outcome and drops its reference.
func (s *spool) end(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ended, s.err = true, err
	if err == nil && s.size > 0 && s.n != s.size {
		s.err = fmt.Errorf("committed %d bytes, the record says %d", s.n, s.size)
	}
	s.notifyLocked()
	s.releaseLocked()
}

func (s *spool) releaseLocked() {
	s.refs--
	if s.refs == 0 && s.f != nil {
		s.f.Close()
		s.f = nil
	}
}

// spoolReceiver stages through the local store and tells the spool of
// every byte written.
type spoolReceiver struct {
	local
	s *spool
}

func (r spoolReceiver) Create(ctx context.Context, d blob.Digest) (blob.Writer, error) {
	w, err := r.local.Create(ctx, d)
	if err != nil {
		return nil, err
	}
	if so, ok := w.(blob.StagedOpener); ok && r.s.size > 0 {
		// A driver that cannot reopen its staged bytes just does not
		// relay them early: its downstreams wait for the commit.
		if f, err := so.OpenStaged(); err == nil {
			r.s.staged(f)
		}
	}
	return spoolWriter{Writer: w, s: r.s}, nil
}

type spoolWriter struct {
	blob.Writer
	s *spool
}

func (w spoolWriter) Write(p []byte) (int, error) {
	k, err := w.Writer.Write(p)
	w.s.grew(k)
	return k, err
}

// streamWait bounds how long Stream waits for a transfer of a blob the
// store lacks to start: the sync loop lists a record as pending just
// before it starts the transfer, and a downstream may ask in between.
const streamWait = 2 * time.Second

// Stream opens the blob d while this Replicator is still receiving it, for
// a downstream node, from byte off on, and says its size. ok is false when
// no transfer of d is under way that can be streamed: the store has the
// blob already, none started within streamWait, it has ended (the blob is
// then committed, or failed), or the store cannot reopen staged bytes. It
// waits, bounded by ctx, for the transfer to stage its first bytes.
// Reading returns each byte as it is staged, holds the last one back until
// the blob is verified and committed, and fails with ErrCut if the
// transfer fails.
func (r *Replicator) Stream(ctx context.Context, d blob.Digest, off int64) (rc io.ReadCloser, size int64, ok bool) {
	t := r.awaitTransfer(ctx, d)
	if t == nil || t.spool.size <= 0 || off < 0 || off >= t.spool.size {
		return nil, 0, false
	}
	s := t.spool
	for {
		s.mu.Lock()
		switch {
		case s.ended:
			s.mu.Unlock()
			return nil, 0, false
		case s.f != nil:
			s.refs++
			s.mu.Unlock()
			return &streamReader{s: s, ctx: ctx, off: off}, s.size, true
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, 0, false
		}
	}
}

// awaitTransfer returns d's transfer, waiting up to streamWait for one to
// start while the store lacks d; nil if none does.
func (r *Replicator) awaitTransfer(ctx context.Context, d blob.Digest) *transfer {
	limit := time.NewTimer(streamWait)
	defer limit.Stop()
	for {
		r.mu.Lock()
		t, started := r.inflight[d], r.started
		r.mu.Unlock()
		if t != nil {
			return t
		}
		if _, err := r.blobs.Stat(ctx, d); !errors.Is(err, blob.ErrNotFound) {
			return nil // present (the store serves it), or the store fails
		}
		select {
		case <-started:
		case <-limit.C:
			return nil
		case <-ctx.Done():
			return nil
		}
	}
}

// streamReader reads a spool from off on as it grows.
type streamReader struct {
	s      *spool
	ctx    context.Context
	off    int64
	closed bool
}

func (sr *streamReader) Read(p []byte) (int, error) {
	s := sr.s
	for {
		s.mu.Lock()
		n, ended, err, f, ch := s.n, s.ended, s.err, s.f, s.changed
		s.mu.Unlock()
		if ended && err != nil {
			return 0, fmt.Errorf("%w: %v", ErrCut, err)
		}
		limit := n
		if !ended {
			// The last byte waits for the digest check: a stream that
			// ends is a blob that verified here.
			limit = min(n, s.size-1)
		}
		if sr.off < limit {
			k, rerr := f.ReadAt(p[:min(int64(len(p)), limit-sr.off)], sr.off)
			sr.off += int64(k)
			if k > 0 {
				return k, nil
			}
			if rerr == nil {
				rerr = io.ErrNoProgress
			}
			return 0, fmt.Errorf("read staged bytes at %d: %w", sr.off, rerr)
		}
		if ended && sr.off >= n {
			return 0, io.EOF
		}
		select {
		case <-ch:
		case <-sr.ctx.Done():
			return 0, sr.ctx.Err()
		}
	}
}

func (sr *streamReader) Close() error {
	if sr.closed {
		return nil
	}
	sr.closed = true
	sr.s.mu.Lock()
	defer sr.s.mu.Unlock()
	sr.s.releaseLocked()
	return nil
}
