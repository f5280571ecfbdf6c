package client

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/patchmesh/patchmesh/api"
	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/federation"
	"github.com/patchmesh/patchmesh/store"
)

// rewriteOffer makes a real node's patch answers pass through f, as a
// hostile node between the hub's records and the machine would.
func rewriteOffer(n *testNode, f func(*federation.Offer)) {
	h := n.srv.Config.Handler
	n.setIntercept(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != "/v1/client/patch" {
			return false
		}
		n.setIntercept(nil)
		defer rewriteOffer(n, f)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		var o federation.Offer
		if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &o) != nil {
			w.WriteHeader(rec.Code)
			w.Write(rec.Body.Bytes())
			return true
		}
		f(&o)
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(o)
		return true
	})
}

// signedOffer is the node's own signed record of p on tier.
func signedOffer(t *testing.T, n *testNode, tier string, p catalog.Patch) *federation.Envelope {
	t.Helper()
	es, err := n.store.SignedEvents(context.Background(), store.SignedQuery{Tier: tier, Digest: p.Digest,
		Types: []catalog.EventType{catalog.EventPatchAdded, catalog.EventPatchPromoted}})
	if err != nil || len(es) != 1 {
		t.Fatalf("signed record of %s on %s: %v (%d)", p.Digest, tier, err, len(es))
	}
	return &federation.Envelope{Record: es[0].Record, Sig: es[0].Sig}
}

func refreshWithHook(t *testing.T, c *Client) (RefreshResult, error, string) {
	t.Helper()
	ran := filepath.Join(t.TempDir(), "hook-ran")
	res, err := c.Refresh(context.Background(), RefreshOptions{Kernel: testKernel, Arch: testArch,
		ApplyHook: `printf %s "$PATCHMESH_PATCH_DIGEST" > ` + ran})
	b, _ := os.ReadFile(ran)
	return res, err, string(b)
}

// What a node says of a patch beside the hub's record is not used: the
// machine downloads and checks the signed digest.
func TestRefreshDownloadsTheSignedPatchNotTheNodesFields(t *testing.T) {
	n := newTestNode(t, false)
	c := newTestClient(t, Config{Server: n.srv.URL})
	register(t, c, n.authToken("edge"))
	good := n.upload([]byte("the patch the hub published"), "107.1")
	evil := n.upload([]byte("another patch"), "107.2")
	rewriteOffer(n, func(o *federation.Offer) {
		o.Signed = signedOffer(t, n, "edge", good)
		o.Digest, o.Size, o.Version = evil.Digest, evil.Size, evil.Version
	})
	res, err, hooked := refreshWithHook(t, c)
	if err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	if res.Patch == nil || res.Patch.Digest != good.Digest || hooked != good.Digest {
		t.Errorf("Refresh applied %v (hook saw %q), want the signed %s", res.Patch, hooked, good.Digest)
	}
	if got := n.count(http.MethodGet, "/v1/blobs/"+evil.Digest); got != 0 {
		t.Errorf("the node's unsigned digest was downloaded %d times", got)
	}
}

// Forged, foreign or missing signatures: no download, no hook, a
// check-failed report and an error naming the reason.
func TestRefreshRefusesForgedOffers(t *testing.T) {
	forger := newHubKey(t)
	for _, tc := range []struct {
		name    string
		forge   func(t *testing.T, n *testNode, p catalog.Patch, o *federation.Offer)
		wantErr error
	}{
		{"unsigned", func(t *testing.T, n *testNode, p catalog.Patch, o *federation.Offer) { o.Signed = nil }, ErrOfferUnsigned},
		{"signed by a key not pinned", func(t *testing.T, n *testNode, p catalog.Patch, o *federation.Offer) {
			o.Signed = forger.sign(t, catalog.EventPatchAdded, "edge", 1, p)
		}, ErrOfferUntrusted},
		{"the hub's record for another tier", func(t *testing.T, n *testNode, p catalog.Patch, o *federation.Offer) {
			n.adminDo(http.MethodPost, "/v1/admin/patches/"+p.Digest+"/promote", nil, bytes.NewReader([]byte(`{"tier":"stable"}`)), "application/json")
			o.Signed = signedOffer(t, n, "stable", p)
		}, ErrOfferOtherTier},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newTestNode(t, false)
			c := newTestClient(t, Config{Server: n.srv.URL})
			register(t, c, n.authToken("edge"))
			p := n.upload([]byte("a patch"), "107.1")
			rewriteOffer(n, func(o *federation.Offer) { tc.forge(t, n, p, o) })
			res, err, hooked := refreshWithHook(t, c)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Refresh = %v, want %v", err, tc.wantErr)
			}
			if hooked != "" || n.count(http.MethodGet, "/v1/blobs/") != 0 {
				t.Errorf("a refused offer ran the hook (%q) or was downloaded (%d)", hooked, n.count(http.MethodGet, "/v1/blobs/"))
			}
			if res.State != catalog.StateCheckFailed || res.Refused == "" || n.lastBody("/v1/client/checkin")["state"] != "check-failed" {
				t.Errorf("result %+v, want check-failed reported with the reason", res)
			}
			assertNoPatchFiles(t, c.cfg.StateDir)
		})
	}
}

// After applying 107.2, a node offering 107.1 (with the hub's genuine
// record) is refused, until the hub withdraws 107.2: then the node's offer
// carries the withdrawal and 107.1 is applied.
func TestRefreshRefusesRollbackUntilTheNewerPatchIsWithdrawn(t *testing.T) {
	n := newTestNode(t, false)
	c := newTestClient(t, Config{Server: n.srv.URL})
	register(t, c, n.authToken("edge"))
	old := n.upload([]byte("patch one"), "107.1")
	neu := n.upload([]byte("patch two"), "107.2")
	if res, err, hooked := refreshWithHook(t, c); err != nil || hooked != neu.Digest || res.State != catalog.StateApplied {
		t.Fatalf("first Refresh = %+v, %v, hook %q; want %s applied", res, err, hooked, neu.Digest)
	}
	st, _ := LoadState(c.cfg.StateDir)
	if a := st.Applied[appliedKey(testKernel, testArch)]; a.Digest != neu.Digest || a.Version != "107.2" || a.TierSeq < 1 {
		t.Fatalf("state after applying: %+v, want 107.2 recorded with its hub sequence", a)
	}

	rewriteOffer(n, func(o *federation.Offer) {
		o.Patch, o.Signed, o.Withdrawal = old, signedOffer(t, n, "edge", old), nil
	})
	_, err, hooked := refreshWithHook(t, c)
	if !errors.Is(err, ErrRollback) || hooked != "" {
		t.Fatalf("Refresh offered the older patch = %v (hook %q), want ErrRollback and no hook", err, hooked)
	}
	if q := n.lastQuery("/v1/client/patch"); q.Get("applied") != neu.Digest {
		t.Errorf("patch query %v, want applied=%s", q, neu.Digest)
	}

	n.setIntercept(nil)
	n.adminDo(http.MethodPost, "/v1/admin/patches/"+neu.Digest+"/withdraw", nil, nil, "")
	res, err, hooked := refreshWithHook(t, c)
	if err != nil || hooked != old.Digest || res.State != catalog.StateApplied {
		t.Fatalf("Refresh after the withdrawal = %+v, %v, hook %q; want %s applied", res, err, hooked, old.Digest)
	}

	// The withdrawn patch, handed back with its genuine record, is
	// refused although its version is higher.
	neuRecord := signedOffer(t, n, "edge", neu)
	rewriteOffer(n, func(o *federation.Offer) { o.Patch, o.Signed = neu, neuRecord })
	if _, err, hooked := refreshWithHook(t, c); !errors.Is(err, ErrRollback) || hooked != "" {
		t.Fatalf("Refresh offered the withdrawn patch again = %v (hook %q), want ErrRollback", err, hooked)
	}
}

// The machine's tier comes from the hub-signed record of its enrollment
// token, not from the node: a record of another token is refused and
// nothing is saved; a token with no record needs the tier from the
// operator.
func TestRegisterVerifiesTheTierByTheTokensSignedRecord(t *testing.T) {
	n := newTestNode(t, false)
	edge, stable := n.authToken("edge"), n.authToken("stable")
	var stableRecord json.RawMessage
	h := n.srv.Config.Handler
	n.setIntercept(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != "/v1/client/register" || stableRecord == nil {
			return false
		}
		rec := httptest.NewRecorder()
		n.setIntercept(nil)
		h.ServeHTTP(rec, r)
		var out map[string]json.RawMessage
		json.Unmarshal(rec.Body.Bytes(), &out)
		out["token_record"] = stableRecord
		w.WriteHeader(rec.Code)
		json.NewEncoder(w).Encode(out)
		return true
	})
	// The record of the stable token, as a node would have it.
	c0 := newTestClient(t, Config{Server: n.srv.URL})
	register(t, c0, stable)
	es, _ := n.store.SignedEvents(context.Background(), store.SignedQuery{Tier: "stable", Types: []catalog.EventType{catalog.EventTokenAdded}, Limit: 10})
	stableRecord, _ = json.Marshal(federation.Envelope{Record: es[0].Record, Sig: es[0].Sig})

	c := newTestClient(t, Config{Server: n.srv.URL})
	_, err := c.Register(context.Background(), RegisterRequest{AuthToken: edge, MachineID: testMachineID, Kernel: testKernel, Arch: testArch, HubKeys: []string{testHubPub}})
	if !errors.Is(err, ErrEnrollmentUnverified) {
		t.Fatalf("Register with another token's record = %v, want ErrEnrollmentUnverified", err)
	}
	if _, err := LoadState(c.cfg.StateDir); !errors.Is(err, ErrNotRegistered) {
		t.Errorf("state after a refused registration: %v, want none", err)
	}

	// A token made on this node without a hub key has no record.
	plain := newTestNodeSigned(t, false, nil, false)
	tok := plain.authToken("edge")
	c2 := newTestClient(t, Config{Server: plain.srv.URL})
	req := RegisterRequest{AuthToken: tok, MachineID: testMachineID, Kernel: testKernel, Arch: testArch, HubKeys: []string{testHubPub}}
	if _, err := c2.Register(context.Background(), req); !errors.Is(err, ErrEnrollmentUnverified) {
		t.Fatalf("Register with no token record = %v, want ErrEnrollmentUnverified", err)
	}
	req.HubTier = "edge"
	if _, err := c2.Register(context.Background(), req); err != nil {
		t.Fatalf("Register with no token record and --hub-tier: %v", err)
	}
	if st, _ := LoadState(c2.cfg.StateDir); st.HubTier != "edge" || len(st.HubKeys) != 1 {
		t.Errorf("state: hub tier %q, keys %v; want edge and the pinned key", st.HubTier, st.HubKeys)
	}
}

// A machine that pins the hub's old key follows a rotation: the node hands
// over the old key's endorsement of the new one, the machine pins the new
// key, and keeps it once the endorsement is no longer served. Without the
// endorsement, a machine pinning only the old key refuses.
func TestRegisterAndRefreshFollowAnEndorsedRotation(t *testing.T) {
	old := newHubKey(t)
	endorsement := old.endorse(t, hubKey{pub: testHubKey.Public().(ed25519.PublicKey)})
	n := newTestNodeWith(t, false, nil)
	// This node's config serves the endorsement.
	n2 := newTestNodeWith(t, false, func(c *api.Config) { c.Endorsements = []federation.Envelope{endorsement} })
	c := newTestClient(t, Config{Server: n2.srv.URL})
	if _, err := c.Register(context.Background(), RegisterRequest{AuthToken: n2.authToken("edge"), MachineID: testMachineID,
		Kernel: testKernel, Arch: testArch, HubKeys: []string{old.text()}}); err != nil {
		t.Fatalf("Register pinning the old key, endorsement served: %v", err)
	}
	st, _ := LoadState(c.cfg.StateDir)
	if !slices.Equal(st.HubKeys, []string{old.text(), testHubPub}) || st.HubTier != "edge" {
		t.Fatalf("state after registration: keys %v, tier %q; want the old and the endorsed key, tier edge", st.HubKeys, st.HubTier)
	}
	p := n2.upload([]byte("signed by the new key"), "107.1")
	// The endorsement is served no more.
	rewriteOffer(n2, func(o *federation.Offer) { o.Endorsements = nil })
	if res, err, hooked := refreshWithHook(t, c); err != nil || hooked != p.Digest {
		t.Fatalf("Refresh with the endorsed key kept and no endorsement served: %+v, %v; want %s applied", res, err, p.Digest)
	}

	// Another machine pins only the old key, and no node serves the
	// endorsement: it cannot verify the new key's admission of the node,
	// and so sends it nothing.
	c2 := newTestClient(t, Config{Server: n.srv.URL})
	regs := n.count(http.MethodPost, "/v1/client/register")
	_, err := c2.Register(context.Background(), RegisterRequest{AuthToken: n.authToken("edge"), MachineID: testMachineID,
		Kernel: testKernel, Arch: testArch, HubKeys: []string{old.text()}})
	if !errors.Is(err, ErrNodeNotAdmitted) || n.count(http.MethodPost, "/v1/client/register") != regs {
		t.Fatalf("Register pinning only the old key, no endorsement: %v, want the node refused as not admitted before any registration", err)
	}
}
