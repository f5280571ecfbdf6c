package federation_test

import (
	"bytes"
	"crypto/ed25519"
	"strings"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/federation"
)

// The fuzz targets sign what the fuzzer writes with fuzzKey, so that the
// decoders behind the signature check are reached; the seeds are real
// records, whose bytes carry fuzzKey's ID. Each target checks that nothing
// panics and that what is accepted is consistent.

var (
	fuzzKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
	fuzzPub = fuzzKey.Public().(ed25519.PublicKey)
	fuzzT0  = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
)

func seedRecords(f *testing.F) [][]byte {
	f.Helper()
	p := catalog.Patch{Digest: "sha256:" + strings.Repeat("a", 64), Kernel: "5.15.0-107.117-generic", Arch: "x86_64",
		Version: "107.1", Size: 10, Created: fuzzT0}
	var out [][]byte
	for _, r := range []federation.Record{
		{Tier: "stable", TierSeq: 1, Type: catalog.EventPatchAdded, Patch: p, Time: fuzzT0},
		{Tier: "stable", TierSeq: 2, Type: catalog.EventPatchWithdrawn, Patch: p, Time: fuzzT0.Add(time.Minute)},
		{Tier: "stable", TierSeq: 3, Type: catalog.EventMachineRevoked, Time: fuzzT0,
			Machine: &federation.MachineRecord{ID: strings.Repeat("5a", 32), Revoked: fuzzT0}},
		{Tier: "stable", TierSeq: 4, Type: catalog.EventMachineDeleted, Time: fuzzT0,
			Machine: &federation.MachineRecord{ID: strings.Repeat("5a", 32), Revoked: fuzzT0, Lifted: fuzzT0.Add(time.Hour)}},
	} {
		e, err := federation.Sign(fuzzKey, r)
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, e.Record)
	}
	hb, err := federation.SignHeartbeat(fuzzKey, "stable", 2, fuzzT0)
	if err != nil {
		f.Fatal(err)
	}
	return append(out, hb.Record, []byte(`{}`), []byte(`{"key":"`+federation.KeyID(fuzzPub)+`"}`))
}

func signed(b []byte) federation.Envelope {
	return federation.Envelope{Record: b, Sig: ed25519.Sign(fuzzKey, b)}
}

// FuzzOpenSigned: a signed record either opens, and then carries the signing key
// and opens the same way again, or is refused with an error.
func FuzzOpenSigned(f *testing.F) {
	for _, r := range seedRecords(f) {
		f.Add(r)
	}
	v := federation.NewVerifier(fuzzPub)
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := v.Open(signed(b))
		if err != nil {
			return
		}
		if r.Key != federation.KeyID(fuzzPub) {
			t.Fatalf("opened a record whose key is %q", r.Key)
		}
		// Tampering with one signed byte must never verify.
		if len(b) > 0 {
			bad := bytes.Clone(b)
			bad[0] ^= 1
			if _, err := v.Open(federation.Envelope{Record: bad, Sig: signed(b).Sig}); err == nil {
				t.Fatalf("a record with a flipped byte verified")
			}
		}
	})
}

// FuzzVerifyHeartbeat: an accepted heartbeat is of the link's tier and not
// from the future.
func FuzzVerifyHeartbeat(f *testing.F) {
	for _, r := range seedRecords(f) {
		f.Add(r, int64(1))
	}
	v := federation.NewVerifier(fuzzPub)
	f.Fuzz(func(t *testing.T, b []byte, heldSeq int64) {
		held := federation.Record{Type: catalog.EventType(federation.TypeHeartbeat), Tier: "stable", TierSeq: heldSeq, Time: fuzzT0.Add(-time.Hour)}
		r, _, err := v.VerifyHeartbeat(signed(b), "stable", held, fuzzT0)
		if err != nil {
			return
		}
		if r.Tier != "stable" || r.Time.After(fuzzT0.Add(federation.HeartbeatSkew)) {
			t.Fatalf("accepted heartbeat of tier %q at %v", r.Tier, r.Time)
		}
	})
}

// FuzzVerifySkip: whatever explains a skip, nothing panics, and a skip is
// never explained by an envelope that does not open.
func FuzzVerifySkip(f *testing.F) {
	recs := seedRecords(f)
	for _, r := range recs {
		f.Add(recs[0], r)
	}
	v := federation.NewVerifier(fuzzPub)
	f.Fuzz(func(t *testing.T, skipped, because []byte) {
		s, err := v.Open(signed(skipped))
		if err != nil {
			return
		}
		if err := v.VerifySkip(s, signed(because)); err == nil {
			if _, oerr := v.Open(signed(because)); oerr != nil {
				t.Fatalf("a skip explained by an envelope that does not open: %v", oerr)
			}
		}
	})
}

// FuzzParseCredential: parsing never panics; a credential that parses and
// verifies under fuzzKey was one fuzzKey issued.
func FuzzParseCredential(f *testing.F) {
	c, err := federation.IssueCredential(fuzzKey, federation.MachineStatement{Machine: strings.Repeat("ab", 32), Tier: "stable",
		Issuer: "edge-1", Issued: fuzzT0, Expires: fuzzT0.Add(time.Hour)})
	if err != nil {
		f.Fatal(err)
	}
	// One naming the machine's enrollment token too.
	c2, err := federation.IssueCredential(fuzzKey, federation.MachineStatement{Machine: strings.Repeat("ab", 32), Tier: "stable",
		Issuer: "edge-1", Issued: fuzzT0, Expires: fuzzT0.Add(time.Hour), EnrolledBy: "0123456789abcdef"})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(c)
	f.Add(c2)
	f.Add(federation.CredentialPrefix)
	f.Add(federation.CredentialPrefix + "e30.AAAA")
	f.Fuzz(func(t *testing.T, s string) {
		cr, err := federation.ParseCredential(s)
		if err != nil {
			return
		}
		if federation.VerifyCredential(cr, fuzzPub, fuzzT0) == nil && s != c && s != c2 {
			t.Fatalf("a credential fuzzKey never issued verified: %q", s)
		}
	})
}

// FuzzParseEndorsement: the text form parses back to what it was made of,
// and OpenEndorsement never panics on what parses.
func FuzzParseEndorsement(f *testing.F) {
	newKey := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, ed25519.SeedSize)).Public().(ed25519.PublicKey)
	env, err := federation.Endorse(fuzzKey, newKey, fuzzT0)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(federation.FormatEndorsement(env))
	f.Add("pmke_.")
	f.Add("pmke_e30.AAAA")
	v := federation.NewVerifier(fuzzPub)
	f.Fuzz(func(t *testing.T, s string) {
		e, err := federation.ParseEndorsement(s)
		if err != nil {
			return
		}
		if again, err := federation.ParseEndorsement(federation.FormatEndorsement(e)); err != nil ||
			!bytes.Equal(again.Record, e.Record) || !bytes.Equal(again.Sig, e.Sig) {
			t.Fatalf("%q parsed, but its own text form does not parse back the same: %v", s, err)
		}
		_, _, _ = v.OpenEndorsement(e)
	})
}

// FuzzParseJoinToken: a join token's text form never panics the parser,
// and what it accepts has a valid ID, secret, https hub URL and key ID.
func FuzzParseJoinToken(f *testing.F) {
	_, text, err := federation.NewJoinToken("https://127.0.0.1:8443", "0123456789abcdef")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(text)
	f.Add("pmj_")
	f.Add("pmj_e30")
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := federation.ParseJoinToken(s)
		if err != nil {
			return
		}
		if len(tok.ID) != 16 || !strings.HasPrefix(tok.Hub, "https://") || len(tok.HubKey) != 16 || tok.Secret == "" {
			t.Fatalf("accepted a token with bad fields: %+v", tok)
		}
	})
}
