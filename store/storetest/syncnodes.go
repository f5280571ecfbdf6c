package storetest

import (
	"bytes"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/store"
)

// Node admissions replicate from the hub in the signed feed of each tier
// they concern, so that every node of a tier can serve machines the
// roster of admitted nodes, with the hub's signature on each.

// testNode is a valid node to admit. Its key is a fixed string of the
// right form: the store checks forms, never derives key IDs.
func testNode(name string, tiers ...string) catalog.Node {
	return catalog.Node{
		Name: name, Key: "ed25519:" + strings.Repeat("A", 42) + "E", KeyID: "0123456789abcdef",
		URLs: []string{"https://" + name + ".example:8443"}, Tiers: tiers,
		Admitted: time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC),
	}
}

func nodeEv(typ catalog.EventType, name string) sealed {
	return sealed{Type: typ, Node: &catalog.Node{Name: name}}
}

func admissionsOf(t *testing.T, s store.Store, tier string) []store.Admission {
	t.Helper()
	as, err := s.Admissions(t.Context(), tier)
	if err != nil {
		t.Fatalf("Admissions(%s): %v", tier, err)
	}
	return as
}

func nodesOf(t *testing.T, s store.Store) []catalog.Node {
	t.Helper()
	ns, err := s.Nodes(t.Context())
	if err != nil {
		t.Fatalf("Nodes: %v", err)
	}
	return ns
}

// wantAdmitted checks that tier's live admissions are exactly names, in
// order, each carrying the record of the feed entry given for it (nil:
// unsealed).
func wantAdmitted(t *testing.T, s store.Store, tier string, names []string, records [][]byte) []store.Admission {
	t.Helper()
	as := admissionsOf(t, s, tier)
	if len(as) != len(names) {
		t.Fatalf("Admissions(%s): want %v, got %+v", tier, names, as)
	}
	for i, a := range as {
		if a.Node.Name != names[i] || len(a.Node.Tiers) != 1 || a.Node.Tiers[0] != tier || !a.Node.Removed.IsZero() {
			t.Errorf("Admissions(%s)[%d]: want live %s on %s, got %+v", tier, i, names[i], tier, a.Node)
		}
		if !bytes.Equal(a.Record, records[i]) {
			t.Errorf("Admissions(%s)[%d]: want the record %q, got %q", tier, i, records[i], a.Record)
		}
		if (records[i] == nil) != (a.Sig == nil) {
			t.Errorf("Admissions(%s)[%d]: record and signature must come together, got sig %x", tier, i, a.Sig)
		}
	}
	return as
}

func testSealNodes(t *testing.T, open OpenSync) {
	ctx := t.Context()
	ch := &store.Changes{}
	hub := open(t, &testSealer{}, ch)
	a := addPatch(t, hub, kernelA, x86, "1.1")
	n1 := testNode("edge-a1", "edge", "beta")
	w := ch.Wait()
	got, err := hub.AdmitNode(ctx, n1)
	if err != nil {
		t.Fatalf("AdmitNode: %v", err)
	}
	select {
	case <-w:
	default:
		t.Error("Changes: a waiter was not woken by admitting a node")
	}
	if got.Name != n1.Name || got.Key != n1.Key || !got.Admitted.Equal(n1.Admitted) {
		t.Errorf("AdmitNode: want %+v back, got %+v", n1, got)
	}
	// Each tier's feed carries the admission in its own hub sequence.
	edge := wantFeed(t, hub, "edge", ev(catalog.EventPatchAdded, a), nodeEv(catalog.EventNodeAdmitted, "edge-a1"))
	beta := wantFeed(t, hub, "beta", nodeEv(catalog.EventNodeAdmitted, "edge-a1"))
	if r := unseal(t, edge[1]); r.Node == nil || r.Node.Key != n1.Key || r.Node.KeyID != n1.KeyID ||
		len(r.Node.URLs) != 1 || r.Node.URLs[0] != n1.URLs[0] || !r.Node.Removed.IsZero() {
		t.Errorf("sealed node.admitted: want %+v, got %+v", n1, r.Node)
	}
	wantAdmitted(t, hub, "edge", []string{"edge-a1"}, [][]byte{edge[1].Record})
	wantAdmitted(t, hub, "beta", []string{"edge-a1"}, [][]byte{beta[0].Record})
	wantAdmitted(t, hub, "stable", nil, nil)
	ns := nodesOf(t, hub)
	if len(ns) != 1 || ns[0].Name != "edge-a1" || strings.Join(ns[0].Tiers, ",") != "edge,beta" || !ns[0].Removed.IsZero() {
		t.Errorf("Nodes: want edge-a1 live on edge,beta, got %+v", ns)
	}

	// Refusals change nothing.
	h := head(t, hub)
	_, err = hub.AdmitNode(ctx, testNode("edge-a1", "edge", "beta"))
	wantErr(t, "AdmitNode of a node admitted on every tier it names", err, catalog.ErrConflict)
	other := testNode("edge-a1", "stable")
	other.Key, other.KeyID = "ed25519:"+strings.Repeat("B", 42)+"E", "fedcba9876543210"
	_, err = hub.AdmitNode(ctx, other)
	wantErr(t, "AdmitNode of an admitted name under another key", err, catalog.ErrConflict)
	moved := testNode("edge-a1", "stable")
	moved.URLs = []string{"https://elsewhere.example:8443"}
	_, err = hub.AdmitNode(ctx, moved)
	wantErr(t, "AdmitNode of an admitted name at other URLs", err, catalog.ErrConflict)
	_, err = hub.AdmitNode(ctx, testNode("edge-a2", "edge", "no-such-tier"))
	wantErr(t, "AdmitNode on a missing tier", err, catalog.ErrNotFound)
	for name, n := range map[string]catalog.Node{
		"no tier":      testNode("edge-a2"),
		"a tier twice": testNode("edge-a2", "edge", "edge"),
		"no URL":       func() catalog.Node { n := testNode("edge-a2", "edge"); n.URLs = nil; return n }(),
		"a bad key":    func() catalog.Node { n := testNode("edge-a2", "edge"); n.Key = "rsa:xyz"; return n }(),
		"a bad name":   testNode("edge a2", "edge"),
		"a URL with ?q": func() catalog.Node {
			n := testNode("edge-a2", "edge")
			n.URLs = []string{"https://x.example/?q=1"}
			return n
		}(),
	} {
		_, err := hub.AdmitNode(ctx, n)
		wantInvalid(t, "AdmitNode with "+name, err)
	}
	wantNoEvent(t, hub, h, "refused admissions")
	wantAdmitted(t, hub, "edge", []string{"edge-a1"}, [][]byte{edge[1].Record})

	// Removal is signed on every tier the node was live on.
	at := time.Date(2026, 11, 26, 11, 0, 0, 0, time.UTC)
	if err := hub.RemoveNode(ctx, "edge-a1", at); err != nil {
		t.Fatalf("RemoveNode: %v", err)
	}
	wantFeed(t, hub, "edge", ev(catalog.EventPatchAdded, a), nodeEv(catalog.EventNodeAdmitted, "edge-a1"),
		nodeEv(catalog.EventNodeRemoved, "edge-a1"))
	beta = wantFeed(t, hub, "beta", nodeEv(catalog.EventNodeAdmitted, "edge-a1"), nodeEv(catalog.EventNodeRemoved, "edge-a1"))
	if r := unseal(t, beta[1]); r.Node == nil || !r.Node.Removed.Equal(at) || r.Node.Key != n1.Key {
		t.Errorf("sealed node.removed: want removed at %v with the admitted key, got %+v", at, r.Node)
	}
	wantAdmitted(t, hub, "edge", nil, nil)
	wantAdmitted(t, hub, "beta", nil, nil)
	ns = nodesOf(t, hub)
	if len(ns) != 1 || len(ns[0].Tiers) != 0 || !ns[0].Removed.Equal(at) {
		t.Errorf("Nodes after removal: want edge-a1 removed at %v on no tier, got %+v", at, ns)
	}
	h = head(t, hub)
	wantErr(t, "RemoveNode of a removed node", hub.RemoveNode(ctx, "edge-a1", at), catalog.ErrNotFound)
	wantErr(t, "RemoveNode of an unknown node", hub.RemoveNode(ctx, "nobody", at), catalog.ErrNotFound)
	wantNoEvent(t, hub, h, "refused removals")

	// A removed name may be admitted again, with a new key.
	again := testNode("edge-a1", "stable")
	again.Key, again.KeyID = "ed25519:"+strings.Repeat("B", 42)+"E", "fedcba9876543210"
	if _, err := hub.AdmitNode(ctx, again); err != nil {
		t.Fatalf("AdmitNode of a removed name: %v", err)
	}
	stable := wantFeed(t, hub, "stable", nodeEv(catalog.EventNodeAdmitted, "edge-a1"))
	as := wantAdmitted(t, hub, "stable", []string{"edge-a1"}, [][]byte{stable[0].Record})
	if as[0].Node.Key != again.Key || as[0].Node.KeyID != again.KeyID {
		t.Errorf("re-admission: want the new key, got %+v", as[0].Node)
	}
}

// testExtendNode: admitting a node again under the same key and URLs
// admits it on the tiers it lacks and signs nothing else: no removal, which
// a downstream could apply alone and then refuse the node.
func testExtendNode(t *testing.T, open OpenSync) {
	ctx := t.Context()
	hub := open(t, &testSealer{}, nil)
	if _, err := hub.AdmitNode(ctx, testNode("edge-a1", "edge")); err != nil {
		t.Fatalf("AdmitNode: %v", err)
	}
	h := head(t, hub)
	if _, err := hub.AdmitNode(ctx, testNode("edge-a1", "edge", "stable")); err != nil {
		t.Fatalf("AdmitNode of the same node on one more tier: %v", err)
	}
	es := eventsAfter(t, hub, h)
	if len(es) != 1 || es[0].Type != catalog.EventNodeAdmitted || es[0].Tier != "stable" {
		t.Fatalf("extending an admission: want one node.admitted on stable, got %+v", es)
	}
	ns := nodesOf(t, hub)
	if len(ns) != 1 || strings.Join(ns[0].Tiers, ",") != "stable,edge" && strings.Join(ns[0].Tiers, ",") != "edge,stable" || !ns[0].Removed.IsZero() {
		t.Errorf("Nodes after the extension: want edge-a1 live on edge and stable, got %+v", ns)
	}
}

// testUpdateNode moves an admitted node to new URLs and onto a new tier:
// the hub signs a fresh admission per tier and nothing else, and a
// downstream syncing the records replaces its admission, never holding
// the node removed.
func testUpdateNode(t *testing.T, open OpenSync) {
	ctx := t.Context()
	hub := open(t, &testSealer{}, nil)
	down := open(t, nil, nil)
	if _, err := hub.AdmitNode(ctx, testNode("edge-a1", "edge")); err != nil {
		t.Fatal(err)
	}
	cur := syncRound(t, hub, down, "edge", store.Cursor{Tier: "beta"})

	h := head(t, hub)
	_, err := hub.UpdateNode(ctx, testNode("edge-a9", "edge"))
	wantErr(t, "UpdateNode of a name never admitted", err, catalog.ErrNotFound)
	_, err = hub.UpdateNode(ctx, testNode("edge-a1", "edge"))
	wantErr(t, "UpdateNode changing nothing", err, catalog.ErrConflict)
	rekeyed := testNode("edge-a1", "edge")
	rekeyed.Key, rekeyed.KeyID = "ed25519:"+strings.Repeat("B", 42)+"E", "fedcba9876543210"
	rekeyed.URLs = []string{"https://edge-a1.example:9443"}
	_, err = hub.UpdateNode(ctx, rekeyed)
	wantErr(t, "UpdateNode under another key", err, catalog.ErrConflict)
	if es := eventsAfter(t, hub, h); len(es) != 0 {
		t.Fatalf("refused updates logged %+v", es)
	}

	moved := testNode("edge-a1", "stable")
	moved.URLs = []string{"https://edge-a1.example:9443", "https://edge-a1b.example:9443"}
	got, err := hub.UpdateNode(ctx, moved)
	if err != nil {
		t.Fatalf("UpdateNode to new URLs and one more tier: %v", err)
	}
	if strings.Join(got.Tiers, ",") != "edge,stable" {
		t.Errorf("UpdateNode: want the node live on edge then stable, got %v", got.Tiers)
	}
	es := eventsAfter(t, hub, h)
	if len(es) != 2 {
		t.Fatalf("UpdateNode: want two events, got %+v", es)
	}
	for _, e := range es {
		if e.Type != catalog.EventNodeAdmitted {
			t.Errorf("UpdateNode logged %s on %s: want node.admitted only", e.Type, e.Tier)
		}
	}
	for _, tier := range []string{"edge", "stable"} {
		as := admissionsOf(t, hub, tier)
		if len(as) != 1 || as[0].Node.KeyID != moved.KeyID || !slices.Equal(as[0].Node.URLs, moved.URLs) || as[0].Record == nil {
			t.Errorf("Admissions(%s) at the hub after UpdateNode: want edge-a1 at the new URLs, signed, got %+v", tier, as)
		}
	}
	if ns := nodesOf(t, hub); len(ns) != 1 || !ns[0].Removed.IsZero() || !slices.Equal(ns[0].URLs, moved.URLs) {
		t.Errorf("Nodes after UpdateNode: want edge-a1 live at the new URLs, got %+v", ns)
	}

	// The downstream replaces its admission with the hub's new record.
	syncRound(t, hub, down, "edge", cur)
	as := admissionsOf(t, down, "beta")
	if len(as) != 1 || !slices.Equal(as[0].Node.URLs, moved.URLs) || !as[0].Node.Removed.IsZero() {
		t.Errorf("Admissions(beta) downstream after the update: want edge-a1 live at the new URLs, got %+v", as)
	}
}

func testNodesUnsealed(t *testing.T, open OpenSync) {
	s := open(t, nil, nil)
	h := head(t, s)
	if _, err := s.AdmitNode(t.Context(), testNode("lab-1", "edge")); err != nil {
		t.Fatalf("AdmitNode without a sealer: %v", err)
	}
	es := eventsAfter(t, s, h)
	if len(es) != 1 || es[0].Type != catalog.EventNodeAdmitted || es[0].Tier != "edge" {
		t.Fatalf("AdmitNode without a sealer: want one node.admitted event on edge, got %+v", es)
	}
	if n := len(feedAll(t, s, "edge").Entries); n != 0 {
		t.Errorf("Feed(edge) of an unsealed admission: want nothing signed, got %d entries", n)
	}
	wantAdmitted(t, s, "edge", []string{"lab-1"}, [][]byte{nil})
}

func testApplySyncedNodes(t *testing.T, open OpenSync) {
	ctx := t.Context()
	hub := open(t, &testSealer{}, nil)
	down := open(t, nil, nil)
	if _, err := hub.AdmitNode(ctx, testNode("edge-a1", "edge")); err != nil {
		t.Fatal(err)
	}
	if _, err := hub.AdmitNode(ctx, testNode("edge-b1", "edge", "stable")); err != nil {
		t.Fatal(err)
	}
	hubEdge := wantFeed(t, hub, "edge", nodeEv(catalog.EventNodeAdmitted, "edge-a1"), nodeEv(catalog.EventNodeAdmitted, "edge-b1"))

	// The hub's edge tier feeds the downstream's local tier "beta".
	cur := syncRound(t, hub, down, "edge", store.Cursor{Tier: "beta"})
	wantAdmitted(t, down, "beta", []string{"edge-a1", "edge-b1"}, [][]byte{hubEdge[0].Record, hubEdge[1].Record})
	wantAdmitted(t, down, "edge", nil, nil)
	// This node passes the hub's bytes on unchanged to its downstreams.
	downBeta := feedAll(t, down, "beta").Entries
	if len(downBeta) != 2 || !bytes.Equal(downBeta[0].Record, hubEdge[0].Record) || !bytes.Equal(downBeta[1].Sig, hubEdge[1].Sig) {
		t.Errorf("Feed(beta) downstream: want the hub's two records unchanged, got %d entries", len(downBeta))
	}

	// A removal reaches it; the other node stays; syncing the same
	// records again through a second link changes nothing.
	if err := hub.RemoveNode(ctx, "edge-a1", time.Now()); err != nil {
		t.Fatal(err)
	}
	syncRound(t, hub, down, "edge", cur)
	wantAdmitted(t, down, "beta", []string{"edge-b1"}, [][]byte{hubEdge[1].Record})
	syncRound(t, hub, down, "edge", store.Cursor{Tier: "candidate"})
	wantAdmitted(t, down, "candidate", []string{"edge-b1"}, [][]byte{hubEdge[1].Record})
	ns := nodesOf(t, down)
	if len(ns) != 2 || ns[0].Name != "edge-a1" || len(ns[0].Tiers) != 0 || ns[0].Removed.IsZero() ||
		ns[1].Name != "edge-b1" || strings.Join(ns[1].Tiers, ",") != "beta,candidate" {
		t.Errorf("Nodes downstream: want edge-a1 removed and edge-b1 on beta,candidate, got %+v", ns)
	}

	// A removal that names another key than the one admitted here takes
	// nothing back: it is not the removal of this admission.
	sealer := &testSealer{}
	other := testNode("edge-b1", "candidate")
	other.Key = "ed25519:" + strings.Repeat("C", 42) + "E"
	other.Removed = time.Now()
	c := cursorOf(t, down, "candidate")
	e := sealedEvent(t, sealer, store.SealRequest{Tier: "edge", TierSeq: c.HubSeq + 1, Type: catalog.EventNodeRemoved, Node: &other})
	next := c
	next.HubSeq, next.UpstreamSeq = c.HubSeq+1, c.UpstreamSeq+1
	if err := down.ApplySynced(ctx, c, next, []store.SyncedEvent{e}); err != nil {
		t.Fatalf("ApplySynced of a removal under another key: %v", err)
	}
	wantAdmitted(t, down, "candidate", []string{"edge-b1"}, [][]byte{hubEdge[1].Record})
}

func testApplySyncedNodeRefusals(t *testing.T, open OpenSync) {
	ctx := t.Context()
	down := open(t, nil, nil)
	sealer := &testSealer{}
	for _, tc := range []struct {
		name string
		edit func(ev *store.SyncedEvent)
	}{
		{"no node", func(ev *store.SyncedEvent) { ev.Node = nil }},
		{"a bad key", func(ev *store.SyncedEvent) { ev.Node.Key = "ed25519:short" }},
		{"no URL", func(ev *store.SyncedEvent) { ev.Node.URLs = nil }},
		{"no admission time", func(ev *store.SyncedEvent) { ev.Node.Admitted = time.Time{} }},
		{"a removal without its time", func(ev *store.SyncedEvent) { ev.Type = catalog.EventNodeRemoved }},
		{"a token as well", func(ev *store.SyncedEvent) {
			tk := token("e000000000000001", catalog.TokenAuth, "edge")
			ev.Token = &tk
		}},
		{"a token event carrying a node", func(ev *store.SyncedEvent) {
			tk := token("e000000000000001", catalog.TokenAuth, "edge")
			ev.Type, ev.Token = catalog.EventTokenAdded, &tk
		}},
	} {
		n := testNode("edge-a1", "edge")
		e := sealedEvent(t, sealer, store.SealRequest{Tier: "edge", TierSeq: 1, Type: catalog.EventNodeAdmitted, Node: &n})
		tc.edit(&e)
		h := head(t, down)
		err := down.ApplySynced(ctx, store.Cursor{Tier: "edge"},
			store.Cursor{Tier: "edge", HubTier: "edge", HubSeq: 1, Upstream: upstreamURL, UpstreamSeq: 1},
			[]store.SyncedEvent{e})
		wantInvalid(t, "ApplySynced of a node event with "+tc.name, err)
		wantNoEvent(t, down, h, "ApplySynced of a node event with "+tc.name)
	}
	wantAdmitted(t, down, "edge", nil, nil)
}
