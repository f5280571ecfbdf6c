package api_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"net/http"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/api"
	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/federation"
)

// The offer carries the hub-signed record that put the patch on the
// machine's tier, the withdrawal of the patch the machine applied when it
// is not the one offered, and the configured key endorsements; the
// registration answer carries the signed record of the enrollment token.
func TestOfferCarriesTheHubsSignedRecords(t *testing.T) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	newPub, _, _ := ed25519.GenerateKey(rand.Reader)
	endorsement, err := federation.Endorse(priv, newPub, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	e, pub := newHub(t, false, func(c *api.Config) { c.Endorsements = []federation.Envelope{endorsement} })
	v := federation.NewVerifier(pub)

	at, atInfo := e.token("auth", "beta", "fleet-b")
	var reg struct {
		MachineToken string `json:"machine_token"`
		federation.Enrollment
	}
	e.want(e.request(http.MethodPost, "/v1/client/register", "Bearer "+at, registration("machine-offer-0001")), http.StatusCreated, &reg)
	mt := "Bearer " + e.keep(reg.MachineToken)
	if reg.TokenRecord == nil {
		t.Fatalf("register: want the token's signed record, got none")
	}
	tr, err := v.Open(*reg.TokenRecord)
	if err != nil {
		t.Fatalf("register: token record does not verify: %v", err)
	}
	secret := at[len("pma_")+16+1:] // the secret part, after the 16-digit ID
	sum := sha256.Sum256([]byte(secret))
	if tr.Type != catalog.EventTokenAdded || tr.Tier != "beta" || tr.Token.ID != atInfo.ID || string(tr.Token.Hash) != string(sum[:]) {
		t.Errorf("register: want the token.added record of %s on beta with the secret's hash, got %s of %+v on %s", atInfo.ID, tr.Type, tr.Token, tr.Tier)
	}
	if len(reg.Endorsements) != 1 {
		t.Errorf("register: want the 1 configured endorsement, got %d", len(reg.Endorsements))
	}

	old := e.upload([]byte("patch one"), "107.1")
	neu := e.upload([]byte("patch two"), "107.2")
	for _, p := range []catalog.Patch{old, neu} {
		e.want(e.request(http.MethodPost, "/v1/admin/patches/"+p.Digest+"/promote", e.admin, map[string]string{"tier": "beta"}), http.StatusOK, nil)
	}
	q := "/v1/client/patch?kernel=" + testKernel + "&arch=" + testArch

	var offer federation.Offer
	e.want(e.request(http.MethodGet, q+"&applied="+old.Digest, mt, nil), http.StatusOK, &offer)
	if offer.Digest != neu.Digest || offer.Signed == nil {
		t.Fatalf("offer: want %s with its signed record, got %s (signed %v)", neu.Digest, offer.Digest, offer.Signed != nil)
	}
	rec, err := v.Open(*offer.Signed)
	if err != nil {
		t.Fatalf("offer: record does not verify: %v", err)
	}
	if rec.Type != catalog.EventPatchPromoted || rec.Tier != "beta" || rec.Patch.Digest != neu.Digest || rec.Patch.Size != neu.Size {
		t.Errorf("offer: want the promotion of %s to beta, got %s of %s on %s", neu.Digest, rec.Type, rec.Patch.Digest, rec.Tier)
	}
	if offer.Withdrawal != nil {
		t.Errorf("offer: the applied patch is not withdrawn, yet a withdrawal came with the offer")
	}
	if len(offer.Endorsements) != 1 || offer.Heartbeat != nil {
		t.Errorf("offer: want 1 endorsement and no heartbeat, got %d and %v", len(offer.Endorsements), offer.Heartbeat)
	}

	// The newer patch is withdrawn: the machine that applied it is offered
	// the older one, with the signed withdrawal.
	e.want(e.request(http.MethodPost, "/v1/admin/patches/"+neu.Digest+"/withdraw", e.admin, nil), http.StatusOK, nil)
	offer = federation.Offer{}
	e.want(e.request(http.MethodGet, q+"&applied="+neu.Digest, mt, nil), http.StatusOK, &offer)
	if offer.Digest != old.Digest || offer.Withdrawal == nil {
		t.Fatalf("offer after withdrawal: want %s with the withdrawal of %s, got %s (withdrawal %v)", old.Digest, neu.Digest, offer.Digest, offer.Withdrawal != nil)
	}
	wd, err := v.Open(*offer.Withdrawal)
	if err != nil {
		t.Fatalf("withdrawal does not verify: %v", err)
	}
	if wd.Type != catalog.EventPatchWithdrawn || wd.Tier != "beta" || wd.Patch.Digest != neu.Digest {
		t.Errorf("withdrawal: want patch.withdrawn of %s on beta, got %s of %s on %s", neu.Digest, wd.Type, wd.Patch.Digest, wd.Tier)
	}

	r := e.request(http.MethodGet, q+"&applied=sha256:nope", mt, nil)
	if r.StatusCode != http.StatusBadRequest || r.errField() != "applied" {
		t.Errorf("offer with a bad applied digest: want 400 on field applied, got %d %s", r.StatusCode, r.body)
	}
}

// A node that signs nothing (no hub key) offers its patches unsigned: the
// machine is left to refuse them.
func TestOfferOfAnUnsignedPatchHasNoRecord(t *testing.T) {
	e := newEnv(t)
	mt := e.machine("edge", "machine-offer-0002")
	p := e.upload([]byte("unsigned"), "107.1")
	var offer federation.Offer
	e.want(e.request(http.MethodGet, "/v1/client/patch?kernel="+testKernel+"&arch="+testArch, mt, nil), http.StatusOK, &offer)
	if offer.Digest != p.Digest || offer.Signed != nil || offer.Withdrawal != nil {
		t.Errorf("unsigned offer: want %s with no records, got %+v", p.Digest, offer)
	}
}

// fixedBeats serves one heartbeat for one tier, as a puller's memory does.
type fixedBeats struct {
	tier string
	env  federation.Envelope
}

func (f fixedBeats) Latest(tier string) (federation.Envelope, bool) {
	return f.env, tier == f.tier
}

// The hub heartbeat of the machine's tier comes with every patch answer:
// in the offer and its header, and in the header of the 404 "nothing to
// offer", which a withholding node could otherwise answer for ever.
func TestPatchAnswersCarryTheTiersHeartbeat(t *testing.T) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	hb, err := federation.SignHeartbeat(priv, "beta", 42, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	e, _ := newHub(t, false, func(c *api.Config) { c.Heartbeats = fixedBeats{"beta", hb} })
	v := federation.NewVerifier(pub)
	check := func(what string, env federation.Envelope) {
		t.Helper()
		r, _, err := v.VerifyHeartbeat(env, "beta", federation.Record{}, time.Now())
		if err != nil || r.TierSeq != 42 {
			t.Errorf("%s: heartbeat %+v, %v; want the hub's of beta at hub seq 42", what, r, err)
		}
	}
	at, _ := e.token("auth", "beta", "fleet-b")
	var reg struct {
		MachineToken string `json:"machine_token"`
	}
	e.want(e.request(http.MethodPost, "/v1/client/register", "Bearer "+at, registration("machine-beat-0001")), http.StatusCreated, &reg)
	mt := "Bearer " + e.keep(reg.MachineToken)
	q := "/v1/client/patch?kernel=" + testKernel + "&arch=" + testArch

	r := e.request(http.MethodGet, q, mt, nil)
	if r.StatusCode != http.StatusNotFound {
		t.Fatalf("patch with nothing on beta: %d, want 404", r.StatusCode)
	}
	env, err := federation.DecodeHeartbeatHeader(r.Header.Get(federation.HeartbeatHeader))
	if err != nil {
		t.Fatalf("404 %s header: %v", federation.HeartbeatHeader, err)
	}
	check("404 header", env)

	p := e.upload([]byte("patch one"), "107.1")
	e.want(e.request(http.MethodPost, "/v1/admin/patches/"+p.Digest+"/promote", e.admin, map[string]string{"tier": "beta"}), http.StatusOK, nil)
	var offer federation.Offer
	r = e.request(http.MethodGet, q, mt, nil)
	e.want(r, http.StatusOK, &offer)
	if offer.Heartbeat == nil {
		t.Fatal("offer: no heartbeat")
	}
	check("offer", *offer.Heartbeat)
	if env, err := federation.DecodeHeartbeatHeader(r.Header.Get(federation.HeartbeatHeader)); err != nil {
		t.Errorf("200 %s header: %v", federation.HeartbeatHeader, err)
	} else {
		check("200 header", env)
	}
}
