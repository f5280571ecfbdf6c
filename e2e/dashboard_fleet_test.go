package e2e_test

import (
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/patchmesh/patchmesh/internal/meshtest"
	"github.com/patchmesh/patchmesh/node"
)

// fleetWithin is how soon a machine's new state shows on the page at the
// hub: a report interval at its edge and one at the relay (1 s each in
// meshtest), the view's fleet totals (2 s), a view a second, and the
// test's own poll, with room for a loaded machine.
const fleetWithin = 10 * time.Second

// TestDashboardShowsTheFleet runs real `patchmesh client` machines at
// edges in two data centres, one behind a relay: the page at the hub
// shows their count per tier, data centre and state, totals and each
// node's as-of time, live; an anonymous visitor (public reads on) sees
// the rest of the view but none of it.
func TestDashboardShowsTheFleet(t *testing.T) {
	ctx := browser(t)
	m := meshtest.New(t)
	m.Gossip = gossipProfile // the page's topology shows the mesh too
	h := m.Start(meshtest.Spec{Name: "hub", Role: node.RoleHub, DC: "dc-hub",
		Configure: func(c *node.Config) { c.Dashboard.PublicRead = true }})
	start := func(name, role, dc string, up *meshtest.Node) *meshtest.Node {
		spec := pullSpec(t, name, role, up.URL, up, "edge")
		spec.DC = dc
		return m.Start(spec)
	}
	relay := start("region-a", node.RoleRelay, "dc-a", h)
	ea := start("edge-a1", node.RoleEdge, "dc-a", relay)
	eb := start("edge-b1", node.RoleEdge, "dc-b", h)

	p := h.Upload(t, randomBytes(t, 64<<10), meshtest.PatchMeta{Kernel: kernel, Arch: arch, Version: "107.1"})
	onEvery(t, []*meshtest.Node{ea, eb}, func(n *meshtest.Node) error {
		return wantListed(t, n, p.Digest, []string{"edge"})
	}, "the patch")

	// Four machines: at edge-a1 one applies the patch, one fails to and
	// one only downloads it; at edge-b1 one applies it.
	enroll := h.AuthToken(t, "edge", "fleet")
	refresh := func(mc *machineCLI, hook string) int {
		args := []string{"refresh", "--kernel", kernel, "--arch", arch}
		if hook != "" {
			args = append(args, "--apply-hook", hook)
		}
		code, _, _ := mc.run(t, args...)
		return code
	}
	machines := []struct {
		at   *meshtest.Node
		hook string
	}{{ea, "true"}, {ea, "false"}, {ea, ""}, {eb, "true"}}
	clis := make([]*machineCLI, len(machines))
	for i, mm := range machines {
		mc := newMachineCLI(t, m)
		clis[i] = mc
		meshtest.WaitFor(t, converge, "registration at "+mm.at.Name, func() error {
			code, out, errs := mc.run(t, "--server", mm.at.URL, "register", enroll, "--kernel", kernel, "--arch", arch)
			if code != 0 {
				return fmt.Errorf("exit %d: %s%s", code, out, errs)
			}
			return nil
		})
		if code := refresh(mc, mm.hook); (code == 0) != (mm.hook != "false") {
			t.Fatalf("machine %d at %s: refresh with hook %q exited %d", i, mm.at.Name, mm.hook, code)
		}
	}
	// The hub's summary says so first: the page is then checked against
	// figures that are there.
	meshtest.WaitFor(t, converge, "the four machines in the hub's summary", func() error {
		s, err := summary(h, t, url.Values{})
		if err != nil {
			return err
		}
		if s.Machines != 4 {
			return fmt.Errorf("%d machines", s.Machines)
		}
		return nil
	})

	// Anonymous, with public reads: the topology, but no fleet, on the
	// page or in the view the page reads.
	run(t, ctx, "open the dashboard", chromedp.Navigate(h.URL+"/dashboard/"), chromedp.WaitVisible("#view", chromedp.ByID))
	waitTrue(t, ctx, browserWait, "the fleet panel asking for a login",
		`document.getElementById('panel-fleet').dataset.fleet === 'login' && !document.querySelector('#fleet-grids table')`)
	var panel string
	eval(t, ctx, `document.getElementById('panel-fleet').innerText`, &panel)
	for _, s := range []string{"apply-failed", "applied", "edge-a1", "4 machines"} {
		if strings.Contains(panel, s) {
			t.Errorf("an anonymous visitor's fleet panel shows %q:\n%s", s, panel)
		}
	}
	var hasFleet bool
	eval(t, ctx, `fetch('/v1/dashboard/snapshot', {credentials: 'same-origin'}).then(r => r.json()).then(v => 'fleet' in v || 'fleet_error' in v)`, &hasFleet)
	if hasFleet {
		t.Error("the anonymous view carries the fleet")
	}
	var code int
	eval(t, ctx, status("/v1/admin/reports/summary", "GET", "{}", "undefined"), &code)
	if code != 401 {
		t.Errorf("the fleet summary from the anonymous page: want 401, got %d", code)
	}
	screenshot(t, ctx, "8-fleet-anonymous")

	// Logged in: the grid, within a few seconds.
	run(t, ctx, "log in from the read-only view",
		chromedp.Click("#public-login", chromedp.ByID),
		chromedp.WaitVisible("#login-form", chromedp.ByID),
		chromedp.SendKeys("#login-user", meshtest.AdminUser, chromedp.ByID),
		chromedp.SendKeys("#login-password", meshtest.AdminPassword, chromedp.ByID),
		chromedp.Click("#login-submit", chromedp.ByID),
		chromedp.WaitVisible("#who", chromedp.ByID))
	cell := func(dc, state string, n int) string {
		return fmt.Sprintf(`(document.querySelector('#fleet-grids td[data-tier="edge"][data-dc=%q][data-state=%q]') || {dataset: {}}).dataset.machines === '%d'`, dc, state, n)
	}
	sum := func(dc string, n int) string {
		return fmt.Sprintf(`(document.querySelector('#fleet-grids td.fleet-sum[data-tier="edge"][data-dc=%q]') || {dataset: {}}).dataset.machines === '%d'`, dc, n)
	}
	fresh := func(name string) string {
		return fmt.Sprintf(`(+(document.querySelector('#fleet-nodes tr[data-node=%q]') || {dataset: {age: 1e9}}).dataset.age) < 10`, name)
	}
	waitTrue(t, ctx, fleetWithin, "the four machines per data centre and state",
		`document.getElementById('panel-fleet').dataset.machines === '4' && `+
			cell("dc-a", "applied", 1)+" && "+cell("dc-a", "apply-failed", 1)+" && "+cell("dc-a", "unapplied", 1)+" && "+
			cell("dc-b", "applied", 1)+" && "+cell("dc-b", "apply-failed", 0)+" && "+sum("dc-a", 3)+" && "+sum("dc-b", 1)+" && "+
			fresh(h.Name)+" && "+fresh(relay.Name)+" && "+fresh(ea.Name)+" && "+fresh(eb.Name))
	eval(t, ctx, `document.getElementById('panel-fleet').innerText`, &panel)
	for _, s := range []string{"✕ apply-failed", "✓ applied", "4 machines", "Tier edge: 4 machines"} {
		if !strings.Contains(panel, s) {
			t.Errorf("the fleet panel does not say %q in words:\n%s", s, panel)
		}
	}
	screenshot(t, ctx, "9-fleet")

	// Live: the machine that failed applies the patch on its next refresh,
	// and the page follows.
	if code := refresh(clis[1], "true"); code != 0 {
		t.Fatalf("second refresh of the failed machine: exit %d", code)
	}
	waitTrue(t, ctx, fleetWithin, "the failed machine shown applied",
		cell("dc-a", "applied", 2)+" && !document.querySelector('#fleet-grids td[data-dc=\"dc-a\"][data-state=\"apply-failed\"]')"+
			" && "+sum("dc-a", 3))
}
