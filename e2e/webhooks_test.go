package e2e_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/internal/meshtest"
	"github.com/patchmesh/patchmesh/node"
	"github.com/patchmesh/patchmesh/webhook"
)

// hookReceiver is a webhook receiver on loopback: one path per node, each
// with its own secret. It verifies every signature and keeps the events
// it took, per path, in arrival order.
type hookReceiver struct {
	srv     *httptest.Server
	secrets map[string]string

	mu      sync.Mutex
	got     map[string][]webhook.Envelope
	failing map[string]bool // paths answering 503
	refused map[string]int  // 503 answers per path
	badSigs int
}

func newHookReceiver(t *testing.T, secrets map[string]string) *hookReceiver {
	r := &hookReceiver{secrets: secrets, got: map[string][]webhook.Envelope{}, failing: map[string]bool{}, refused: map[string]int{}}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		defer r.mu.Unlock()
		secret, ok := r.secrets[req.URL.Path]
		if !ok || webhook.Verify([]byte(secret), req.Header.Get(webhook.SignatureHeader), body, time.Now(), 0) != nil {
			r.badSigs++
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if r.failing[req.URL.Path] {
			r.refused[req.URL.Path]++
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		var env webhook.Envelope
		if err := json.Unmarshal(body, &env); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		r.got[req.URL.Path] = append(r.got[req.URL.Path], env)
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *hookReceiver) setFailing(path string, failing bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failing[path] = failing
}

// events lists the events a path took, each once (deliveries are at least
// once), as "event detail".
func (r *hookReceiver) events(path string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	seen := map[string]bool{}
	var out []string
	for _, e := range r.got[path] {
		if seen[e.ID] {
			continue
		}
		seen[e.ID] = true
		var d struct {
			Tier string
			Name string
		}
		json.Unmarshal(e.Data, &d)
		out = append(out, strings.TrimSpace(e.Event+" "+d.Tier+d.Name))
	}
	return out
}

func (r *hookReceiver) waitEvents(t *testing.T, path string, want ...string) {
	t.Helper()
	meshtest.WaitFor(t, 30*time.Second, fmt.Sprintf("%s to receive %v", path, want), func() error {
		if got := r.events(path); !slices.Equal(got, want) {
			return fmt.Errorf("got %v", got)
		}
		return nil
	})
}

func allowHTTPHooks(c *node.Config) {
	c.Webhooks.AllowHTTP = true
	c.Webhooks.RetryMin = 100 * time.Millisecond
	c.Webhooks.RetryMax = 500 * time.Millisecond
}

// Real nodes deliver patch.available (at the hub and, after sync, at the
// edge), sync.failing (the edge, while the hub is down) and node.down (the
// hub, when gossip finds the edge dead), signed, in order, at least once;
// a delivery a receiver refused before the hub stopped arrives after the
// hub's restart.
func TestWebhooksDeliverAcrossRestarts(t *testing.T) {
	t.Parallel()
	secrets := map[string]string{"/hub": "hub-webhook-secret-0123", "/edge": "edge-webhook-secret-0123"}
	recv := newHookReceiver(t, secrets)
	m := meshtest.New(t)
	m.Gossip = gossipProfile
	h := m.Start(meshtest.Spec{Name: "hub", Role: node.RoleHub, Configure: allowHTTPHooks})
	spec := pullSpec(t, "edge", node.RoleEdge, h.URL, h, "stable")
	spec.Configure = allowHTTPHooks
	e := m.Start(spec)

	h.AdminCall(t, http.MethodPost, "/v1/admin/webhooks", map[string]any{
		"url": recv.srv.URL + "/hub", "events": []string{"patch.available", "node.down"}, "secret": secrets["/hub"]}, nil)
	e.AdminCall(t, http.MethodPost, "/v1/admin/webhooks", map[string]any{
		"url": recv.srv.URL + "/edge", "events": []string{"patch.available", "sync.failing"}, "secret": secrets["/edge"]}, nil)

	p := h.Upload(t, randomBytes(t, 1000), meshtest.PatchMeta{Kernel: kernel, Arch: arch, Version: "1"})
	firstTier := h.Patches(t, nil)[0].Tiers[0]
	recv.waitEvents(t, "/hub", "patch.available "+firstTier)

	// The receiver refuses the hub's next event; the hub stops with it
	// pending, and delivers it after its restart.
	recv.setFailing("/hub", true)
	h.Promote(t, p.Digest, "stable")
	recv.waitEvents(t, "/edge", "patch.available stable")
	meshtest.WaitFor(t, 30*time.Second, "the hub's delivery to be refused", func() error {
		recv.mu.Lock()
		defer recv.mu.Unlock()
		if recv.refused["/hub"] == 0 {
			return fmt.Errorf("no refusal yet")
		}
		return nil
	})
	h.Stop(t)
	recv.waitEvents(t, "/edge", "patch.available stable", "sync.failing stable")
	recv.setFailing("/hub", false)
	h.Start(t)
	recv.waitEvents(t, "/hub", "patch.available "+firstTier, "patch.available stable")

	// The edge dies; the hub's gossip notices.
	meshtest.WaitFor(t, 30*time.Second, "both nodes in the hub's gossip", func() error {
		g, err := h.GossipView(t.Context())
		if err != nil || g.Members["alive"] != 2 {
			return fmt.Errorf("hub gossip %v, %v", g.Members, err)
		}
		return nil
	})
	e.Kill(t)
	recv.waitEvents(t, "/hub", "patch.available "+firstTier, "patch.available stable", "node.down edge")

	recv.mu.Lock()
	defer recv.mu.Unlock()
	if recv.badSigs != 0 {
		t.Errorf("receiver: %d deliveries failed their signature check; want none", recv.badSigs)
	}
}
