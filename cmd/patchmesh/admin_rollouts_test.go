package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/patchmesh/patchmesh/api"
	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/rollout"
)

// The rollouts commands: a plan from flags, refused input with its exit
// code, the waves table, a halt with its reason shown, resume and abort.
func TestAdminRolloutsLifecycle(t *testing.T) {
	n := newTestNode(t, func(c *api.Config) {
		c.Info.DC = "dc-canary"
		c.Rollouts = rollout.New(rollout.Config{Store: c.Store, DC: "dc-canary", Now: c.Now,
			KnownDCs: func(context.Context) ([]string, error) { return []string{"eu-west", "us-east"}, nil }})
	})
	n.login()
	path, _ := writePatchFile(t, []byte("patch one"))
	n.mustAdmin("patches", "upload", path, "--kernel", nodeKernel, "--arch", nodeArch, "--version", "107.2")

	for _, bad := range []struct {
		args []string
		code int
	}{
		{[]string{"rollouts", "create", "107.2", "--tier", "edge"}, exitUsage},
		{[]string{"rollouts", "create", "107.2", "--tier", "edge", "--waves", "dc-canary"}, exitInvalid},
		{[]string{"rollouts", "create", "107.2", "--tier", "edge", "--waves", "mars-*:0h"}, exitInvalid},
		{[]string{"rollouts", "create", "107.2", "--tier", "edge", "--waves", "dc-canary:0h", "--soak", "soon"}, exitUsage},
		{[]string{"rollouts", "create", "109.1", "--tier", "edge", "--waves", "dc-canary:0h"}, exitNotFound},
	} {
		if r := n.admin("", bad.args...); r.code != bad.code {
			t.Errorf("%v: exit %d, want %d (%s%s)", bad.args, r.code, bad.code, r.stdout, r.stderr)
		}
	}
	if r := n.mustAdmin("rollouts", "list"); strings.Contains(r.stdout, "107.2") {
		t.Fatalf("refused plans left a rollout:\n%s", r.stdout)
	}

	r := n.mustAdmin("rollouts", "create", "107.2", "--tier", "edge", "--waves", "dc-canary:0h,eu-*:6h:10%,us-*:24h",
		"--gate-max-failed", "2.5%", "--gate-min", "20", "--soak", "30m", "--output", "json")
	var ro catalog.Rollout
	if err := json.Unmarshal([]byte(r.stdout), &ro); err != nil {
		t.Fatalf("create --output json: %v in %q", err, r.stdout)
	}
	if ro.Gate != (catalog.Gate{MaxFailedPercent: 2.5, MinReporting: 20, SoakSeconds: 1800}) || len(ro.Waves) != 3 || ro.Waves[1].Percent != 10 {
		t.Errorf("create: want the flags' gate and waves, got %+v", ro)
	}
	if r := n.admin("", "rollouts", "create", "107.2", "--tier", "edge", "--waves", "dc-canary:0h"); r.code != exitConflict {
		t.Errorf("a second live rollout: exit %d, want %d", r.code, exitConflict)
	}
	show := n.mustAdmin("rollouts", "show", ro.ID)
	for _, want := range []string{"active", "eu-*", "6h0m0s", "10%", "below 2.5% failed, at least 20 reporting, for 30m0s"} {
		if !strings.Contains(show.stdout, want) {
			t.Errorf("rollouts show lacks %q:\n%s", want, show.stdout)
		}
	}
	n.mustAdmin("rollouts", "halt", ro.ID, "--reason", "crash reports from eu")
	if list := n.mustAdmin("rollouts", "list", "--tier", "edge"); !strings.Contains(list.stdout, "halted") || !strings.Contains(list.stdout, "crash reports from eu") {
		t.Errorf("rollouts list after the halt:\n%s", list.stdout)
	}
	if r := n.admin("", "rollouts", "halt", ro.ID); r.code != exitConflict {
		t.Errorf("halting a halted rollout: exit %d, want %d", r.code, exitConflict)
	}
	if r := n.mustAdmin("rollouts", "resume", ro.ID); !strings.Contains(r.stdout, "active") {
		t.Errorf("resume:\n%s", r.stdout)
	}
	if r := n.mustAdmin("rollouts", "abort", ro.ID); !strings.Contains(r.stdout, "aborted") || !strings.Contains(r.stdout, "withdrawn") {
		t.Errorf("abort:\n%s", r.stdout)
	}
	if list := n.mustAdmin("patches", "list"); strings.Contains(list.stdout, "107.2") {
		t.Errorf("the aborted version is still listed as live:\n%s", list.stdout)
	}
}
