package e2e_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/internal/meshtest"
	"github.com/patchmesh/patchmesh/node"
)

// netns is a network namespace the test made, wired to the test's own by
// a veth pair on a /24 of its own: the host side at HostIP, the namespace
// side (eth0) at IP. Taking the host side down partitions the namespace.
type netns struct {
	Name, hostIf, HostIP, IP string
}

// newNetns makes the namespace and its link, and removes both when the
// test ends, failed or not. It skips the test where namespaces cannot be
// made (not root, no ip command, no permission in a container).
func newNetns(t *testing.T) *netns {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("no ip command (iproute2) to make network namespaces")
	}
	tag := fmt.Sprintf("%06x", rand.IntN(1<<24))
	subnet := ""
	addrs, _ := exec.Command("ip", "-4", "-o", "addr").Output()
	for range 50 { // bounded: a /24 nobody on this machine uses
		s := fmt.Sprintf("10.77.%d.", 100+rand.IntN(150))
		if !strings.Contains(string(addrs), s) {
			subnet = s
			break
		}
	}
	if subnet == "" {
		t.Fatal("no free 10.77.x.0/24 for the test's namespace")
	}
	ns := &netns{Name: "pmtest-" + tag, hostIf: "pmh" + tag, HostIP: subnet + "1", IP: subnet + "2"}
	if out, err := exec.Command("ip", "netns", "add", ns.Name).CombinedOutput(); err != nil {
		t.Skipf("ip netns add refused (%v: %s); this test needs network namespaces", err, out)
	}
	t.Cleanup(func() {
		// Deleting the namespace deletes its end of the veth pair, and so
		// the pair; the explicit delete covers a namespace that lingers.
		exec.Command("ip", "link", "del", ns.hostIf).Run()
		if out, err := exec.Command("ip", "netns", "del", ns.Name).CombinedOutput(); err != nil {
			t.Errorf("remove namespace %s: %v: %s", ns.Name, err, out)
		}
	})
	for _, args := range [][]string{
		{"link", "add", ns.hostIf, "type", "veth", "peer", "name", "eth0", "netns", ns.Name},
		{"addr", "add", ns.HostIP + "/24", "dev", ns.hostIf},
		{"link", "set", ns.hostIf, "up"},
		{"netns", "exec", ns.Name, "ip", "addr", "add", ns.IP + "/24", "dev", "eth0"},
		{"netns", "exec", ns.Name, "ip", "link", "set", "eth0", "up"},
		{"netns", "exec", ns.Name, "ip", "link", "set", "lo", "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	return ns
}

// setLink brings the host side of the pair up or down: down is the
// partition, up heals it.
func (ns *netns) setLink(t *testing.T, state string) {
	t.Helper()
	if out, err := exec.Command("ip", "link", "set", ns.hostIf, state).CombinedOutput(); err != nil {
		t.Fatalf("ip link set %s %s: %v: %s", ns.hostIf, state, err, out)
	}
}

// An edge cut off from the whole mesh (its own network namespace, the
// link to it taken down) is declared dead by the others, goes on serving
// the patch it has to a machine beside it, and converges, gossip and
// patches, once the partition heals.
func TestTopologyPartitionedEdgeServesWhatItHasThenConverges(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	m := meshtest.New(t) // after newNetns: its cleanup (the processes) runs first
	m.Gossip = gossipProfile
	// Everything outside the namespace listens on the host side of the
	// pair: loopback addresses are out of the namespace's reach.
	h := m.Start(meshtest.Spec{Name: "hub", Role: node.RoleHub, Host: ns.HostIP})
	rspec := pullSpec(t, "region", node.RoleRelay, h.URL, h, "edge")
	rspec.Host = ns.HostIP
	r := m.Start(rspec)
	cspec := pullSpec(t, "edge-control", node.RoleEdge, r.URL, r, "edge")
	cspec.Host = ns.HostIP
	control := m.Start(cspec)
	espec := pullSpec(t, "edge-cut", node.RoleEdge, r.URL, r, "edge")
	espec.Host, espec.Netns = ns.IP, ns.Name
	cut := m.Start(espec)
	all := []*meshtest.Node{h, r, control, cut}
	viewEvery(t, all, converge, "every member alive", allAlive(all))
	// The machine registers only at a node the hub admitted; the patch
	// below follows the admission down the feed.
	h.Admit(t, cut)

	old := h.Upload(t, randomBytes(t, 64<<10), meshtest.PatchMeta{Kernel: kernel, Arch: arch, Version: "4.1"})
	onEvery(t, all[1:], func(n *meshtest.Node) error { return wantListed(t, n, old.Digest, []string{"edge"}) }, "the first patch")

	// The machine sits beside the edge, in its namespace.
	mc := newMachineCLI(t, m)
	mc.netns = ns.Name
	// The token is the edge's own, so no hub-signed record of it exists:
	// the operator names the hub tier.
	if code, out, errs := mc.run(t, "--server", cut.URL, "register", cut.AuthToken(t, "edge", "fleet"), "--hub-tier", "edge", "--kernel", kernel, "--arch", arch); code != 0 {
		t.Fatalf("register at %s: exit %d: %s%s", cut.Name, code, out, errs)
	}

	ns.setLink(t, "down")
	rest := all[:3]
	viewEvery(t, rest, detectWithin, "the cut edge dead", deadIn(cut, rest))
	neu := h.Upload(t, randomBytes(t, 64<<10), meshtest.PatchMeta{Kernel: kernel, Arch: arch, Version: "4.2"})
	onEvery(t, []*meshtest.Node{control}, func(n *meshtest.Node) error { return wantListed(t, n, neu.Digest, []string{"edge"}) }, "the second patch on the side still connected")
	if got := mc.refresh(t); got != old.Digest {
		t.Fatalf("refresh beside the cut edge: want the old patch %s applied, got %s", old.Digest, got)
	}

	// Hold the partition past memberlist's gossip to the dead (15 s in
	// the local profile): after it, memberlist alone never contacts a
	// dead member again, and only patchmesh's reconnecting heals it.
	time.Sleep(partitionHeld)
	ns.setLink(t, "up")
	healed := time.Now()
	viewEvery(t, all, converge, "every member alive after the partition heals", allAlive(all))
	t.Logf("every member saw every other alive %v after the link came back", time.Since(healed).Round(100*time.Millisecond))
	onEvery(t, []*meshtest.Node{cut}, func(n *meshtest.Node) error { return wantListed(t, n, neu.Digest, []string{"edge"}) }, "the cut edge caught up")
	if got := mc.refresh(t); got != neu.Digest {
		t.Fatalf("refresh after healing: want the new patch %s applied, got %s", neu.Digest, got)
	}
}

// partitionHeld is how long the partition lasts once the rest of the mesh
// has seen the cut edge dead and has moved on without it.
const partitionHeld = 20 * time.Second

// refresh runs `client refresh` with a hook that accepts any verified
// patch, wants exit 0 and the patch applied, and returns its digest.
func (c *machineCLI) refresh(t *testing.T) string {
	t.Helper()
	code, out, errs := c.run(t, "--output", "json", "refresh", "--kernel", kernel, "--arch", arch,
		"--apply-hook", `test -s "$PATCHMESH_PATCH_FILE"`)
	if code != 0 {
		t.Fatalf("client refresh: want exit 0, got %d: %s%s", code, out, errs)
	}
	var res struct {
		State string
		Patch struct{ Digest string }
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("client refresh output: %v in %q", err, out)
	}
	if res.State != "applied" {
		t.Fatalf("client refresh: want applied, got %+v", res)
	}
	return res.Patch.Digest
}
