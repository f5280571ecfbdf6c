package api

// Node identity on the API (docs/api.md, "Node identity"): the hub's
// admission of nodes (admin), the roster of admitted nodes machines read
// before trusting a node, a node's hello proving it holds its key, and
// registration with a machine credential another admitted node issued.
// The checks themselves are federation's (VerifyAdmission, VerifyHello,
// VerifyCredential), so that the client runs the same ones.

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/mux"

	"github.com/patchmesh/patchmesh/auth"
	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/federation"
	"github.com/patchmesh/patchmesh/store"
)

// DefaultCredentialTTL is how long a machine credential stays valid. A
// machine gets a fresh one at every registration.
const DefaultCredentialTTL = 30 * 24 * time.Hour

// kindCredential labels machine credentials in the auth metrics.
const kindCredential = "credential"

func (s *server) nodeAdminRoutes(a *mux.Router) {
	a.Handle("/nodes/join-tokens", methods{http.MethodGet: s.asAdmin(s.atHub(s.listJoinTokens)), http.MethodPost: s.asAdmin(s.atHub(s.addJoinToken))})
	a.Handle("/nodes", methods{http.MethodGet: s.asAdmin(s.listNodes), http.MethodPost: s.asAdmin(s.atHub(s.admitNode))})
	a.Handle("/nodes/{name}", methods{http.MethodDelete: s.asAdmin(s.atHub(s.removeNode)), http.MethodPatch: s.asAdmin(s.atHub(s.updateNode))})
}

func (s *server) identityRoutes(c *mux.Router) {
	c.Handle("/hello", methods{http.MethodGet: s.handle(s.hello)})
	c.Handle("/roster", methods{http.MethodGet: s.handle(s.roster)})
}

// atHub refuses a node admission or removal on a node that is not the
// hub, before the body is read: only the hub's signature admits a node.
func (s *server) atHub(h adminHandler) adminHandler {
	return func(w http.ResponseWriter, r *http.Request, user string) error {
		if s.info.Role != roleHub {
			return &httpError{http.StatusConflict, codeNotHub,
				"nodes are admitted at the hub; this node receives admissions by sync"}
		}
		return h(w, r, user)
	}
}

func (s *server) listNodes(w http.ResponseWriter, r *http.Request, _ string) error {
	ns, err := s.store.Nodes(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, struct {
		Nodes []catalog.Node `json:"nodes"`
	}{nonNil(ns)})
	return nil
}

// admitNode admits a node by name and key on the tiers asked (every tier
// when none is), the hub signing one record per tier.
func (s *server) admitNode(w http.ResponseWriter, r *http.Request, user string) error {
	var req struct {
		Name  string   `json:"name"`
		Key   string   `json:"key"`
		URLs  []string `json:"urls"`
		Tiers []string `json:"tiers"`
	}
	if err := s.decode(w, r, &req); err != nil {
		return err
	}
	if err := catalog.ValidNodeName("name", req.Name); err != nil {
		return err
	}
	pub, err := federation.ParsePublicKey(req.Key)
	if err != nil {
		return invalid("key", "%v", err)
	}
	n := catalog.Node{Name: req.Name, Key: federation.FormatPublicKey(pub), KeyID: federation.KeyID(pub),
		URLs: req.URLs, Tiers: req.Tiers, Admitted: s.now().UTC().Truncate(time.Microsecond)}
	n, err = s.admit(r, n)
	if err != nil {
		return err
	}
	s.securityEvent(r, auth.EventNodeAdmitted, slog.String("node", n.Name), slog.String("key_id", n.KeyID),
		slog.String("tiers", strings.Join(n.Tiers, ",")), slog.String("user", user))
	writeJSON(w, http.StatusCreated, n)
	return nil
}

// admit admits n, on every tier when it names none: an operator's
// admission and a join's alike.
func (s *server) admit(r *http.Request, n catalog.Node) (catalog.Node, error) {
	tiers, err := s.store.Tiers(r.Context())
	if err != nil {
		return n, err
	}
	if len(n.Tiers) == 0 {
		for _, t := range tiers {
			n.Tiers = append(n.Tiers, t.Name)
		}
	}
	if err := checkTierNames(tiers, n.Tiers); err != nil {
		return n, err
	}
	if err := n.Validate(); err != nil {
		return n, err
	}
	n, err = s.store.AdmitNode(r.Context(), n)
	if errors.Is(err, catalog.ErrNotFound) { // a tier went away meanwhile
		return n, invalid("tiers", "a tier it names no longer exists")
	}
	return n, err
}

// updateNode moves a live admission to new URLs, or onto more tiers, the
// hub signing a fresh admission per tier and no removal: the way to
// change where a node is reached without a window in which its
// downstreams refuse it. What the body leaves out stays as it was. The
// key is not changed here: a node's direct downstreams trust it by key,
// and would refuse it under a new one before the record telling them of
// it could arrive from it (a compromised key is removed instead).
func (s *server) updateNode(w http.ResponseWriter, r *http.Request, user string) error {
	name, err := pathVar(r, "name", func(n string) error { return catalog.ValidNodeName("name", n) })
	if err != nil {
		return err
	}
	var req struct {
		URLs  []string `json:"urls"`
		Tiers []string `json:"tiers"`
	}
	if err := s.decode(w, r, &req); err != nil {
		return err
	}
	nodes, err := s.store.Nodes(r.Context())
	if err != nil {
		return err
	}
	i := slices.IndexFunc(nodes, func(n catalog.Node) bool { return n.Name == name && n.Removed.IsZero() })
	if i < 0 {
		return notFound("no admitted node " + name)
	}
	was := nodes[i]
	n := catalog.Node{Name: name, Key: was.Key, KeyID: was.KeyID, URLs: was.URLs, Tiers: was.Tiers,
		Admitted: s.now().UTC().Truncate(time.Microsecond)}
	if req.URLs != nil {
		n.URLs = req.URLs
	}
	if req.Tiers != nil {
		if len(req.Tiers) == 0 {
			return invalid("tiers", "must name at least one tier when given (a node leaves a tier only by removal)")
		}
		if err := s.checkTiers(r, req.Tiers); err != nil {
			return err
		}
		n.Tiers = req.Tiers
	}
	if err := n.Validate(); err != nil {
		return err
	}
	n, err = s.store.UpdateNode(r.Context(), n)
	switch {
	case errors.Is(err, catalog.ErrNotFound):
		return notFound("no admitted node " + name + ", or a tier it names no longer exists")
	case err != nil:
		return err
	}
	s.securityEvent(r, auth.EventNodeUpdated, slog.String("node", n.Name), slog.String("key_id", n.KeyID),
		slog.String("urls", strings.Join(n.URLs, ",")), slog.String("was_urls", strings.Join(was.URLs, ",")),
		slog.String("tiers", strings.Join(n.Tiers, ",")), slog.String("user", user))
	writeJSON(w, http.StatusOK, n)
	return nil
}

// checkTiers checks that each of names is a tier of this node.
func (s *server) checkTiers(r *http.Request, names []string) error {
	tiers, err := s.store.Tiers(r.Context())
	if err != nil {
		return err
	}
	return checkTierNames(tiers, names)
}

func checkTierNames(tiers []catalog.Tier, names []string) error {
	for i, name := range names {
		field := fmt.Sprintf("tiers[%d]", i)
		if err := catalog.ValidName(field, name); err != nil {
			return err
		}
		if !slices.ContainsFunc(tiers, func(t catalog.Tier) bool { return t.Name == name }) {
			return invalid(field, "no tier named %q", name)
		}
	}
	return nil
}

func (s *server) removeNode(w http.ResponseWriter, r *http.Request, user string) error {
	name, err := pathVar(r, "name", func(n string) error { return catalog.ValidNodeName("name", n) })
	if err != nil {
		return err
	}
	if err := s.store.RemoveNode(r.Context(), name, s.now()); err != nil {
		if errors.Is(err, catalog.ErrNotFound) {
			return notFound("no admitted node " + name)
		}
		return err
	}
	s.securityEvent(r, auth.EventNodeRemoved, slog.String("node", name), slog.String("user", user))
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// newRosterNode is an admission as machines see it: where to reach the
// node, its key, and the hub's signed admission to check both against.
func newRosterNode(a store.Admission) federation.RosterNode {
	n := federation.RosterNode{Name: a.Node.Name, URL: a.Node.URLs[0], URLs: a.Node.URLs, Key: a.Node.Key, KeyID: a.Node.KeyID}
	if a.Record != nil {
		n.Admission = &federation.Envelope{Record: a.Record, Sig: a.Sig}
	}
	return n
}

// roster answers GET /v1/client/roster?tier=T: the nodes the hub admitted
// on T, each with its signed admission; without tier, the admissions of
// every tier, which is what a machine not yet registered (and so not yet
// knowing its tier) checks its first contact against. It takes no
// credential, so that a machine can check a node before it sends that node
// any; it says nothing that the signed records it serves do not say
// already.
func (s *server) roster(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	tier := q.Get("tier")
	tiers := []string{tier}
	if tier == "" && !q.Has("tier") {
		ts, err := s.store.Tiers(r.Context())
		if err != nil {
			return err
		}
		tiers = tiers[:0]
		for _, t := range ts {
			tiers = append(tiers, t.Name)
		}
	} else if err := catalog.ValidName("tier", tier); err != nil {
		return err
	}
	var as []store.Admission
	for _, t := range tiers {
		got, err := s.store.Admissions(r.Context(), t)
		if err != nil {
			return err
		}
		as = append(as, got...)
	}
	out := federation.RosterResponse{Tier: tier, Nodes: make([]federation.RosterNode, 0, len(as)), Endorsements: s.endorse}
	for _, a := range as {
		out.Nodes = append(out.Nodes, newRosterNode(a))
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, out)
	return nil
}

// hello answers GET /v1/client/hello?nonce=N: this node's name and key
// and its signature over the nonce and the Host it was asked by
// (federation.HelloMessage). No credential: it proves who answers before
// the machine sends anything secret.
func (s *server) hello(w http.ResponseWriter, r *http.Request) error {
	if s.nodeKey == nil {
		return notFound("this node has no node key")
	}
	nonce := r.URL.Query().Get("nonce")
	if err := federation.ValidNonce(nonce); err != nil {
		return err
	}
	h, err := federation.SignHello(s.nodeKey, s.info.Node, nonce, r.Host)
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, h)
	return nil
}

// issueCredential states, under this node's key, that it registered the
// machine id on tier; "" when this node has no key.
func (s *server) issueCredential(id, tier, enrolledBy string, now time.Time) (string, error) {
	if s.nodeKey == nil {
		return "", nil
	}
	return federation.IssueCredential(s.nodeKey, federation.MachineStatement{
		Machine: id, Tier: tier, Issuer: s.info.Node, Issued: now, Expires: now.Add(s.credentialTTL),
		EnrolledBy: enrolledBy,
	})
}

// credentialRefused is the reason a credential failed, for the security
// event; the machine is told only 401.
type credentialRefused struct {
	reason string
	err    error
}

func (e *credentialRefused) Error() string { return e.reason + ": " + e.err.Error() }
func (e *credentialRefused) Unwrap() []error {
	return []error{auth.ErrUnauthenticated, e.err}
}

// checkCredential verifies a machine credential: its issuer must hold a
// live admission on the credential's tier here, under the key the
// credential names, and the signature and dates must hold. It logs the
// decision as a security event and returns the statement.
func (s *server) checkCredential(r *http.Request, text string) (federation.MachineStatement, error) {
	start := time.Now()
	st, err := s.verifyCredential(r, text)
	s.metrics.observeAuth(kindCredential, authOutcome(err), time.Since(start))
	if err != nil {
		attrs := []slog.Attr{slog.String("kind", kindCredential)}
		var cr *credentialRefused
		if errors.As(err, &cr) {
			attrs = append(attrs, slog.String("reason", cr.reason))
		}
		if st.Issuer != "" {
			attrs = append(attrs, slog.String("issuer", st.Issuer), slog.String("issuer_key", st.IssuerKey), slog.String("tier", st.Tier))
		}
		s.securityEvent(r, auth.EventCredentialFail, attrs...)
		return federation.MachineStatement{}, err
	}
	s.securityEvent(r, auth.EventCredentialSuccess, slog.String("kind", kindCredential), slog.String("issuer", st.Issuer),
		slog.String("issuer_key", st.IssuerKey), slog.String("tier", st.Tier), slog.String("machine_id", st.Machine))
	return st, nil
}

func (s *server) verifyCredential(r *http.Request, text string) (federation.MachineStatement, error) {
	c, err := federation.ParseCredential(text)
	if err != nil {
		return federation.MachineStatement{}, &credentialRefused{"malformed", err}
	}
	st := c.Statement
	as, err := s.store.Admissions(r.Context(), st.Tier)
	if err != nil {
		return st, err
	}
	i := slices.IndexFunc(as, func(a store.Admission) bool { return a.Node.Name == st.Issuer })
	if i < 0 {
		return st, &credentialRefused{"issuer_not_admitted", fmt.Errorf("node %q is not admitted on tier %s here", st.Issuer, st.Tier)}
	}
	pub, err := federation.ParsePublicKey(as[i].Node.Key)
	if err != nil {
		return st, fmt.Errorf("admission of %s: %w", st.Issuer, err)
	}
	if err := federation.VerifyCredential(c, pub, s.now()); err != nil {
		reason := "bad_signature"
		switch {
		case federation.KeyID(pub) != st.IssuerKey:
			reason = "issuer_key_mismatch"
		case !s.now().Before(st.Expires):
			reason = "expired"
		case st.Issued.After(s.now().Add(federation.MaxClockSkew)):
			reason = "issued_in_future"
		}
		return st, &credentialRefused{reason, err}
	}
	return st, nil
}

// identityLog remembers which gossip members failed the identity check,
// so that a member that keeps failing is logged once a minute, not on
// every node list a machine asks for.
type identityLog struct {
	mu   sync.Mutex
	seen map[string]time.Time
}

const identityLogEvery = time.Minute

// maxIdentityLog bounds the members remembered; past it, the oldest
// memory is simply dropped by starting over.
const maxIdentityLog = 1024

func (l *identityLog) due(key string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.seen == nil || len(l.seen) >= maxIdentityLog {
		l.seen = map[string]time.Time{}
	}
	if last, ok := l.seen[key]; ok && now.Sub(last) < identityLogEvery {
		return false
	}
	l.seen[key] = now
	return true
}

// checkNodeKey refuses a node key of the wrong size at startup.
func checkNodeKey(k ed25519.PrivateKey) error {
	if k != nil && len(k) != ed25519.PrivateKeySize {
		return fmt.Errorf("api: Config.NodeKey is %d bytes, want %d", len(k), ed25519.PrivateKeySize)
	}
	return nil
}
