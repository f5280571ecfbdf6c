package api

import (
	"context"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/blob"
	"github.com/patchmesh/patchmesh/blob/fsblob"
	"github.com/patchmesh/patchmesh/federation"
)

func TestPeerBlobWaitIsCappedNotRefused(t *testing.T) {
	for _, tc := range []struct {
		query string
		want  time.Duration
	}{
		{"", 0},
		{"?wait=0s", 0},
		{"?wait=250ms", 250 * time.Millisecond},
		{"?wait=1h", federation.MaxPeerBlobWait},
	} {
		got, err := peerBlobWait(httptest.NewRequest("HEAD", "/v1/peer/blobs/x"+tc.query, nil))
		if err != nil || got != tc.want {
			t.Errorf("%q: want %s, got %s, %v", tc.query, tc.want, got, err)
		}
	}
}

// countingAwaiter counts the waits it is asked for and ends each with its
// context.
type countingAwaiter struct{ n atomic.Int64 }

func (c *countingAwaiter) Await(ctx context.Context, _ blob.Digest) error {
	c.n.Add(1)
	<-ctx.Done()
	return ctx.Err()
}

// Past maxPeerWaiters a request does not wait: it is answered as without
// the wait, and its sender asks again at its own pace.
func TestPeerBlobWaitersAreBounded(t *testing.T) {
	blobs, err := fsblob.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	aw := &countingAwaiter{}
	s := &server{blobs: blobs, peer: &PeerConfig{Commits: aw}, peerWaiters: make(chan struct{}, 1)}
	d := blob.FromBytes([]byte("absent"))
	if err := s.awaitBlob(t.Context(), d, 10*time.Millisecond); err != nil || aw.n.Load() != 1 {
		t.Fatalf("with room: want one wait and no error, got %d waits, %v", aw.n.Load(), err)
	}
	s.peerWaiters <- struct{}{} // another request waits
	if err := s.awaitBlob(t.Context(), d, 5*time.Second); err != nil || aw.n.Load() != 1 {
		t.Errorf("with every waiter slot taken: want no wait, got %d waits, %v", aw.n.Load(), err)
	}
}
