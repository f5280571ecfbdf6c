package federation

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
)

// fixedKey signs the seeds of this package's internal fuzz targets. It is
// fixed, not random, so that the committed seed files (testdata/fuzz)
// carry signatures that still verify on every run.
var (
	fixedKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
	fixedPub = fixedKey.Public().(ed25519.PublicKey)
	fixedT0  = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
)

// feedPageLimit is the limit the fuzzed pages were asked for.
const feedPageLimit = 8

func signedFor(t testing.TB, r Record) Envelope {
	t.Helper()
	e, err := Sign(fixedKey, r)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// feedPageSeeds are real feed answers as an upstream serves them: records
// the fixed key signed (a patch, a skipped patch with its signed reason,
// the withdrawal that is that reason, a revocation), with the hub's
// heartbeat, and some that a downstream must refuse.
func feedPageSeeds(t testing.TB) [][]byte {
	t.Helper()
	patch := func(c string) catalog.Patch {
		return catalog.Patch{Digest: "sha256:" + strings.Repeat(c, 64), Kernel: "5.15.0-107.117-generic", Arch: "x86_64",
			Version: "107.1", Size: 1024, Created: fixedT0}
	}
	added := signedFor(t, Record{Tier: "stable", TierSeq: 1, Type: catalog.EventPatchAdded, Patch: patch("a"), Time: fixedT0})
	skipped := signedFor(t, Record{Tier: "stable", TierSeq: 2, Type: catalog.EventPatchAdded, Patch: patch("b"), Time: fixedT0})
	withdrawn := signedFor(t, Record{Tier: "stable", TierSeq: 3, Type: catalog.EventPatchWithdrawn, Patch: patch("b"),
		Time: fixedT0.Add(time.Minute)})
	revoked := signedFor(t, Record{Tier: "stable", TierSeq: 4, Type: catalog.EventMachineRevoked, Time: fixedT0,
		Machine: &MachineRecord{ID: strings.Repeat("5a", 32), Revoked: fixedT0}})
	otherTier := signedFor(t, Record{Tier: "beta", TierSeq: 1, Type: catalog.EventPatchAdded, Patch: patch("c"), Time: fixedT0})
	hb, err := SignHeartbeat(fixedKey, "stable", 4, fixedT0.Add(2*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	tampered := withdrawn
	tampered.Sig = bytes.Clone(tampered.Sig)
	tampered.Sig[0] ^= 1
	pages := []FeedResponse{
		{Tier: "stable", Head: 14, HubHead: 4, Heartbeat: &hb, Events: []FeedEvent{
			{Seq: 11, Envelope: added},
			{Seq: 12, Envelope: skipped, Skip: true, Because: &withdrawn},
			{Seq: 13, Envelope: withdrawn},
			{Seq: 14, Envelope: revoked},
		}},
		// Refused: another hub tier; a forged signature after a good
		// record; seq numbers that go back; a skip without its reason.
		{Tier: "stable", Head: 1, HubHead: 1, Events: []FeedEvent{{Seq: 1, Envelope: otherTier}}},
		{Tier: "stable", Head: 2, HubHead: 3, Events: []FeedEvent{{Seq: 1, Envelope: added}, {Seq: 2, Envelope: tampered}}},
		{Tier: "stable", Head: 2, HubHead: 2, Events: []FeedEvent{{Seq: 2, Envelope: added}, {Seq: 1, Envelope: skipped}}},
		{Tier: "stable", Head: 2, HubHead: 2, Heartbeat: &tampered, Events: []FeedEvent{
			{Seq: 1, Envelope: added}, {Seq: 2, Envelope: skipped, Skip: true}}},
	}
	var out [][]byte
	for _, p := range pages {
		b, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return append(out, []byte(`{}`), []byte(`{"events":null}`), []byte(`{"events":[{"seq":1,"record":"e30","sig":"AA=="}]}`),
		[]byte(`{"events":[{}],"heartbeat":{}}`), []byte(`[`))
}

// FuzzFeedPage: a feed answer as a downstream's round reads it
// (decodeFeedPage, then openEvents, VerifySkip and VerifyHeartbeat as
// round calls them). Nothing panics, and whatever is accepted is what the
// fixed key signed: every event that openEvents lets through verifies over
// its exact bytes, is of the link's hub tier and continues the hub
// sequence; an accepted skip's reason and an accepted heartbeat verify
// too. With resign, every envelope is signed again after the fuzzer's
// changes, so that the checks behind the signature are reached.
func FuzzFeedPage(f *testing.F) {
	for _, b := range feedPageSeeds(f) {
		f.Add(b, false, false, int64(10), int64(0))
		f.Add(b, true, true, int64(0), int64(1))
	}
	v := NewVerifier(fixedPub)
	resign := func(e *Envelope) {
		if e != nil {
			e.Sig = ed25519.Sign(fixedKey, e.Record)
		}
	}
	signedBy := func(e Envelope) bool {
		return len(e.Sig) == ed25519.SignatureSize && ed25519.Verify(fixedPub, e.Record, e.Sig)
	}
	f.Fuzz(func(t *testing.T, body []byte, again, byHub bool, lastSeq, lastHub int64) {
		page, err := decodeFeedPage(bytes.NewReader(body), feedPageLimit)
		if err != nil {
			return
		}
		if len(page.Events) > feedPageLimit {
			t.Fatalf("decoded %d events, asked for at most %d", len(page.Events), feedPageLimit)
		}
		if again {
			for i := range page.Events {
				resign(&page.Events[i].Envelope)
				resign(page.Events[i].Because)
			}
			resign(page.Heartbeat)
		}
		if hb := page.Heartbeat; hb != nil {
			if _, _, err := v.VerifyHeartbeat(*hb, "stable", Record{}, fixedT0.Add(time.Hour)); err == nil && !signedBy(*hb) {
				t.Fatalf("accepted a heartbeat the key did not sign")
			}
		}
		opened, refused, err := openEvents(v, "stable", page.Events, byHub, lastSeq, lastHub)
		if err != nil {
			if opened != nil || refused != nil || byHub {
				t.Fatalf("a page that went backwards (%v) still gave %d events, refusal %v (by hub: %v)", err, len(opened), refused, byHub)
			}
			return
		}
		switch {
		case refused == nil && len(opened) != len(page.Events):
			t.Fatalf("%d of %d events opened, and none refused", len(opened), len(page.Events))
		case refused != nil && (len(opened) >= len(page.Events) || page.Events[len(opened)].Seq != refused.seq):
			t.Fatalf("refusal at seq %d does not name the event after the %d opened", refused.seq, len(opened))
		}
		prevSeq, prevHub := lastSeq, lastHub
		for i, oe := range opened {
			fe := page.Events[i]
			switch {
			case oe.Seq != fe.Seq || !bytes.Equal(oe.Record, fe.Record) || !bytes.Equal(oe.Sig, fe.Sig):
				t.Fatalf("event %d opened is not the page's event %d", i, i)
			case !signedBy(fe.Envelope):
				t.Fatalf("event %d (seq %d) opened, but the key did not sign it", i, fe.Seq)
			case oe.rec.Tier != "stable" || oe.rec.Key != KeyID(fixedPub):
				t.Fatalf("event %d opened with tier %q, key %q", i, oe.rec.Tier, oe.rec.Key)
			case oe.rec.TierSeq != prevHub+1:
				t.Fatalf("event %d opened with hub seq %d after %d", i, oe.rec.TierSeq, prevHub)
			case !byHub && fe.Seq <= prevSeq:
				t.Fatalf("event %d opened with seq %d after %d", i, fe.Seq, prevSeq)
			}
			prevSeq, prevHub = fe.Seq, oe.rec.TierSeq
			if fe.Skip && fe.Because != nil {
				if err := v.VerifySkip(oe.rec, *fe.Because); err == nil {
					b, oerr := v.Open(*fe.Because)
					if oerr != nil || !signedBy(*fe.Because) || b.Patch.Digest != oe.rec.Patch.Digest || b.TierSeq <= oe.rec.TierSeq {
						t.Fatalf("a skip at seq %d accepted for a reason that does not explain it (%v)", fe.Seq, oerr)
					}
				}
			}
		}
	})
}

// The seeds are what they say: the real page opens whole and its skip is
// explained; each bad page is refused where and as it should be.
func TestOpenEventsOnTheFeedPageSeeds(t *testing.T) {
	v := NewVerifier(fixedPub)
	seeds := feedPageSeeds(t)
	for i, tc := range []struct {
		opened  int
		refused error // nil: none
		hbErr   error // nil: the heartbeat (if any) verifies
		broken  bool  // the page went backwards
	}{
		{opened: 4},
		{opened: 0, refused: ErrWrongTier},
		{opened: 1, refused: ErrBadSignature},
		{broken: true},
		{opened: 2, hbErr: ErrBadSignature},
	} {
		page, err := decodeFeedPage(bytes.NewReader(seeds[i]), feedPageLimit)
		if err != nil {
			t.Fatalf("seed %d: %v", i, err)
		}
		opened, refused, err := openEvents(v, "stable", page.Events, false, 0, 0)
		switch {
		case tc.broken:
			if err == nil {
				t.Errorf("seed %d: want the page refused as going backwards, got %d opened, refusal %v", i, len(opened), refused)
			}
			continue
		case err != nil:
			t.Fatalf("seed %d: %v", i, err)
		case len(opened) != tc.opened:
			t.Errorf("seed %d: %d events opened, want %d", i, len(opened), tc.opened)
		case (tc.refused == nil) != (refused == nil) || (refused != nil && !errors.Is(refused, tc.refused)):
			t.Errorf("seed %d: refusal %v, want %v", i, refused, tc.refused)
		}
		if hb := page.Heartbeat; hb != nil {
			if _, _, err := v.VerifyHeartbeat(*hb, "stable", Record{}, fixedT0.Add(time.Hour)); (tc.hbErr == nil) != (err == nil) ||
				(err != nil && !errors.Is(err, tc.hbErr)) {
				t.Errorf("seed %d: heartbeat: %v, want %v", i, err, tc.hbErr)
			}
		}
	}
	page, _ := decodeFeedPage(bytes.NewReader(seeds[0]), feedPageLimit)
	if err := v.VerifySkip(testOpen(t, v, page.Events[1].Envelope), *page.Events[1].Because); err != nil {
		t.Errorf("the real page's skip: %v", err)
	}
	if _, err := decodeFeedPage(bytes.NewReader(seeds[0]), 3); err == nil {
		t.Error("a page of 4 events asked for at most 3 was decoded")
	}
}

func testOpen(t *testing.T, v *Verifier, e Envelope) Record {
	t.Helper()
	r, err := v.Open(e)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
