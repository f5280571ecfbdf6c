package api_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/api"
	"github.com/patchmesh/patchmesh/auth"
	"github.com/patchmesh/patchmesh/federation"
	"github.com/patchmesh/patchmesh/store"
)

// joinHub is a hub that makes join tokens and takes joins on its peer
// listener (mutual TLS), on the env's settable clock.
type joinHub struct {
	e     *env
	url   string // the peer listener
	keyID string // the hub's node key
}

func newJoinHub(t *testing.T) *joinHub {
	t.Helper()
	hubKey := newNodeKey(t)
	cert, err := federation.NodeCertificate(hubKey, "hub", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	p := &pins{}
	p.set(federation.KeyID(pubOf(hubKey)))
	// Unstarted, so that the hub's join tokens can name the listener.
	srv := httptest.NewUnstartedServer(nil)
	peerURL := "https://" + srv.Listener.Addr().String()
	e, _ := hubEnv(t, hubKey, func(c *api.Config) {
		c.JoinTokens = c.Store.(store.JoinTokens)
		c.Info.PeerURL = peerURL
		c.Peer = &api.PeerConfig{Pins: p, URL: func(string) string { return "" }}
	})
	srv.Config.Handler = api.PeerListener(e.handler, p, slogFor(e))
	srv.TLS = federation.PeerServerTLS(cert, p, func(string, error) {})
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return &joinHub{e: e, url: peerURL, keyID: federation.KeyID(pubOf(hubKey))}
}

// token makes a join token for name through the admin API.
func (h *joinHub) token(name string) (federation.JoinToken, string) {
	h.e.t.Helper()
	var out struct {
		Token string `json:"token"`
	}
	h.e.want(h.e.request(http.MethodPost, "/v1/admin/nodes/join-tokens", h.e.admin, map[string]any{"name": name}), http.StatusCreated, &out)
	tok, err := federation.ParseJoinToken(out.Token)
	if err != nil {
		h.e.t.Fatal(err)
	}
	return tok, h.e.keep(out.Token)
}

// joinTokenNow is the token as the hub lists it.
func (h *joinHub) joinTokenNow(id string) store.JoinToken {
	h.e.t.Helper()
	var list struct {
		JoinTokens []store.JoinToken `json:"join_tokens"`
	}
	h.e.want(h.e.request(http.MethodGet, "/v1/admin/nodes/join-tokens", h.e.admin, nil), http.StatusOK, &list)
	for _, t := range list.JoinTokens {
		if t.ID == id {
			return t
		}
	}
	h.e.t.Fatalf("join token %s not listed", id)
	return store.JoinToken{}
}

// joinFails are the hub's node_join_fail events, as reason and token.
func (h *joinHub) joinFails() [][2]any {
	var out [][2]any
	for _, ev := range h.e.securityEvents(auth.EventJoinFail) {
		out = append(out, [2]any{ev["reason"], ev["join_token"]})
	}
	return out
}

// joiner is a new node: its key, certificate and a client that presents
// it to the hub's peer listener and accepts only the hub's key.
type joiner struct {
	key    ed25519.PrivateKey
	cert   tls.Certificate
	client *http.Client
}

func newJoiner(t *testing.T, h *joinHub) joiner {
	t.Helper()
	key := newNodeKey(t)
	cert, err := federation.NodeCertificate(key, "edge-1", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: federation.PeerClientTLS(cert, nil, h.keyID)}}
	t.Cleanup(c.CloseIdleConnections)
	return joiner{key: key, cert: cert, client: c}
}

// session is one started join exchange, as the node holds it.
type session struct {
	tok       federation.JoinToken
	nodeNonce string
	ch        federation.JoinChallenge
}

// answer is the node's right MAC for s.
func (j joiner) answer(h *joinHub, s session) []byte {
	return federation.JoinMAC(federation.JoinMACKey(s.tok.Secret), federation.JoinRoleNode, s.tok.ID, s.nodeNonce, s.ch.Nonce,
		federation.KeyID(pubOf(j.key)), h.keyID)
}

// post sends a join message and returns the status and error code.
func (j joiner) post(t *testing.T, h *joinHub, path string, body, out any) (int, string) {
	t.Helper()
	b, _ := json.Marshal(body)
	resp, err := j.client.Post(h.url+path, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusOK && out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("POST %s: %s: %v", path, raw, err)
		}
	}
	return resp.StatusCode, response{body: raw}.errCode()
}

// start opens a session with tok; it fails the test unless the hub
// answers with a challenge.
func (j joiner) start(t *testing.T, h *joinHub, tok federation.JoinToken) session {
	t.Helper()
	n := make([]byte, 32)
	rand.Read(n)
	s := session{tok: tok, nodeNonce: base64.RawURLEncoding.EncodeToString(n)}
	if st, code := j.post(t, h, "/v1/join/start", federation.JoinStart{Token: tok.ID, Nonce: s.nodeNonce}, &s.ch); st != http.StatusOK {
		t.Fatalf("join start: %d %s, want 200 and a challenge", st, code)
	}
	return s
}

// finish answers s with mac and returns the status and error code.
func (j joiner) finish(t *testing.T, h *joinHub, s session, mac []byte) (int, string) {
	t.Helper()
	return j.post(t, h, "/v1/join/finish", federation.JoinFinish{Session: s.ch.Session, MAC: mac, URL: "https://edge-1.example:8443"}, nil)
}

// admitted lists the names of the nodes the hub has admitted.
func (h *joinHub) admitted() []string {
	h.e.t.Helper()
	var list struct{ Nodes []listedNode }
	h.e.want(h.e.request(http.MethodGet, "/v1/admin/nodes", h.e.admin, nil), http.StatusOK, &list)
	return names(list.Nodes)
}

// A session lives JoinSessionTTL from the hub's challenge: the right
// answer a moment later is refused and logged, the session is gone, and
// nothing is admitted or spent; the token itself still works, and an
// answer at the session's last instant is taken.
func TestJoinSessionExpires(t *testing.T) {
	h := newJoinHub(t)
	tok, _ := h.token("edge-1")
	j := newJoiner(t, h)

	s := j.start(t, h, tok)
	h.e.clock.Advance(api.JoinSessionTTL + time.Millisecond)
	if st, code := j.finish(t, h, s, j.answer(h, s)); st != http.StatusUnauthorized || code != "unauthorized" {
		t.Fatalf("the right answer after the session's %v: %d %s, want 401 unauthorized", api.JoinSessionTTL, st, code)
	}
	if st, _ := j.finish(t, h, s, j.answer(h, s)); st != http.StatusUnauthorized {
		t.Fatalf("the expired session answered again: %d, want 401", st)
	}
	if got, want := h.joinFails(), [][2]any{{"session_expired", tok.ID}, {"no_session", nil}}; !equalEvents(got, want) {
		t.Errorf("node_join_fail events: %v, want %v", got, want)
	}
	if n := h.admitted(); len(n) != 0 {
		t.Fatalf("admitted %v after an expired session", n)
	}
	if cur := h.joinTokenNow(tok.ID); !cur.Used.IsZero() || cur.Failures != 0 {
		t.Fatalf("an expired session spent the token: %+v", cur)
	}

	s = j.start(t, h, tok)
	h.e.clock.Advance(api.JoinSessionTTL)
	if st, code := j.finish(t, h, s, j.answer(h, s)); st != http.StatusOK {
		t.Fatalf("the right answer at the session's last instant: %d %s, want 200", st, code)
	}
	if n := h.admitted(); len(n) != 1 || n[0] != "edge-1" {
		t.Fatalf("admitted %v, want edge-1", n)
	}
	if len(h.e.securityEvents(auth.EventJoinSuccess)) != 1 {
		t.Error("no node_join_success event for the join")
	}
}

// A token that saw MaxJoinFailures wrong answers is dead: each wrong
// answer is refused and logged with its count, a new session is refused,
// and the right answer is refused too, even on a session opened before
// the token died, and through the node's own Join.
func TestJoinTokenDiesAfterWrongAnswers(t *testing.T) {
	h := newJoinHub(t)
	tok, _ := h.token("edge-1")
	j := newJoiner(t, h)

	early := j.start(t, h, tok)
	for i := 1; i <= api.MaxJoinFailures; i++ {
		s := j.start(t, h, tok)
		wrong := j.answer(h, s)
		wrong[i] ^= 1
		if st, code := j.finish(t, h, s, wrong); st != http.StatusUnauthorized || code != "unauthorized" {
			t.Fatalf("wrong answer %d: %d %s, want 401 unauthorized", i, st, code)
		}
	}
	bad := h.e.securityEvents(auth.EventJoinFail)
	if len(bad) != api.MaxJoinFailures {
		t.Fatalf("%d node_join_fail events after %d wrong answers: %v", len(bad), api.MaxJoinFailures, bad)
	}
	for i, ev := range bad {
		if ev["reason"] != "bad_mac" || ev["join_token"] != tok.ID || ev["failures"] != float64(i+1) {
			t.Errorf("wrong answer %d: event %v, want bad_mac on %s with failures %d", i+1, ev, tok.ID, i+1)
		}
	}

	if st, code := j.finish(t, h, early, j.answer(h, early)); st != http.StatusUnauthorized || code != "unauthorized" {
		t.Fatalf("the right answer on a session opened before the token died: %d %s, want 401 unauthorized", st, code)
	}
	if st, code := j.post(t, h, "/v1/join/start", federation.JoinStart{Token: tok.ID, Nonce: early.nodeNonce}, nil); st != http.StatusUnauthorized || code != "unauthorized" {
		t.Fatalf("a new session on a dead token: %d %s, want 401 unauthorized", st, code)
	}
	_, err := federation.Join(t.Context(), federation.JoinRequest{Token: tok, Cert: j.cert, Key: j.key, URL: "https://edge-1.example:8443"})
	if !errors.Is(err, federation.ErrBadJoin) {
		t.Fatalf("Join with a dead token: %v, want ErrBadJoin", err)
	}
	if got, want := h.joinFails()[api.MaxJoinFailures:], [][2]any{{"token_dead", tok.ID}, {"token_dead", tok.ID}, {"token_dead", tok.ID}}; !equalEvents(got, want) {
		t.Errorf("node_join_fail events after the token died: %v, want %v", got, want)
	}
	if n := h.admitted(); len(n) != 0 {
		t.Fatalf("admitted %v with a dead token", n)
	}
	if cur := h.joinTokenNow(tok.ID); !cur.Used.IsZero() || cur.Failures != api.MaxJoinFailures {
		t.Fatalf("dead token: %+v, want unused with %d failures", cur, api.MaxJoinFailures)
	}
}

// The same hub and node, with a live token: the exchange the tests above
// refuse goes through, by hand and by the node's own Join.
func TestJoinAdmitsTheRightAnswer(t *testing.T) {
	h := newJoinHub(t)
	j := newJoiner(t, h)
	tok, _ := h.token("edge-1")
	res, err := federation.Join(t.Context(), federation.JoinRequest{Token: tok, Cert: j.cert, Key: j.key, URL: "https://edge-1.example:8443"})
	if err != nil || res.Name != "edge-1" || res.HubKey == "" {
		t.Fatalf("Join: %+v, %v", res, err)
	}
	if cur := h.joinTokenNow(tok.ID); cur.Used.IsZero() || cur.UsedKeyID != federation.KeyID(pubOf(j.key)) {
		t.Fatalf("token after the join: %+v, want used by the node's key", cur)
	}
}

func equalEvents(got, want [][2]any) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i] != want[i] {
			return false
		}
	}
	return true
}
