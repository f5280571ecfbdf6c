package store

import (
	"context"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
)

// SignedRollout is a rollout as a node keeps it: the latest state it
// heard, with the hub's signed record of that state (nil for a rollout
// made on a node without a signing key).
type SignedRollout struct {
	Rollout     catalog.Rollout
	Record, Sig []byte
}

// Rollouts is the part of Store that keeps rollout plans. On the hub they
// are written by the rollout runner and the admin API, each change one
// rollout.changed event sealed in the same transaction; on every other
// node by ApplySynced from those records.
type Rollouts interface {
	// CreateRollout stores a new plan and logs its first state.
	// ErrConflict if a live (active or halted) rollout of r.Tier exists;
	// ErrNotFound if the tier does not.
	CreateRollout(ctx context.Context, r catalog.Rollout) error
	// UpdateRollout stores r's new state and logs it, if the stored one
	// was last updated at prevUpdated: ErrConflict, and nothing changes,
	// if another writer moved it since; ErrNotFound if there is none.
	UpdateRollout(ctx context.Context, r catalog.Rollout, prevUpdated time.Time) error
	// Rollout returns one rollout by ID; ErrNotFound if none.
	Rollout(ctx context.Context, id string) (SignedRollout, error)
	// ListRollouts returns the rollouts of tier ("" for every tier),
	// newest first.
	ListRollouts(ctx context.Context, tier string) ([]SignedRollout, error)
}
