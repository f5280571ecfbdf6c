package e2e_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/internal/meshtest"
	"github.com/patchmesh/patchmesh/node"
)

// TestDashboardShowsARollout runs a hub whose rollout runner ticks fast,
// an edge in each of two data centres and real `patchmesh client`
// machines, and checks through a real browser the page at the hub: a
// rollout's waves in order with the gate, the second waiting for its
// delay, then turning open once the canary applies, the reach per data
// centre, and the gate's reason in words when a machine fails and halts
// it. A rollout folds and unfolds from the keyboard.
func TestDashboardShowsARollout(t *testing.T) {
	ctx := browser(t)
	m := meshtest.New(t)
	h := rolloutHub(m)
	canary := startIn(t, m, "edge-canary", node.RoleEdge, "dc-canary", h)
	edgeEU := startIn(t, m, "edge-eu", node.RoleEdge, "dc-eu-1", h)
	all := []*meshtest.Node{h, canary, edgeEU}
	h.Admit(t, all...)

	h.Upload(t, randomBytes(t, 4<<10), meshtest.PatchMeta{Kernel: kernel, Arch: arch, Version: "107.1"})
	waitListed(t, all, "107.1")
	enroll := h.AuthToken(t, "edge", "rollout")
	mCanary := newRolloutMachine(t, m, canary, enroll)
	mEU := newRolloutMachine(t, m, edgeEU, enroll)
	for _, mc := range []*rolloutMachine{mCanary, mEU} {
		mc.wantOffered(t, "107.1", "before the rollout")
	}
	waitDCsKnown(t, h, "dc-canary", "dc-eu-1")

	// The eu wave waits 5 s after the canary's and for a canary machine
	// to report; the last one (the hub's own data centre) an hour, so the
	// rollout stays live for the halt.
	h.Upload(t, randomBytes(t, 4<<10), meshtest.PatchMeta{Kernel: kernel, Arch: arch, Version: "107.2"})
	waitListed(t, all, "107.2")
	ro := createRollout(t, h, map[string]any{"tier": "edge", "version": "107.2",
		"waves": "dc-canary:0s,dc-eu-*:5s,dc-hub:1h", "max_failed_percent": 50, "min_reporting": 1, "soak_seconds": 1})

	run(t, ctx, "log in",
		chromedp.Navigate(h.URL+"/dashboard/"),
		chromedp.WaitVisible("#login-form", chromedp.ByID),
		chromedp.SendKeys("#login-user", meshtest.AdminUser, chromedp.ByID),
		chromedp.SendKeys("#login-password", meshtest.AdminPassword, chromedp.ByID),
		chromedp.Click("#login-submit", chromedp.ByID),
		chromedp.WaitVisible("#who", chromedp.ByID))
	sel := fmt.Sprintf(`#rollouts-list details[data-rollout=%q]`, ro.ID)
	wave := func(n int, state string) string {
		return fmt.Sprintf(`(document.querySelector('%s li[data-wave="%d"]') || {dataset: {}}).dataset.waveState === %q`, sel, n, state)
	}
	waitTrue(t, ctx, browserWait, "the rollout, its first wave open and the others waiting",
		`document.getElementById('panel-rollouts').dataset.rollouts === '1' && `+wave(1, "open")+" && "+wave(2, "waiting")+" && "+wave(3, "waiting"))
	var text string
	eval(t, ctx, `document.querySelector('`+sel+`').innerText`, &text)
	for _, s := range []string{"107.2 on tier edge", "▶ active", "1 of 3 waves open", "Wave 1: dc-canary", "✓ open since",
		"Wave 2: dc-eu-*", "… waiting: next, opens at", "at least 1 machine", "fewer than 50% of them failed", "held for 1 s",
		"Wave 3: dc-hub", "1 h after wave 2 opens", "dc-canary", "dc-eu-1"} {
		if !strings.Contains(text, s) {
			t.Errorf("the rollout does not say %q:\n%s", s, text)
		}
	}
	screenshot(t, ctx, "10-rollout-waiting")

	// The canary applies 107.2: the gate passes, and past the delay the
	// eu wave opens, on the page too.
	mCanary.wantOffered(t, "107.2", "canary in the open wave")
	waitRollout(t, h, ro.ID, "eu wave open", opened(2))
	reach := func(wave int, dc string, applied, machines int) string {
		return fmt.Sprintf(`(d => d && d.dataset.applied === '%d' && d.dataset.machines === '%d')(document.querySelector('%s li[data-wave="%d"] tr[data-dc=%q]'))`,
			applied, machines, sel, wave, dc)
	}
	waitTrue(t, ctx, fleetWithin, "the eu wave shown open, the canary's machine applied",
		wave(2, "open")+" && "+wave(3, "waiting")+" && "+reach(1, "dc-canary", 1, 1)+" && "+reach(2, "dc-eu-1", 0, 1))
	screenshot(t, ctx, "11-rollout-open")

	// The eu machine fails to apply: 1 of the 2 reporting failed, at the
	// 50% allowed, and the gate halts the rollout; the page says why.
	if state, v := mEU.refresh(t, "exit 3"); v != "107.2" || state != "apply-failed" {
		t.Fatalf("eu: want 107.2 apply-failed, got %q %s", v, state)
	}
	halted := waitRollout(t, h, ro.ID, "halted at the gate", inState(catalog.RolloutHalted))
	waitTrue(t, ctx, fleetWithin, "the halt, its reason and the failed machine in its data centre",
		fmt.Sprintf(`document.querySelector('%s').dataset.state === 'halted' && document.querySelector('%s .rollout-reason').textContent.includes(%q) && `+
			`(document.querySelector('%s li[data-wave="2"] tr[data-dc="dc-eu-1"]') || {dataset: {}}).dataset.failed === '1'`,
			sel, sel, halted.Reason, sel))
	eval(t, ctx, `document.querySelector('`+sel+`').innerText`, &text)
	for _, s := range []string{"‖ halted", "‖ Halted: gate before wave 3 (dc-hub)", "1 of 2 machines", "‖ waiting: the rollout is halted", "✕ 1"} {
		if !strings.Contains(text, s) {
			t.Errorf("the halted rollout does not say %q:\n%s", s, text)
		}
	}
	screenshot(t, ctx, "12-rollout-halted")

	// From the keyboard: Enter on the rollout's summary folds it, and it
	// stays folded as new views arrive; Enter again unfolds it.
	summary := sel + " summary"
	run(t, ctx, "fold the rollout", chromedp.Focus(summary, chromedp.ByQuery), chromedp.KeyEvent(kb.Enter))
	waitTrue(t, ctx, browserWait, "the rollout folded, after a new view", `!document.querySelector('`+sel+`').open`)
	var before string
	eval(t, ctx, `document.getElementById('updated').textContent`, &before)
	waitTrue(t, ctx, browserWait, "a new view, the rollout still folded and its summary focused",
		fmt.Sprintf(`document.getElementById('updated').textContent !== %q && !document.querySelector('%s').open && document.activeElement.matches('%s')`, before, sel, summary))
	run(t, ctx, "unfold the rollout", chromedp.KeyEvent(kb.Enter))
	waitTrue(t, ctx, browserWait, "the rollout unfolded", `document.querySelector('`+sel+`').open`)
}
