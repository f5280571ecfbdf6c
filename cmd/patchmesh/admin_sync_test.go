package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/api"
	"github.com/patchmesh/patchmesh/federation"
	"github.com/patchmesh/patchmesh/internal/nodetest"
)

func TestAdminSyncStatusAndTrigger(t *testing.T) {
	fc := &nodetest.FakeControl{Links: []federation.LinkStatus{{
		Tier: "edge", HubTier: "stable", Upstream: "https://hub.example:8443", State: federation.LinkFailing,
		Cursor: 7, UpstreamHead: 9, HubSeq: 5, HubHead: 7, LagEvents: 2, LagSeconds: 12.4,
		LastSuccess: time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC),
		LastError:   "upstream answered 503", LastErrorAt: time.Date(2026, 11, 23, 8, 1, 0, 0, time.UTC),
		Stale: true, StaleReason: federation.StaleWithheld, HeartbeatTime: time.Date(2026, 11, 23, 8, 1, 0, 0, time.UTC),
		HeartbeatAge: 3.2, HeartbeatHubHead: 9,
	}}}
	n := newTestNode(t, func(c *api.Config) { c.Info.Role = "relay"; c.Sync = fc })
	n.login()

	r := n.mustAdmin("sync", "status")
	for _, want := range []string{"TIER", "HUB TIER", "UPSTREAM", "STATE", "CURSOR/HEAD", "LAG", "LAST SUCCESS", "LAST ERROR",
		"edge", "stable", "https://hub.example:8443", "failing", "7/9", "2 events, 12s", "2026-11-23T08:00:00Z",
		"2026-11-23T08:01:00Z upstream answered 503", "HUB HEARTBEAT", "3s old, hub seq 9 (stale: withheld)"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("sync status output lacks %q:\n%s", want, r.stdout)
		}
	}
	r = n.mustAdmin("sync", "status", "--output", "json")
	var st federation.SyncStatusResponse
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || st.Role != "relay" || len(st.Links) != 1 || st.Links[0].LagEvents != 2 {
		t.Errorf("sync status --output json = %s (%v), want the relay's link", r.stdout, err)
	}

	// Without --wait the round has not run yet: its outcome is not the
	// command's. With it, a failed round fails the command, table shown.
	n.mustAdmin("sync", "trigger")
	r = n.admin("", "sync", "trigger", "--wait")
	if r.code != exitServer || !strings.Contains(r.stdout, "7/9") || !strings.Contains(r.stderr, "edge (upstream answered 503)") {
		t.Errorf("sync trigger --wait with the round failing: exit %d, stdout %q, stderr %q; want %d, the links' table and the failed link",
			r.code, r.stdout, r.stderr, exitServer)
	}
	synced := fc.Status()
	synced[0].State, synced[0].Cursor = federation.LinkSynced, 9
	fc.SetLinks(synced)
	if r := n.mustAdmin("sync", "trigger", "--wait"); !strings.Contains(r.stdout, "9/9") {
		t.Errorf("sync trigger --wait printed %q, want the links' table", r.stdout)
	}
	if got := fc.Waits(); !slices.Equal(got, []bool{false, true, true}) {
		t.Errorf("triggers with wait %v, want [false true true]", got)
	}
	if r := n.admin("", "sync", "trigger", "now"); r.code != exitUsage {
		t.Errorf("sync trigger with an argument: exit %d, want %d", r.code, exitUsage)
	}

	hub := newTestNode(t)
	hub.login()
	if r := hub.mustAdmin("sync", "status"); !strings.Contains(r.stdout, "no sync links") {
		t.Errorf("sync status on the hub: %q, want it to say there are no links", r.stdout)
	}
	if r := hub.admin("", "sync", "trigger"); r.code != exitConflict || !strings.Contains(r.stderr, "not_downstream") {
		t.Errorf("sync trigger on the hub: exit %d, stderr %q; want %d and not_downstream", r.code, r.stderr, exitConflict)
	}
}

func newPublicKey(t *testing.T) ed25519.PublicKey {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

func TestAdminTrust(t *testing.T) {
	cfgPub, newPub := newPublicKey(t), newPublicKey(t)
	cfgKey, newKey := federation.FormatPublicKey(cfgPub), federation.FormatPublicKey(newPub)
	n := newTestNode(t, func(c *api.Config) { c.Info.Role = "edge"; c.ConfigKeys = []string{cfgKey} })
	n.login()

	if r := n.mustAdmin("trust", "add", newKey); !strings.Contains(r.stdout, federation.KeyID(newPub)) {
		t.Errorf("trust add printed %q, want the key ID", r.stdout)
	}
	r := n.mustAdmin("trust", "list")
	for _, want := range []string{"ID", "SOURCE", "ADDED", "KEY", federation.KeyID(cfgPub), "config", cfgKey, federation.KeyID(newPub), "admin", newKey} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("trust list lacks %q:\n%s", want, r.stdout)
		}
	}
	for _, tc := range []struct {
		name string
		args []string
		want int
	}{
		{"duplicate", []string{"trust", "add", newKey}, exitConflict},
		{"pinned in the config", []string{"trust", "add", cfgKey}, exitConflict},
		{"not a key", []string{"trust", "add", "ed25519:nope"}, exitInvalid},
		{"no key", []string{"trust", "add"}, exitUsage},
		{"remove a config key", []string{"trust", "remove", federation.KeyID(cfgPub)}, exitConflict},
		{"remove an unknown key", []string{"trust", "remove", "0123456789abcdef"}, exitNotFound},
	} {
		if r := n.admin("", tc.args...); r.code != tc.want {
			t.Errorf("%s: exit %d, want %d; stderr %s", tc.name, r.code, tc.want, r.stderr)
		}
	}
	n.mustAdmin("trust", "remove", federation.KeyID(newPub))
	r = n.mustAdmin("trust", "list", "--output", "json")
	var out struct{ Keys []struct{ ID, Source string } }
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || len(out.Keys) != 1 || out.Keys[0].Source != "config" {
		t.Errorf("trust list --output json after removal = %s (%v), want only the config key", r.stdout, err)
	}
}

func TestAdminPatchChangesRefusedDownstream(t *testing.T) {
	n := newTestNode(t, func(c *api.Config) { c.Info.Role = "relay" })
	n.login()
	file, _ := writePatchFile(t, []byte("a patch"))
	r := n.admin("", "patches", "upload", file, "--kernel", nodeKernel, "--arch", nodeArch, "--version", "1")
	if r.code != exitConflict || !strings.Contains(r.stderr, "not_hub") {
		t.Errorf("upload on a relay: exit %d, stderr %q; want %d and not_hub", r.code, r.stderr, exitConflict)
	}
	n.mustAdmin("patches", "list")
}

func TestAdminHubKeyNeedsNoLogin(t *testing.T) {
	pub := newPublicKey(t)
	n := newTestNode(t, func(c *api.Config) { c.HubKey = pub })
	r := n.mustAdmin("hub-key")
	if !strings.HasPrefix(r.stdout, federation.FormatPublicKey(pub)+"\n") || !strings.Contains(r.stdout, federation.KeyID(pub)) {
		t.Errorf("admin hub-key printed %q, want the key on the first line and its ID", r.stdout)
	}
	if !strings.Contains(r.stderr, "--hub-key "+federation.FormatPublicKey(pub)) {
		t.Errorf("admin hub-key stderr %q, want how a machine pins the key", r.stderr)
	}
	if req := n.lastRequest("GET", "/v1/sync/hub-key"); req == nil || req.Header.Get("Authorization") != "" {
		t.Error("admin hub-key sent credentials or no request; want a plain GET")
	}
	edge := newTestNode(t, func(c *api.Config) { c.Info.Role, c.HubKey = "edge", nil })
	if r := edge.admin("", "hub-key"); r.code != exitNotFound || !strings.Contains(r.stderr, "not_hub") {
		t.Errorf("admin hub-key on an edge: exit %d, stderr %q; want %d and not_hub", r.code, r.stderr, exitNotFound)
	}
}

func TestHubKeyCommandMakesThenReadsTheKey(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	env := map[string]string{"PATCHMESH_DATA_DIR": dataDir}
	hubKey := func(args ...string) result {
		var stdout, stderr bytes.Buffer
		code := runHubKey(args, func(k string) string { return env[k] }, &stdout, &stderr)
		return result{code, stdout.String(), stderr.String()}
	}

	first := hubKey()
	if first.code != exitOK || !strings.Contains(first.stderr, "Created") {
		t.Fatalf("first hub-key: exit %d, stderr %q; want 0 and a note that the key was created", first.code, first.stderr)
	}
	path := filepath.Join(dataDir, "hub.key")
	priv, created, err := federation.LoadOrCreateKey(path)
	if err != nil || created {
		t.Fatalf("key file at the default path: created %v, %v; want the file hub-key made", created, err)
	}
	pub := priv.Public().(ed25519.PublicKey)
	if want := federation.FormatPublicKey(pub) + "\nid " + federation.KeyID(pub) + "\n"; first.stdout != want {
		t.Errorf("hub-key printed %q, want %q", first.stdout, want)
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("key file: %v, %v; want mode 0600", st, err)
	}
	if again := hubKey(); again.stdout != first.stdout || strings.Contains(again.stderr, "Created") {
		t.Errorf("second hub-key: %q, stderr %q; want the same key, not a new one", again.stdout, again.stderr)
	}

	// Rotation's first step: a new key in a file of its own.
	other := filepath.Join(t.TempDir(), "next.key")
	r := hubKey("--key", other, "--output", "json")
	var out struct{ Key, ID, File string }
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || out.File != other || out.Key == federation.FormatPublicKey(pub) {
		t.Errorf("hub-key --key NEW --output json = %s (%v), want a different key in %s", r.stdout, err, other)
	}

	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if r := hubKey(); r.code != exitServer || !strings.Contains(r.stderr, "chmod 600") {
		t.Errorf("hub-key on a world-readable key: exit %d, stderr %q; want 1 and the fix", r.code, r.stderr)
	}
	if r := hubKey("extra"); r.code != exitUsage {
		t.Errorf("hub-key with an argument: exit %d, want %d", r.code, exitUsage)
	}
	if r := hubKey("--help"); r.code != exitOK || !strings.Contains(r.stdout, "rotating") {
		t.Errorf("hub-key --help: exit %d, stdout %q; want the usage", r.code, r.stdout)
	}
}

// The old hub key endorses the new one; the endorsement verifies against
// the old key alone and names the new one, and no key is ever made for it.
func TestHubKeyEndorsesANewKey(t *testing.T) {
	dir := t.TempDir()
	oldPath, newPath := filepath.Join(dir, "hub.key"), filepath.Join(dir, "hub-2.key")
	oldKey, _, err := federation.LoadOrCreateKey(oldPath)
	if err != nil {
		t.Fatal(err)
	}
	newKey, _, err := federation.LoadOrCreateKey(newPath)
	if err != nil {
		t.Fatal(err)
	}
	newPub := federation.FormatPublicKey(newKey.Public().(ed25519.PublicKey))
	run := func(args ...string) result {
		var stdout, stderr bytes.Buffer
		code := runHubKey(args, func(string) string { return "" }, &stdout, &stderr)
		return result{code, stdout.String(), stderr.String()}
	}
	r := run("--key", oldPath, "--endorse", newPub)
	if r.code != exitOK {
		t.Fatalf("hub-key --endorse: exit %d, stderr %s", r.code, r.stderr)
	}
	env, err := federation.ParseEndorsement(strings.SplitN(r.stdout, "\n", 2)[0])
	if err != nil {
		t.Fatalf("hub-key --endorse printed %q: %v", r.stdout, err)
	}
	_, got, err := federation.NewVerifier(oldKey.Public().(ed25519.PublicKey)).OpenEndorsement(env)
	if err != nil || federation.FormatPublicKey(got) != newPub {
		t.Errorf("endorsement: %v, endorses %s; want it verified by the old key, endorsing %s", err, federation.FormatPublicKey(got), newPub)
	}
	if _, _, err := federation.NewVerifier(newKey.Public().(ed25519.PublicKey)).OpenEndorsement(env); err == nil {
		t.Error("the endorsement verifies with the new key: it must be the old key's")
	}
	missing := filepath.Join(dir, "none.key")
	if r := run("--key", missing, "--endorse", newPub); r.code == exitOK {
		t.Errorf("hub-key --endorse with no key file: exit 0, want a failure")
	}
	if _, err := os.Stat(missing); err == nil {
		t.Error("hub-key --endorse created a key to endorse with")
	}
	if r := run("--key", oldPath, "--endorse", "ed25519:nope"); r.code != exitUsage {
		t.Errorf("hub-key --endorse with a bad key: exit %d, want %d", r.code, exitUsage)
	}
}
