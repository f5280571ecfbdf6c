package e2e_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/internal/meshtest"
	"github.com/patchmesh/patchmesh/node"
)

// rolloutTick is the hub's rollout runner period in these tests.
const rolloutTick = 200 * time.Millisecond

// rolloutHub starts a hub whose rollout runner ticks fast.
func rolloutHub(m *meshtest.Mesh) *meshtest.Node {
	return m.Start(meshtest.Spec{Name: "hub", Role: node.RoleHub, DC: "dc-hub",
		Configure: func(c *node.Config) { c.Rollouts.Tick = rolloutTick }})
}

// startIn starts a downstream of up on tier edge in data centre dc.
func startIn(t *testing.T, m *meshtest.Mesh, name, role, dc string, up *meshtest.Node) *meshtest.Node {
	t.Helper()
	spec := pullSpec(t, name, role, up.URL, up, "edge")
	spec.DC = dc
	return m.Start(spec)
}

// rolloutMachine is one real `patchmesh client` machine registered at
// one edge (with gossip off, the only node it knows).
type rolloutMachine struct {
	*machineCLI
	edge *meshtest.Node
}

func newRolloutMachine(t *testing.T, m *meshtest.Mesh, edge *meshtest.Node, enroll string) *rolloutMachine {
	t.Helper()
	mc := &rolloutMachine{newMachineCLI(t, m), edge}
	meshtest.WaitFor(t, converge, "registration at "+edge.Name, func() error {
		code, out, errs := mc.run(t, "--server", edge.URL, "register", enroll, "--kernel", kernel, "--arch", arch)
		if code != 0 {
			return fmt.Errorf("exit %d: %s%s", code, out, errs)
		}
		return nil
	})
	return mc
}

// refresh runs one refresh with hook as the apply hook and returns the
// state it checked in and the version it was offered ("" for none).
func (mc *rolloutMachine) refresh(t *testing.T, hook string) (state, version string) {
	t.Helper()
	_, out, errs := mc.run(t, "--output", "json", "refresh", "--kernel", kernel, "--arch", arch, "--apply-hook", hook)
	var res struct {
		State string
		Patch *struct{ Version string }
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.State == "" {
		t.Fatalf("refresh at %s: %v in %q (stderr %q)", mc.edge.Name, err, out, errs)
	}
	if res.Patch != nil {
		version = res.Patch.Version
	}
	return res.State, version
}

// wantOffered refreshes once and fails unless the machine was offered and
// applied version.
func (mc *rolloutMachine) wantOffered(t *testing.T, version, why string) {
	t.Helper()
	if state, v := mc.refresh(t, "true"); v != version || state != "applied" {
		t.Fatalf("%s: machine at %s: want %s applied, got %q %s", why, mc.edge.Name, version, v, state)
	}
}

// rolloutAt reads rollout id as node n holds it.
func rolloutAt(t *testing.T, n *meshtest.Node, id string) (catalog.Rollout, error) {
	var r catalog.Rollout
	err := n.Call(context.Background(), http.MethodGet, "/v1/admin/rollouts/"+id, n.Admin(t), nil, &r)
	return r, err
}

// waitRollout waits until n holds rollout id in a state ok accepts.
func waitRollout(t *testing.T, n *meshtest.Node, id, what string, ok func(catalog.Rollout) bool) catalog.Rollout {
	t.Helper()
	var got catalog.Rollout
	meshtest.WaitFor(t, converge, n.Name+": rollout "+what, func() error {
		r, err := rolloutAt(t, n, id)
		if err != nil {
			return err
		}
		if !ok(r) {
			return fmt.Errorf("state %s, %d of %d waves open, reason %q", r.State, len(r.Opened), len(r.Waves), r.Reason)
		}
		got = r
		return nil
	})
	return got
}

func opened(n int) func(catalog.Rollout) bool {
	return func(r catalog.Rollout) bool { return len(r.Opened) >= n }
}

func inState(s catalog.RolloutState) func(catalog.Rollout) bool {
	return func(r catalog.Rollout) bool { return r.State == s }
}

// waitDCsKnown waits until the hub's fleet summary names every dc.
func waitDCsKnown(t *testing.T, h *meshtest.Node, dcs ...string) {
	t.Helper()
	meshtest.WaitFor(t, converge, "the hub's fleet reports naming "+strings.Join(dcs, ", "), func() error {
		s, err := summary(h, t, url.Values{})
		if err != nil {
			return err
		}
		for _, dc := range dcs {
			if !slices.ContainsFunc(s.Totals, func(x struct {
				Tier, DC, Kernel, State string
				PatchVersion            string `json:"patch_version"`
				Machines                int64
			}) bool {
				return x.DC == dc
			}) {
				return fmt.Errorf("no %s in %v", dc, s.byDC())
			}
		}
		return nil
	})
}

// isStatus reports whether err is an HTTP answer of status.
func isStatus(err error, status int) bool {
	var se *meshtest.StatusError
	return errors.As(err, &se) && se.Status == status
}

// createRollout creates a rollout at the hub through the admin API.
func createRollout(t *testing.T, h *meshtest.Node, body map[string]any) catalog.Rollout {
	t.Helper()
	var r catalog.Rollout
	h.AdminCall(t, http.MethodPost, "/v1/admin/rollouts", body, &r)
	return r
}

// waitListed waits until every node lists the patch of version.
func waitListed(t *testing.T, nodes []*meshtest.Node, version string) {
	t.Helper()
	for _, n := range nodes {
		meshtest.WaitFor(t, converge, n.Name+" listing "+version, func() error {
			ps, err := n.TryPatches(t, url.Values{"version": {version}})
			if err != nil {
				return err
			}
			if len(ps) != 1 {
				return fmt.Errorf("%d patches", len(ps))
			}
			return nil
		})
	}
}

// A rollout over a real mesh in three data centres (a canary edge under
// the hub, and a relay with an edge in each of two regions), with real
// client machines: the waves open in order, a machine gets the new patch
// only once its data centre's wave is open and is offered the previous
// one before; a canary machine whose apply fails halts the rollout at the
// gate with the reason shown everywhere; resume goes on; abort withdraws.
func TestRolloutWavesGateHaltResumeAbort(t *testing.T) {
	t.Parallel()
	m := meshtest.New(t)
	h := rolloutHub(m)
	canary := startIn(t, m, "edge-canary", node.RoleEdge, "dc-canary", h)
	relayEU := startIn(t, m, "relay-eu", node.RoleRelay, "dc-eu-1", h)
	edgeEU := startIn(t, m, "edge-eu", node.RoleEdge, "dc-eu-1", relayEU)
	relayUS := startIn(t, m, "relay-us", node.RoleRelay, "dc-us-1", h)
	edgeUS := startIn(t, m, "edge-us", node.RoleEdge, "dc-us-1", relayUS)
	all := []*meshtest.Node{h, canary, relayEU, edgeEU, relayUS, edgeUS}
	h.Admit(t, all...)

	// The fleet runs 107.1.
	h.Upload(t, randomBytes(t, 4<<10), meshtest.PatchMeta{Kernel: kernel, Arch: arch, Version: "107.1"})
	waitListed(t, all, "107.1")
	enroll := h.AuthToken(t, "edge", "rollout")
	mCanary := newRolloutMachine(t, m, canary, enroll)
	mEU := newRolloutMachine(t, m, edgeEU, enroll)
	mUS := newRolloutMachine(t, m, edgeUS, enroll)
	for _, mc := range []*rolloutMachine{mCanary, mEU, mUS} {
		mc.wantOffered(t, "107.1", "before any rollout")
	}
	waitDCsKnown(t, h, "dc-canary", "dc-eu-1", "dc-us-1")

	// Bad plans are refused and change nothing.
	for _, bad := range []struct {
		body map[string]any
		want int
	}{
		{map[string]any{"tier": "edge", "version": "107.2", "waves": "dc-canary:0s"}, http.StatusNotFound}, // no such patch yet
		{map[string]any{"tier": "edge", "version": "107.1", "waves": "dc-mars:0s"}, http.StatusBadRequest},
		{map[string]any{"tier": "edge", "version": "107.1", "waves": "dc-canary"}, http.StatusBadRequest},
		{map[string]any{"tier": "edge", "version": "107.1", "waves": "dc-canary:0s:0%"}, http.StatusBadRequest},
	} {
		err := h.Call(context.Background(), http.MethodPost, "/v1/admin/rollouts", h.Admin(t), bad.body, nil)
		if !isStatus(err, bad.want) {
			t.Errorf("create %v: want %d, got %v", bad.body, bad.want, err)
		}
	}
	if err := edgeEU.Call(context.Background(), http.MethodPost, "/v1/admin/rollouts", edgeEU.Admin(t),
		map[string]any{"tier": "edge", "version": "107.1", "waves": "dc-canary:0s"}, nil); !isStatus(err, http.StatusConflict) {
		t.Errorf("create at an edge: want 409 not_hub, got %v", err)
	}

	h.Upload(t, randomBytes(t, 4<<10), meshtest.PatchMeta{Kernel: kernel, Arch: arch, Version: "107.2"})
	ro := createRollout(t, h, map[string]any{"tier": "edge", "version": "107.2",
		"waves": "dc-canary:0s,dc-eu-*:1s,dc-us-*:1s", "max_failed_percent": 50, "min_reporting": 1, "soak_seconds": 1})
	if len(ro.Opened) != 1 || ro.State != catalog.RolloutActive {
		t.Fatalf("created: want active with the canary wave open, got %+v", ro)
	}
	if err := h.Call(context.Background(), http.MethodPost, "/v1/admin/rollouts", h.Admin(t),
		map[string]any{"tier": "edge", "version": "107.2", "waves": "dc-canary:0s"}, nil); !isStatus(err, http.StatusConflict) {
		t.Errorf("a second live rollout of the tier: want 409, got %v", err)
	}
	waitListed(t, all, "107.2")
	for _, n := range []*meshtest.Node{edgeEU, edgeUS} {
		waitRollout(t, n, ro.ID, "received", opened(1))
	}
	// Outside the open wave the previous patch is offered.
	mEU.wantOffered(t, "107.1", "eu before its wave")
	mUS.wantOffered(t, "107.1", "us before its wave")

	// The canary applies and fails: the gate halts the rollout.
	if state, v := mCanary.refresh(t, "exit 3"); v != "107.2" || state != "apply-failed" {
		t.Fatalf("canary: want 107.2 apply-failed, got %q %s", v, state)
	}
	halted := waitRollout(t, h, ro.ID, "halted at the gate", inState(catalog.RolloutHalted))
	if len(halted.Opened) != 1 || !strings.Contains(halted.Reason, "1 of 1 machines") {
		t.Fatalf("halted: want wave 1 only and the failure in the reason, got %d open, %q", len(halted.Opened), halted.Reason)
	}
	for _, n := range []*meshtest.Node{edgeEU, edgeUS} {
		got := waitRollout(t, n, ro.ID, "halted", inState(catalog.RolloutHalted))
		if got.Reason != halted.Reason {
			t.Errorf("%s: reason %q, want the hub's %q", n.Name, got.Reason, halted.Reason)
		}
	}
	time.Sleep(2 * time.Second) // past the eu wave's delay
	mEU.wantOffered(t, "107.1", "eu while halted")

	// Resume accepts the canary's failure; the eu wave opens, then us.
	h.AdminCall(t, http.MethodPost, "/v1/admin/rollouts/"+ro.ID+"/resume", nil, nil)
	hubEU := waitRollout(t, h, ro.ID, "eu wave open", opened(2))
	var usHeld bool
	meshtest.WaitFor(t, converge, "edge-eu offering 107.2", func() error {
		// Whenever edge-us says its wave is shut before and after a
		// refresh, its machine must be offered 107.1.
		before, err := rolloutAt(t, edgeUS, ro.ID)
		if err != nil {
			return err
		}
		if len(before.Opened) < 3 && before.State != catalog.RolloutCompleted {
			_, v := mUS.refresh(t, "true")
			after, err := rolloutAt(t, edgeUS, ro.ID)
			if err == nil && len(after.Opened) < 3 && after.State != catalog.RolloutCompleted {
				if v != "107.1" {
					t.Fatalf("us machine offered %s while edge-us holds the us wave shut", v)
				}
				usHeld = true
			}
		}
		_, v := mEU.refresh(t, "true")
		if v != "107.2" {
			return fmt.Errorf("offered %s", v)
		}
		return nil
	})
	t.Logf("eu wave opened at the hub %s; us held while shut: %v", hubEU.Opened[1].Format(time.RFC3339Nano), usHeld)
	waitRollout(t, edgeUS, ro.ID, "us wave open", opened(3))
	mUS.wantOffered(t, "107.2", "us after its wave opened")
	waitRollout(t, h, ro.ID, "completed", inState(catalog.RolloutCompleted))

	// Abort withdraws everywhere.
	h.Upload(t, randomBytes(t, 4<<10), meshtest.PatchMeta{Kernel: kernel, Arch: arch, Version: "107.3"})
	ro3 := createRollout(t, h, map[string]any{"tier": "edge", "version": "107.3", "waves": "dc-canary:0s,dc-eu-*:1h"})
	waitListed(t, all, "107.3")
	waitRollout(t, canary, ro3.ID, "received", opened(1))
	mCanary.wantOffered(t, "107.3", "canary in the open wave")
	h.AdminCall(t, http.MethodPost, "/v1/admin/rollouts/"+ro3.ID+"/abort", nil, nil)
	for _, n := range all {
		waitRollout(t, n, ro3.ID, "aborted", inState(catalog.RolloutAborted))
		meshtest.WaitFor(t, converge, n.Name+": 107.3 withdrawn", func() error {
			ps, err := n.TryPatches(t, url.Values{"version": {"107.3"}, "withdrawn": {"true"}})
			if err != nil {
				return err
			}
			if len(ps) != 1 || !ps[0].Withdrawn {
				return fmt.Errorf("%+v", ps)
			}
			return nil
		})
	}
	mCanary.wantOffered(t, "107.2", "canary after the abort")
	mEU.wantOffered(t, "107.2", "eu after the abort")
}

// A region cut off from the hub keeps the last rollout state it heard:
// its wave stays shut while the hub opens it, it never opens on its own,
// and once healed it obeys a halt the hub signed meanwhile.
func TestRolloutPartitionedRegionHoldsLastState(t *testing.T) {
	t.Parallel()
	m := meshtest.New(t)
	h := rolloutHub(m)
	canary := startIn(t, m, "edge-canary", node.RoleEdge, "dc-canary", h)
	relayUS := startIn(t, m, "relay-us", node.RoleRelay, "dc-us-1", h)
	edgeUS := startIn(t, m, "edge-us", node.RoleEdge, "dc-us-1", relayUS)
	all := []*meshtest.Node{h, canary, relayUS, edgeUS}
	h.Admit(t, all...)

	h.Upload(t, randomBytes(t, 4<<10), meshtest.PatchMeta{Kernel: kernel, Arch: arch, Version: "107.1"})
	waitListed(t, all, "107.1")
	enroll := h.AuthToken(t, "edge", "rollout")
	mCanary := newRolloutMachine(t, m, canary, enroll)
	mUS := newRolloutMachine(t, m, edgeUS, enroll)
	mCanary.wantOffered(t, "107.1", "before any rollout")
	mUS.wantOffered(t, "107.1", "before any rollout")
	waitDCsKnown(t, h, "dc-canary", "dc-us-1")

	h.Upload(t, randomBytes(t, 4<<10), meshtest.PatchMeta{Kernel: kernel, Arch: arch, Version: "107.2"})
	ro := createRollout(t, h, map[string]any{"tier": "edge", "version": "107.2",
		"waves": "dc-canary:0s,dc-us-*:1s", "max_failed_percent": 50, "min_reporting": 1, "soak_seconds": 0})
	waitListed(t, all, "107.2")
	waitRollout(t, edgeUS, ro.ID, "received", opened(1))

	// Cut the region off, and halt while it is.
	relayUS.Kill(t)
	h.AdminCall(t, http.MethodPost, "/v1/admin/rollouts/"+ro.ID+"/halt", map[string]string{"reason": "hold for the change window"}, nil)
	mCanary.wantOffered(t, "107.2", "canary in the open wave")
	time.Sleep(2 * time.Second) // past the us wave's delay
	if r, err := rolloutAt(t, h, ro.ID); err != nil || len(r.Opened) != 1 {
		t.Fatalf("hub: want the halted rollout at one open wave, got %+v, %v", r, err)
	}
	mUS.wantOffered(t, "107.1", "us cut off")

	// Healed: the region takes the halt, and still holds the wave shut.
	relayUS.Start(t)
	got := waitRollout(t, edgeUS, ro.ID, "halted", inState(catalog.RolloutHalted))
	if got.Reason != "hold for the change window" {
		t.Errorf("edge-us: reason %q", got.Reason)
	}
	time.Sleep(time.Second)
	mUS.wantOffered(t, "107.1", "us healed, halted")

	// Cut off again and resumed: the hub opens the us wave, the region
	// does not hear it and does not open on its own.
	relayUS.Kill(t)
	h.AdminCall(t, http.MethodPost, "/v1/admin/rollouts/"+ro.ID+"/resume", nil, nil)
	waitRollout(t, h, ro.ID, "us wave open at the hub", opened(2))
	for range 3 {
		mUS.wantOffered(t, "107.1", "us cut off while the hub opened its wave")
		time.Sleep(500 * time.Millisecond)
	}
	if r, err := rolloutAt(t, edgeUS, ro.ID); err != nil || len(r.Opened) != 1 || r.State != catalog.RolloutHalted {
		t.Fatalf("edge-us cut off: want its last state (halted, one wave), got %+v, %v", r, err)
	}

	// Healed: the wave opens there too.
	relayUS.Start(t)
	waitRollout(t, edgeUS, ro.ID, "us wave open", func(r catalog.Rollout) bool {
		return len(r.Opened) == 2 || r.State == catalog.RolloutCompleted
	})
	mUS.wantOffered(t, "107.2", "us healed after its wave opened")
}
