package api_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
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

	"github.com/patchmesh/patchmesh/api"
	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/federation"
	"github.com/patchmesh/patchmesh/internal/nodetest"
	"github.com/patchmesh/patchmesh/store"
)

// newHub is an env whose store signs its events with a fresh hub key, as
// a hub's does, with Changes wired into store and api when changes is set.
func newHub(t *testing.T, changes bool, tune ...func(*api.Config)) (*env, ed25519.PublicKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	o := nodetest.Options{Sealer: federation.Sealer{Key: priv}}
	if changes {
		o.Changes = &store.Changes{}
	}
	return newEnvWith(t, o, tune...), pub
}

// feed asks for a feed page with a sync token and wants 200.
func (e *env) feed(token, query string) federation.FeedResponse {
	e.t.Helper()
	var out federation.FeedResponse
	r := e.request(http.MethodGet, "/v1/sync/feed?"+query, "Bearer "+token, nil)
	e.want(r, http.StatusOK, &out)
	if got := r.Header.Get("Cache-Control"); got != "no-store" {
		e.t.Errorf("feed Cache-Control = %q, want no-store", got)
	}
	return out
}

// opened verifies every event of a page with the hub key and returns the
// records.
func opened(t *testing.T, pub ed25519.PublicKey, page federation.FeedResponse) []federation.Record {
	t.Helper()
	v := federation.NewVerifier(pub)
	out := make([]federation.Record, len(page.Events))
	for i, ev := range page.Events {
		rec, err := v.Open(ev.Envelope)
		if err != nil {
			t.Fatalf("event seq %d does not verify with the hub key: %v", ev.Seq, err)
		}
		out[i] = rec
	}
	return out
}

// get sends a GET from any goroutine: it reports failures instead of
// stopping the test.
func get(url, authz string) (int, []byte, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", authz)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

func TestFeedParametersAreValidated(t *testing.T) {
	e, _ := newHub(t, false)
	tok, _ := e.token("sync", "edge", "dc-east")
	for _, tc := range []struct {
		query, field string
	}{
		{"after=-1", "after"},
		{"after=x", "after"},
		{"after=1.5", "after"},
		{"after=99999999999999999999", "after"},
		{"hub_after=-3", "hub_after"},
		{"after=1&hub_after=1", "hub_after"},
		{"limit=0", "limit"},
		{fmt.Sprintf("limit=%d", federation.MaxFeedLimit+1), "limit"},
		{"limit=ten", "limit"},
		{"wait=-1s", "wait"},
		{"wait=61s", "wait"},
		{"wait=30", "wait"},
		{"pending_after=-1", "pending_after"},
		{"pending_after=next", "pending_after"},
	} {
		r := e.request(http.MethodGet, "/v1/sync/feed?"+tc.query, "Bearer "+tok, nil)
		if r.StatusCode != http.StatusBadRequest || r.errCode() != "invalid_input" || r.errField() != tc.field {
			t.Errorf("feed?%s: %d %s, want 400 invalid_input on field %s", tc.query, r.StatusCode, r.body, tc.field)
		}
	}
	for _, q := range []string{"", "after=0", "hub_after=0", "limit=1", fmt.Sprintf("limit=%d", federation.MaxFeedLimit), "wait=0s", "after=5&limit=10&wait=10ms", "pending_after=0"} {
		if r := e.request(http.MethodGet, "/v1/sync/feed?"+q, "Bearer "+tok, nil); r.StatusCode != http.StatusOK {
			t.Errorf("feed?%s: %d %s, want 200", q, r.StatusCode, r.body)
		}
	}
}

func TestFeedServesOnlyTheTokensTier(t *testing.T) {
	e, pub := newHub(t, false)
	edgeTok, _ := e.token("sync", "edge", "edge-node")
	betaTok, _ := e.token("sync", "beta", "beta-node")
	p1 := e.upload(content(100, "one"), "1")
	p2 := e.upload(content(100, "two"), "2")
	e.want(e.request(http.MethodPost, "/v1/admin/patches/"+p1.Digest+"/promote", e.admin, map[string]string{"tier": "beta"}), http.StatusOK, nil)

	for _, tc := range []struct {
		tier, token string
		want        []string // digests, in order
	}{
		{"edge", edgeTok, []string{p1.Digest, p2.Digest}},
		{"beta", betaTok, []string{p1.Digest}},
	} {
		page := e.feed(tc.token, "")
		if page.Tier != tc.tier {
			t.Errorf("%s token: page tier %q, want %q", tc.tier, page.Tier, tc.tier)
		}
		var digests []string
		for i, rec := range opened(t, pub, page) {
			if rec.Tier != tc.tier || rec.TierSeq != int64(i+1) {
				t.Errorf("%s token: event %d is tier %s seq %d, want tier %s seq %d", tc.tier, i, rec.Tier, rec.TierSeq, tc.tier, i+1)
			}
			digests = append(digests, rec.Patch.Digest)
		}
		if !slices.Equal(digests, tc.want) {
			t.Errorf("%s token: patches %v, want %v and nothing of another tier", tc.tier, digests, tc.want)
		}
		if n := len(page.Events); n == 0 || page.Head != page.Events[n-1].Seq || page.HubHead != int64(n) {
			t.Errorf("%s token: head %d hub_head %d with %d events, want the last event's seq and hub seq", tc.tier, page.Head, page.HubHead, n)
		}
	}

	// A downstream moving here from another upstream resumes by hub seq.
	page := e.feed(edgeTok, "hub_after=1")
	if recs := opened(t, pub, page); len(recs) != 1 || recs[0].TierSeq != 2 {
		t.Errorf("edge feed hub_after=1: %d events, want exactly hub seq 2", len(recs))
	}
	page = e.feed(edgeTok, "after=0&limit=1")
	if len(page.Events) != 1 {
		t.Errorf("edge feed limit=1: %d events, want 1", len(page.Events))
	}
}

func TestQuietFeedRoundIsTiny(t *testing.T) {
	e, _ := newHub(t, false)
	tok, _ := e.token("sync", "edge", "edge-node")
	for i := range 20 {
		e.upload(content(64, fmt.Sprintf("patch-%d", i)), fmt.Sprint(i+1))
	}
	head := e.feed(tok, "").Head
	r := e.request(http.MethodGet, fmt.Sprintf("/v1/sync/feed?after=%d", head), "Bearer "+tok, nil)
	e.want(r, http.StatusOK, nil)
	if !strings.Contains(string(r.body), `"events":[]`) {
		t.Errorf("quiet round body %s, want events as [] (never null)", r.body)
	}
	if len(r.body) > 200 {
		t.Errorf("quiet round body is %d bytes with 20 patches: %s; want a few hundred at most whatever the catalog", len(r.body), r.body)
	}
}

func TestFeedLongPoll(t *testing.T) {
	for _, tc := range []struct {
		name    string
		changes bool
	}{{"woken by Changes", true}, {"polling the store", false}} {
		t.Run(tc.name, func(t *testing.T) {
			e, pub := newHub(t, tc.changes)
			tok, _ := e.token("sync", "edge", "edge-node")
			e.upload(content(100, "first"), "1")
			head := e.feed(tok, "").Head

			// Nothing new: the request waits, then answers empty.
			page := e.feed(tok, fmt.Sprintf("after=%d&wait=200ms", head))
			if len(page.Events) != 0 || page.Head != head {
				t.Errorf("long poll at the deadline: %d events, head %d; want none, head %d", len(page.Events), page.Head, head)
			}

			// A commit during the wait answers the request with it.
			type answer struct {
				status int
				body   []byte
				err    error
			}
			got := make(chan answer, 1)
			before := e.storeCalls("Feed")
			go func() {
				// A page of its own (limit): the same page as the poll
				// above would be served from that read, unchanged since.
				s, b, err := get(fmt.Sprintf("%s/v1/sync/feed?after=%d&limit=99&wait=30s", e.srv.URL, head), "Bearer "+tok)
				got <- answer{s, b, err}
			}()
			waitFor(t, "the long poll to read the feed", func() bool { return e.storeCalls("Feed") > before })
			p := e.upload(content(100, "second"), "2")
			var a answer
			select {
			case a = <-got:
			case <-time.After(25 * time.Second):
				t.Fatal("the long poll did not answer within 25s of a commit; want it woken by the commit")
			}
			if a.err != nil || a.status != http.StatusOK {
				t.Fatalf("long poll: %d %s %v, want 200", a.status, a.body, a.err)
			}
			var out federation.FeedResponse
			if err := json.Unmarshal(a.body, &out); err != nil {
				t.Fatal(err)
			}
			recs := opened(t, pub, out)
			if len(recs) != 1 || recs[0].Patch.Digest != p.Digest || recs[0].Type != catalog.EventPatchAdded {
				t.Errorf("long poll answered %d events %+v, want the upload of %s", len(recs), recs, p.Digest)
			}
		})
	}
}

// Long polls woken by one commit ask for the same page at once; the store
// reads it once for them all (feedPages), not once for each.
func TestLongPollsWokenTogetherShareOneRead(t *testing.T) {
	e, pub := newHub(t, true)
	tok, _ := e.token("sync", "edge", "edge-node")
	e.upload(content(100, "first"), "1")
	head := e.feed(tok, "").Head
	const polls = 20
	type answer struct {
		status int
		body   []byte
		err    error
	}
	got := make(chan answer, polls)
	before := e.storeCalls("Feed")
	for range polls {
		go func() {
			s, b, err := get(fmt.Sprintf("%s/v1/sync/feed?after=%d&wait=30s", e.srv.URL, head), "Bearer "+tok)
			got <- answer{s, b, err}
		}()
	}
	waitFor(t, "a long poll to read the feed", func() bool { return e.storeCalls("Feed") > before })
	// Give the others time to arrive; any still on its way reads the
	// page after the upload, and shares that read too.
	time.Sleep(200 * time.Millisecond)
	p := e.upload(content(100, "second"), "2")
	for range polls {
		var a answer
		select {
		case a = <-got:
		case <-time.After(25 * time.Second):
			t.Fatal("a long poll did not answer within 25s of a commit")
		}
		if a.err != nil || a.status != http.StatusOK {
			t.Fatalf("long poll: %d %s %v, want 200", a.status, a.body, a.err)
		}
		var out federation.FeedResponse
		if err := json.Unmarshal(a.body, &out); err != nil {
			t.Fatal(err)
		}
		if recs := opened(t, pub, out); len(recs) != 1 || recs[0].Patch.Digest != p.Digest {
			t.Fatalf("long poll answered %d events %+v, want the upload of %s", len(recs), recs, p.Digest)
		}
	}
	// One read before the upload and one after it; a store generation
	// moved by the upload's own steps may add one or two.
	if n := e.storeCalls("Feed") - before; n > 4 {
		t.Errorf("%d long polls woken by one commit read the feed %d times, want at most 4", polls, n)
	}
}

func TestLongPollHoldsNoGovernorSlotWhileWaiting(t *testing.T) {
	e, _ := newHub(t, true, func(c *api.Config) {
		c.Governor = api.GovernorConfig{MaxInFlight: 1, MaxQueue: 10, QueueTimeout: 5 * time.Second}
	})
	tok, _ := e.token("sync", "edge", "edge-node")
	done := make(chan int, 1)
	before := e.storeCalls("Feed")
	go func() {
		s, _, _ := get(e.srv.URL+"/v1/sync/feed?wait=30s", "Bearer "+tok)
		done <- s
	}()
	waitFor(t, "the long poll to read the feed", func() bool { return e.storeCalls("Feed") > before })
	// With the poll holding the only slot, this would queue for 5s and be
	// refused.
	r := e.request(http.MethodGet, "/v1/admin/tiers", e.admin, nil)
	if r.StatusCode != http.StatusOK {
		t.Errorf("admin request during a waiting long poll: %d %s, want 200", r.StatusCode, r.body)
	}
	select {
	case s := <-done:
		t.Fatalf("the long poll answered %d before any change; want it still waiting", s)
	default:
	}
	e.upload(content(10, "wake"), "1")
	select {
	case s := <-done:
		if s != http.StatusOK {
			t.Errorf("long poll after the wake-up: status %d, want 200", s)
		}
	case <-time.After(25 * time.Second):
		t.Fatal("the long poll did not answer after a commit")
	}
}

func TestFeedRefusesOtherCredentials(t *testing.T) {
	e, _ := newHub(t, false)
	syncTok, _ := e.token("sync", "edge", "live")
	revoked, revInfo := e.token("sync", "edge", "revoked")
	e.want(e.request(http.MethodDelete, "/v1/admin/sync-tokens/"+revInfo.ID, e.admin, nil), http.StatusNoContent, nil)
	var exp struct {
		Token string `json:"token"`
	}
	e.want(e.request(http.MethodPost, "/v1/admin/sync-tokens", e.admin,
		map[string]any{"tier": "edge", "name": "expiring", "valid_until": e.clock.Now().Add(time.Hour)}), http.StatusCreated, &exp)
	expired := e.keep(exp.Token)
	authTok, _ := e.token("auth", "edge", "fleet")
	machine := e.machine("edge", "edge-machine-000001")
	e.clock.Advance(2 * time.Hour)

	for _, tc := range []struct {
		name, authz string
		status      int
		event       string
	}{
		{"no credentials", "", http.StatusUnauthorized, "authn_token_fail"},
		{"revoked sync token", "Bearer " + revoked, http.StatusUnauthorized, "authn_token_fail"},
		{"expired sync token", "Bearer " + expired, http.StatusUnauthorized, "authn_token_fail"},
		{"admin macaroon", e.admin, http.StatusUnauthorized, "authn_token_fail"},
		{"auth token", "Bearer " + authTok, http.StatusForbidden, "authz_fail"},
		{"machine token", machine, http.StatusForbidden, "authz_fail"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logged := countEvents(e.logs.lines(t), tc.event)
			calls := e.storeCalls("Feed")
			r := e.request(http.MethodGet, "/v1/sync/feed", tc.authz, nil)
			if r.StatusCode != tc.status {
				t.Errorf("status %d %s, want %d", r.StatusCode, r.body, tc.status)
			}
			if tc.status == http.StatusUnauthorized && !strings.HasPrefix(r.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("WWW-Authenticate %q, want the Bearer scheme", r.Header.Get("WWW-Authenticate"))
			}
			if got := countEvents(e.logs.lines(t), tc.event); got != logged+1 {
				t.Errorf("%d new %s security events, want 1", got-logged, tc.event)
			}
			if e.storeCalls("Feed") != calls {
				t.Error("the feed was read for a refused request")
			}
		})
	}
	e.feed(syncTok, "") // the live token still works
}

func countEvents(lines []map[string]any, event string) int {
	n := 0
	for _, l := range lines {
		if l["msg"] == "security event" && l["event"] == event {
			n++
		}
	}
	return n
}

func TestSyncStatusAndTrigger(t *testing.T) {
	t.Run("hub", func(t *testing.T) {
		e := newEnv(t)
		r := e.request(http.MethodGet, "/v1/sync/status", e.admin, nil)
		e.want(r, http.StatusOK, nil)
		if got := strings.TrimSpace(string(r.body)); got != `{"role":"hub","links":[]}` {
			t.Errorf("hub status %s, want role hub and links []", got)
		}
		r = e.request(http.MethodPost, "/v1/admin/sync/trigger", e.admin, nil)
		if r.StatusCode != http.StatusConflict || r.errCode() != "not_downstream" {
			t.Errorf("trigger on the hub: %d %s, want 409 not_downstream", r.StatusCode, r.body)
		}
	})
	t.Run("relay", func(t *testing.T) {
		fc := &nodetest.FakeControl{Links: []federation.LinkStatus{{
			Tier: "edge", HubTier: "stable", Upstream: "https://hub.example", Upstreams: []string{"https://hub.example"},
			State: federation.LinkSynced, Cursor: 7, UpstreamHead: 7, HubSeq: 5, HubHead: 5,
			LastSuccess: time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC),
		}}}
		e := newEnv(t, func(c *api.Config) { c.Info.Role = "relay"; c.Sync = fc })
		var st federation.SyncStatusResponse
		e.want(e.request(http.MethodGet, "/v1/sync/status", e.admin, nil), http.StatusOK, &st)
		if st.Role != "relay" || len(st.Links) != 1 || st.Links[0].Tier != "edge" || !st.Links[0].LastSuccess.Equal(fc.Links[0].LastSuccess) {
			t.Errorf("relay status %+v, want role relay and the loop's link", st)
		}
		for _, tc := range []struct {
			name string
			body any
		}{{"no body", nil}, {"empty object", "{}"}, {"wait", map[string]bool{"wait": true}}} {
			var out federation.SyncStatusResponse
			e.want(e.request(http.MethodPost, "/v1/admin/sync/trigger", e.admin, tc.body), http.StatusOK, &out)
			if len(out.Links) != 1 || out.Role != "relay" {
				t.Errorf("trigger (%s) answered %+v, want the links' status", tc.name, out)
			}
		}
		if got := fc.Waits(); !slices.Equal(got, []bool{false, false, true}) {
			t.Errorf("Trigger calls with wait %v, want [false false true]", got)
		}
		for _, body := range []string{`{"wait":"yes"}`, `{"wiat":true}`, `{} {}`} {
			if r := e.request(http.MethodPost, "/v1/admin/sync/trigger", e.admin, body); r.StatusCode != http.StatusBadRequest {
				t.Errorf("trigger with body %s: %d %s, want 400", body, r.StatusCode, r.body)
			}
		}
		if len(fc.Waits()) != 3 {
			t.Error("a refused trigger reached the sync loop")
		}
		syncTok, _ := e.token("sync", "edge", "dc")
		for _, authz := range []string{"", "Bearer " + syncTok} {
			r := e.request(http.MethodGet, "/v1/sync/status", authz, nil)
			if r.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(r.Header.Get("WWW-Authenticate"), "Macaroon") {
				t.Errorf("status with %q: %d, WWW-Authenticate %q; want 401 and the Macaroon scheme", authz, r.StatusCode, r.Header.Get("WWW-Authenticate"))
			}
			if r := e.request(http.MethodPost, "/v1/admin/sync/trigger", authz, nil); r.StatusCode != http.StatusUnauthorized {
				t.Errorf("trigger with %q: %d, want 401", authz, r.StatusCode)
			}
		}
	})
}

func TestHubKeyIsPublicOnTheHubOnly(t *testing.T) {
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	e := newEnv(t, func(c *api.Config) { c.HubKey = pub })
	var out struct{ Key, ID string }
	e.want(e.request(http.MethodGet, "/v1/sync/hub-key", "", nil), http.StatusOK, &out)
	if out.Key != federation.FormatPublicKey(pub) || out.ID != federation.KeyID(pub) {
		t.Errorf("hub key %+v, want %s id %s", out, federation.FormatPublicKey(pub), federation.KeyID(pub))
	}
	down := newEnv(t, func(c *api.Config) { c.Info.Role = "edge" })
	if r := down.request(http.MethodGet, "/v1/sync/hub-key", "", nil); r.StatusCode != http.StatusNotFound || r.errCode() != "not_hub" {
		t.Errorf("hub key on an edge: %d %s, want 404 not_hub", r.StatusCode, r.body)
	}
}

func TestTrustedKeys(t *testing.T) {
	pubKey := func() (string, string) {
		p, _, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return federation.FormatPublicKey(p), federation.KeyID(p)
	}
	cfgKey, cfgID := pubKey()
	newKey, newID := pubKey()
	e := newEnv(t, func(c *api.Config) { c.ConfigKeys = []string{cfgKey} })

	type key struct {
		ID, Key, Source string
		Added           time.Time
	}
	list := func() []key {
		var out struct{ Keys []key }
		e.want(e.request(http.MethodGet, "/v1/admin/trust", e.admin, nil), http.StatusOK, &out)
		return out.Keys
	}
	if got := list(); len(got) != 1 || got[0] != (key{ID: cfgID, Key: cfgKey, Source: "config"}) {
		t.Errorf("keys %+v, want only the config key", got)
	}

	var added key
	e.want(e.request(http.MethodPost, "/v1/admin/trust", e.admin, map[string]string{"key": newKey}), http.StatusCreated, &added)
	if added.ID != newID || added.Key != newKey || added.Source != "admin" || added.Added.IsZero() {
		t.Errorf("added %+v, want id %s, the key, source admin and a time", added, newID)
	}
	if got := list(); len(got) != 2 || got[1].ID != newID || got[1].Source != "admin" {
		t.Errorf("keys %+v, want the config key and the added one", got)
	}

	for _, tc := range []struct {
		name, method, path string
		body               any
		status             int
		code               string
	}{
		{"duplicate", http.MethodPost, "/v1/admin/trust", map[string]string{"key": newKey}, http.StatusConflict, "conflict"},
		{"already in config", http.MethodPost, "/v1/admin/trust", map[string]string{"key": cfgKey}, http.StatusConflict, "conflict"},
		{"not a key", http.MethodPost, "/v1/admin/trust", map[string]string{"key": "ed25519:short"}, http.StatusBadRequest, "invalid_input"},
		{"rsa", http.MethodPost, "/v1/admin/trust", map[string]string{"key": "rsa:AAAA"}, http.StatusBadRequest, "invalid_input"},
		{"unknown field", http.MethodPost, "/v1/admin/trust", map[string]string{"pem": newKey}, http.StatusBadRequest, "bad_request"},
		{"remove config key", http.MethodDelete, "/v1/admin/trust/" + cfgID, nil, http.StatusConflict, "config_key"},
		{"remove unknown", http.MethodDelete, "/v1/admin/trust/0123456789abcdef", nil, http.StatusNotFound, "not_found"},
		{"remove bad id", http.MethodDelete, "/v1/admin/trust/NOT-AN-ID", nil, http.StatusBadRequest, "invalid_input"},
		{"no admin", http.MethodPost, "/v1/admin/trust", map[string]string{"key": newKey}, http.StatusUnauthorized, "unauthorized"},
	} {
		authz := e.admin
		if tc.name == "no admin" {
			authz = ""
		}
		r := e.request(tc.method, tc.path, authz, tc.body)
		if r.StatusCode != tc.status || r.errCode() != tc.code {
			t.Errorf("%s: %d %s, want %d %s", tc.name, r.StatusCode, r.body, tc.status, tc.code)
		}
	}

	e.want(e.request(http.MethodDelete, "/v1/admin/trust/"+newID, e.admin, nil), http.StatusNoContent, nil)
	if got := list(); len(got) != 1 || got[0].ID != cfgID {
		t.Errorf("keys after removal %+v, want only the config key", got)
	}
	lines := e.logs.lines(t)
	for _, ev := range []string{"trust_key_added", "trust_key_removed"} {
		found := slices.ContainsFunc(lines, func(l map[string]any) bool {
			return l["event"] == ev && l["key_id"] == newID && l["user"] == adminUser
		})
		if !found {
			t.Errorf("no %s security event with key_id %s and user %s", ev, newID, adminUser)
		}
	}
}

func TestConfigKeysAreCheckedAtStart(t *testing.T) {
	n := nodetest.Wire(t, nil, nodetest.Options{})
	cfg := n.Config
	cfg.ConfigKeys = []string{"ed25519:not-a-key"}
	if _, err := api.New(cfg); err == nil {
		t.Error("api.New with a malformed config key succeeded; want an error")
	}
	cfg.ConfigKeys = nil
	cfg.HubKey = ed25519.PublicKey("short")
	if _, err := api.New(cfg); err == nil {
		t.Error("api.New with a 5-byte hub key succeeded; want an error")
	}
}

// readFlag notes whether a request body was read.
type readFlag struct {
	mu   sync.Mutex
	read bool
}

func (f *readFlag) Read(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.read = true
	return 0, io.EOF
}

func TestDownstreamRefusesPatchChanges(t *testing.T) {
	e := newEnv(t, func(c *api.Config) { c.Info.Role = "relay" })
	// A patch that came by sync, as far as this test cares.
	p, err := e.store.AddPatch(context.Background(), catalog.Patch{
		Digest: digestOf([]byte("synced")), Kernel: testKernel, Arch: testArch, Version: "1", Size: 6, CVEs: []string{},
	})
	if err != nil {
		t.Fatal(err)
	}
	file := content(64, "new")
	for _, tc := range []struct {
		name, method, path string
	}{
		{"upload", http.MethodPost, uploadPath(digestOf(file), testKernel, "2")},
		{"promote", http.MethodPost, "/v1/admin/patches/" + p.Digest + "/promote"},
		{"promote by version", http.MethodPost, "/v1/admin/patches/1/promote"},
		{"promote-all", http.MethodPost, "/v1/admin/promote-all"},
		{"withdraw", http.MethodPost, "/v1/admin/patches/" + p.Digest + "/withdraw"},
		{"remove", http.MethodDelete, "/v1/admin/patches/" + p.Digest},
	} {
		before := e.snapshot()
		body := &readFlag{}
		req := httptest.NewRequest(tc.method, tc.path, body)
		req.Header.Set("Authorization", e.admin)
		rec := httptest.NewRecorder()
		e.handler.ServeHTTP(rec, req)
		r := response{rec.Result(), rec.Body.Bytes()}
		if r.StatusCode != http.StatusConflict || r.errCode() != "not_hub" || !strings.Contains(string(r.body), "by sync") {
			t.Errorf("%s on a relay: %d %s, want 409 not_hub saying patches come by sync", tc.name, r.StatusCode, r.body)
		}
		if body.read {
			t.Errorf("%s on a relay read the request body; want it refused first", tc.name)
		}
		e.unchanged(tc.name+" on a relay", before)
	}
	// Reading stays allowed.
	e.want(e.request(http.MethodGet, "/v1/admin/patches", e.admin, nil), http.StatusOK, nil)
	var got catalog.Patch
	e.want(e.request(http.MethodGet, "/v1/admin/patches/"+p.Digest, e.admin, nil), http.StatusOK, &got)
	if got.Withdrawn {
		t.Error("the patch is withdrawn after a refused withdrawal")
	}
	// An unauthenticated caller learns nothing about the role first.
	if r := e.request(http.MethodDelete, "/v1/admin/patches/"+p.Digest, "", nil); r.StatusCode != http.StatusUnauthorized {
		t.Errorf("unauthenticated remove on a relay: %d, want 401", r.StatusCode)
	}
}

func TestLongPollAnswersWhenTheNodeStops(t *testing.T) {
	stopping := make(chan struct{})
	e, _ := newHub(t, true, func(c *api.Config) { c.Stopping = stopping })
	tok, _ := e.token("sync", "edge", "edge-node")
	e.upload(content(100, "first"), "1")
	head := e.feed(tok, "").Head

	type answer struct {
		status int
		body   []byte
	}
	got := make(chan answer, 1)
	before := e.storeCalls("Feed")
	go func() {
		s, b, _ := get(fmt.Sprintf("%s/v1/sync/feed?after=%d&wait=60s", e.srv.URL, head), "Bearer "+tok)
		got <- answer{s, b}
	}()
	waitFor(t, "the long poll to read the feed", func() bool { return e.storeCalls("Feed") > before })
	select {
	case a := <-got:
		t.Fatalf("the long poll answered %d %s before the node stopped; want it waiting", a.status, a.body)
	default:
	}
	close(stopping)
	select {
	case a := <-got:
		var out federation.FeedResponse
		if a.status != http.StatusOK || json.Unmarshal(a.body, &out) != nil || len(out.Events) != 0 || out.Head != head {
			t.Errorf("long poll at the stop: %d %s; want 200 and the empty page at head %d", a.status, a.body, head)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the long poll (wait=60s) still waits 30s after the node began to stop")
	}
}
