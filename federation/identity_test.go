package federation

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/store"
)

func TestLoadOrCreateNodeKeyCreatesOnceAndRefusesReadable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.key")
	k1, created, err := LoadOrCreateNodeKey(path)
	if err != nil || !created {
		t.Fatalf("first use: want a created key, got created=%v err=%v", created, err)
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("node key file: want mode 0600, got %v (err %v)", st.Mode().Perm(), err)
	}
	k2, created, err := LoadOrCreateNodeKey(path)
	if err != nil || created || !k1.Equal(k2) {
		t.Fatalf("second use: want the same stored key, got created=%v err=%v", created, err)
	}
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	_, _, err = LoadOrCreateNodeKey(path)
	if !errors.Is(err, ErrKeyFileMode) || !strings.Contains(err.Error(), "node key") {
		t.Errorf("0640 node key: want ErrKeyFileMode naming the node key, got %v", err)
	}
}

var admittedAt = time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)

func testNodeRecord(t *testing.T, typ catalog.EventType, pub ed25519.PublicKey) Record {
	t.Helper()
	r := Record{Tier: "edge", TierSeq: 3, Type: typ, Time: admittedAt, Node: &NodeRecord{
		Name: "edge-a1", Key: FormatPublicKey(pub), URLs: []string{"https://edge-a1.example:8443"}, Admitted: admittedAt,
	}}
	if typ == catalog.EventNodeRemoved {
		r.Node.Removed = admittedAt.Add(time.Hour)
	}
	return r
}

func TestSignOpenNodeRecordRoundTrip(t *testing.T) {
	hub := newKey(t)
	nodePub := newKey(t).Public().(ed25519.PublicKey)
	v := NewVerifier(hub.Public().(ed25519.PublicKey))
	for _, typ := range []catalog.EventType{catalog.EventNodeAdmitted, catalog.EventNodeRemoved} {
		in := testNodeRecord(t, typ, nodePub)
		e, err := Sign(hub, in)
		if err != nil {
			t.Fatalf("Sign(%s): %v", typ, err)
		}
		got, err := v.Open(e)
		if err != nil {
			t.Fatalf("Open of a freshly signed %s: %v", typ, err)
		}
		if got.Node == nil || got.Node.Name != "edge-a1" || got.Node.Key != in.Node.Key || !got.Node.Removed.Equal(in.Node.Removed) {
			t.Fatalf("Open of a %s: got node %+v", typ, got.Node)
		}
		cn := got.CatalogNode()
		if cn == nil || cn.KeyID != KeyID(nodePub) || len(cn.Tiers) != 1 || cn.Tiers[0] != "edge" || cn.Validate() != nil {
			t.Errorf("CatalogNode of a %s: got %+v", typ, cn)
		}
	}
	// Records without a node keep their bytes: no "node" key at all.
	e, err := Sign(hub, testRecord(1))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(e.Record, []byte(`"node"`)) {
		t.Errorf("patch record: want no node field, got %s", e.Record)
	}
}

func TestSignRefusesInvalidNodeRecords(t *testing.T) {
	hub := newKey(t)
	nodePub := newKey(t).Public().(ed25519.PublicKey)
	admitted := func() Record { return testNodeRecord(t, catalog.EventNodeAdmitted, nodePub) }
	for _, tc := range []struct {
		name string
		r    Record
	}{
		{"patch event carrying a node", func() Record { r := testRecord(1); r.Node = admitted().Node; return r }()},
		{"token event carrying a node", func() Record { r := testTokenRecord(catalog.EventTokenAdded); r.Node = admitted().Node; return r }()},
		{"node event without a node", func() Record { r := admitted(); r.Node = nil; return r }()},
		{"node event carrying a token", func() Record { r := admitted(); r.Token = testToken(); return r }()},
		{"node key not a key", func() Record { r := admitted(); r.Node.Key = "ed25519:short"; return r }()},
		{"node name with a space", func() Record { r := admitted(); r.Node.Name = "edge a1"; return r }()},
		{"node without URLs", func() Record { r := admitted(); r.Node.URLs = nil; return r }()},
		{"node URL not http", func() Record { r := admitted(); r.Node.URLs = []string{"ftp://x.example"}; return r }()},
		{"node URL with credentials", func() Record { r := admitted(); r.Node.URLs = []string{"https://u:p@x.example"}; return r }()},
		{"node without admission time", func() Record { r := admitted(); r.Node.Admitted = time.Time{}; return r }()},
		{"node.admitted of a removed node", func() Record { r := admitted(); r.Node.Removed = admittedAt; return r }()},
		{"node.removed without a time", func() Record {
			r := testNodeRecord(t, catalog.EventNodeRemoved, nodePub)
			r.Node.Removed = time.Time{}
			return r
		}()},
	} {
		if _, err := Sign(hub, tc.r); err == nil {
			t.Errorf("%s: Sign accepted an invalid record", tc.name)
		}
	}
}

func TestSealerSealsNodeEvents(t *testing.T) {
	hub := newKey(t)
	nodePub := newKey(t).Public().(ed25519.PublicKey)
	n := &catalog.Node{Name: "edge-a1", Key: FormatPublicKey(nodePub), KeyID: KeyID(nodePub),
		URLs: []string{"http://127.0.0.1:8080"}, Admitted: admittedAt}
	rec, sig, err := Sealer{Key: hub}.Seal(store.SealRequest{Tier: "edge", TierSeq: 2, Type: catalog.EventNodeAdmitted, Node: n, At: admittedAt})
	if err != nil {
		t.Fatalf("Seal of a node.admitted: %v", err)
	}
	got, err := VerifyAdmission(NewVerifier(hub.Public().(ed25519.PublicKey)), Envelope{Record: rec, Sig: sig}, "edge-a1", nodePub)
	if err != nil || got.Tier != "edge" || got.TierSeq != 2 {
		t.Fatalf("sealed node.admitted: got %+v, err %v", got, err)
	}
}

func TestVerifyAdmission(t *testing.T) {
	hub, other := newKey(t), newKey(t)
	nodeKey, rogueKey := newKey(t), newKey(t)
	nodePub, roguePub := nodeKey.Public().(ed25519.PublicKey), rogueKey.Public().(ed25519.PublicKey)
	v := NewVerifier(hub.Public().(ed25519.PublicKey))
	sign := func(priv ed25519.PrivateKey, r Record) Envelope {
		e, err := Sign(priv, r)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	good := sign(hub, testNodeRecord(t, catalog.EventNodeAdmitted, nodePub))
	tampered := Envelope{Record: bytes.Replace(good.Record, []byte("edge-a1"), []byte("edge-a2"), 1), Sig: good.Sig}
	for _, tc := range []struct {
		name string
		e    Envelope
		node string
		pub  ed25519.PublicKey
		want error
	}{
		{"the hub's admission", good, "edge-a1", nodePub, nil},
		{"another name", good, "edge-a2", nodePub, ErrNotAdmitted},
		{"another key (a rogue claiming the name)", good, "edge-a1", roguePub, ErrNotAdmitted},
		{"a removal", sign(hub, testNodeRecord(t, catalog.EventNodeRemoved, nodePub)), "edge-a1", nodePub, ErrNotAdmitted},
		{"a patch record", sign(hub, testRecord(1)), "edge-a1", nodePub, ErrNotAdmitted},
		{"signed by an unpinned key", sign(other, testNodeRecord(t, catalog.EventNodeAdmitted, nodePub)), "edge-a1", nodePub, ErrUnknownKey},
		{"self-signed by the node", sign(nodeKey, testNodeRecord(t, catalog.EventNodeAdmitted, nodePub)), "edge-a1", nodePub, ErrUnknownKey},
		{"name changed after signing", tampered, "edge-a2", nodePub, ErrBadSignature},
	} {
		_, err := VerifyAdmission(v, tc.e, tc.node, tc.pub)
		if (tc.want == nil) != (err == nil) || (tc.want != nil && !errors.Is(err, tc.want)) {
			t.Errorf("%s: want %v, got %v", tc.name, tc.want, err)
		}
	}
}

func TestVerifyHello(t *testing.T) {
	nodeKey, rogueKey := newKey(t), newKey(t)
	nodePub := nodeKey.Public().(ed25519.PublicKey)
	const nonce, host = "c29tZS1yYW5kb20tbm9uY2U", "edge-a1.example:8443"
	h, err := SignHello(nodeKey, "edge-a1", nonce, host)
	if err != nil {
		t.Fatal(err)
	}
	rogue, err := SignHello(rogueKey, "edge-a1", nonce, host)
	if err != nil {
		t.Fatal(err)
	}
	// The rogue answers with the admitted key's name but signs with its own.
	rogueClaim := rogue
	rogueClaim.Key = h.Key
	flipped := h
	flipped.Sig = bytes.Clone(h.Sig)
	flipped.Sig[0] ^= 1
	for _, tc := range []struct {
		name        string
		h           Hello
		pub         ed25519.PublicKey
		nonce, host string
		ok          bool
	}{
		{"the node's own hello", h, nodePub, nonce, host, true},
		{"wrong key: a rogue's hello", rogue, nodePub, nonce, host, false},
		{"wrong key: a rogue naming the admitted key", rogueClaim, nodePub, nonce, host, false},
		{"wrong nonce", h, nodePub, "YW5vdGhlci1ub25jZS0xMjM", host, false},
		{"wrong host: relayed from another address", h, nodePub, nonce, "rogue.example:8443", false},
		{"bad signature", flipped, nodePub, nonce, host, false},
		{"host that could split lines", h, nodePub, nonce, "a\nb", false},
	} {
		err := VerifyHello(tc.h, tc.pub, tc.nonce, tc.host)
		if tc.ok != (err == nil) || (err != nil && !errors.Is(err, ErrBadHello)) {
			t.Errorf("%s: want ok=%v, got %v", tc.name, tc.ok, err)
		}
	}
	for _, bad := range []string{"", "short", strings.Repeat("a", MaxNonceLen+1), "has space in it here!"} {
		if _, err := SignHello(nodeKey, "edge-a1", bad, host); err == nil {
			t.Errorf("SignHello with nonce %q: want an error", bad)
		}
	}
}

func TestMachineCredential(t *testing.T) {
	issuerKey, otherKey := newKey(t), newKey(t)
	issuerPub, otherPub := issuerKey.Public().(ed25519.PublicKey), otherKey.Public().(ed25519.PublicKey)
	issued := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	st := MachineStatement{Machine: strings.Repeat("ab", 32), Tier: "edge", Issuer: "edge-a1",
		Issued: issued, Expires: issued.Add(30 * 24 * time.Hour)}
	cred, err := IssueCredential(issuerKey, st)
	if err != nil {
		t.Fatal(err)
	}
	if !IsCredential(cred) || len(cred) > MaxCredentialLen {
		t.Fatalf("credential %q: want the %s prefix within %d bytes", cred, CredentialPrefix, MaxCredentialLen)
	}
	forged, err := IssueCredential(otherKey, st)
	if err != nil {
		t.Fatal(err)
	}
	// Swap in another tier's statement under the issuer's signature.
	stText, sigText, _ := strings.Cut(strings.TrimPrefix(cred, CredentialPrefix), ".")
	raw, _ := credentialEncoding.DecodeString(stText)
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	m["tier"] = "stable"
	moved, _ := json.Marshal(m)
	retiered := CredentialPrefix + credentialEncoding.EncodeToString(moved) + "." + sigText

	for _, tc := range []struct {
		name string
		cred string
		pub  ed25519.PublicKey
		now  time.Time
		ok   bool
	}{
		{"issued by the admitted node", cred, issuerPub, issued.Add(time.Hour), true},
		{"checked against another node's key", cred, otherPub, issued.Add(time.Hour), false},
		{"signed by another key naming the issuer", forged, issuerPub, issued.Add(time.Hour), false},
		{"statement changed after signing", retiered, issuerPub, issued.Add(time.Hour), false},
		{"expired", cred, issuerPub, st.Expires, false},
		{"issued in the future", cred, issuerPub, issued.Add(-MaxClockSkew - time.Second), false},
	} {
		c, err := ParseCredential(tc.cred)
		if err == nil {
			err = VerifyCredential(c, tc.pub, tc.now)
		}
		if tc.ok != (err == nil) || (err != nil && !errors.Is(err, ErrBadCredential)) {
			t.Errorf("%s: want ok=%v, got %v", tc.name, tc.ok, err)
		}
		if tc.ok && (c.Statement.Machine != st.Machine || c.Statement.Tier != "edge" || c.Statement.IssuerKey != KeyID(issuerPub)) {
			t.Errorf("%s: statement %+v", tc.name, c.Statement)
		}
	}
	for _, bad := range []string{"", "pmc_", "pma_0123456789abcdef_x", "pmc_nodot", "pmc_e30.AAAA",
		CredentialPrefix + stText + "." + sigText + "x", CredentialPrefix + strings.Repeat("a", MaxCredentialLen)} {
		if _, err := ParseCredential(bad); !errors.Is(err, ErrBadCredential) {
			t.Errorf("ParseCredential(%.40q): want ErrBadCredential, got %v", bad, err)
		}
	}
	for name, bad := range map[string]MachineStatement{
		"machine not an HMAC": {Machine: "raw-machine-id", Tier: "edge", Issuer: "e", Issued: issued, Expires: issued.Add(time.Hour)},
		"no expiry":           {Machine: st.Machine, Tier: "edge", Issuer: "e", Issued: issued},
		"bad tier":            {Machine: st.Machine, Tier: "Edge Tier", Issuer: "e", Issued: issued, Expires: issued.Add(time.Hour)},
	} {
		if _, err := IssueCredential(issuerKey, bad); err == nil {
			t.Errorf("IssueCredential with %s: want an error", name)
		}
	}
}
