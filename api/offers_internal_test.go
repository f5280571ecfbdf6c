package api

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/blob"
	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/federation"
	"github.com/patchmesh/patchmesh/store"
	"github.com/patchmesh/patchmesh/store/sqlstore"
)

// offerAnswer is what a check-in offers, reduced to what must agree.
type offerAnswer struct {
	digest, signed, withdrawal string
	notFound                   bool
}

func (s *server) answer(t *testing.T, tier, kernel, arch, machine, applied string) offerAnswer {
	t.Helper()
	ctx := context.Background()
	p, signed, err := s.offerable(ctx, tier, kernel, arch, machine)
	if errors.Is(err, catalog.ErrNotFound) {
		return offerAnswer{notFound: true}
	}
	if err != nil {
		t.Fatalf("offerable(%s, %s): %v", tier, kernel, err)
	}
	a := offerAnswer{digest: p.Digest}
	if signed != nil {
		a.signed = string(signed.Record)
	}
	w, err := s.withdrawal(ctx, tier, applied)
	if err != nil {
		t.Fatalf("withdrawal(%s, %s): %v", tier, applied, err)
	}
	if w != nil {
		a.withdrawal = string(w.Record)
	}
	return a
}

// The offer index must answer every check-in question as the store does,
// after any sequence of catalog changes: uploads, promotions (one by one
// and whole tiers), withdrawals, removals, new tiers and rollouts opening,
// halting and ending. Both servers share one store; the reference one has
// no index, so it asks the store every time. Each round asks both every
// question before and after a change, so that a stale answer the index
// kept from before the change shows.
func TestOfferIndexAgreesWithStore(t *testing.T) {
	for seed := range uint64(3) {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) { testOfferIndexAgrees(t, seed) })
	}
}

func testOfferIndexAgrees(t *testing.T, seed uint64) {
	ctx := context.Background()
	rng := mrand.New(mrand.NewPCG(seed, 12))
	_, hubKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	changes := &store.Changes{}
	st, err := sqlstore.OpenSQLite(ctx, filepath.Join(t.TempDir(), "meta.db"),
		sqlstore.Options{Sealer: federation.Sealer{Key: hubKey}, Changes: changes})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	info := Info{DC: "eu-1"}
	indexed := &server{store: st, info: info, offers: newOfferIndex(changes, time.Now)}
	plain := &server{store: st, info: info}

	tiers := append([]string(nil), catalog.DefaultTiers...)
	kernels := []string{"5.15.0-107.117-generic", "5.15.0-108.118-generic", "6.8.0-31.31-generic"}
	arches := []string{"x86_64", "aarch64"}
	machines := []string{"m-0001", "m-0002", "m-0003"}
	var digests []string
	versions := map[string]string{} // digest → version
	var rollout *catalog.Rollout
	at := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

	check := func(round int, what string) {
		t.Helper()
		applied := "sha256:" + fmt.Sprintf("%064x", 0)
		if len(digests) > 0 {
			applied = digests[rng.IntN(len(digests))]
		}
		for _, d := range digests {
			got, gerr := indexed.patch(ctx, d)
			want, werr := st.Patch(ctx, d)
			if fmt.Sprint(got, errors.Is(gerr, catalog.ErrNotFound)) != fmt.Sprint(want, errors.Is(werr, catalog.ErrNotFound)) {
				t.Fatalf("round %d after %s: patch %s: index answered %+v (%v), store %+v (%v)", round, what, d, got, gerr, want, werr)
			}
		}
		for _, tier := range tiers {
			for _, k := range kernels {
				for _, a := range arches {
					for _, m := range machines {
						got := indexed.answer(t, tier, k, a, m, applied)
						want := plain.answer(t, tier, k, a, m, applied)
						if got != want {
							t.Fatalf("round %d after %s: %s %s %s for %s: index answered %+v, store %+v",
								round, what, tier, k, a, m, got, want)
						}
					}
				}
			}
		}
	}

	for round := range 40 {
		check(round, "nothing") // fills the index with this round's answers
		var what string
		switch op := rng.IntN(10); {
		case op < 3 || len(digests) == 0:
			k, a := kernels[rng.IntN(len(kernels))], arches[rng.IntN(len(arches))]
			v := fmt.Sprintf("%d.%d", 100+rng.IntN(3), round+1)
			p := catalog.Patch{Digest: string(blob.FromBytes([]byte(fmt.Sprint(seed, "-", round)))),
				Kernel: k, Arch: a, Version: v, Size: 10}
			if _, err := st.AddPatch(ctx, p); err != nil {
				t.Fatalf("add patch: %v", err)
			}
			digests = append(digests, p.Digest)
			versions[p.Digest] = v
			what = "upload"
		case op < 5:
			d := digests[rng.IntN(len(digests))]
			// A withdrawn or removed patch is refused, and changes nothing.
			if _, err := st.Promote(ctx, d, tiers[rng.IntN(len(tiers))]); err != nil &&
				!errors.Is(err, catalog.ErrNotFound) && !errors.Is(err, catalog.ErrConflict) {
				t.Fatalf("promote: %v", err)
			}
			what = "promote"
		case op == 5:
			from := rng.IntN(len(tiers) - 1)
			if _, err := st.PromoteAll(ctx, tiers[from], tiers[from+1]); err != nil {
				t.Fatalf("promote all: %v", err)
			}
			what = "promote all"
		case op == 6:
			if _, err := st.Withdraw(ctx, digests[rng.IntN(len(digests))]); err != nil && !errors.Is(err, catalog.ErrNotFound) {
				t.Fatalf("withdraw: %v", err)
			}
			what = "withdraw"
		case op == 7:
			i := rng.IntN(len(digests))
			if err := st.RemovePatch(ctx, digests[i]); err != nil && !errors.Is(err, catalog.ErrNotFound) {
				t.Fatalf("remove: %v", err)
			}
			what = "remove"
		case op == 8 && len(tiers) < 6:
			name := fmt.Sprintf("extra-%d", round)
			if _, err := st.AddTier(ctx, name); err != nil {
				t.Fatalf("add tier: %v", err)
			}
			tiers = append(tiers, name)
			what = "add tier"
		default:
			at = at.Add(time.Minute)
			switch {
			case rollout == nil || !rollout.Live():
				// Hold back the version of a random patch on the first tier,
				// from half of the machines once its wave opens.
				r := catalog.Rollout{ID: fmt.Sprintf("%016x", rng.Uint64()), Tier: tiers[0],
					Version: versions[digests[rng.IntN(len(digests))]], State: catalog.RolloutActive,
					Waves:  []catalog.Wave{{DC: "eu-*", Percent: 50}, {DC: "*", AfterSeconds: 60}},
					Gate:   catalog.Gate{MaxFailedPercent: 5, MinReporting: 1, SoakSeconds: 60},
					Opened: []time.Time{}, Created: at, Updated: at}
				if err := st.CreateRollout(ctx, r); err != nil {
					t.Fatalf("create rollout: %v", err)
				}
				rollout, what = &r, "rollout created"
			default:
				next := *rollout
				next.Updated = at
				switch len(next.Opened) {
				case 0:
					next.Opened = []time.Time{at}
					what = "rollout wave opened"
				default:
					next.State = catalog.RolloutAborted
					what = "rollout ended"
				}
				if err := st.UpdateRollout(ctx, next, rollout.Updated); err != nil {
					t.Fatalf("update rollout: %v", err)
				}
				rollout = &next
			}
		}
		check(round, what)
	}
}

// BenchmarkOfferIndex is the check-in's store questions through the index
// against the store alone, on the check-in benchmark's catalog shape.
func BenchmarkOfferIndex(b *testing.B) {
	ctx := context.Background()
	_, hubKey, _ := ed25519.GenerateKey(rand.Reader)
	changes := &store.Changes{}
	st, err := sqlstore.OpenSQLite(ctx, filepath.Join(b.TempDir(), "meta.db"),
		sqlstore.Options{Sealer: federation.Sealer{Key: hubKey}, Changes: changes})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	const kernels = 50
	for i := range 1000 {
		p := catalog.Patch{Digest: string(blob.FromBytes([]byte(fmt.Sprint(i)))),
			Kernel: fmt.Sprintf("5.15.0-%d.1-generic", i%kernels), Arch: "x86_64", Version: fmt.Sprintf("107.%d", i/kernels+1), Size: 10}
		if _, err := st.AddPatch(ctx, p); err != nil {
			b.Fatal(err)
		}
	}
	for _, c := range []struct {
		name string
		s    *server
	}{{"store", &server{store: st}}, {"index", &server{store: st, offers: newOfferIndex(changes, time.Now)}}} {
		b.Run(c.name, func(b *testing.B) {
			i := 0
			for b.Loop() {
				i++
				p, signed, err := c.s.offerable(ctx, "edge", fmt.Sprintf("5.15.0-%d.1-generic", i%kernels), "x86_64", "m")
				if err != nil || signed == nil || !bytes.HasPrefix([]byte(p.Digest), []byte("sha256:")) {
					b.Fatalf("offerable: %+v, %v, %v", p, signed, err)
				}
			}
		})
	}
}

// BenchmarkOfferAnswer is the check-in's 200 answer encoded anew against
// served from the kept encoding, on a hub-signed offer with a heartbeat.
func BenchmarkOfferAnswer(b *testing.B) {
	_, hubKey, _ := ed25519.GenerateKey(rand.Reader)
	p := catalog.Patch{Digest: string(blob.FromBytes([]byte("bench"))), Kernel: "5.15.0-1.1-generic", Arch: "x86_64",
		Version: "107.1", Size: 10, Tiers: []string{"edge"}, Created: time.Now().UTC()}
	signed, err := federation.Sign(hubKey, federation.Record{Type: catalog.EventPatchAdded, Tier: "edge", TierSeq: 1, Patch: catalog.Patch{Digest: p.Digest, Kernel: p.Kernel, Arch: p.Arch, Version: p.Version, Size: p.Size, Created: p.Created}, Time: time.Now()})
	if err != nil {
		b.Fatal(err)
	}
	hb, err := federation.SignHeartbeat(hubKey, "edge", 1, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	o := federation.Offer{Patch: p, Signed: &signed, Heartbeat: &hb}
	x := newOfferIndex(&store.Changes{}, time.Now)
	k := offerKey{kind: 'a', tier: "edge", kernel: p.Kernel, arch: p.Arch, digest: p.Digest}
	b.Run("encode", func(b *testing.B) {
		for b.Loop() {
			a, err := encodeOffer(o)
			if err != nil {
				b.Fatal(err)
			}
			a.write(httptest.NewRecorder())
		}
	})
	b.Run("kept", func(b *testing.B) {
		for b.Loop() {
			a, ok := x.cachedOffer(k, &hb)
			if !ok {
				if a, err = encodeOffer(o); err != nil {
					b.Fatal(err)
				}
				x.putOffer(k, x.generation(), a)
			}
			a.write(httptest.NewRecorder())
		}
	})
}
