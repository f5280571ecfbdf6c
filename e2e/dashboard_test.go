package e2e_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/patchmesh/patchmesh/internal/meshtest"
	"github.com/patchmesh/patchmesh/node"
)

// The dashboard's browser tests drive a real headless Chromium (Debian's
// chromium package; scripts/chromium.sh installs it when absent) against
// real patchmesh processes, and save screenshots under shotDir for a person
// to look at: PATCHMESH_DASHBOARD_SHOTS, or $TMPDIR/patchmesh-dashboard.

// browserWait bounds every wait for the page; the page gets a view a
// second, so anything it should show shows well within it. liveWithin is
// the page's promise, a change on the page within 2 s, plus the test's own
// poll of the page and the SSE delivery.
const (
	browserWait = 20 * time.Second
	liveWithin  = 3 * time.Second
)

// chromium finds or installs the browser; a machine without one fails the
// test rather than skipping it.
func chromium(t *testing.T) string {
	t.Helper()
	script, err := filepath.Abs("../scripts/chromium.sh")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, script).Output()
	if err != nil {
		t.Fatalf("scripts/chromium.sh: %v", err)
	}
	return strings.TrimSpace(string(out))
}

func shotDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("PATCHMESH_DASHBOARD_SHOTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "patchmesh-dashboard")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// browser starts a headless Chromium with a fresh profile, with the flags
// that keep it off the (closed) network, and returns a tab's context.
func browser(t *testing.T) context.Context {
	t.Helper()
	// Not t.TempDir: the browser's helpers may still write to the profile
	// for a moment after it is told to stop, which TempDir reports as an
	// error. The profile is removed after the browser, best effort.
	profile, err := os.MkdirTemp("", "patchmesh-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium(t)),
		chromedp.UserDataDir(profile),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.WindowSize(1366, 900),
	}
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelB := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancelB()
		cancelA()
		for range 10 { // bounded: helpers exit within a second or so
			if os.RemoveAll(profile) == nil {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
	})
	if err := chromedp.Run(ctx); err != nil { // starts the browser
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// run runs browser actions, bounded in time.
func run(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, browserWait)
	defer cancel()
	if err := chromedp.Run(ctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// eval evaluates a JS expression in the page, awaiting a promise.
func eval(t *testing.T, ctx context.Context, expr string, out any) {
	t.Helper()
	run(t, ctx, "evaluate "+expr, chromedp.Evaluate(expr, out, func(p *runtime.EvaluateParams) *runtime.EvaluateParams {
		return p.WithAwaitPromise(true)
	}))
}

// waitTrue polls a JS expression until it is true, for at most within,
// and fails with what and the page's last answer otherwise.
func waitTrue(t *testing.T, ctx context.Context, within time.Duration, what, expr string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		var ok bool
		ectx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := chromedp.Run(ectx, chromedp.Evaluate(expr, &ok))
		cancel()
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			var conn string
			_ = chromedp.Run(ctx, chromedp.Text("#conn", &conn, chromedp.ByID))
			var png []byte
			if chromedp.Run(ctx, chromedp.FullScreenshot(&png, 100)) == nil {
				p := filepath.Join(shotDir(t), "failed-"+strings.ReplaceAll(t.Name(), "/", "-")+".png")
				if os.WriteFile(p, png, 0o644) == nil {
					t.Logf("the page as it was: %s", p)
				}
			}
			t.Fatalf("page: want %s within %v (evaluate: %v; connection says %q)", what, within, err, conn)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// screenshot saves the whole page at a laptop's width and at a large
// screen's, as NAME-laptop.png and NAME-wide.png.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	for _, size := range []struct {
		tag  string
		w, h int64
	}{{"laptop", 1366, 768}, {"wide", 2560, 1440}} {
		var png []byte
		run(t, ctx, "screenshot "+name,
			emulation.SetDeviceMetricsOverride(size.w, size.h, 1, false),
			chromedp.Sleep(300*time.Millisecond), // one layout after the resize
			chromedp.FullScreenshot(&png, 100))   // 100: PNG, not JPEG
		p := filepath.Join(shotDir(t), name+"-"+size.tag+".png")
		if err := os.WriteFile(p, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot %s", p)
	}
	run(t, ctx, "restore the viewport", emulation.ClearDeviceMetricsOverride())
}

// status is the JS for the HTTP status of a fetch from the page.
func status(path, method, headers, body string) string {
	return fmt.Sprintf(`fetch(%q, {method: %q, credentials: 'same-origin', headers: %s, body: %s}).then(r => r.status)`,
		path, method, headers, body)
}

// TestDashboardInABrowser runs a hub, a region relay and an edge with
// gossip, and checks through a real browser what an operator sees: no
// admin data before login, CSRF refusals, the login, the nodes and links,
// a patch's propagation to every node, a SIGKILLed edge turning dead, the
// logout, and the page saying its own node is unreachable.
func TestDashboardInABrowser(t *testing.T) {
	ctx := browser(t)

	m := meshtest.New(t)
	m.Gossip = gossipProfile
	// Which nodes hold a patch is asked at their peer listeners, over
	// mutual TLS: every node gets one, and is admitted.
	m.MTLS = true
	h := m.Start(meshtest.Spec{Name: "hub", Role: node.RoleHub, DC: "dc-hub"})
	rspec := pullSpec(t, "region-a", node.RoleRelay, h.URL, h, "edge")
	rspec.DC = "dc-a"
	relay := m.Start(rspec)
	espec := pullSpec(t, "edge-a1", node.RoleEdge, relay.URL, relay, "edge")
	espec.DC = "dc-a"
	edge := m.Start(espec)
	page := h.URL + "/dashboard/"

	// Before login: the login form, no node named, the view refused.
	run(t, ctx, "open the dashboard", chromedp.Navigate(page), chromedp.WaitVisible("#login-form", chromedp.ByID))
	var text string
	run(t, ctx, "read the page", chromedp.Text("body", &text, chromedp.ByQuery))
	for _, name := range []string{relay.Name, edge.Name} {
		if strings.Contains(text, name) {
			t.Errorf("before login the page names %s:\n%s", name, text)
		}
	}
	var shown []string
	eval(t, ctx, `['view', 'who', 'logout'].filter(id => document.getElementById(id).getClientRects().length > 0)`, &shown)
	if len(shown) != 0 {
		t.Errorf("before login the page shows %v; want the login form alone", shown)
	}
	var code int
	eval(t, ctx, status("/v1/dashboard/snapshot", "GET", "{}", "undefined"), &code)
	if code != 401 {
		t.Errorf("snapshot without login: want 401, got %d", code)
	}
	eval(t, ctx, status("/v1/dashboard/events?limit=1", "GET", "{}", "undefined"), &code)
	if code != 401 {
		t.Errorf("event stream without login: want 401, got %d", code)
	}
	screenshot(t, ctx, "1-login")

	// CSRF: the right password without the token, or with a wrong one, is
	// refused before the password is looked at, and logs nobody in.
	creds := fmt.Sprintf(`JSON.stringify({user: %q, password: %q})`, meshtest.AdminUser, meshtest.AdminPassword)
	for _, hdr := range []string{
		`{'Content-Type': 'application/json'}`,
		`{'Content-Type': 'application/json', 'X-CSRF-Token': 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA'}`,
	} {
		eval(t, ctx, status("/v1/dashboard/login", "POST", hdr, creds), &code)
		if code != 403 {
			t.Errorf("login with headers %s: want 403, got %d", hdr, code)
		}
	}
	var authed bool
	eval(t, ctx, `fetch('/v1/dashboard/session', {credentials: 'same-origin'}).then(r => r.json()).then(s => s.authenticated)`, &authed)
	if authed {
		t.Fatal("a login refused for CSRF left a session")
	}

	// A wrong password, then the right one.
	run(t, ctx, "log in wrongly",
		chromedp.SendKeys("#login-user", meshtest.AdminUser, chromedp.ByID),
		chromedp.SendKeys("#login-password", "not-the-password", chromedp.ByID),
		chromedp.Click("#login-submit", chromedp.ByID))
	waitTrue(t, ctx, browserWait, "a wrong password refused", `document.getElementById('login-error').textContent.includes('Wrong')`)
	run(t, ctx, "log in",
		chromedp.Evaluate(`document.getElementById('login-user').value = ''`, nil),
		chromedp.SendKeys("#login-user", meshtest.AdminUser, chromedp.ByID),
		chromedp.SendKeys("#login-password", meshtest.AdminPassword, chromedp.ByID),
		chromedp.Click("#login-submit", chromedp.ByID),
		chromedp.WaitVisible("#view", chromedp.ByID))
	var cookieVisible bool
	eval(t, ctx, `document.cookie.includes('patchmesh_session')`, &cookieVisible)
	if cookieVisible {
		t.Error("the session cookie is readable by the page's script; want HttpOnly")
	}

	// The three nodes, alive, and the two links.
	alive := func(n *meshtest.Node) string {
		return fmt.Sprintf(`(document.querySelector('#graph [data-node=%q]') || {dataset: {}}).dataset.state === 'alive'`, n.Name)
	}
	waitTrue(t, ctx, browserWait, "three nodes alive and two links",
		alive(h)+" && "+alive(relay)+" && "+alive(edge)+
			` && document.querySelectorAll('#graph path.link').length === 2`+
			fmt.Sprintf(` && !!document.querySelector('#graph path.link[data-from=%q][data-to=%q]')`, relay.Name, edge.Name))
	screenshot(t, ctx, "2-topology")

	// A patch uploaded at the hub reaches every node, on the page.
	p := h.Upload(t, randomBytes(t, 64<<10), meshtest.PatchMeta{Kernel: kernel, Arch: arch, Version: "107.1"})
	row := fmt.Sprintf(`document.querySelector('#patches tr[data-digest=%q]')`, p.Digest)
	waitTrue(t, ctx, liveWithin, "the new patch listed", "!!"+row)
	waitTrue(t, ctx, browserWait, "the patch held by all three nodes",
		row+".dataset.expected === '3' && "+row+".dataset.held === '3'")
	screenshot(t, ctx, "3-patch")

	// kill -9 of the edge: dead on the page within the detection bound.
	edge.Kill(t)
	waitTrue(t, ctx, detectWithin, "the killed edge shown dead",
		fmt.Sprintf(`(document.querySelector('#graph [data-node=%q]') || {dataset: {}}).dataset.state === 'dead'`, edge.Name))
	var label string
	run(t, ctx, "read the dead node's label",
		chromedp.AttributeValue(fmt.Sprintf(`#graph [data-node=%q]`, edge.Name), "aria-label", &label, nil, chromedp.ByQuery))
	if !strings.Contains(label, "dead") {
		t.Errorf("the dead node's label %q does not say dead in words", label)
	}
	screenshot(t, ctx, "4-edge-dead")

	// Keyboard: the relay's node is reachable by Tab and Enter shows it.
	run(t, ctx, "choose the relay by keyboard",
		chromedp.Focus(fmt.Sprintf(`#graph [data-node=%q]`, relay.Name), chromedp.ByQuery),
		chromedp.KeyEvent("\r"))
	waitTrue(t, ctx, browserWait, "the relay's detail", fmt.Sprintf(`document.getElementById('detail-name').textContent === %q`, relay.Name))

	// A logout without the CSRF token is refused and changes nothing.
	eval(t, ctx, status("/v1/dashboard/logout", "POST", "{}", "undefined"), &code)
	if code != 403 {
		t.Errorf("logout without the CSRF token: want 403, got %d", code)
	}
	eval(t, ctx, `fetch('/v1/dashboard/session', {credentials: 'same-origin'}).then(r => r.json()).then(s => s.authenticated)`, &authed)
	if !authed {
		t.Fatal("a logout refused for CSRF ended the session")
	}

	// Log out: the login form again, and the view refused.
	run(t, ctx, "log out", chromedp.Click("#logout", chromedp.ByID), chromedp.WaitVisible("#login-form", chromedp.ByID))
	eval(t, ctx, status("/v1/dashboard/snapshot", "GET", "{}", "undefined"), &code)
	if code != 401 {
		t.Errorf("snapshot after logout: want 401, got %d", code)
	}

	// Log in again, then lose the node serving the page.
	run(t, ctx, "log in again",
		chromedp.Evaluate(`document.getElementById('login-user').value = ''`, nil),
		chromedp.SendKeys("#login-user", meshtest.AdminUser, chromedp.ByID),
		chromedp.SendKeys("#login-password", meshtest.AdminPassword, chromedp.ByID),
		chromedp.Click("#login-submit", chromedp.ByID),
		chromedp.WaitVisible("#view", chromedp.ByID))
	waitTrue(t, ctx, browserWait, "live again", `document.getElementById('conn').dataset.state === 'live'`)
	h.Kill(t)
	waitTrue(t, ctx, 5*time.Second, "the page saying its node is unreachable",
		`document.getElementById('conn').dataset.state === 'down' && document.getElementById('conn').textContent.includes('Unreachable')`)
	screenshot(t, ctx, "5-unreachable")
	h.Start(t)
	waitTrue(t, ctx, browserWait, "the page live again after the node restarts", `document.getElementById('conn').dataset.state === 'live'`)
}

// TestDashboardShowsAFailover kills a region's relay: the page at the hub
// shows the relay dead, and its edge moved to the other region, on the
// graph and in the list of failovers.
func TestDashboardShowsAFailover(t *testing.T) {
	ctx := browser(t)
	m := meshtest.New(t)
	m.Gossip = gossipProfile
	// Which nodes hold a patch is asked at their peer listeners, over
	// mutual TLS: every node gets one, and is admitted.
	m.MTLS = true
	h, rs := regionsMesh(t, m, 1, "a", "b")
	a, b := rs[0], rs[1]
	edge := a.edges[0]

	login(t, ctx, h.URL+"/dashboard/")
	alive := func(n *meshtest.Node) string {
		return fmt.Sprintf(`(document.querySelector('#graph [data-node=%q]') || {dataset: {}}).dataset.state === 'alive'`, n.Name)
	}
	waitTrue(t, ctx, converge, "every node alive, the edge under its own region",
		alive(h)+" && "+alive(a.relay)+" && "+alive(b.relay)+" && "+alive(edge)+" && "+alive(b.edges[0])+
			fmt.Sprintf(` && !!document.querySelector('#graph path.link[data-from=%q][data-to=%q]')`, a.relay.Name, edge.Name))

	a.relay.Kill(t)
	// A patch published meanwhile reaches the edge through the other region.
	waitTrue(t, ctx, detectWithin, "the region dead",
		fmt.Sprintf(`(document.querySelector('#graph [data-node=%q]') || {dataset: {}}).dataset.state === 'dead'`, a.relay.Name))
	p := h.Upload(t, randomBytes(t, 64<<10), meshtest.PatchMeta{Kernel: kernel, Arch: arch, Version: "3.1"})
	row := fmt.Sprintf(`document.querySelector('#patches tr[data-digest=%q]')`, p.Digest)
	waitTrue(t, ctx, converge, "the patch on the edge that failed over",
		fmt.Sprintf(`!!%s && !!%s.querySelector('[data-node=%q][data-hold="held"]')`, row, row, edge.Name))
	waitTrue(t, ctx, converge, "the edge moved to the other region",
		fmt.Sprintf(`(document.querySelector('#graph [data-node=%q]') || {dataset: {}}).dataset.state === 'dead'`, a.relay.Name)+
			fmt.Sprintf(` && !!document.querySelector('#graph path.link[data-from=%q][data-to=%q]')`, b.relay.Name, edge.Name)+
			fmt.Sprintf(` && [...document.querySelectorAll('#moves li[data-node=%q]')].some(li => li.textContent.includes(%q))`, edge.Name, "to "+b.relay.Name))
	var label string
	eval(t, ctx, `document.getElementById('graph').textContent`, &label)
	if !strings.Contains(label, "failed over") {
		t.Errorf("the graph does not mark the moved link as failed over: %q", label)
	}
	screenshot(t, ctx, "6-failover")
}

// TestDashboardPublicReadShowsTheViewWithoutLogin turns
// dashboard.public_read on: the view shows without a login, and the
// dashboard's POSTs still need the CSRF token.
func TestDashboardPublicReadShowsTheViewWithoutLogin(t *testing.T) {
	ctx := browser(t)
	m := meshtest.New(t)
	h := m.Start(meshtest.Spec{Name: "hub", Role: node.RoleHub, Configure: func(c *node.Config) { c.Dashboard.PublicRead = true }})
	run(t, ctx, "open the dashboard", chromedp.Navigate(h.URL+"/"), chromedp.WaitVisible("#view", chromedp.ByID))
	waitTrue(t, ctx, browserWait, "the hub shown alive, nobody logged in",
		`(document.querySelector('#graph [data-node="hub"]') || {dataset: {}}).dataset.state === 'alive'`+
			` && document.getElementById('who').hidden && document.getElementById('login').hidden`)
	var code int
	eval(t, ctx, status("/v1/dashboard/logout", "POST", "{}", "undefined"), &code)
	if code != 403 {
		t.Errorf("logout without the CSRF token under public reads: want 403, got %d", code)
	}
	screenshot(t, ctx, "7-public-read")
	// An admin can still log in from the read-only view.
	run(t, ctx, "log in from the read-only view",
		chromedp.Click("#public-login", chromedp.ByID),
		chromedp.WaitVisible("#login-form", chromedp.ByID),
		chromedp.SendKeys("#login-user", meshtest.AdminUser, chromedp.ByID),
		chromedp.SendKeys("#login-password", meshtest.AdminPassword, chromedp.ByID),
		chromedp.Click("#login-submit", chromedp.ByID),
		chromedp.WaitVisible("#who", chromedp.ByID))
}

// login opens page and logs in as the mesh's admin.
func login(t *testing.T, ctx context.Context, page string) {
	t.Helper()
	run(t, ctx, "log in",
		chromedp.Navigate(page),
		chromedp.WaitVisible("#login-form", chromedp.ByID),
		chromedp.SendKeys("#login-user", meshtest.AdminUser, chromedp.ByID),
		chromedp.SendKeys("#login-password", meshtest.AdminPassword, chromedp.ByID),
		chromedp.Click("#login-submit", chromedp.ByID),
		chromedp.WaitVisible("#view", chromedp.ByID))
}
