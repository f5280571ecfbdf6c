package federation

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/store"
)

var hbNow = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

func signHeartbeat(t *testing.T, priv ed25519.PrivateKey, tier string, head int64, at time.Time) Envelope {
	t.Helper()
	e, err := SignHeartbeat(priv, tier, head, at)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestVerifyHeartbeat(t *testing.T) {
	hub, other := newKey(t), newKey(t)
	v := NewVerifier(hub.Public().(ed25519.PublicKey))
	held := Record{Tier: "stable", TierSeq: 7, Type: TypeHeartbeat, Time: hbNow.Add(-time.Minute)}
	// A relay's edit: the same heartbeat announcing one record less.
	flipped := signHeartbeat(t, hub, "stable", 9, hbNow)
	flipped.Record = bytes.Replace(flipped.Record, []byte(`"tier_seq":9`), []byte(`"tier_seq":8`), 1)
	record, err := Sign(hub, testRecord(8))
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name      string
		env       Envelope
		held      Record
		wantErr   error
		wantNewer bool
	}{
		{name: "first", env: signHeartbeat(t, hub, "stable", 3, hbNow), wantNewer: true},
		{name: "newer than held", env: signHeartbeat(t, hub, "stable", 9, hbNow), held: held, wantNewer: true},
		{name: "same head later", env: signHeartbeat(t, hub, "stable", 7, hbNow), held: held, wantNewer: true},
		{name: "empty tier", env: signHeartbeat(t, hub, "stable", 0, hbNow), wantNewer: true},
		{name: "within skew", env: signHeartbeat(t, hub, "stable", 9, hbNow.Add(HeartbeatSkew)), held: held, wantNewer: true},
		{name: "old: what a frozen relay repeats", env: signHeartbeat(t, hub, "stable", 6, hbNow.Add(-2*time.Minute)), held: held},
		{name: "same as held", env: signHeartbeat(t, hub, "stable", 7, held.Time), held: held},
		{name: "forged: bit flipped", env: flipped, held: held, wantErr: ErrBadSignature},
		{name: "forged: signature of another record", env: Envelope{Record: flipped.Record, Sig: record.Sig}, wantErr: ErrBadSignature},
		{name: "unknown key", env: signHeartbeat(t, other, "stable", 9, hbNow), wantErr: ErrUnknownKey},
		{name: "other tier", env: signHeartbeat(t, hub, "beta", 9, hbNow), wantErr: ErrWrongTier},
		{name: "from the future", env: signHeartbeat(t, hub, "stable", 9, hbNow.Add(HeartbeatSkew+time.Second)), wantErr: ErrFutureHeartbeat},
		{name: "newer but announces less", env: signHeartbeat(t, hub, "stable", 6, hbNow), held: held, wantErr: ErrReplay},
		{name: "a log record, not a heartbeat", env: record, wantErr: ErrMalformedRecord},
		{name: "empty", env: Envelope{}, wantErr: ErrMalformedRecord},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, newer, err := v.VerifyHeartbeat(tc.env, "stable", tc.held, hbNow)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("want error %v, got %v", tc.wantErr, err)
			}
			if newer != tc.wantNewer {
				t.Fatalf("want newer %v, got %v (record %+v)", tc.wantNewer, newer, r)
			}
			if err == nil && r.Type != TypeHeartbeat {
				t.Fatalf("want a heartbeat record, got %+v", r)
			}
		})
	}
}

func TestOpenRefusesAHeartbeatAsALogRecord(t *testing.T) {
	hub := newKey(t)
	_, err := NewVerifier(hub.Public().(ed25519.PublicKey)).Open(signHeartbeat(t, hub, "stable", 3, hbNow))
	if !errors.Is(err, ErrMalformedRecord) {
		t.Fatalf("Open of a heartbeat: want ErrMalformedRecord, got %v", err)
	}
}

func TestSignRefusesMalformedHeartbeats(t *testing.T) {
	hub := newKey(t)
	p := testRecord(1).Patch
	for name, r := range map[string]Record{
		"negative head": {Tier: "stable", TierSeq: -1, Type: TypeHeartbeat, Time: hbNow},
		"no time":       {Tier: "stable", TierSeq: 1, Type: TypeHeartbeat},
		"with a patch":  {Tier: "stable", TierSeq: 1, Type: TypeHeartbeat, Time: hbNow, Patch: p},
		"with a token":  {Tier: "stable", TierSeq: 1, Type: TypeHeartbeat, Time: hbNow, Token: testToken()},
		"bad tier":      {Tier: "Not A Tier", TierSeq: 1, Type: TypeHeartbeat, Time: hbNow},
	} {
		if _, err := Sign(hub, r); err == nil {
			t.Errorf("%s: signed", name)
		}
	}
}

func TestVerifySkip(t *testing.T) {
	hub, other := newKey(t), newKey(t)
	v := NewVerifier(hub.Public().(ed25519.PublicKey))
	skipped := testRecord(5)
	sign := func(priv ed25519.PrivateKey, edit func(*Record)) Envelope {
		t.Helper()
		r := testRecord(9)
		r.Type = catalog.EventPatchWithdrawn
		edit(&r)
		e, err := Sign(priv, r)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	keep := func(*Record) {}
	forged := sign(hub, keep)
	forged.Record = bytes.Replace(forged.Record, []byte(`"tier_seq":9`), []byte(`"tier_seq":6`), 1)

	for _, tc := range []struct {
		name    string
		because Envelope
		wantErr error // nil: the skip is explained
	}{
		{name: "later withdrawal", because: sign(hub, keep)},
		{name: "later removal", because: sign(hub, func(r *Record) { r.Type = catalog.EventPatchRemoved })},
		{name: "forged", because: forged, wantErr: ErrBadSignature},
		{name: "unknown key", because: sign(other, keep), wantErr: ErrUnknownKey},
		{name: "other tier", because: sign(hub, func(r *Record) { r.Tier = "beta" }), wantErr: ErrUnexplainedSkip},
		{name: "other patch", because: sign(hub, func(r *Record) { r.Patch.Digest = "sha256:" + strings.Repeat("cd", 32) }), wantErr: ErrUnexplainedSkip},
		{name: "earlier withdrawal", because: sign(hub, func(r *Record) { r.TierSeq = 4 }), wantErr: ErrUnexplainedSkip},
		{name: "the record itself", because: sign(hub, func(r *Record) { *r = testRecord(5) }), wantErr: ErrUnexplainedSkip},
		{name: "a promotion", because: sign(hub, func(r *Record) { r.Type = catalog.EventPatchPromoted }), wantErr: ErrUnexplainedSkip},
		{name: "a heartbeat", because: signHeartbeat(t, hub, "stable", 9, hbNow), wantErr: ErrMalformedRecord},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := v.VerifySkip(skipped, tc.because)
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("want the skip explained, got %v", err)
				}
				return
			}
			if !errors.Is(err, tc.wantErr) || !errors.Is(err, ErrUnexplainedSkip) {
				t.Fatalf("want %v (and ErrUnexplainedSkip), got %v", tc.wantErr, err)
			}
		})
	}
}

// staleLink is a link with a bound of a minute, its loop started at hbNow.
func staleLink() *linkState {
	l := testLink()
	l.staleAfter = time.Minute
	l.begin(hbNow)
	return l
}

func TestLinkStaleness(t *testing.T) {
	beat := func(head int64, at time.Time) Record {
		return Record{Tier: "stable", TierSeq: head, Type: TypeHeartbeat, Time: at}
	}
	for _, tc := range []struct {
		name string
		// run drives the link and returns the time to judge it at.
		run  func(l *linkState) time.Time
		want string
	}{
		{name: "fresh start", run: func(*linkState) time.Time { return hbNow.Add(59 * time.Second) }},
		{name: "never a heartbeat", want: StaleNoHeartbeat, run: func(*linkState) time.Time {
			return hbNow.Add(61 * time.Second)
		}},
		{name: "heartbeats keep it fresh", run: func(l *linkState) time.Time {
			l.heard(beat(0, hbNow.Add(50*time.Second)), Envelope{}, hbNow.Add(50*time.Second))
			return hbNow.Add(100 * time.Second)
		}},
		{name: "frozen: the heartbeat ages", want: StaleHeartbeat, run: func(l *linkState) time.Time {
			l.heard(beat(0, hbNow), Envelope{}, hbNow)
			return hbNow.Add(61 * time.Second)
		}},
		{name: "withheld: announced, never sent", want: StaleWithheld, run: func(l *linkState) time.Time {
			l.applied(store.Cursor{HubSeq: 4}, 4, hbNow)
			for s := 0; s <= 90; s += 5 { // fresh heartbeats all along, announcing 5
				at := hbNow.Add(time.Duration(s) * time.Second)
				l.heard(beat(5, at), Envelope{}, at)
			}
			return hbNow.Add(90 * time.Second)
		}},
		{name: "slow but progressing is not withheld", run: func(l *linkState) time.Time {
			for s := 0; s <= 90; s += 5 {
				at := hbNow.Add(time.Duration(s) * time.Second)
				l.heard(beat(100, at), Envelope{}, at)
				l.applied(store.Cursor{HubSeq: int64(s + 1)}, 1, at)
			}
			return hbNow.Add(90 * time.Second)
		}},
		{name: "caught up with what was announced", run: func(l *linkState) time.Time {
			l.heard(beat(5, hbNow), Envelope{}, hbNow)
			l.applied(store.Cursor{HubSeq: 5}, 5, hbNow.Add(time.Second))
			for s := 5; s <= 90; s += 5 {
				at := hbNow.Add(time.Duration(s) * time.Second)
				l.heard(beat(5, at), Envelope{}, at)
			}
			return hbNow.Add(90 * time.Second)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := staleLink()
			at := tc.run(l)
			st := l.status(at)
			if st.StaleReason != tc.want || st.Stale != (tc.want != "") {
				t.Fatalf("want stale reason %q, got %q (stale %v)", tc.want, st.StaleReason, st.Stale)
			}
		})
	}
}

func TestStaleIsReportedOncePerChange(t *testing.T) {
	l := staleLink()
	l.endRound(l.startRound(), nil, false, hbNow)
	steps := []struct {
		at          time.Duration
		wantReason  string
		wantChanged bool
	}{
		{10 * time.Second, "", false},
		{61 * time.Second, StaleNoHeartbeat, true},
		{62 * time.Second, StaleNoHeartbeat, false},
	}
	for _, s := range steps {
		reason, changed, _ := l.staleChange(hbNow.Add(s.at))
		if reason != s.wantReason || changed != s.wantChanged {
			t.Fatalf("at +%v: want %q changed %v, got %q changed %v", s.at, s.wantReason, s.wantChanged, reason, changed)
		}
	}
	if st := l.status(hbNow.Add(62 * time.Second)); st.State != LinkStale {
		t.Fatalf("a link whose rounds succeed but is stale: want state %s, got %s", LinkStale, st.State)
	}
	l.heard(Record{Tier: "stable", Type: TypeHeartbeat, Time: hbNow.Add(63 * time.Second)}, Envelope{}, hbNow.Add(63*time.Second))
	if reason, changed, _ := l.staleChange(hbNow.Add(64 * time.Second)); reason != "" || !changed {
		t.Fatalf("after a fresh heartbeat: want fresh and changed, got %q changed %v", reason, changed)
	}
}

func TestHeartbeatHeaderRoundTripsAndRefusesGarbage(t *testing.T) {
	env := Envelope{Record: []byte(`{"v":1}`), Sig: []byte{1, 2, 3}}
	got, err := DecodeHeartbeatHeader(EncodeHeartbeatHeader(env))
	if err != nil || string(got.Record) != string(env.Record) || string(got.Sig) != string(env.Sig) {
		t.Fatalf("round trip = %+v, %v; want %+v", got, err, env)
	}
	for _, bad := range []string{"no-dot", "!!.AQID", "e30.!!", strings.Repeat("a", 3000) + ".AQID"} {
		if _, err := DecodeHeartbeatHeader(bad); err == nil {
			t.Errorf("DecodeHeartbeatHeader(%.20q) accepted it", bad)
		}
	}
}
