package federation

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/store"
)

func TestMeshKeyVerifies(t *testing.T) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	secret := bytes.Repeat([]byte{7}, 32)
	at := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	mk, err := SignMeshKey(priv, secret, at)
	if err != nil {
		t.Fatal(err)
	}
	got, err := NewVerifier(pub).OpenMeshKey(Envelope{Record: mk.Record, Sig: mk.Sig})
	if err != nil {
		t.Fatalf("OpenMeshKey of a good statement: %v", err)
	}
	if !bytes.Equal(got.Secret, secret) || got.ID != MeshKeyID(secret) || !got.Issued.Equal(at) {
		t.Fatalf("OpenMeshKey: want the secret, its ID and %v, got %+v", at, got)
	}
	if strings.Contains(got.ID, fmt.Sprintf("%x", secret)[:8]) {
		t.Errorf("the key ID %s shows the secret", got.ID)
	}

	otherPub, otherPriv, _ := ed25519.GenerateKey(rand.Reader)
	// A record's signature over the same bytes is not a mesh key
	// statement's: the statement is signed under its own context.
	recordSig := ed25519.Sign(priv, mk.Record)
	tampered := bytes.Replace(mk.Record, []byte(`"issued"`), []byte(` "issued"`), 1)
	other, _ := SignMeshKey(otherPriv, secret, at)
	for _, tc := range []struct {
		name string
		v    *Verifier
		env  Envelope
		want error
	}{
		{"tampered bytes", NewVerifier(pub), Envelope{Record: tampered, Sig: mk.Sig}, ErrBadSignature},
		{"a plain signature over the bytes", NewVerifier(pub), Envelope{Record: mk.Record, Sig: recordSig}, ErrBadSignature},
		{"an unpinned key", NewVerifier(pub), Envelope{Record: other.Record, Sig: other.Sig}, ErrUnknownKey},
		{"pinned elsewhere only", NewVerifier(otherPub), Envelope{Record: mk.Record, Sig: mk.Sig}, ErrUnknownKey},
		{"not JSON", NewVerifier(pub), Envelope{Record: []byte("nope"), Sig: mk.Sig}, ErrBadMeshKey},
	} {
		_, err := tc.v.OpenMeshKey(tc.env)
		if !errors.Is(err, tc.want) || !errors.Is(err, ErrBadMeshKey) {
			t.Errorf("%s: want %v (and ErrBadMeshKey), got %v", tc.name, tc.want, err)
		}
	}
	if _, err := SignMeshKey(priv, []byte("short"), at); err == nil {
		t.Error("SignMeshKey of a 5-byte secret: want an error, got nil")
	}
}

func goodPush(now time.Time) ReportPush {
	return ReportPush{V: FormatVersion, Node: "edge-a1", Tier: "edge", Seq: 1, Entries: []ReportEntry{{
		Node: "edge-a1", DC: "dc-a", AsOf: now, Rows: true,
		Counts:   []ReportCount{{Kernel: "5.15.0-107.117-generic", PatchVersion: "107.1", State: catalog.StateApplied, Machines: 1}},
		Machines: []ReportMachine{{ID: strings.Repeat("a", 64), Kernel: "5.15.0-107.117-generic", Arch: "x86_64", State: catalog.StateApplied, PatchVersion: "107.1", LastSeen: now}},
	}}}
}

func TestReportPushValidate(t *testing.T) {
	now := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	if err := goodPush(now).Validate(now); err != nil {
		t.Fatalf("a good push: %v", err)
	}
	for _, tc := range []struct {
		field string
		edit  func(p *ReportPush)
	}{
		{"v", func(p *ReportPush) { p.V = 2 }},
		{"node", func(p *ReportPush) { p.Node = "" }},
		{"tier", func(p *ReportPush) { p.Tier = "Not A Tier" }},
		{"seq", func(p *ReportPush) { p.Seq = 0 }},
		{"entries[0].dc", func(p *ReportPush) { p.Entries[0].DC = "dc a" }},
		{"entries[0].as_of", func(p *ReportPush) { p.Entries[0].AsOf = now.Add(time.Hour) }},
		{"entries[1].node", func(p *ReportPush) { p.Entries = append(p.Entries, p.Entries[0]) }},
		{"entries[0].counts[0].state", func(p *ReportPush) { p.Entries[0].Counts[0].State = "patched" }},
		{"entries[0].counts[0].machines", func(p *ReportPush) { p.Entries[0].Counts[0].Machines = 0 }},
		{"entries[0].counts[0].kernel", func(p *ReportPush) { p.Entries[0].Counts[0].Kernel = "linux" }},
		{"entries[0].machines[0].id", func(p *ReportPush) { p.Entries[0].Machines[0].ID = "raw-machine-id" }},
		{"entries[0].machines[0].patch_version", func(p *ReportPush) { p.Entries[0].Machines[0].PatchVersion = "x" }},
		{"entries[0].machines", func(p *ReportPush) { p.Entries[0].Rows = false }},
		{"entries", func(p *ReportPush) { p.Entries = make([]ReportEntry, MaxReportEntries+1) }},
	} {
		p := goodPush(now)
		tc.edit(&p)
		err := p.Validate(now)
		var ie *catalog.InvalidError
		if !errors.As(err, &ie) || ie.Field != tc.field {
			t.Errorf("push with a bad %s: want an invalid-input error on %s, got %v", tc.field, tc.field, err)
		}
	}
}

// fleetStore is a ReportStore over fixed figures.
type fleetStore struct {
	own   []store.FleetCount
	below []store.FleetEntry
}

func (f fleetStore) FleetEntries(context.Context, string, bool) ([]store.FleetEntry, error) {
	return f.below, nil
}

func (f fleetStore) LocalFleet(context.Context, string, bool) ([]store.FleetCount, []store.FleetMachine, error) {
	return f.own, nil, nil
}

// A relay's report is its own entry, then its subtree's entries with their
// own as-of times, and its seq rises even if the clock does not.
func TestReporterBuildsSubtree(t *testing.T) {
	now := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	earlier := now.Add(-time.Minute)
	st := fleetStore{
		own: []store.FleetCount{{Kernel: "5.15.0-107.117-generic", State: catalog.StateApplied, Machines: 2}},
		below: []store.FleetEntry{
			{Node: "edge-a1", DC: "dc-a", AsOf: earlier, Counts: []store.FleetCount{{Kernel: "5.15.0-107.117-generic", State: catalog.StateApplyFailed, Machines: 5}}},
			{Node: "relay-a", DC: "dc-a", AsOf: earlier}, // itself, reported back by a cycle: left out
		},
	}
	r, err := NewReporter(ReporterConfig{Store: st, Client: nil, Links: func() []LinkUpstream { return nil },
		Node: "relay-a", DC: "dc-a", Now: func() time.Time { return now }})
	if err == nil {
		t.Fatal("NewReporter without a client: want an error, got nil")
	}
	// Its own progress as of now, edge-a1's as this node last heard it.
	ownProgress := NodeProgress{Head: 40, Synced: 38, Lag: 1, AsOf: now}
	edgeProgress := NodeProgress{Head: 9, Synced: 9, AsOf: now.Add(-2 * time.Second)}
	r, err = NewReporter(ReporterConfig{Store: st, Client: http.DefaultClient, Links: func() []LinkUpstream { return nil },
		Node: "relay-a", DC: "dc-a", Now: func() time.Time { return now },
		Progress: func() NodeProgress { return ownProgress },
		Known:    func(node string) (NodeProgress, bool) { return edgeProgress, node == "edge-a1" }})
	if err != nil {
		t.Fatal(err)
	}
	l := LinkUpstream{Tier: "edge", HubTier: "stable"}
	p, err := r.Build(t.Context(), l)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Validate(now); err != nil {
		t.Fatalf("the built push does not validate: %v", err)
	}
	if p.Tier != "stable" || len(p.Entries) != 2 || p.Entries[0].Node != "relay-a" || p.Entries[0].Counts[0].Machines != 2 ||
		p.Entries[1].Node != "edge-a1" || !p.Entries[1].AsOf.Equal(earlier) || p.Entries[1].Counts[0].Machines != 5 {
		t.Fatalf("Build: want hub tier stable, relay-a's 2 then edge-a1's 5 as of %v; got %+v", earlier, p)
	}
	if g := p.Entries[0].Progress; g == nil || *g != ownProgress {
		t.Errorf("relay-a's own progress: got %+v, want %+v", g, ownProgress)
	}
	if g := p.Entries[1].Progress; g == nil || *g != edgeProgress {
		t.Errorf("edge-a1's progress, as relay-a knows it: got %+v, want %+v", g, edgeProgress)
	}
	again, err := r.Build(t.Context(), l)
	if err != nil {
		t.Fatal(err)
	}
	if again.Seq <= p.Seq {
		t.Errorf("second Build at the same clock: want seq past %d, got %d", p.Seq, again.Seq)
	}
}

// Report pushes are spread over a quarter either side of the interval, so
// that nodes started together drift apart instead of pushing in step.
func TestReportWaitsAreJittered(t *testing.T) {
	const d = time.Minute
	for _, c := range []struct {
		u    float64
		want time.Duration
	}{{0, 45 * time.Second}, {0.5, time.Minute}, {0.999999, 75 * time.Second}} {
		got := jittered(d, c.u)
		if diff := got - c.want; diff < -time.Millisecond || diff > time.Millisecond {
			t.Errorf("jittered(%v, %v) = %v, want %v", d, c.u, got, c.want)
		}
	}
}
