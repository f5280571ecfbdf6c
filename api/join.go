package api

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/mux"

	"github.com/patchmesh/patchmesh/auth"
	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/federation"
	"github.com/patchmesh/patchmesh/store"
)

// Join limits. A session is the time between the hub's challenge and the
// node's answer; a token that sees MaxJoinFailures wrong answers is dead;
// a client address may start JoinAttemptsPerMinute exchanges a minute.
const (
	JoinSessionTTL        = 30 * time.Second
	MaxJoinFailures       = 5
	JoinAttemptsPerMinute = 10
	// DefaultJoinValidFor and MaxJoinValidFor bound a token's life.
	DefaultJoinValidFor = time.Hour
	MaxJoinValidFor     = 7 * 24 * time.Hour
	maxJoinSessions     = 1024
)

// JoinConfig is the hub's side of the signed join.
type JoinConfig struct {
	// Tokens keeps the join tokens; nil (not the hub) means no join.
	Tokens store.JoinTokens
}

// joins is the hub's in-memory join state: open sessions and each client
// address's recent attempts.
type joins struct {
	mu       sync.Mutex
	sessions map[string]*joinSession
	attempts map[string][]time.Time
}

type joinSession struct {
	token     store.JoinToken
	nodeKey   ed25519.PublicKey
	nodeNonce string
	hubNonce  string
	expires   time.Time
}

func (s *server) joinRoutes(v1 *mux.Router) {
	j := subrouter(v1, "/join")
	j.Handle("/start", methods{http.MethodPost: s.handle(s.joinStart)})
	j.Handle("/finish", methods{http.MethodPost: s.handle(s.joinFinish)})
}

// joinFail logs a refused join and answers with err.
func (s *server) joinFail(r *http.Request, err error, reason string, attrs ...slog.Attr) error {
	s.securityEvent(r, auth.EventJoinFail, append(attrs, slog.String("reason", reason))...)
	return err
}

// allowJoin counts an attempt of the request's client address and says
// whether it is within JoinAttemptsPerMinute.
func (s *server) allowJoin(r *http.Request) bool {
	now := s.now()
	addr := clientHost(r)
	s.join.mu.Lock()
	defer s.join.mu.Unlock()
	if s.join.attempts == nil {
		s.join.attempts, s.join.sessions = map[string][]time.Time{}, map[string]*joinSession{}
	}
	recent := s.join.attempts[addr][:0]
	for _, at := range s.join.attempts[addr] {
		if now.Sub(at) < time.Minute {
			recent = append(recent, at)
		}
	}
	if len(recent) >= JoinAttemptsPerMinute {
		s.join.attempts[addr] = recent
		return false
	}
	s.join.attempts[addr] = append(recent, now)
	// Sessions and old addresses go as new attempts come.
	for id, ss := range s.join.sessions {
		if now.After(ss.expires) {
			delete(s.join.sessions, id)
		}
	}
	for a, ts := range s.join.attempts {
		if len(ts) == 0 || now.Sub(ts[len(ts)-1]) >= time.Minute {
			delete(s.join.attempts, a)
		}
	}
	return true
}

// readJoinStart reads the body of POST /v1/join/start: strict JSON (as
// every body) with a nonce ValidNonce allows, since it goes into both
// MACs, whose fields end at newlines.
func readJoinStart(w http.ResponseWriter, r *http.Request, limit int64) (federation.JoinStart, error) {
	var req federation.JoinStart
	if err := decodeLimited(w, r, &req, false, limit); err != nil {
		return federation.JoinStart{}, err
	}
	if err := federation.ValidNonce(req.Nonce); err != nil {
		return federation.JoinStart{}, err
	}
	return req, nil
}

// check says why the node's answer mac to the session does not hold, as
// the reason of the security event, or "" when it does: the session must
// not have expired at now, the answer must come from the node key that
// started it over TLS, and mac must be the node's MAC over the exchange
// with the hub's key ID hubKeyID.
func (ss *joinSession) check(mac []byte, nodeKey ed25519.PublicKey, hubKeyID string, now time.Time) string {
	switch {
	case now.After(ss.expires):
		return "session_expired"
	case !ss.nodeKey.Equal(nodeKey):
		return "other_key"
	}
	t := ss.token
	want := federation.JoinMAC(t.MACKey, federation.JoinRoleNode, t.ID, ss.nodeNonce, ss.hubNonce, federation.KeyID(nodeKey), hubKeyID)
	if !hmac.Equal(want, mac) {
		return "bad_mac"
	}
	return ""
}

// tokenRefusal says why t cannot be joined with at now, as the reason of
// the security event, or "" if it can.
func tokenRefusal(t store.JoinToken, now time.Time) string {
	switch {
	case !t.Used.IsZero():
		return "token_used"
	case !now.Before(t.Expires):
		return "token_expired"
	case t.Failures >= MaxJoinFailures:
		return "token_dead"
	}
	return ""
}

var errJoinRefused = &httpError{http.StatusUnauthorized, codeUnauthorized, "join refused: unknown, used, expired or dead token, or a wrong answer"}

// joinStart answers a node's first join message with the hub's challenge
// and proof. It runs on the peer listener only, where the TLS handshake
// proved the node key (PeerListener).
func (s *server) joinStart(w http.ResponseWriter, r *http.Request) error {
	if s.joinTokens == nil || s.nodeKey == nil || s.info.Role != roleHub {
		return notFound("joins are made at the hub's peer listener")
	}
	nodeKey := peerPublicKey(r)
	if nodeKey == nil {
		return s.joinFail(r, notFound("joins are made at the hub's peer listener"), "not_on_peer_listener")
	}
	if !s.allowJoin(r) {
		s.securityEvent(r, auth.EventJoinFail, slog.String("reason", "rate_limited"))
		w.Header().Set("Retry-After", "60")
		return &httpError{http.StatusTooManyRequests, codeTooManyRequests, fmt.Sprintf("at most %d join attempts a minute from one address", JoinAttemptsPerMinute)}
	}
	req, err := readJoinStart(w, r, s.limits.MaxBodyBytes)
	if err != nil {
		return err
	}
	keyID := federation.KeyID(nodeKey)
	t, err := s.joinTokens.JoinToken(r.Context(), req.Token)
	now := s.now()
	switch {
	case errors.Is(err, catalog.ErrNotFound):
		return s.joinFail(r, errJoinRefused, "unknown_token", slog.String("key_id", keyID))
	case err != nil:
		return err
	}
	if why := tokenRefusal(t, now); why != "" {
		return s.joinFail(r, errJoinRefused, why, slog.String("join_token", t.ID), slog.String("key_id", keyID))
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return err
	}
	sid := make([]byte, 16)
	if _, err := rand.Read(sid); err != nil {
		return err
	}
	ss := &joinSession{token: t, nodeKey: nodeKey, nodeNonce: req.Nonce, hubNonce: base64.RawURLEncoding.EncodeToString(b),
		expires: now.Add(JoinSessionTTL)}
	id := base64.RawURLEncoding.EncodeToString(sid)
	s.join.mu.Lock()
	full := len(s.join.sessions) >= maxJoinSessions
	if !full {
		s.join.sessions[id] = ss
	}
	s.join.mu.Unlock()
	if full {
		return &httpError{http.StatusServiceUnavailable, codeOverloaded, "too many joins in progress; retry later"}
	}
	writeJSON(w, http.StatusOK, federation.JoinChallenge{Session: id, Nonce: ss.hubNonce,
		MAC: federation.JoinMAC(t.MACKey, federation.JoinRoleHub, t.ID, req.Nonce, ss.hubNonce, keyID, s.nodeKeyID)})
	return nil
}

// joinFinish checks the node's answer and, if it holds, uses the token and
// admits the node under the key it proved, at the URL it gave.
func (s *server) joinFinish(w http.ResponseWriter, r *http.Request) error {
	if s.joinTokens == nil || s.nodeKey == nil || s.info.Role != roleHub {
		return notFound("joins are made at the hub's peer listener")
	}
	nodeKey := peerPublicKey(r)
	if nodeKey == nil {
		return s.joinFail(r, notFound("joins are made at the hub's peer listener"), "not_on_peer_listener")
	}
	var req federation.JoinFinish
	if err := s.decode(w, r, &req); err != nil {
		return err
	}
	keyID := federation.KeyID(nodeKey)
	s.join.mu.Lock()
	ss := s.join.sessions[req.Session]
	// One answer per session, right or wrong.
	delete(s.join.sessions, req.Session)
	s.join.mu.Unlock()
	if ss == nil {
		return s.joinFail(r, errJoinRefused, "no_session", slog.String("key_id", keyID))
	}
	t, now := ss.token, s.now()
	switch why := ss.check(req.MAC, nodeKey, s.nodeKeyID, now); why {
	case "":
	case "bad_mac":
		n, err := s.joinTokens.FailJoinToken(r.Context(), t.ID)
		if err != nil {
			return err
		}
		return s.joinFail(r, errJoinRefused, why, slog.String("join_token", t.ID), slog.String("key_id", keyID), slog.Int("failures", n))
	default:
		return s.joinFail(r, errJoinRefused, why, slog.String("join_token", t.ID), slog.String("key_id", keyID))
	}
	var urls []string
	if req.URL != "" {
		urls = []string{strings.TrimRight(req.URL, "/")}
	}
	n := catalog.Node{Name: t.Name, Key: federation.FormatPublicKey(nodeKey), KeyID: keyID, URLs: urls, Tiers: t.Tiers,
		Admitted: now.UTC().Truncate(time.Microsecond)}
	// Checked before the token is used, so that a bad URL costs a retry,
	// not the token.
	if err := n.Validate(); err != nil {
		return err
	}
	// The token as the session started may have died since: a wrong
	// answer on another session, or its expiry. The store checks again
	// as it uses it.
	if err := s.joinTokens.UseJoinToken(r.Context(), t.ID, keyID, clientHost(r), now, MaxJoinFailures); err != nil {
		if !errors.Is(err, catalog.ErrConflict) {
			return err
		}
		why := "token_used"
		if cur, err := s.joinTokens.JoinToken(r.Context(), t.ID); err == nil && tokenRefusal(cur, now) != "" {
			why = tokenRefusal(cur, now) // which of the three, for the event
		}
		return s.joinFail(r, errJoinRefused, why, slog.String("join_token", t.ID), slog.String("key_id", keyID))
	}
	n, err := s.admit(r, n)
	if err != nil {
		return err
	}
	s.securityEvent(r, auth.EventJoinSuccess, slog.String("join_token", t.ID), slog.String("node", n.Name), slog.String("key_id", keyID))
	s.securityEvent(r, auth.EventNodeAdmitted, slog.String("node", n.Name), slog.String("key_id", n.KeyID),
		slog.String("tiers", strings.Join(n.Tiers, ",")), slog.String("by", "join"), slog.String("join_token", t.ID))
	res := federation.JoinResult{Name: n.Name, Tiers: n.Tiers, Hub: s.info.Node,
		HubKey: federation.FormatPublicKey(s.nodeKey.Public().(ed25519.PublicKey)), Pins: []string{}}
	if s.hubPub != nil {
		res.SigningKey = federation.FormatPublicKey(s.hubPub)
	}
	nodes, err := s.store.Nodes(r.Context())
	if err != nil {
		return err
	}
	for _, k := range nodes {
		if k.Removed.IsZero() {
			res.Pins = append(res.Pins, k.Key)
		}
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

// addJoinToken makes a one-time join token for the node name asked.
func (s *server) addJoinToken(w http.ResponseWriter, r *http.Request, user string) error {
	if s.joinTokens == nil || s.nodeKey == nil {
		return &httpError{http.StatusConflict, codeNotHub, "join tokens are made at a hub"}
	}
	if s.info.PeerURL == "" {
		return &httpError{http.StatusConflict, codeConflict, "this hub has no peer listener (server.peer_listen) for a node to join at"}
	}
	var req struct {
		Name     string   `json:"name"`
		ValidFor string   `json:"valid_for"`
		Tiers    []string `json:"tiers"`
	}
	if err := s.decode(w, r, &req); err != nil {
		return err
	}
	if err := catalog.ValidNodeName("name", req.Name); err != nil {
		return err
	}
	valid := DefaultJoinValidFor
	if req.ValidFor != "" {
		d, err := time.ParseDuration(req.ValidFor)
		if err != nil || d <= 0 || d > MaxJoinValidFor {
			return invalid("valid_for", "must be a duration such as 1h, at most %v", MaxJoinValidFor)
		}
		valid = d
	}
	for i, t := range req.Tiers {
		if err := catalog.ValidName(fmt.Sprintf("tiers[%d]", i), t); err != nil {
			return err
		}
	}
	tok, text, err := federation.NewJoinToken(s.info.PeerURL, s.nodeKeyID)
	if err != nil {
		return err
	}
	now := s.now().UTC().Truncate(time.Microsecond)
	jt := store.JoinToken{ID: tok.ID, Name: req.Name, MACKey: federation.JoinMACKey(tok.Secret), Tiers: nonNil(req.Tiers),
		CreatedBy: user, Created: now, Expires: now.Add(valid)}
	if err := s.joinTokens.AddJoinToken(r.Context(), jt); err != nil {
		return err
	}
	s.securityEvent(r, auth.EventJoinTokenCreated, slog.String("join_token", jt.ID), slog.String("node", jt.Name),
		slog.String("user", user), slog.Time("expires", jt.Expires))
	writeJSON(w, http.StatusCreated, struct {
		store.JoinToken
		Token string `json:"token"`
	}{jt, text})
	return nil
}

func (s *server) listJoinTokens(w http.ResponseWriter, r *http.Request, _ string) error {
	if s.joinTokens == nil {
		return &httpError{http.StatusConflict, codeNotHub, "join tokens are made at a hub"}
	}
	ts, err := s.joinTokens.JoinTokens(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, struct {
		JoinTokens []store.JoinToken `json:"join_tokens"`
	}{ts})
	return nil
}
