package federation

import (
	"crypto/ed25519"
	"errors"
	"testing"

	"github.com/patchmesh/patchmesh/catalog"
)

func TestRosterNodeVerify(t *testing.T) {
	hub, nodeKey, rogueKey := newKey(t), newKey(t), newKey(t)
	nodePub := nodeKey.Public().(ed25519.PublicKey)
	v := NewVerifier(hub.Public().(ed25519.PublicKey))
	e, err := Sign(hub, testNodeRecord(t, catalog.EventNodeAdmitted, nodePub))
	if err != nil {
		t.Fatal(err)
	}
	good := RosterNode{Name: "edge-a1", URL: "https://edge-a1.example:8443", URLs: []string{"https://edge-a1.example:8443"},
		Key: FormatPublicKey(nodePub), KeyID: KeyID(nodePub), Admission: &e}
	edit := func(f func(n *RosterNode)) RosterNode { n := good; f(&n); return n }
	for _, tc := range []struct {
		name string
		n    RosterNode
		want error
	}{
		{"the hub's admission, as listed", good, nil},
		{"no admission", edit(func(n *RosterNode) { n.Admission = nil }), ErrNotAdmitted},
		{"listed at a URL the hub did not admit", edit(func(n *RosterNode) { n.URL = "https://rogue.example" }), ErrNotAdmitted},
		{"listed with another key", edit(func(n *RosterNode) {
			n.Key = FormatPublicKey(rogueKey.Public().(ed25519.PublicKey))
		}), ErrNotAdmitted},
		{"listed with another key ID", edit(func(n *RosterNode) { n.KeyID = "0000000000000000" }), ErrNotAdmitted},
		{"listed under another name", edit(func(n *RosterNode) { n.Name = "edge-a2" }), ErrNotAdmitted},
		{"a key that does not parse", edit(func(n *RosterNode) { n.Key = "ed25519:x" }), ErrNotAdmitted},
	} {
		pub, r, err := tc.n.Verify(v)
		if (tc.want == nil) != (err == nil) || (tc.want != nil && !errors.Is(err, tc.want)) {
			t.Errorf("%s: want %v, got %v", tc.name, tc.want, err)
		}
		if tc.want == nil && (!pub.Equal(nodePub) || r.Tier != "edge") {
			t.Errorf("%s: key %x, record %+v", tc.name, pub, r)
		}
	}
}

func TestNonceAndHelloHost(t *testing.T) {
	a, err := NewNonce()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewNonce()
	if ValidNonce(a) != nil || a == b {
		t.Errorf("NewNonce: %q and %q, want two different valid nonces", a, b)
	}
	for _, tc := range []struct{ url, want string }{
		{"https://edge-a1.example:8443", "edge-a1.example:8443"},
		{"http://127.0.0.1:8400/", "127.0.0.1:8400"},
		{"https://[::1]:8443", "[::1]:8443"},
		{"https://edge.example", "edge.example"},
	} {
		if got, err := HelloHost(tc.url); err != nil || got != tc.want {
			t.Errorf("HelloHost(%q) = %q, %v; want %q", tc.url, got, err, tc.want)
		}
	}
	if _, err := HelloHost("/relative"); err == nil {
		t.Error("HelloHost of a relative URL: want an error")
	}
}
