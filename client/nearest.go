package client

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/federation"
)

// nodeDown marks an error as the node failing to answer (the network, a
// timeout, an answer cut short) rather than the node answering no.
type nodeDown struct{ err error }

func (e *nodeDown) Error() string { return e.err.Error() }
func (e *nodeDown) Unwrap() error { return e.err }

func unreachable(err error) error { return &nodeDown{err} }

// failsOver reports whether err means "try the next node": the node did
// not answer, or answered 5xx (503 overloaded included). Any other answer
// is the mesh's answer, the same at every node, and trying elsewhere would
// only repeat it.
func failsOver(err error) bool {
	var (
		down  *nodeDown
		stale *staleNode
	)
	if errors.As(err, &down) || errors.As(err, &stale) {
		return true
	}
	var apiErr *APIError
	return errors.As(err, &apiErr) && apiErr.Status >= 500
}

func refusedToken(err error) bool {
	var apiErr *APIError
	return errors.As(err, &apiErr) && apiErr.Status == http.StatusUnauthorized
}

// session is one operation's view of the machine's state: the nodes to try
// and the tokens to try them with. It saves the state as it changes, since
// a registration replaces the machine's earlier token at that node.
type session struct {
	c  *Client
	st State
	// host is the kernel and arch to register with at a further node.
	kernel, arch string
	// down are the nodes that failed during this operation; later calls of
	// the operation try them last.
	down map[string]bool
}

// target is one node and the machine's token there.
type target struct {
	url, token string
}

// open loads the state and, when the ranking is stale, a failover left it
// suspect or force says so, learns the node list again and re-measures.
// kernel and arch are used for registrations at further nodes; empty means
// the ones the machine registered with.
func (c *Client) open(ctx context.Context, kernel, arch string, force bool) (*session, error) {
	st, err := LoadState(c.cfg.StateDir)
	if err != nil {
		return nil, err
	}
	s := &session{c: c, st: st, kernel: kernel, arch: arch, down: map[string]bool{}}
	if s.kernel == "" {
		s.kernel, s.arch = st.Kernel, st.Arch
	}
	if force || st.RerankDue || time.Since(st.Ranked) > c.cfg.RerankEvery {
		if err := s.rerank(ctx); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func (s *session) save() error {
	return saveState(s.c.cfg.StateDir, s.st)
}

// order is the nodes to try, best first: the ranking, then the first
// contact; nodes that failed in this operation go last. Nodes the client may not use (plain http under RequireTLS, or no
// registration and no way to make one) are left out; err says why when
// that leaves none.
func (s *session) order() ([]string, error) {
	var cands []string
	for _, n := range s.st.Nodes {
		cands = append(cands, n.URL)
	}
	cands = append(cands, s.st.Server)

	var up, down []string
	var skipped []error
	seen := map[string]bool{}
	for _, u := range cands {
		if u == "" || seen[u] {
			continue
		}
		seen[u] = true
		if err := checkURL(u, s.tlsOnly()); err != nil {
			skipped = append(skipped, err)
			continue
		}
		if _, ok := s.st.Registrations[u]; !ok {
			if err := s.canRegister(); err != nil {
				skipped = append(skipped, fmt.Errorf("%s: %w", u, err))
				continue
			}
		}
		if s.down[u] {
			down = append(down, u)
		} else {
			up = append(up, u)
		}
	}
	if len(up)+len(down) == 0 {
		return nil, fmt.Errorf("no node to use: %w", errors.Join(skipped...))
	}
	return append(up, down...), nil
}

// errNoCredential says why a machine cannot register at a further node.
var errNoCredential = errors.New("not registered there and no machine credential saved " +
	"(the nodes it registered at issue none, or it registered before credentials existed; register again to enable failover)")

// canRegister says whether the machine may register at a node it has no
// token for: only with a machine credential that has not expired. The
// enrollment token and the raw machine ID go to the first contact only.
func (s *session) canRegister() error {
	if s.st.Credential == "" {
		return errNoCredential
	}
	c, err := federation.ParseCredential(s.st.Credential)
	if err != nil {
		return fmt.Errorf("not registered there, and the saved machine credential is unreadable: %w", err)
	}
	if !time.Now().Before(c.Statement.Expires) {
		return fmt.Errorf("not registered there, and the machine credential expired at %s (register again)",
			c.Statement.Expires.Format(time.RFC3339))
	}
	return nil
}

// admittedKey is the node key the hub admitted the node at u with, from
// the ranking the machine verified; nil if u is not an admitted node.
func (s *session) admittedKey(u string) ed25519.PublicKey {
	for _, n := range s.st.Nodes {
		if n.URL == u && n.Key != "" {
			if pub, err := federation.ParsePublicKey(n.Key); err == nil {
				return pub
			}
		}
	}
	return nil
}

// do runs call against the nodes in order until one answers. A node that
// does not answer, or answers 5xx, passes the call to the next; at a node
// where the machine has no token, or its token is refused (401), the
// machine registers with the enrollment token and tries once more; any
// other answer, success or refusal, is returned. At most one call per node
// plus, per node, one registration and the retry after it.
func (s *session) do(ctx context.Context, call func(context.Context, target) error) error {
	nodes, err := s.order()
	if err != nil {
		return err
	}
	var errs []error
	for i, u := range nodes {
		err := s.tryNode(ctx, u, call)
		if err == nil {
			if i > 0 {
				// The nearest node failed: measure again on the next call
				// rather than keep paying for its timeout.
				s.st.RerankDue = true
				if err := s.save(); err != nil {
					return err
				}
			}
			return nil
		}
		if ctx.Err() != nil || !failsOver(err) {
			return err
		}
		s.down[u] = true
		errs = append(errs, err)
	}
	return fmt.Errorf("no node answered (%d tried): %w", len(nodes), errors.Join(errs...))
}

// tryNode runs call at the node u, registering there first when the
// machine has no token for it and once more if its token is refused.
// Registration failures pass the call to the next node: this node does
// not know the enrollment token (yet), or is down.
func (s *session) tryNode(ctx context.Context, u string, call func(context.Context, target) error) error {
	reg, ok := s.st.Registrations[u]
	fresh := false
	if !ok {
		var err error
		if reg, err = s.registerAt(ctx, u); err != nil {
			return err
		}
		fresh = true
	}
	err := call(ctx, target{u, reg.MachineToken})
	if !refusedToken(err) {
		return err
	}
	if !fresh && s.canRegister() == nil {
		if reg, err = s.registerAt(ctx, u); err != nil {
			return err
		}
		err = call(ctx, target{u, reg.MachineToken})
	}
	if refusedToken(err) {
		// The node will not take this machine: another node may.
		return unreachable(fmt.Errorf("%s refused the machine's token: %w", u, err))
	}
	return err
}

// registerAt registers the machine at u, a node it fails over to, with
// its machine credential, and saves the new token at once: registering
// again replaces the machine's earlier token there, so a lost answer
// would leave the machine with a dead token.
//
// u must be a node whose admission the machine verified on its hub tier
// (its ranking keeps only those, with their admitted key), and must
// prove it holds that key (its hello) before the credential goes out: a
// process that only copied an admitted node's gossip entry gets nothing.
// The node registers the machine on the credential's tier, which it must
// answer with.
func (s *session) registerAt(ctx context.Context, u string) (NodeRegistration, error) {
	if err := s.canRegister(); err != nil {
		return NodeRegistration{}, unreachable(fmt.Errorf("%s: %w", u, err))
	}
	pub := s.admittedKey(u)
	if pub == nil {
		return NodeRegistration{}, unreachable(fmt.Errorf("%s: not registered there, and the hub's admission of it was not verified", u))
	}
	if err := s.c.hello(ctx, u, pub); err != nil {
		return NodeRegistration{}, unreachable(fmt.Errorf("%s: %w", u, err))
	}
	got, err := s.c.registerAt(ctx, u, s.st.Credential, RegisterRequest{Kernel: s.kernel, Arch: s.arch})
	if err != nil {
		if ctx.Err() == nil {
			err = unreachable(err)
		}
		return NodeRegistration{}, fmt.Errorf("register at %s: %w", u, err)
	}
	if got.tier != s.st.Tier {
		// The node ignored the credential's tier: using it would fetch
		// another tier's patches.
		return NodeRegistration{}, unreachable(fmt.Errorf("register at %s: it put the machine on tier %q, not %q", u, got.tier, s.st.Tier))
	}
	s.st.Registrations[u] = got.reg
	s.keepCredential(got.credential, pub, time.Now())
	if err := s.save(); err != nil {
		return NodeRegistration{}, err
	}
	return got.reg, nil
}

// keepCredential keeps cred, handed over by the node holding pub, when it
// is one the machine may fail over with (usableCredential) and was issued
// after the one held (or none usable is held), so that the machine always
// fails over with its newest one. A credential that fails the checks is
// dropped: kept, a forged or foreign one would be presented at every
// failover and refused there, and one dated ahead would never be replaced
// by a genuine newer one, so one bad answer would end failover for good.
func (s *session) keepCredential(cred string, pub ed25519.PublicKey, now time.Time) {
	c, err := usableCredential(cred, pub, s.st.MachineID, s.st.Tier, now)
	if err != nil {
		return
	}
	if s.st.Credential != "" {
		held, err := federation.ParseCredential(s.st.Credential)
		if err == nil && now.Before(held.Statement.Expires) && !c.Statement.Issued.After(held.Statement.Issued) {
			return
		}
	}
	s.st.Credential = cred
}

// usableCredential checks a machine credential a node answered a
// registration with: signed by pub, the key the machine verified that
// node by (its admission and hello), for this machine (machine, its ID
// at the node it first registered at) on its tier, valid now and not
// issued ahead of the clock (federation.VerifyCredential). The machine
// checks what it can before keeping it; the node it later presents it to
// checks it again against the issuer's admission.
func usableCredential(cred string, pub ed25519.PublicKey, machine, tier string, now time.Time) (federation.Credential, error) {
	if cred == "" {
		return federation.Credential{}, errors.New("no machine credential issued")
	}
	if pub == nil {
		return federation.Credential{}, errors.New("machine credential: the issuing node's key is not known")
	}
	c, err := federation.ParseCredential(cred)
	if err != nil {
		return federation.Credential{}, err
	}
	st := c.Statement
	switch {
	case machine == "" || st.Machine != machine:
		return federation.Credential{}, fmt.Errorf("%w: it names another machine", federation.ErrBadCredential)
	case st.Tier != tier:
		return federation.Credential{}, fmt.Errorf("%w: it is for tier %q, the machine's is %q", federation.ErrBadCredential, st.Tier, tier)
	}
	if err := federation.VerifyCredential(c, pub, now); err != nil {
		return federation.Credential{}, err
	}
	return c, nil
}

// hello checks that the node at u holds pub: it must sign a fresh nonce
// and the Host the machine asked by (federation.VerifyHello). It sends
// no credential.
func (c *Client) hello(ctx context.Context, u string, pub ed25519.PublicKey) error {
	nonce, err := federation.NewNonce()
	if err != nil {
		return err
	}
	host, err := federation.HelloHost(u)
	if err != nil {
		return err
	}
	var h federation.Hello
	if _, err := c.apiCallHeader(ctx, u, "", http.MethodGet, "/v1/client/hello", url.Values{"nonce": {nonce}}, nil, &h); err != nil {
		return fmt.Errorf("hello: %w", err)
	}
	return federation.VerifyHello(h, pub, nonce, host)
}

// registered is a node's answer to a registration.
type registered struct {
	reg     NodeRegistration
	tier    string
	machine catalog.Machine
	// enrollment is the hub-signed proof of the machine's tier, when the
	// node holds it.
	enrollment federation.Enrollment
	// credential is the machine credential the node issued, "" if none.
	credential string
}

// registerAt sends one registration to server with bearer: an auth token
// with r.MachineID (the first contact), or a machine credential without
// it (a node failed over to).
func (c *Client) registerAt(ctx context.Context, server, bearer string, r RegisterRequest) (registered, error) {
	in := map[string]string{
		"kernel":         r.Kernel,
		"arch":           r.Arch,
		"client_version": c.cfg.ClientVersion,
	}
	if r.MachineID != "" {
		in["machine_id"] = r.MachineID
	}
	var out struct {
		MachineToken string          `json:"machine_token"`
		Tier         string          `json:"tier"`
		Machine      catalog.Machine `json:"machine"`
		Credential   string          `json:"credential"`
		federation.Enrollment
	}
	if err := c.apiCall(ctx, server, bearer, http.MethodPost, "/v1/client/register", nil, in, &out); err != nil {
		return registered{}, err
	}
	if !strings.HasPrefix(out.MachineToken, "pmm_") {
		return registered{}, errors.New("the server's answer holds no machine token")
	}
	reg := NodeRegistration{MachineToken: out.MachineToken, MachineID: out.Machine.ID, Registered: time.Now().UTC()}
	return registered{reg, out.Tier, out.Machine, out.Enrollment, out.Credential}, nil
}

func machineIDHash(id string) string {
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:])
}

// tlsOnly says whether learned nodes must be https: when the operator
// asked for it, and whenever the first contact was https, so that a node
// list from gossip can never lead the client to send its enrollment token
// or machine token over a weaker scheme than the one it started on.
func (s *session) tlsOnly() bool {
	return s.c.cfg.Transport.RequireTLS || strings.HasPrefix(strings.ToLower(s.st.Server), "https://")
}
