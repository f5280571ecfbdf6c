package federation

import (
	"bytes"
	"crypto/ed25519"
	"strings"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/store"
)

var (
	revokedMachine = strings.Repeat("5a", 32)
	revokedAt      = time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
)

func testMachineRecord(typ catalog.EventType) Record {
	r := Record{Tier: "edge", TierSeq: 5, Type: typ, Time: revokedAt, Machine: &MachineRecord{ID: revokedMachine, Revoked: revokedAt}}
	if typ == catalog.EventMachineDeleted {
		r.Machine.Lifted = revokedAt.Add(time.Hour)
	}
	return r
}

func TestSignOpenMachineRecordRoundTrip(t *testing.T) {
	hub := newKey(t)
	v := NewVerifier(hub.Public().(ed25519.PublicKey))
	for _, typ := range []catalog.EventType{catalog.EventMachineRevoked, catalog.EventMachineDeleted} {
		in := testMachineRecord(typ)
		e, err := Sign(hub, in)
		if err != nil {
			t.Fatalf("Sign(%s): %v", typ, err)
		}
		got, err := v.Open(e)
		if err != nil {
			t.Fatalf("Open of a freshly signed %s: %v", typ, err)
		}
		cm := got.CatalogMachine()
		want := catalog.MachineRevocation{ID: revokedMachine, Revoked: revokedAt, Lifted: in.Machine.Lifted}
		if cm == nil || *cm != want {
			t.Errorf("CatalogMachine of a %s: want %+v, got %+v", typ, want, cm)
		}
	}
	// Records without a machine keep their bytes: no "machine" key at all.
	for _, r := range []Record{testRecord(1), testTokenRecord(catalog.EventTokenAdded)} {
		e, err := Sign(hub, r)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(e.Record, []byte(`"machine"`)) {
			t.Errorf("%s record: want no machine field, got %s", r.Type, e.Record)
		}
	}
}

// The machine field is present for machine events only, and they carry
// nothing else.
func TestSignRefusesInvalidMachineRecords(t *testing.T) {
	hub := newKey(t)
	revoked := func() Record { return testMachineRecord(catalog.EventMachineRevoked) }
	for _, tc := range []struct {
		name string
		r    Record
	}{
		{"patch event carrying a machine", func() Record { r := testRecord(1); r.Machine = revoked().Machine; return r }()},
		{"token event carrying a machine", func() Record {
			r := testTokenRecord(catalog.EventTokenRevoked)
			r.Token.Revoked = revokedAt
			r.Machine = revoked().Machine
			return r
		}()},
		{"machine event without a machine", func() Record { r := revoked(); r.Machine = nil; return r }()},
		{"machine event carrying a token", func() Record { r := revoked(); r.Token = testToken(); return r }()},
		{"machine event carrying a patch", func() Record { r := revoked(); r.Patch = testRecord(1).Patch; return r }()},
		{"machine ID not 64 hex digits", func() Record { r := revoked(); r.Machine.ID = "5a5a"; return r }()},
		{"machine ID in upper case", func() Record { r := revoked(); r.Machine.ID = strings.ToUpper(revokedMachine); return r }()},
		{"machine without a revocation time", func() Record { r := revoked(); r.Machine.Revoked = time.Time{}; return r }()},
		{"machine.revoked already lifted", func() Record { r := revoked(); r.Machine.Lifted = revokedAt.Add(time.Hour); return r }()},
		{"machine.deleted without a lift", func() Record {
			r := testMachineRecord(catalog.EventMachineDeleted)
			r.Machine.Lifted = time.Time{}
			return r
		}()},
		{"machine.deleted lifted before revoked", func() Record {
			r := testMachineRecord(catalog.EventMachineDeleted)
			r.Machine.Lifted = revokedAt.Add(-time.Hour)
			return r
		}()},
	} {
		if _, err := Sign(hub, tc.r); err == nil {
			t.Errorf("%s: Sign accepted an invalid record", tc.name)
		}
	}
}

func TestSealerSealsMachineEvents(t *testing.T) {
	hub := newKey(t)
	v := NewVerifier(hub.Public().(ed25519.PublicKey))
	rev := &catalog.MachineRevocation{ID: revokedMachine, Revoked: revokedAt}
	rec, sig, err := Sealer{Key: hub}.Seal(store.SealRequest{Tier: "beta", TierSeq: 7, Type: catalog.EventMachineRevoked, Machine: rev, At: revokedAt})
	if err != nil {
		t.Fatalf("Seal of a machine.revoked: %v", err)
	}
	got, err := v.Open(Envelope{Record: rec, Sig: sig})
	if err != nil || got.Tier != "beta" || got.TierSeq != 7 || got.Machine == nil || got.Machine.ID != revokedMachine {
		t.Fatalf("sealed machine.revoked: got %+v, %v", got, err)
	}
}

func TestCredentialEnrolledByIsATokenID(t *testing.T) {
	key := newKey(t)
	st := MachineStatement{Machine: revokedMachine, Tier: "beta", Issuer: "edge-a1", Issued: revokedAt, Expires: revokedAt.Add(time.Hour)}
	for _, tc := range []struct {
		enrolledBy string
		ok         bool
	}{
		{"", true},
		{"0123456789abcdef", true},
		{"0123456789ABCDEF", false},
		{"0123", false},
		{"pma_0123456789abcdef", false},
	} {
		st.EnrolledBy = tc.enrolledBy
		text, err := IssueCredential(key, st)
		if (err == nil) != tc.ok {
			t.Errorf("IssueCredential with enrolled_by %q: want ok %v, got %v", tc.enrolledBy, tc.ok, err)
			continue
		}
		if !tc.ok {
			continue
		}
		c, err := ParseCredential(text)
		if err != nil || c.Statement.EnrolledBy != tc.enrolledBy {
			t.Errorf("ParseCredential with enrolled_by %q: got %+v, %v", tc.enrolledBy, c.Statement, err)
		}
		if tc.enrolledBy == "" && bytes.Contains(c.raw, []byte("enrolled_by")) {
			t.Errorf("a credential without enrolled_by must not name it, so that older nodes still read it: %s", c.raw)
		}
	}
}
