package api_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/patchmesh/patchmesh/api"
	"github.com/patchmesh/patchmesh/store"
)

type fixedPolicy struct{ allowHTTP bool }

func (p fixedPolicy) AllowHTTP() bool { return p.allowHTTP }
func (fixedPolicy) Wake()             {}

// Webhooks: bad input is a clear 400 and stores nothing; the secret is
// never answered nor logged; test and deliveries work on a known hook.
func TestAdminWebhooks(t *testing.T) {
	e := newEnv(t)
	secret := e.keep("a-very-secret-webhook-key")
	good := map[string]any{"url": "https://hooks.example/pm?token=receivers-own", "events": []string{"node.down", "patch.available", "node.down"}, "secret": secret}
	for _, tc := range []struct {
		name  string
		body  any
		field string
	}{
		{"http URL", map[string]any{"url": "http://hooks.example/", "events": []string{"node.down"}, "secret": secret}, "url"},
		{"relative URL", map[string]any{"url": "/hook", "events": []string{"node.down"}, "secret": secret}, "url"},
		{"URL with credentials", map[string]any{"url": "https://u:p@hooks.example/", "events": []string{"node.down"}, "secret": secret}, "url"},
		{"no events", map[string]any{"url": "https://hooks.example/", "secret": secret}, "events"},
		{"unknown event", map[string]any{"url": "https://hooks.example/", "events": []string{"patch.deleted"}, "secret": secret}, "events"},
		{"short secret", map[string]any{"url": "https://hooks.example/", "events": []string{"node.down"}, "secret": "short"}, "secret"},
	} {
		r := e.request(http.MethodPost, "/v1/admin/webhooks", e.admin, tc.body)
		if r.StatusCode != http.StatusBadRequest || r.errField() != tc.field {
			t.Errorf("add with %s: %d %s; want 400 on field %s", tc.name, r.StatusCode, r.body, tc.field)
		}
	}
	if r := e.request(http.MethodPost, "/v1/admin/webhooks", e.admin, `{"url": "https://x.example", "bogus": 1}`); r.StatusCode != http.StatusBadRequest {
		t.Errorf("unknown field: %d, want 400", r.StatusCode)
	}
	if hs, _ := e.store.Webhooks(t.Context()); len(hs) != 0 {
		t.Fatalf("refused adds stored %d hooks; want none", len(hs))
	}

	r := e.request(http.MethodPost, "/v1/admin/webhooks", e.admin, good)
	var h store.Webhook
	e.want(r, http.StatusCreated, &h)
	if strings.Contains(string(r.body), secret) || len(h.ID) != 16 || strings.Join(h.Events, ",") != "node.down,patch.available" {
		t.Errorf("add answered %s; want an ID, events sorted and deduplicated, no secret", r.body)
	}
	lr := e.request(http.MethodGet, "/v1/admin/webhooks", e.admin, nil)
	if lr.StatusCode != http.StatusOK || strings.Contains(string(lr.body), secret) || !strings.Contains(string(lr.body), h.ID) {
		t.Errorf("list: %d %s; want the hook without its secret", lr.StatusCode, lr.body)
	}
	stored, err := e.store.Webhook(t.Context(), h.ID)
	if err != nil || string(stored.Secret) != secret {
		t.Errorf("stored hook: %+v, %v; want the secret kept for signing", stored, err)
	}

	var test struct {
		EventID string `json:"event_id"`
	}
	e.want(e.request(http.MethodPost, "/v1/admin/webhooks/"+h.ID+"/test", e.admin, nil), http.StatusAccepted, &test)
	var ds struct{ Deliveries []store.Delivery }
	e.want(e.request(http.MethodGet, "/v1/admin/webhooks/"+h.ID+"/deliveries", e.admin, nil), http.StatusOK, &ds)
	if len(ds.Deliveries) != 1 || ds.Deliveries[0].EventID != test.EventID || ds.Deliveries[0].Event != "ping" {
		t.Errorf("deliveries after a test: %+v; want the ping %s", ds.Deliveries, test.EventID)
	}
	var raw map[string][]map[string]any
	json.Unmarshal(e.request(http.MethodGet, "/v1/admin/webhooks/"+h.ID+"/deliveries", e.admin, nil).body, &raw)
	if _, ok := raw["deliveries"][0]["body"]; ok {
		t.Errorf("deliveries carry the body; want only the record")
	}

	for _, tc := range []struct {
		method, path string
		status       int
	}{
		{"POST", "/v1/admin/webhooks/0000000000000000/test", 404},
		{"GET", "/v1/admin/webhooks/0000000000000000/deliveries", 404},
		{"GET", "/v1/admin/webhooks/nothex/deliveries", 400},
		{"GET", "/v1/admin/webhooks/" + h.ID + "/deliveries?limit=x", 400},
		{"DELETE", "/v1/admin/webhooks/nothex", 400},
		{"DELETE", "/v1/admin/webhooks/0000000000000000", 404},
	} {
		if r := e.request(tc.method, tc.path, e.admin, nil); r.StatusCode != tc.status {
			t.Errorf("%s %s: %d %s; want %d", tc.method, tc.path, r.StatusCode, r.body, tc.status)
		}
	}
	e.want(e.request(http.MethodDelete, "/v1/admin/webhooks/"+h.ID, e.admin, nil), http.StatusNoContent, nil)
	if hs, _ := e.store.Webhooks(t.Context()); len(hs) != 0 {
		t.Errorf("after remove: %d hooks; want none", len(hs))
	}
	if len(e.securityEvents("webhook_added")) != 1 || len(e.securityEvents("webhook_removed")) != 1 {
		t.Errorf("want one webhook_added and one webhook_removed security event")
	}
	if strings.Contains(e.logs.String(), "receivers-own") {
		t.Errorf("the log holds the URL's query; want only its host")
	}
}

// With the node's switch on, an http receiver is accepted.
func TestAdminWebhooksHTTPWhenAllowed(t *testing.T) {
	e := newEnv(t, func(c *api.Config) { c.Webhooks = fixedPolicy{allowHTTP: true} })
	e.want(e.request(http.MethodPost, "/v1/admin/webhooks", e.admin, map[string]any{
		"url": "http://127.0.0.1:9/hook", "events": []string{"node.down"}, "secret": e.keep("0123456789abcdef-secret")}),
		http.StatusCreated, nil)
}
