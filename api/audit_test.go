package api_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/patchmesh/patchmesh/api"
	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/federation"
	"github.com/patchmesh/patchmesh/rollout"
	"github.com/patchmesh/patchmesh/store"
	"github.com/patchmesh/patchmesh/webhook"
)

type auditPage struct {
	Entries []store.AuditEntry `json:"entries"`
	Next    string             `json:"next"`
}

func (e *env) audit(query string) auditPage {
	e.t.Helper()
	var p auditPage
	e.want(e.request(http.MethodGet, "/v1/admin/audit"+query, e.admin, nil), http.StatusOK, &p)
	return p
}

// Every admin change appears in the audit trail with the user, the
// macaroon's ID, the request ID and the client's address; a refused
// change records nothing.
func TestEveryAdminChangeIsAudited(t *testing.T) {
	e := newEnv(t)
	p := e.upload(content(100, "audited"), "107.1")
	_, syncTok := e.token("sync", "edge", "dc-east")
	_, authTok := e.token("auth", "edge", "fleet")
	trustKey := pubOf(newNodeKey(t))
	nodeKey := federation.FormatPublicKey(pubOf(newNodeKey(t)))
	var hook struct{ ID string }
	e.want(e.request(http.MethodPost, "/v1/admin/webhooks", e.admin, map[string]any{
		"url": "https://hooks.example/pm", "events": []string{"node.down"}, "secret": "0123456789abcdef0123"}),
		http.StatusCreated, &hook)
	second := e.upload(content(100, "removed"), "107.2")

	changes := []struct {
		name, method, path string
		body               any
		status             int
		action             string
	}{
		{"add tier", "POST", "/v1/admin/tiers", map[string]string{"name": "gamma"}, 201, "POST /v1/admin/tiers"},
		{"remove tier", "DELETE", "/v1/admin/tiers/gamma", nil, 204, "DELETE /v1/admin/tiers/{name}"},
		{"add auth token", "POST", "/v1/admin/auth-tokens", map[string]string{"tier": "edge", "name": "x"}, 201, "POST /v1/admin/auth-tokens"},
		{"revoke auth token", "DELETE", "/v1/admin/auth-tokens/" + authTok.ID, nil, 204, "DELETE /v1/admin/auth-tokens/{id}"},
		{"add sync token", "POST", "/v1/admin/sync-tokens", map[string]string{"tier": "edge", "name": "y"}, 201, "POST /v1/admin/sync-tokens"},
		{"revoke sync token", "DELETE", "/v1/admin/sync-tokens/" + syncTok.ID, nil, 204, "DELETE /v1/admin/sync-tokens/{id}"},
		{"upload patch", "POST", uploadPath(digestOf(content(50, "up")), testKernel, "107.3"), content(50, "up"), 201, "POST /v1/admin/patches"},
		{"promote", "POST", "/v1/admin/patches/" + p.Digest + "/promote", map[string]string{"tier": "beta"}, 200, "POST /v1/admin/patches/{ref}/promote"},
		{"promote all", "POST", "/v1/admin/promote-all", map[string]string{"from": "edge", "to": "stable"}, 200, "POST /v1/admin/promote-all"},
		{"withdraw", "POST", "/v1/admin/patches/" + p.Digest + "/withdraw", nil, 200, "POST /v1/admin/patches/{digest}/withdraw"},
		{"remove patch", "DELETE", "/v1/admin/patches/" + second.Digest, nil, 204, "DELETE /v1/admin/patches/{digest}"},
		{"trust key", "POST", "/v1/admin/trust", map[string]string{"key": federation.FormatPublicKey(trustKey)}, 201, "POST /v1/admin/trust"},
		{"untrust key", "DELETE", "/v1/admin/trust/" + federation.KeyID(trustKey), nil, 204, "DELETE /v1/admin/trust/{id}"},
		{"admit node", "POST", "/v1/admin/nodes", map[string]any{"name": "edge-a1", "key": nodeKey, "urls": []string{"https://a.example"}}, 201, "POST /v1/admin/nodes"},
		{"remove node", "DELETE", "/v1/admin/nodes/edge-a1", nil, 204, "DELETE /v1/admin/nodes/{name}"},
		{"add webhook", "POST", "/v1/admin/webhooks", map[string]any{"url": "https://h.example/", "events": []string{"sync.failing"}, "secret": "abcdefghijklmnopqrst"}, 201, "POST /v1/admin/webhooks"},
		{"test webhook", "POST", "/v1/admin/webhooks/" + hook.ID + "/test", nil, 202, "POST /v1/admin/webhooks/{id}/test"},
		{"remove webhook", "DELETE", "/v1/admin/webhooks/" + hook.ID, nil, 204, "DELETE /v1/admin/webhooks/{id}"},
	}
	for i, c := range changes {
		reqID := fmt.Sprintf("audit-%02d", i)
		r := e.request(c.method, c.path, e.admin, c.body, "X-Request-ID", reqID)
		if r.StatusCode != c.status {
			t.Fatalf("%s: status %d, want %d; body %s", c.name, r.StatusCode, c.status, r.body)
		}
		got := e.audit("?limit=1").Entries
		if len(got) != 1 {
			t.Fatalf("%s: no audit entry", c.name)
		}
		if n := e.requestEntries(reqID); n != 1 {
			t.Errorf("%s: %d audit entries, want 1", c.name, n)
		}
		a := got[0]
		path := c.path
		if i := strings.IndexByte(path, '?'); i >= 0 {
			path = path[:i]
		}
		if a.RequestID != reqID || a.User != adminUser || a.Client != "127.0.0.1" || a.Action != c.action ||
			a.Target != path || len(a.TokenID) != 16 || a.At.IsZero() {
			t.Errorf("%s: audit entry %+v; want request %s, user %s, client 127.0.0.1, action %q, target %s and a token ID",
				c.name, a, reqID, adminUser, c.action, path)
		}
	}
}

// A refused admin change, and an admin read, record nothing.
func TestRefusedChangesAreNotAudited(t *testing.T) {
	e := newEnv(t)
	e.want(e.request(http.MethodPost, "/v1/admin/tiers", e.admin, map[string]string{"name": "gamma"}), http.StatusCreated, nil)
	before := len(e.audit("").Entries)
	if before != 1 {
		t.Fatalf("audit after one change: want 1 entry, got %d", before)
	}
	refused := []struct {
		name, method, path string
		body               any
		status             int
	}{
		{"duplicate tier", "POST", "/v1/admin/tiers", map[string]string{"name": "gamma"}, 409},
		{"bad tier name", "POST", "/v1/admin/tiers", map[string]string{"name": "no spaces"}, 400},
		{"unknown tier", "DELETE", "/v1/admin/tiers/nope", nil, 404},
		{"token on an unknown tier", "POST", "/v1/admin/auth-tokens", map[string]string{"tier": "nope", "name": "x"}, 400},
		{"untrust an unknown key", "DELETE", "/v1/admin/trust/00112233445566ff", nil, 404},
		{"remove an unknown webhook", "DELETE", "/v1/admin/webhooks/00112233445566ff", nil, 404},
		{"webhook over http", "POST", "/v1/admin/webhooks", map[string]any{"url": "http://h.example/", "events": []string{"node.down"}, "secret": "abcdefghijklmnopqrst"}, 400},
		{"no credentials", "POST", "/v1/admin/tiers", map[string]string{"name": "delta"}, 401},
		{"a read", "GET", "/v1/admin/tiers", nil, 200},
	}
	for _, c := range refused {
		authz := e.admin
		if c.status == 401 {
			authz = ""
		}
		if r := e.request(c.method, c.path, authz, c.body); r.StatusCode != c.status {
			t.Errorf("%s: status %d, want %d; body %s", c.name, r.StatusCode, c.status, r.body)
		}
	}
	if after := len(e.audit("").Entries); after != before {
		t.Errorf("refused changes: audit grew from %d to %d entries; want no entry", before, after)
	}
}

// The audit listing pages newest first and refuses bad parameters.
func TestAuditPagingAndBadInput(t *testing.T) {
	e := newEnv(t)
	for _, n := range []string{"t1", "t2", "t3"} {
		e.want(e.request(http.MethodPost, "/v1/admin/tiers", e.admin, map[string]string{"name": n}), http.StatusCreated, nil)
	}
	if all := e.audit("?limit=3"); len(all.Entries) != 3 || all.Next != "" {
		t.Errorf("a page holding everything: %+v; want 3 entries and no next", all)
	}
	first := e.audit("?limit=2")
	if len(first.Entries) != 2 || first.Next == "" || first.Entries[0].Target != "/v1/admin/tiers" {
		t.Fatalf("first page: %+v; want 2 entries and a next", first)
	}
	rest := e.audit("?limit=2&after=" + first.Next)
	if len(rest.Entries) != 1 || rest.Next != "" || rest.Entries[0].ID >= first.Entries[1].ID {
		t.Errorf("second page: %+v; want the oldest entry and no next", rest)
	}
	if got := e.audit("?since=2100-01-01T00:00:00Z"); len(got.Entries) != 0 {
		t.Errorf("since the future: %+v; want nothing", got)
	}
	for _, q := range []struct{ query, field string }{
		{"?since=yesterday", "since"}, {"?after=-1", "after"}, {"?after=x", "after"}, {"?limit=0", "limit"},
	} {
		r := e.request(http.MethodGet, "/v1/admin/audit"+q.query, e.admin, nil)
		if r.StatusCode != http.StatusBadRequest || r.errField() != q.field {
			t.Errorf("GET /v1/admin/audit%s: %d %s; want 400 on field %s", q.query, r.StatusCode, r.body, q.field)
		}
	}
}

// requestEntries counts the audit entries of the request with ID reqID.
func (e *env) requestEntries(reqID string) int {
	e.t.Helper()
	n := 0
	for _, a := range e.audit("?limit=1000").Entries {
		if a.RequestID == reqID {
			n++
		}
	}
	return n
}

// A rollout request records its own change once: the first wave that
// create opens at once is the runner's doing, like the waves it opens
// later, and the webhook events a change sends are not changes; an abort
// records its withdrawals too.
func TestRolloutChangesAreAuditedOnce(t *testing.T) {
	e, _ := newHub(t, false, func(c *api.Config) {
		c.Info.DC = "dc-a"
		hooks, err := webhook.New(webhook.Config{Store: c.Store.(webhook.Store), Node: "node-a", Now: c.Now})
		if err != nil {
			t.Fatal(err)
		}
		c.Rollouts = rollout.New(rollout.Config{Store: c.Store, Node: "node-a", DC: "dc-a", Now: c.Now, Emit: hooks,
			KnownDCs: func(context.Context) ([]string, error) { return []string{"dc-b"}, nil }})
	})
	e.want(e.request(http.MethodPost, "/v1/admin/webhooks", e.admin, map[string]any{"url": "https://hooks.example/pm",
		"events": []string{rollout.EventWaveOpened, rollout.EventHalted}, "secret": "0123456789abcdef0123"}), http.StatusCreated, nil)
	p := e.upload(content(100, "rolled out"), "107.2")

	var ro catalog.Rollout
	e.want(e.request(http.MethodPost, "/v1/admin/rollouts", e.admin, map[string]any{"tier": p.Tiers[0], "version": "107.2",
		"waves": "dc-a:0h,dc-b:40s"}, "X-Request-ID", "rollout-create"), http.StatusCreated, &ro)
	if len(ro.Opened) != 1 {
		t.Fatalf("create: want the first wave open at once, got %+v", ro)
	}
	for _, c := range []struct {
		action, reqID string
		want          int
	}{
		{"create", "rollout-create", 1},
		{"halt", "rollout-halt", 1},
		{"resume", "rollout-resume", 1},
		{"abort", "rollout-abort", 2}, // the rollout's end and its patch's withdrawal
	} {
		if c.action != "create" {
			e.want(e.request(http.MethodPost, "/v1/admin/rollouts/"+ro.ID+"/"+c.action, e.admin, nil, "X-Request-ID", c.reqID), http.StatusOK, nil)
		}
		if got := e.requestEntries(c.reqID); got != c.want {
			t.Errorf("%s: %d audit entries, want %d", c.action, got, c.want)
		}
	}
}
