package store

import (
	"context"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
)

// MeshKey is the hub's mesh-wide key for machine IDs, with the hub's
// signed statement of it as it travels (federation.SignMeshKey). Every node
// names a machine by the HMAC of its raw ID under this key, so a machine is
// one row, under one ID, at every node it talks to.
type MeshKey struct {
	// ID names the key without revealing it (federation.MeshKeyID).
	ID     string
	Secret []byte
	// Record and Sig are the hub's statement and signature, served on to
	// downstreams unchanged.
	Record, Sig []byte
	Issued      time.Time
}

// FleetCount is how many machines of one node share a kernel, patch
// version and state.
type FleetCount struct {
	Kernel       string
	PatchVersion string
	State        catalog.MachineState
	Machines     int64
}

// FleetMachine is one machine as a fleet report carries it: under its
// mesh-wide ID, with the node it last checked in at.
type FleetMachine struct {
	ID           string
	Tier         string
	Node         string
	DC           string
	Kernel       string
	Arch         string
	State        catalog.MachineState
	PatchVersion string
	LastSeen     time.Time
}

// FleetEntry is one node's figures as of a time: its machine counts and,
// where reports carry them, its machines.
type FleetEntry struct {
	Tier string
	Node string
	DC   string
	// Via is the sync token ID of the downstream link the entry came up
	// (empty for this node's own entry).
	Via      string
	AsOf     time.Time
	Received time.Time
	Counts   []FleetCount
	// HasMachines says the entry carries per-machine rows (Machines, when
	// asked for).
	HasMachines bool
	Machines    []FleetMachine
}

// FleetPush is one report push from a downstream link, to store whole.
type FleetPush struct {
	// Tier is the tier of the pushing link's sync token, TokenID its ID.
	Tier    string
	TokenID string
	// Node is the name the downstream gives itself (a hint, for listings).
	Node string
	// Seq must be past the last Seq taken from TokenID.
	Seq     int64
	Entries []FleetEntry
}

// FleetFilter narrows a fleet listing. Zero fields match everything.
type FleetFilter struct {
	Tier         string
	DC           string
	Kernel       string
	State        catalog.MachineState
	PatchVersion string
	// After pages: machines with an ID above it. Limit caps the page; 0
	// means 1000, and no page holds more than 10000.
	After string
	Limit int
}

// FleetTotal is one row of a fleet summary: how many machines share a
// tier, data centre, kernel, patch version and state.
type FleetTotal struct {
	Tier         string
	DC           string
	Kernel       string
	PatchVersion string
	State        catalog.MachineState
	Machines     int64
}

// Fleet is the part of Store that keeps the fleet reports of this node's
// subtree, and the mesh-wide machine-ID key.
type Fleet interface {
	// MeshKey returns the mesh key this node holds; ErrNotFound if none.
	MeshKey(ctx context.Context) (MeshKey, error)
	// PutMeshKey stores k, replacing a key issued earlier; a key issued
	// before the one held is ErrConflict and changes nothing.
	PutMeshKey(ctx context.Context, k MeshKey) error

	// PutFleetReport replaces, in one transaction, every entry p.TokenID
	// pushed for p.Tier before with p.Entries. ErrConflict, and nothing
	// changes, if p.Seq is not past the last push of p.TokenID.
	PutFleetReport(ctx context.Context, p FleetPush) error
	// FleetEntries returns the entries held for tier from downstreams,
	// the newest per node, with their machines if withMachines.
	FleetEntries(ctx context.Context, tier string, withMachines bool) ([]FleetEntry, error)
	// LocalFleet returns this node's own machines of tier as counts and,
	// if withMachines, as rows (Node and DC left empty for the caller).
	LocalFleet(ctx context.Context, tier string, withMachines bool) ([]FleetCount, []FleetMachine, error)
	// FleetMachines lists this node's machines and those its downstreams
	// reported, one row per machine ID (its newest check-in), by ID, from
	// f.After on. self and dc name this node in the rows of its own.
	FleetMachines(ctx context.Context, self, dc string, f FleetFilter) ([]FleetMachine, error)
	// FleetSummary totals the same machines as FleetMachines, plus the
	// counts of downstream entries that carry no machine rows.
	FleetSummary(ctx context.Context, self, dc string, f FleetFilter) ([]FleetTotal, error)
	// PurgeFleet deletes machines not seen since before (their machine
	// tokens go with them) and downstream entries older than before, and
	// says how many machines and entries went.
	PurgeFleet(ctx context.Context, before time.Time) (machines, entries int, err error)
}
