package e2e_test

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/federation"
	"github.com/patchmesh/patchmesh/internal/meshtest"
	"github.com/patchmesh/patchmesh/node"
)

// fleetSummary is the answer of GET /v1/admin/reports/summary.
type fleetSummary struct {
	Node     string `json:"node"`
	Machines int64  `json:"machines"`
	Totals   []struct {
		Tier, DC, Kernel, State string
		PatchVersion            string `json:"patch_version"`
		Machines                int64
	} `json:"totals"`
	Nodes []struct {
		Node string    `json:"node"`
		AsOf time.Time `json:"as_of"`
	} `json:"nodes"`
}

type fleetMachines struct {
	Machines []struct {
		ID, Node, DC, State string
	} `json:"machines"`
	Next string `json:"next"`
}

func summary(n *meshtest.Node, t *testing.T, q url.Values) (fleetSummary, error) {
	var s fleetSummary
	err := n.Call(context.Background(), http.MethodGet, "/v1/admin/reports/summary?"+q.Encode(), n.Admin(t), nil, &s)
	return s, err
}

// byDC sums a summary's machines by data centre and state.
func (s fleetSummary) byDC() map[string]int64 {
	out := map[string]int64{}
	for _, x := range s.Totals {
		out[x.DC+"/"+x.State] += x.Machines
	}
	return out
}

// register registers raw at n with the tier's enrollment token and checks
// in with state; it returns the machine's ID at n.
func registerAndCheckIn(t *testing.T, n *meshtest.Node, authToken, raw, state string) string {
	t.Helper()
	var reg struct {
		MachineToken string `json:"machine_token"`
		Machine      struct{ ID string }
	}
	ctx := context.Background()
	if err := n.Call(ctx, http.MethodPost, "/v1/client/register", meshtest.Bearer(authToken),
		map[string]string{"machine_id": raw, "kernel": kernel, "arch": arch, "client_version": "1.0.0"}, &reg); err != nil {
		t.Fatalf("register %s at %s: %v", raw, n.Name, err)
	}
	if err := n.Call(ctx, http.MethodPost, "/v1/client/checkin", meshtest.Bearer(reg.MachineToken),
		map[string]any{"state": state, "kernel": kernel, "arch": arch, "patch_version": "107.1", "client_version": "1.0.0"}, nil); err != nil {
		t.Fatalf("check in %s at %s: %v", raw, n.Name, err)
	}
	return reg.Machine.ID
}

// waitMeshKey waits until n holds the hub's mesh key, as a downstream of n
// would see it.
func waitMeshKey(t *testing.T, n *meshtest.Node) {
	t.Helper()
	tok := n.SyncToken(t, "edge", "probe-mesh-key")
	meshtest.WaitFor(t, converge, n.Name+" holding the mesh key", func() error {
		return n.Call(context.Background(), http.MethodGet, "/v1/sync/mesh-key", meshtest.Bearer(tok), nil, nil)
	})
}

// Machines reporting at edges in two data centres add up exactly at their
// relay and at the hub; one machine is one ID at every node; a machine
// that moves to an edge of the other region stays one machine.
func TestFleetReportsAddUpAndOneIdentity(t *testing.T) {
	t.Parallel()
	m := meshtest.New(t)
	rows := func(c *node.Config) { c.Reports.Machines = true }
	h := m.Start(meshtest.Spec{Name: "hub", Role: node.RoleHub, DC: "dc-hub", Configure: rows})
	start := func(name, role, dc string, up *meshtest.Node) *meshtest.Node {
		spec := pullSpec(t, name, role, up.URL, up, "edge")
		spec.DC, spec.Configure = dc, rows
		return m.Start(spec)
	}
	ra := start("relay-a", node.RoleRelay, "dc-a", h)
	rb := start("relay-b", node.RoleRelay, "dc-b", h)
	edges := []*meshtest.Node{
		start("edge-a1", node.RoleEdge, "dc-a", ra),
		start("edge-a2", node.RoleEdge, "dc-a", ra),
		start("edge-b1", node.RoleEdge, "dc-b", rb),
	}
	// The enrollment token is made at the hub and reaches every edge down
	// the feed; the mesh key likewise, on the link.
	enroll := h.AuthToken(t, "edge", "fleet")
	for _, e := range edges {
		waitMeshKey(t, e)
	}

	// One raw machine ID: the same ID at the hub and at every edge.
	probe := "probe-machine-0000000000000001"
	want := registerAndCheckIn(t, h, enroll, probe, "applied")
	for _, e := range edges {
		var got string
		meshtest.WaitFor(t, converge, "the enrollment token at "+e.Name, func() error {
			var reg struct{ Machine struct{ ID string } }
			err := e.Call(context.Background(), http.MethodPost, "/v1/client/register", meshtest.Bearer(enroll),
				map[string]string{"machine_id": probe, "kernel": kernel, "arch": arch, "client_version": "1.0.0"}, &reg)
			got = reg.Machine.ID
			return err
		})
		if got != want {
			t.Fatalf("machine %s at %s: want the hub's ID %s, got %s", probe, e.Name, want, got)
		}
	}
	// Neither the raw machine ID nor the mesh key is in any log.
	var env federation.Envelope
	if err := h.Call(context.Background(), http.MethodGet, "/v1/sync/mesh-key", meshtest.Bearer(h.SyncToken(t, "edge", "probe")), nil, &env); err != nil {
		t.Fatal(err)
	}
	pub, err := federation.ParsePublicKey(m.HubPublicKey)
	if err != nil {
		t.Fatal(err)
	}
	mk, err := federation.NewVerifier(pub).OpenMeshKey(env)
	if err != nil {
		t.Fatalf("the hub's mesh key statement: %v", err)
	}
	secrets := []string{probe, base64.StdEncoding.EncodeToString(mk.Secret), base64.RawURLEncoding.EncodeToString(mk.Secret), hex.EncodeToString(mk.Secret)}
	for _, n := range append([]*meshtest.Node{h, ra, rb}, edges...) {
		for _, s := range secrets {
			if strings.Contains(n.Log(), s) {
				t.Errorf("%s logs a secret: %s", n.Name, s)
			}
		}
	}

	// Machines per edge, with states.
	wantDC := map[string]int64{"dc-hub/applied": 1}
	for i, e := range edges {
		for j := range 3 + i {
			state := "applied"
			if j == 0 {
				state = "apply-failed"
			}
			registerAndCheckIn(t, e, enroll, fmt.Sprintf("machine-%s-%020d", e.Name, j), state)
			wantDC[e.Config.Node.Datacenter+"/"+state]++
		}
	}
	// The probe registered at every edge but never checked in there: it
	// counts once, at the hub, where its check-in is newest... unless an
	// edge's registration is newer. Its rows at the edges say "unknown".
	hubWant := int64(1 + 3 + 4 + 5)
	meshtest.WaitFor(t, converge, "the hub's summary adding up", func() error {
		s, err := summary(h, t, url.Values{})
		if err != nil {
			return err
		}
		if s.Machines != hubWant {
			return fmt.Errorf("hub: %d machines, want %d: %v", s.Machines, hubWant, s.byDC())
		}
		got := s.byDC()
		for k, n := range wantDC {
			if k == "dc-hub/applied" {
				continue // the probe: wherever its newest word is
			}
			if got[k] != n {
				return fmt.Errorf("hub: %s = %d, want %d (all: %v)", k, got[k], n, got)
			}
		}
		return nil
	})
	meshtest.WaitFor(t, converge, "relay-a's summary adding up", func() error {
		s, err := summary(ra, t, url.Values{"state": {"apply-failed"}})
		if err != nil {
			return err
		}
		if got := s.byDC(); s.Machines != 2 || got["dc-a/apply-failed"] != 2 {
			return fmt.Errorf("relay-a apply-failed: %v (%d), want dc-a/apply-failed 2", got, s.Machines)
		}
		all, err := summary(ra, t, url.Values{})
		if err != nil {
			return err
		}
		// edge-a1's 3 and edge-a2's 4, and the probe (registered at both).
		if all.Machines != 8 {
			return fmt.Errorf("relay-a: %d machines, want 8: %v", all.Machines, all.byDC())
		}
		for _, n := range all.Nodes {
			if n.AsOf.IsZero() {
				return fmt.Errorf("relay-a: node %s without an as-of time", n.Node)
			}
		}
		return nil
	})

	// A machine of edge-a1 moves to edge-b1: still one machine at the hub,
	// now at edge-b1.
	moved := fmt.Sprintf("machine-%s-%020d", "edge-a1", 1)
	id := registerAndCheckIn(t, edges[2], enroll, moved, "applied")
	meshtest.WaitFor(t, converge, "the moved machine once, at edge-b1", func() error {
		var ms fleetMachines
		q := url.Values{"limit": {"10000"}}
		if err := h.Call(context.Background(), http.MethodGet, "/v1/admin/reports/machines?"+q.Encode(), h.Admin(t), nil, &ms); err != nil {
			return err
		}
		seen := 0
		for _, x := range ms.Machines {
			if x.ID == id {
				seen++
				if x.Node != "edge-b1" || x.DC != "dc-b" {
					return fmt.Errorf("moved machine at %s (%s), want edge-b1", x.Node, x.DC)
				}
			}
		}
		if seen != 1 || int64(len(ms.Machines)) != hubWant {
			return fmt.Errorf("moved machine listed %d times, %d machines in all; want 1 and %d", seen, len(ms.Machines), hubWant)
		}
		return nil
	})
}

// Report pushes that are malformed, for another tier, forged, replayed or
// too large are refused with a 4xx and change nothing.
func TestFleetReportPushRefusals(t *testing.T) {
	t.Parallel()
	m := meshtest.New(t)
	h := m.Start(meshtest.Spec{Name: "hub", Role: node.RoleHub, Configure: func(c *node.Config) { c.Reports.MaxBytes = 32 << 10 }})
	tok := h.SyncToken(t, "edge", "pusher")
	now := time.Now().UTC()
	push := func(seq int64, tier string, machines int) map[string]any {
		ms := make([]any, machines)
		for i := range ms {
			ms[i] = map[string]any{"id": fmt.Sprintf("%064x", i+1), "kernel": kernel, "arch": arch,
				"state": "applied", "patch_version": "107.1", "last_seen": now}
		}
		return map[string]any{"v": 1, "node": "edge-x", "tier": tier, "seq": seq, "entries": []any{map[string]any{
			"node": "edge-x", "dc": "dc-x", "as_of": now, "rows": true,
			"counts":   []any{map[string]any{"kernel": kernel, "patch_version": "107.1", "state": "applied", "machines": machines}},
			"machines": ms,
		}}}
	}
	post := func(cred string, body any) int {
		err := h.Call(context.Background(), http.MethodPost, "/v1/sync/report", cred, body, nil)
		var se *meshtest.StatusError
		if errors.As(err, &se) {
			return se.Status
		}
		// A body past the limit is answered 413 before it is read, and
		// net/http then closes the connection: a client still writing
		// may see the reset before the answer. Either way it is refused.
		if errors.Is(err, syscall.ECONNRESET) {
			return http.StatusRequestEntityTooLarge
		}
		if err != nil {
			t.Fatal(err)
		}
		return http.StatusNoContent
	}
	if got := post(meshtest.Bearer(tok), push(100, "edge", 2)); got != http.StatusNoContent {
		t.Fatalf("a good push: want 204, got %d", got)
	}
	check := func(what string) {
		t.Helper()
		s, err := summary(h, t, url.Values{"dc": {"dc-x"}})
		if err != nil {
			t.Fatal(err)
		}
		if s.Machines != 2 {
			t.Errorf("after %s: want the good push's 2 machines of dc-x, got %d", what, s.Machines)
		}
	}
	forged := "pms_0123456789abcdef_" + strings.Repeat("A", 43)
	for _, tc := range []struct {
		name string
		cred string
		body any
		want int
	}{
		{"a forged token", meshtest.Bearer(forged), push(101, "edge", 5), http.StatusUnauthorized},
		{"no token", "", push(101, "edge", 5), http.StatusUnauthorized},
		{"an enrollment token", meshtest.Bearer(h.AuthToken(t, "edge", "not-sync")), push(101, "edge", 5), http.StatusForbidden},
		{"a replay", meshtest.Bearer(tok), push(100, "edge", 5), http.StatusConflict},
		{"an older push", meshtest.Bearer(tok), push(99, "edge", 5), http.StatusConflict},
		{"another tier", meshtest.Bearer(tok), push(101, "stable", 5), http.StatusForbidden},
		{"a malformed body", meshtest.Bearer(tok), map[string]any{"v": 1, "node": "edge-x", "colour": "red"}, http.StatusBadRequest},
		{"a bad machine ID", meshtest.Bearer(tok), func() any {
			p := push(101, "edge", 1)
			p["entries"].([]any)[0].(map[string]any)["machines"].([]any)[0].(map[string]any)["id"] = "raw-machine-id"
			return p
		}(), http.StatusBadRequest},
		{"an oversized push", meshtest.Bearer(tok), push(101, "edge", 1000), http.StatusRequestEntityTooLarge},
	} {
		if got := post(tc.cred, tc.body); got != tc.want {
			t.Errorf("%s: want %d, got %d", tc.name, tc.want, got)
		}
		check(tc.name)
	}
	if evs := h.LogEvents("report_refused"); len(evs) < 3 {
		t.Errorf("security events report_refused: want one per replay and wrong tier (3), got %d", len(evs))
	}
}
