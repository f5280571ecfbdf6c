package replicate

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"
)

// halfThenHold serves the first half of a blob, flushes it, and sends the
// rest (flipping one byte of it when corrupt) once release is closed.
func halfThenHold(up *upstream, corrupt bool) (release chan struct{}) {
	release = make(chan struct{})
	up.serve = func(w http.ResponseWriter, r *http.Request, data []byte, n int) {
		half := len(data) / 2
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		w.Write(data[:half])
		http.NewResponseController(w).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		rest := bytes.Clone(data[half:])
		if corrupt {
			rest[len(rest)-10] ^= 1
		}
		w.Write(rest)
	}
	return release
}

// streamOf waits until d's transfer can be streamed and opens it at off.
func streamOf(t *testing.T, r *Replicator, w Want, off int64) io.ReadCloser {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	var rc io.ReadCloser
	waitFor(t, "the transfer to be streamable", func() bool {
		var size int64
		var ok bool
		rc, size, ok = r.Stream(ctx, w.Digest, off)
		if ok && size != w.Size {
			t.Fatalf("stream size: want %d, got %d", w.Size, size)
		}
		return ok
	})
	t.Cleanup(func() { rc.Close() })
	return rc
}

func TestStreamPassesArrivingBytesOnAndEndsAfterCommit(t *testing.T) {
	up := newUpstream(t)
	l := newLocal(t)
	r := newReplicator(t, l, Config{})
	data := randomBytes(t, 1<<20)
	w := up.add(data)
	release := halfThenHold(up, false)
	// Asked before the transfer starts, Stream waits for it.
	early := make(chan io.ReadCloser, 1)
	go func() {
		rc, _, ok := r.Stream(context.Background(), w.Digest, 0)
		if !ok {
			rc = nil
		}
		early <- rc
	}()
	done := make(chan error, 1)
	go func() {
		_, err := r.Fetch(context.Background(), up.source(), []Want{w})
		done <- err
	}()

	rc := streamOf(t, r, w, 0)
	resumed := streamOf(t, r, w, 1000) // a downstream resuming at byte 1000
	first := make([]byte, len(data)/2)
	if _, err := io.ReadFull(rc, first); err != nil || !bytes.Equal(first, data[:len(data)/2]) {
		t.Fatalf("the first half, while the rest is held upstream: err %v, equal %v", err, bytes.Equal(first, data[:len(data)/2]))
	}
	if _, err := l.Stat(context.Background(), w.Digest); err == nil {
		t.Fatal("committed before the upstream sent everything")
	}
	e := <-early
	if e == nil {
		t.Fatal("Stream asked just before the transfer started: want it to wait for it, got not ok")
	}
	defer e.Close()
	close(release)
	if got, err := io.ReadAll(e); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("stream opened before the transfer started: want all %d bytes, got %d (%v)", len(data), len(got), err)
	}
	rest, err := io.ReadAll(rc)
	if err != nil || !bytes.Equal(rest, data[len(data)/2:]) {
		t.Fatalf("the rest: want %d bytes and a clean end, got %d (%v)", len(data)-len(data)/2, len(rest), err)
	}
	// A clean end means the blob verified and is committed.
	l.mustHave(t, w.Digest, data)
	tail, err := io.ReadAll(resumed)
	if err != nil || !bytes.Equal(tail, data[1000:]) {
		t.Fatalf("resumed stream: want the bytes from 1000 on, got %d (%v)", len(tail), err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, _, ok := r.Stream(context.Background(), w.Digest, 0); ok {
		t.Error("Stream after the transfer ended: want not ok (the store serves it now)")
	}
	other := randomBytes(t, 1000)
	if _, _, ok := r.Stream(context.Background(), up.add(other).Digest, 0); ok {
		t.Error("Stream of a blob no transfer fetches: want not ok")
	}
}

func TestStreamIsCutWhenTheDigestFails(t *testing.T) {
	up := newUpstream(t)
	l := newLocal(t)
	r := newReplicator(t, l, Config{})
	data := randomBytes(t, 1<<20)
	w := up.add(data)
	release := halfThenHold(up, true)
	done := make(chan error, 1)
	go func() {
		_, err := r.Fetch(context.Background(), up.source(), []Want{w})
		done <- err
	}()
	rc := streamOf(t, r, w, 0)
	if _, err := io.ReadFull(rc, make([]byte, len(data)/2)); err != nil {
		t.Fatal(err)
	}
	close(release)
	got, err := io.ReadAll(rc)
	if !errors.Is(err, ErrCut) {
		t.Fatalf("stream of a blob that failed its digest check: want ErrCut, got %v after %d more bytes", err, len(got))
	}
	if len(data)/2+len(got) >= len(data) {
		t.Errorf("the cut stream passed on all %d bytes", len(data))
	}
	if err := <-done; err == nil {
		t.Fatal("Fetch of corrupt bytes succeeded")
	}
	l.mustLack(t, w.Digest)
}
