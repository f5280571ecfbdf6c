package federation_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/federation"
	"github.com/patchmesh/patchmesh/internal/nodetest"
	"github.com/patchmesh/patchmesh/store"
)

// A tier made at the hub has a heartbeat at once, not an Every later:
// machines count an answer without one as stale.
func TestBeaconSignsANewTierAtOnce(t *testing.T) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	changes := &store.Changes{}
	_, log := newLog()
	n := nodetest.Wire(t, log, nodetest.Options{Sealer: federation.Sealer{Key: key}, Changes: changes})
	// An hour between ticks: only the change can make the second beat.
	beacon := federation.NewBeacon(key, n.Store, time.Hour, nil, log)
	beacon.WakeOn(changes)
	done := make(chan struct{})
	go func() { defer close(done); beacon.Run(t.Context()) }()
	t.Cleanup(func() { <-done })

	waitHeartbeat(t, beacon, "edge")
	if _, ok := beacon.Latest("canary"); ok {
		t.Fatal("a heartbeat for a tier that does not exist yet")
	}
	if _, err := n.Store.AddTier(t.Context(), "canary"); err != nil {
		t.Fatal(err)
	}
	waitHeartbeat(t, beacon, "canary")
}

func waitHeartbeat(t *testing.T, b *federation.Beacon, tier string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if _, ok := b.Latest(tier); ok {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no heartbeat for tier %s within 10s", tier)
}
