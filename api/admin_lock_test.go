package api

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/blob"
)

// Uploads of one digest take turns, uploads of different digests do not
// wait for each other, and the lock table empties once all are released.
func TestDigestLocksSerialiseOneDigestOnly(t *testing.T) {
	var l digestLocks
	a := blob.FromBytes([]byte("a"))
	b := blob.FromBytes([]byte("b"))

	unlockA := l.lock(a)
	otherDone := make(chan struct{})
	go func() { l.lock(b)(); close(otherDone) }()
	select {
	case <-otherDone:
	case <-time.After(5 * time.Second):
		t.Fatal("a lock on another digest waited for an unrelated one")
	}

	var inside, most atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			unlock := l.lock(a)
			if n := inside.Add(1); n > most.Load() {
				most.Store(n)
			}
			time.Sleep(time.Millisecond)
			inside.Add(-1)
			unlock()
		}()
	}
	unlockA()
	wg.Wait()
	if most.Load() != 1 {
		t.Errorf("holders of one digest's lock at once: want 1, got %d", most.Load())
	}
	if n := len(l.held); n != 0 {
		t.Errorf("lock table after every unlock: want empty, got %d entries", n)
	}
}
