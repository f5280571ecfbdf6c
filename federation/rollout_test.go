package federation

import (
	"bytes"
	"crypto/ed25519"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/store"
)

var rolloutAt = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

func testRolloutRecord() Record {
	return Record{Tier: "edge", TierSeq: 4, Type: catalog.EventRolloutChanged, Time: rolloutAt, Rollout: &catalog.Rollout{
		ID: "0123456789abcdef", Tier: "edge", Version: "107.2", State: catalog.RolloutActive,
		Waves:   []catalog.Wave{{DC: "dc-canary"}, {DC: "eu-*", AfterSeconds: 3600, Percent: 10}},
		Gate:    catalog.Gate{MaxFailedPercent: 5, MinReporting: 1, SoakSeconds: 600},
		Opened:  []time.Time{rolloutAt.In(time.FixedZone("CET", 3600))},
		Created: rolloutAt, Updated: rolloutAt,
	}}
}

func TestSignOpenRolloutRecordRoundTrip(t *testing.T) {
	hub := newKey(t)
	v := NewVerifier(hub.Public().(ed25519.PublicKey))
	in := testRolloutRecord()
	e, err := Sign(hub, in)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	got, err := v.Open(e)
	if err != nil {
		t.Fatalf("Open of a freshly signed rollout record: %v", err)
	}
	r := got.Rollout
	if r == nil || r.ID != in.Rollout.ID || len(r.Waves) != 2 || r.Waves[1].Percent != 10 || len(r.Opened) != 1 ||
		!r.Opened[0].Equal(rolloutAt) || r.Opened[0].Location() != time.UTC {
		t.Fatalf("Open: want the rollout back with its times in UTC, got %+v", r)
	}
	if in.Rollout.Opened[0].Location() == time.UTC {
		t.Error("Sign changed the caller's rollout")
	}
	// Records without a rollout keep their bytes: no "rollout" key.
	e, err = Sign(hub, testRecord(1))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(e.Record, []byte(`"rollout"`)) {
		t.Errorf("patch record: want no rollout field, got %s", e.Record)
	}
}

func TestSignRefusesInvalidRolloutRecords(t *testing.T) {
	hub := newKey(t)
	for _, tc := range []struct {
		name string
		edit func(r *Record)
	}{
		{"no rollout", func(r *Record) { r.Rollout = nil }},
		{"another tier's rollout", func(r *Record) { r.Rollout.Tier = "stable" }},
		{"no waves", func(r *Record) { r.Rollout.Waves = nil }},
		{"a malformed glob", func(r *Record) { r.Rollout.Waves[0].DC = "dc-[" }},
		{"an unknown state", func(r *Record) { r.Rollout.State = "paused" }},
		{"more waves open than planned", func(r *Record) { r.Rollout.Opened = make([]time.Time, 3) }},
		{"a token as well", func(r *Record) { r.Token = testToken() }},
		{"a patch as well", func(r *Record) { r.Patch = testRecord(1).Patch }},
		{"a patch event carrying a rollout", func(r *Record) { r.Type = catalog.EventPatchAdded }},
	} {
		r := testRolloutRecord()
		ro := *r.Rollout
		ro.Waves = append([]catalog.Wave(nil), ro.Waves...)
		r.Rollout = &ro
		tc.edit(&r)
		if _, err := Sign(hub, r); err == nil {
			t.Errorf("%s: Sign accepted an invalid record", tc.name)
		}
	}
}

func TestSealerSealsRolloutEvents(t *testing.T) {
	hub := newKey(t)
	ro := testRolloutRecord().Rollout
	rec, sig, err := Sealer{Key: hub}.Seal(store.SealRequest{Tier: "edge", TierSeq: 7, Type: catalog.EventRolloutChanged, Rollout: ro, At: rolloutAt})
	if err != nil {
		t.Fatalf("Seal of a rollout.changed: %v", err)
	}
	got, err := NewVerifier(hub.Public().(ed25519.PublicKey)).Open(Envelope{Record: rec, Sig: sig})
	if err != nil || got.TierSeq != 7 || got.Rollout == nil || got.Rollout.ID != ro.ID {
		t.Fatalf("sealed rollout.changed: got %+v, err %v", got, err)
	}
}
