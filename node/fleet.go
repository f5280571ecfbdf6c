package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/federation"
)

// Fleet operations wiring: the hub states the mesh key, downstreams push
// fleet reports up their links, and every node purges old check-ins.

// publishMeshKey signs the hub's machine-ID key (MachineKeySecret) as the
// mesh key, so that the machines a hub registered before there was a mesh
// key keep their IDs, and keeps
// the statement for downstreams to fetch. Signed again at every start, so
// that a new hub key signs it from then on.
func (n *Node) publishMeshKey(ctx context.Context, secret []byte, now time.Time) error {
	if n.hubKey == nil {
		return nil
	}
	mk, err := federation.SignMeshKey(n.hubKey, secret, now)
	if err != nil {
		return fmt.Errorf("node: mesh key: %w", err)
	}
	// A conflict is a statement issued later than now, by a clock that
	// was ahead: it states the same key and stays.
	if err := n.store.PutMeshKey(ctx, mk); err != nil && !errors.Is(err, catalog.ErrConflict) {
		return fmt.Errorf("node: mesh key: %w", err)
	}
	return nil
}

// newReporter builds a downstream's report loop over its links.
func (n *Node) newReporter(now func() time.Time) error {
	client, err := n.nodeClient()
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	n.reporter, err = federation.NewReporter(federation.ReporterConfig{
		Store: n.store, Client: client, Links: n.puller.Links,
		Node: n.cfg.Node.Name, DC: n.cfg.Node.Datacenter,
		Interval: n.cfg.Reports.Interval, Machines: n.cfg.Reports.Machines,
		Progress: n.ownProgress, Known: n.progress.Get,
		Log: n.log, Now: now,
	})
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	return nil
}

// cleanFleet deletes check-ins and downstream reports older than
// reports.retention, every reports.cleanup_every.
func (n *Node) cleanFleet(ctx context.Context, now func() time.Time) {
	t := time.NewTicker(n.cfg.Reports.CleanupEvery)
	defer t.Stop()
	for {
		machines, entries, err := n.store.PurgeFleet(ctx, now().Add(-n.cfg.Reports.Retention))
		switch {
		case err != nil && ctx.Err() == nil:
			n.log.Error("maintain_failed", "task", "purge_fleet", "error", err.Error())
		case machines > 0 || entries > 0:
			n.log.Info("fleet_purged", "machines", machines, "reports", entries)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
