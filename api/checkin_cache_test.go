package api_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"net/http"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/api"
	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/federation"
)

// A check-in answered from the offer index and the token cache never
// outlives a change: a new patch, a withdrawal and a re-registration
// (which revokes the machine's old token) each show at the very next
// check-in, while unchanged repeats do not ask the store again.
func TestCheckInFromMemoryFollowsEveryChange(t *testing.T) {
	e := newEnv(t)
	tier := catalog.DefaultTiers[0]
	m := e.machine(tier, "cache-machine-0001")
	offered := func(authz string) (int, string) {
		t.Helper()
		r := e.request(http.MethodGet, "/v1/client/patch?kernel="+testKernel+"&arch="+testArch, authz, nil)
		if r.StatusCode != http.StatusOK {
			return r.StatusCode, ""
		}
		var o federation.Offer
		e.want(r, http.StatusOK, &o)
		return r.StatusCode, o.Patch.Digest
	}
	if code, _ := offered(m); code != http.StatusNotFound {
		t.Fatalf("empty catalog: want 404, got %d", code)
	}
	p1 := e.upload(content(64, "cache-1"), "107.1")
	if _, d := offered(m); d != p1.Digest {
		t.Fatalf("after the first upload: want %s offered, got %q", p1.Digest, d)
	}
	newest, tokens := e.storeCalls("Newest"), e.storeCalls("Token")
	for range 5 {
		if _, d := offered(m); d != p1.Digest {
			t.Fatalf("repeat: want %s offered, got %q", p1.Digest, d)
		}
	}
	if n, k := e.storeCalls("Newest")-newest, e.storeCalls("Token")-tokens; n != 0 || k != 0 {
		t.Errorf("5 unchanged check-ins: want no Newest and no Token store call, got %d and %d", n, k)
	}

	p2 := e.upload(content(64, "cache-2"), "107.2")
	if _, d := offered(m); d != p2.Digest {
		t.Fatalf("after a newer upload: want %s offered at once, got %q", p2.Digest, d)
	}
	e.want(e.request(http.MethodPost, "/v1/admin/patches/"+p2.Digest+"/withdraw", e.admin, nil), http.StatusOK, nil)
	if _, d := offered(m); d != p1.Digest {
		t.Fatalf("after withdrawing %s: want %s offered at once, got %q", p2.Digest, p1.Digest, d)
	}

	// Registering again revokes the machine's old token.
	m2 := e.machine(tier, "cache-machine-0001")
	if code, _ := offered(m); code != http.StatusUnauthorized {
		t.Errorf("old token after re-registration: want 401 at once, got %d", code)
	}
	if _, d := offered(m2); d != p1.Digest {
		t.Errorf("new token: want %s offered, got %q", p1.Digest, d)
	}
}

// Successful check-ins are logged as a sample; failures and admin
// requests are logged in full.
func TestAccessLogSamplesMachineSuccessesOnly(t *testing.T) {
	e := newEnv(t, func(c *api.Config) { c.SuccessLogPerSecond = 1 })
	m := e.machine(catalog.DefaultTiers[0], "sample-machine-0001")
	e.upload(content(64, "sample"), "107.1")
	for range 10 {
		e.want(e.request(http.MethodGet, "/v1/client/patch?kernel="+testKernel+"&arch="+testArch, m, nil), http.StatusOK, nil)
		r := e.request(http.MethodGet, "/v1/client/patch?kernel="+testKernel+"&arch="+testArch, "Bearer pmm_0123456789abcdef_bad", nil)
		if r.StatusCode != http.StatusUnauthorized {
			t.Fatalf("bad token: want 401, got %d", r.StatusCode)
		}
		e.want(e.request(http.MethodGet, "/v1/admin/patches", e.admin, nil), http.StatusOK, nil)
	}
	count := map[string]int{}
	for _, l := range e.logs.lines(t) {
		if l["msg"] == "request" {
			count[l["route"].(string)+" "+http.StatusText(int(l["status"].(float64)))]++
		}
	}
	// The env's clock stands still: all ten are in one second.
	if ok := count["/v1/client/patch OK"]; ok != 1 {
		t.Errorf("access lines of 10 successful check-ins in one second at 1/s: want 1, got %d", ok)
	}
	if n := count["/v1/client/patch Unauthorized"]; n != 10 {
		t.Errorf("access lines of 10 refused check-ins: want 10, got %d", n)
	}
	if n := count["/v1/admin/patches OK"]; n != 10 {
		t.Errorf("access lines of 10 admin listings: want 10, got %d", n)
	}
}

// The encoded check-in answer is kept per (tier, kernel, arch, digest
// offered), so a change that leaves the digest offered alone — the patch
// promoted to another tier, which its record's tiers show — must still
// reach the very next answer. The env's clock stands still: only the
// store's generation can outdate the kept answer.
func TestCheckInAnswerFollowsChangesToTheOfferedPatch(t *testing.T) {
	e := newEnv(t)
	m := e.machine("edge", "answer-machine-0001")
	q := "/v1/client/patch?kernel=" + testKernel + "&arch=" + testArch
	p := e.upload(content(64, "answer-1"), "107.1")
	offered := func() federation.Offer {
		t.Helper()
		var o federation.Offer
		e.want(e.request(http.MethodGet, q, m, nil), http.StatusOK, &o)
		return o
	}
	for range 3 {
		if o := offered(); o.Digest != p.Digest || slices.Contains(o.Tiers, "beta") {
			t.Fatalf("before the promotion: want %s on edge only, got %s on %v", p.Digest, o.Digest, o.Tiers)
		}
	}
	e.want(e.request(http.MethodPost, "/v1/admin/patches/"+p.Digest+"/promote", e.admin, map[string]string{"tier": "beta"}), http.StatusOK, nil)
	if o := offered(); o.Digest != p.Digest || !slices.Contains(o.Tiers, "beta") {
		t.Errorf("after promoting to beta: want %s with beta among its tiers at once, got %s on %v", p.Digest, o.Digest, o.Tiers)
	}
}

// swappableBeats serves the newest heartbeat a test set, for every tier.
type swappableBeats struct {
	env atomic.Pointer[federation.Envelope]
}

func (s *swappableBeats) Latest(string) (federation.Envelope, bool) {
	if e := s.env.Load(); e != nil {
		return *e, true
	}
	return federation.Envelope{}, false
}

// A new heartbeat changes no store generation, yet the next answer must
// carry it, in the body and in the header alike.
func TestCheckInAnswerCarriesTheNewestHeartbeat(t *testing.T) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	beats := &swappableBeats{}
	e := newEnv(t, func(c *api.Config) { c.Heartbeats = beats })
	m := e.machine("edge", "answer-machine-0002")
	q := "/v1/client/patch?kernel=" + testKernel + "&arch=" + testArch
	e.upload(content(64, "answer-2"), "107.1")
	for seq := range int64(4) {
		if seq > 0 {
			hb, err := federation.SignHeartbeat(priv, "edge", seq, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			beats.env.Store(&hb)
		}
		for range 2 {
			r := e.request(http.MethodGet, q, m, nil)
			var o federation.Offer
			e.want(r, http.StatusOK, &o)
			want := beats.env.Load()
			header := r.Header.Get(federation.HeartbeatHeader)
			switch {
			case want == nil && (o.Heartbeat != nil || header != ""):
				t.Fatalf("no heartbeat yet: answer carries one (body %v, header %q)", o.Heartbeat != nil, header)
			case want != nil && (o.Heartbeat == nil || !bytes.Equal(o.Heartbeat.Sig, want.Sig)):
				t.Fatalf("heartbeat %d: body carries another", seq)
			case want != nil && header != federation.EncodeHeartbeatHeader(*want):
				t.Fatalf("heartbeat %d: header carries another", seq)
			}
		}
	}
}
