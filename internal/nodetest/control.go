package nodetest

import (
	"context"
	"slices"
	"sync"

	"github.com/patchmesh/patchmesh/federation"
)

// FakeControl stands in for the sync loop in API and admin-tool tests; the
// federation and node tests cover the real loop. It reports fixed link
// states and records the triggers it receives.
type FakeControl struct {
	mu       sync.Mutex
	Links    []federation.LinkStatus
	triggers []bool // the wait of each Trigger call
}

// Status implements federation.Control.
func (f *FakeControl) Status() []federation.LinkStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.Links)
}

// Trigger implements federation.Control.
func (f *FakeControl) Trigger(ctx context.Context, wait bool) ([]federation.LinkStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.triggers = append(f.triggers, wait)
	return slices.Clone(f.Links), nil
}

// SetLinks replaces the link states Status and Trigger report.
func (f *FakeControl) SetLinks(links []federation.LinkStatus) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Links = slices.Clone(links)
}

// Waits returns the wait argument of every Trigger call so far.
func (f *FakeControl) Waits() []bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.triggers)
}
