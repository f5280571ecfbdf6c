package storetest

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/store"
)

// pageAll reads a listing in pages of size until a short page, and
// returns the pages. Bounded: more pages than items means the cursor does
// not move.
func pageAll[T any](t *testing.T, what string, items, size int, page func(after *T) ([]T, error)) [][]T {
	t.Helper()
	var (
		pages [][]T
		after *T
	)
	for range items + 2 {
		got, err := page(after)
		if err != nil {
			t.Fatalf("%s: page %d: %v", what, len(pages)+1, err)
		}
		pages = append(pages, got)
		if len(got) < size {
			return pages
		}
		after = &got[len(got)-1]
	}
	t.Fatalf("%s: more than %d pages for %d items: the cursor does not move", what, items+2, items)
	return nil
}

func testPatchesPage(t *testing.T, s store.Store) {
	ctx := t.Context()
	// Ties on version (other kernels and arches) so that the cursor needs
	// every key, and a withdrawn patch among them.
	for _, v := range []string{"9.1", "107.1", "107.10", "50.1"} {
		addPatch(t, s, kernelA, x86, v)
		addPatch(t, s, kernelB, x86, v)
		addPatch(t, s, kernelA, arm, v)
	}
	w := addPatch(t, s, kernelB, arm, "107.1")
	if _, err := s.Withdraw(ctx, w.Digest); err != nil {
		t.Fatal(err)
	}
	for _, f := range []store.PatchFilter{{}, {IncludeWithdrawn: true}, {Kernel: kernelA}, {Arch: x86, IncludeWithdrawn: true}} {
		name := fmt.Sprintf("Patches(%+v)", f)
		whole, err := s.Patches(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		for _, size := range []int{1, 2, 5} {
			pages := pageAll(t, name, len(whole), size, func(after *catalog.Patch) ([]catalog.Patch, error) {
				pf := f
				pf.Limit = size
				if after != nil {
					pf.After = store.PatchCursorOf(*after)
				}
				return s.Patches(ctx, pf)
			})
			var joined []catalog.Patch
			for _, p := range pages {
				if len(p) > size {
					t.Errorf("%s: a page of %d, want at most %d", name, len(p), size)
				}
				joined = append(joined, p...)
			}
			wantSame(t, fmt.Sprintf("%s in pages of %d", name, size), joined, whole)
		}
	}

	// A cursor names a place, not a row: the listing resumes after a
	// patch removed meanwhile, and shows a patch added after the cursor.
	first, err := s.Patches(ctx, store.PatchFilter{Limit: 3})
	if err != nil || len(first) != 3 {
		t.Fatalf("first page: %d patches, %v", len(first), err)
	}
	cursor := store.PatchCursorOf(first[2])
	if err := s.RemovePatch(ctx, first[2].Digest); err != nil {
		t.Fatal(err)
	}
	late := addPatch(t, s, kernelB, x86, "1.1")
	rest, err := s.Patches(ctx, store.PatchFilter{After: cursor, Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	all, err := s.Patches(ctx, store.PatchFilter{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	wantSame(t, "the page after a removed patch", rest, all[2:])
	if !slices.ContainsFunc(rest, func(p catalog.Patch) bool { return p.Digest == late.Digest }) {
		t.Errorf("a patch added after the cursor's place is missing from the next page")
	}
}

func testPatchesDigestPrefix(t *testing.T, s store.Store) {
	ctx := t.Context()
	var ps []catalog.Patch
	for i := range 40 {
		ps = append(ps, addPatch(t, s, kernelA, x86, fmt.Sprintf("1.%d", i)))
	}
	for _, p := range ps[:5] {
		for _, n := range []int{len("sha256:") + 8, len("sha256:") + 12, len(p.Digest)} {
			got, err := s.Patches(ctx, store.PatchFilter{DigestPrefix: p.Digest[:n], IncludeWithdrawn: true})
			if err != nil {
				t.Fatal(err)
			}
			var want []catalog.Patch
			for _, q := range ps {
				if q.Digest[:n] == p.Digest[:n] {
					want = append(want, q)
				}
			}
			wantSame(t, "Patches(prefix "+p.Digest[:n]+")", got, want)
		}
	}
	// A one-digit prefix matches about a sixteenth of the patches: exactly
	// those that start with it.
	prefix := ps[0].Digest[:len("sha256:")+1]
	got, err := s.Patches(ctx, store.PatchFilter{DigestPrefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, q := range ps {
		if q.Digest[:len(prefix)] == prefix {
			n++
		}
	}
	if len(got) != n {
		t.Errorf("Patches(prefix %s): %d patches, want %d", prefix, len(got), n)
	}
	for _, q := range got {
		if q.Digest[:len(prefix)] != prefix {
			t.Errorf("Patches(prefix %s) holds %s", prefix, q.Digest)
		}
	}
}

func testMachinesPage(t *testing.T, s store.Store) {
	ctx := t.Context()
	base := time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)
	for i := range 7 {
		// Pairs seen at the same time: the ID breaks the tie.
		m := machine(fmt.Sprint("pm", i), []string{"edge", "beta"}[i%2], base.Add(time.Duration(i/2)*time.Minute))
		if err := s.RegisterMachine(ctx, m, machineToken(fmt.Sprintf("f00000000000000%d", i), m.ID, m.Tier)); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []store.MachineFilter{{}, {Tier: "edge"}} {
		name := fmt.Sprintf("Machines(%+v)", f)
		whole, err := s.Machines(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		for _, size := range []int{1, 2, 3} {
			pages := pageAll(t, name, len(whole), size, func(after *catalog.Machine) ([]catalog.Machine, error) {
				pf := f
				pf.Limit = size
				if after != nil {
					pf.After = &store.MachineCursor{LastSeen: after.LastSeen, ID: after.ID}
				}
				return s.Machines(ctx, pf)
			})
			var joined []catalog.Machine
			for _, p := range pages {
				joined = append(joined, p...)
			}
			wantSame(t, fmt.Sprintf("%s in pages of %d", name, size), joined, whole)
		}
	}
}

func testTokensPage(t *testing.T, s store.Store) {
	ctx := t.Context()
	for i := range 7 {
		tok := token(fmt.Sprintf("a10000000000000%d", i), catalog.TokenAuth, "edge")
		tok.Created = tok.Created.Add(time.Duration(i/2) * time.Hour) // pairs created together
		addToken(t, s, tok)
	}
	addToken(t, s, token("5100000000000001", catalog.TokenSync, "edge"))
	whole, err := s.Tokens(ctx, store.TokenFilter{Kind: catalog.TokenAuth})
	if err != nil || len(whole) != 7 {
		t.Fatalf("Tokens(auth): %d, %v; want 7", len(whole), err)
	}
	for i := 1; i < len(whole); i++ {
		if whole[i].Created.After(whole[i-1].Created) {
			t.Errorf("Tokens(auth) not newest first at %d", i)
		}
	}
	for _, size := range []int{1, 2, 3} {
		pages := pageAll(t, "Tokens(auth)", len(whole), size, func(after *catalog.Token) ([]catalog.Token, error) {
			f := store.TokenFilter{Kind: catalog.TokenAuth, Limit: size}
			if after != nil {
				f.After = &store.TokenCursor{Created: after.Created, ID: after.ID}
			}
			return s.Tokens(ctx, f)
		})
		var joined []catalog.Token
		for _, p := range pages {
			joined = append(joined, p...)
		}
		wantSame(t, fmt.Sprintf("Tokens(auth) in pages of %d", size), joined, whole)
	}
}
