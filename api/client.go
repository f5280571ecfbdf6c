package api

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"github.com/patchmesh/patchmesh/auth"
	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/federation"
	"github.com/patchmesh/patchmesh/store"
)

func (s *server) clientRoutes(v1 *mux.Router) {
	c := subrouter(v1, "/client")
	c.Handle("/register", methods{http.MethodPost: s.handle(s.register)})
	c.Handle("/status", methods{http.MethodGet: s.asMachine(s.status)})
	c.Handle("/patch", methods{http.MethodGet: s.asMachine(s.newestPatch)})
	c.Handle("/checkin", methods{http.MethodPost: s.asMachine(s.checkIn)})
	c.Handle("/nodes", methods{http.MethodGet: s.asMachine(s.clientNodes)})
	s.identityRoutes(c)
}

// machineHandler is a client endpoint for a registered machine, whose
// token it receives.
type machineHandler func(w http.ResponseWriter, r *http.Request, t catalog.Token) error

func (s *server) asMachine(h machineHandler) http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		t, err := s.bearer(r, catalog.TokenMachine)
		if err != nil {
			return err
		}
		return h(w, r, t)
	})
}

// registerRequest is the body of POST /v1/client/register. A machine
// registers with an auth token and its raw ID, or with a machine
// credential another admitted node issued, and then without its raw ID:
// the credential names the machine by the issuer's HMAC of it.
type registerRequest struct {
	MachineID     string `json:"machine_id"`
	Credential    string `json:"credential"`
	Kernel        string `json:"kernel"`
	Arch          string `json:"arch"`
	ClientVersion string `json:"client_version"`
}

// register turns an auth token and a machine's own ID, or a machine
// credential, into a machine token on the token's (credential's) tier.
// Registering again replaces the machine's earlier token.
//
// The credential travels as the bearer or in the body. Without one, the
// auth token is checked before the body is read, as every credential is.
func (s *server) register(w http.ResponseWriter, r *http.Request) error {
	header := r.Header.Get("Authorization")
	scheme, bearer, _ := strings.Cut(header, " ")
	bearer = strings.TrimSpace(bearer)
	var req registerRequest
	if strings.EqualFold(scheme, "Bearer") && federation.IsCredential(bearer) {
		if err := s.decode(w, r, &req); err != nil {
			return err
		}
		if req.Credential != "" && req.Credential != bearer {
			return invalid("credential", "must be left out, or equal the bearer credential")
		}
		req.Credential = bearer
		return s.registerByCredential(w, r, req)
	}
	if header == "" {
		// Only a body can carry the credential now; a body that does not
		// is answered as a missing credential.
		if err := s.decode(w, r, &req); err == nil && req.Credential != "" {
			return s.registerByCredential(w, r, req)
		}
		_, err := s.bearer(r, catalog.TokenAuth)
		return err
	}
	at, err := s.bearer(r, catalog.TokenAuth)
	if err != nil {
		return err
	}
	if err := s.decode(w, r, &req); err != nil {
		return err
	}
	if req.Credential != "" {
		return invalid("credential", "must be left out when registering with an auth token")
	}
	if err := catalog.ValidMachineID(req.MachineID); err != nil {
		return err
	}
	id := auth.MachineID(s.machineKey(r), req.MachineID)
	return s.registerMachine(w, r, req, id, at.Tier, &at, at.ID, slog.String("auth_token_id", at.ID))
}

// registerByCredential registers the machine a credential names, under
// the issuer's ID for it: this node never sees the raw machine ID.
func (s *server) registerByCredential(w http.ResponseWriter, r *http.Request, req registerRequest) error {
	if req.MachineID != "" {
		return invalid("machine_id", "must be left out when registering with a machine credential")
	}
	// The credential first, as a bearer token is checked first: an
	// unauthenticated caller learns nothing about its body.
	st, err := s.checkCredential(r, req.Credential)
	if err != nil {
		return err
	}
	if err := s.requireTier(r, "tier", st.Tier); err != nil {
		return err
	}
	return s.registerMachine(w, r, req, st.Machine, st.Tier, nil, st.EnrolledBy, slog.String("issuer", st.Issuer))
}

// errMachineRevoked refuses the registration of a revoked machine, here
// or, by the hub's signed revocation, anywhere: it changes nothing. The
// machine learns why, as nothing it can retry will help; an operator must
// delete it (at the hub, if revoked there).
var errMachineRevoked = &httpError{http.StatusForbidden, codeMachineRevoked,
	"this machine is revoked and may not register until an operator deletes it (at the hub, if revoked there)"}

func validRegistration(req registerRequest) error {
	for _, err := range []error{
		catalog.ValidKernel(req.Kernel),
		catalog.ValidArch(req.Arch),
		catalog.ValidClientVersion(req.ClientVersion),
	} {
		if err != nil {
			return err
		}
	}
	return nil
}

// registerMachine records machine id on tier with a new machine token and
// answers with the token and, if this node has a node key, a machine
// credential for registering at the other admitted nodes of the tier.
// enrollment is the auth token the machine registered with, nil for a
// machine credential: only an enrollment has a hub-signed token record for
// the machine to learn its hub tier from. enrolledBy is that token's ID,
// or the one the credential carries: recorded with the machine, and in
// the credential issued, it lets the token's revocation with its machines
// reach the machine wherever it registered.
func (s *server) registerMachine(w http.ResponseWriter, r *http.Request, req registerRequest, id, tier string,
	enrollment *catalog.Token, enrolledBy string, by slog.Attr) error {
	if err := validRegistration(req); err != nil {
		return err
	}
	secret, mt, err := auth.NewToken(catalog.TokenMachine)
	if err != nil {
		return err
	}
	now := s.now().UTC().Truncate(time.Microsecond)
	mt.Tier = tier
	mt.Name = id
	mt.MachineID = id
	mt.Created = now
	m := catalog.Machine{
		ID:            id,
		Tier:          tier,
		Kernel:        req.Kernel,
		Arch:          req.Arch,
		State:         catalog.StateUnknown,
		ClientVersion: req.ClientVersion,
		Registered:    now,
		LastSeen:      now,
	}
	m.EnrolledBy = enrolledBy
	cred, err := s.issueCredential(id, tier, enrolledBy, now)
	if err != nil {
		return err
	}
	if err := s.store.RegisterMachine(r.Context(), m, mt); err != nil {
		if errors.Is(err, catalog.ErrRevoked) {
			s.securityEvent(r, auth.EventAuthzFail, slog.String("reason", "machine_revoked"),
				slog.String("machine_id", id), slog.String("tier", tier), by)
			return errMachineRevoked
		}
		return err
	}
	s.securityEvent(r, auth.EventMachineRegistered, slog.String("machine_id", id), slog.String("tier", tier),
		slog.String("token_id", mt.ID), by)
	if stored, err := s.store.Machine(r.Context(), id); err == nil {
		m = stored
	}
	enr := federation.Enrollment{Endorsements: s.endorse}
	if enrollment != nil {
		if enr.TokenRecord, err = s.tokenRecord(r.Context(), *enrollment); err != nil {
			return err
		}
	}
	writeJSON(w, http.StatusCreated, struct {
		MachineToken string          `json:"machine_token"`
		Tier         string          `json:"tier"`
		Machine      catalog.Machine `json:"machine"`
		Credential   string          `json:"credential,omitempty"`
		federation.Enrollment
	}{secret, tier, m, cred, enr})
	return nil
}

// tokenRecord finds the hub-signed token.added record of the enrollment
// token t in this node's log, nil if there is none (a token made here,
// not at the hub). Token records concern no patch, so the store lists the
// tier's token records and the one naming t is picked here. Reading the
// record's token ID from unverified bytes is only a choice of what to hand
// over: the machine verifies the record, and refuses one for another
// token.
func (s *server) tokenRecord(ctx context.Context, t catalog.Token) (*federation.Envelope, error) {
	entries, err := s.store.SignedEvents(ctx, store.SignedQuery{
		Tier: t.Tier, Types: []catalog.EventType{catalog.EventTokenAdded}, Limit: federation.MaxFeedLimit,
	})
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		var head struct {
			Token struct {
				ID string `json:"id"`
			} `json:"token"`
		}
		if json.Unmarshal(e.Record, &head) == nil && head.Token.ID == t.ID {
			return &federation.Envelope{Record: e.Record, Sig: e.Sig}, nil
		}
	}
	return nil, nil
}

func (s *server) status(w http.ResponseWriter, r *http.Request, t catalog.Token) error {
	m, err := s.store.Machine(r.Context(), t.MachineID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, m)
	return nil
}

// Event types of the records an offer carries.
var (
	offerTypes      = []catalog.EventType{catalog.EventPatchAdded, catalog.EventPatchPromoted}
	withdrawalTypes = []catalog.EventType{catalog.EventPatchWithdrawn, catalog.EventPatchRemoved}
)

// newestPatch answers a machine's check-in question: the newest live
// patch for its kernel and arch on its tier, with the hub-signed record
// that put it there and, when the machine names the patch it applied and
// that is not the one offered, the signed record that withdrew the applied
// one (federation.Offer).
func (s *server) newestPatch(w http.ResponseWriter, r *http.Request, t catalog.Token) error {
	q := r.URL.Query()
	kernel, arch, applied := q.Get("kernel"), q.Get("arch"), q.Get("applied")
	if err := catalog.ValidKernel(kernel); err != nil {
		return err
	}
	if err := catalog.ValidArch(arch); err != nil {
		return err
	}
	if applied != "" && catalog.ValidDigest(applied) != nil {
		return invalid("applied", "must be empty or a digest, sha256:<64 hex>")
	}
	ctx := r.Context()
	// The generation before anything the answer is made of is read: a
	// write committing after it outdates the answer kept below.
	gen := s.offers.generation()
	// The heartbeat goes with every answer, the 404 "nothing to offer"
	// included: without it, a node withholding a patch could answer 404
	// for ever and the machine could not tell that from a quiet tier.
	var hb *federation.Envelope
	if s.heartbeats != nil {
		if e, ok := s.heartbeats.Latest(t.Tier); ok {
			hb = &e
		}
	}
	// The rollouts are evaluated for this machine on every check-in: the
	// digest offered, which they decide, is part of the answer's key.
	p, signed, err := s.offerable(ctx, t.Tier, kernel, arch, t.MachineID)
	if err != nil {
		if hb != nil {
			w.Header().Set(federation.HeartbeatHeader, federation.EncodeHeartbeatHeader(*hb))
		}
		return err
	}
	var withdrawal *federation.Envelope
	if applied != "" && applied != p.Digest {
		if withdrawal, err = s.withdrawal(ctx, t.Tier, applied); err != nil {
			return err
		}
	}
	if withdrawal == nil {
		// The answer is the same as for no applied digest: share it,
		// rather than keep one per digest a machine may name.
		applied = ""
	}
	k := offerKey{kind: 'a', tier: t.Tier, kernel: kernel, arch: arch, digest: p.Digest, applied: applied}
	if a, ok := s.offers.cachedOffer(k, hb); ok {
		a.write(w)
		return nil
	}
	a, err := encodeOffer(federation.Offer{Patch: p, Endorsements: s.endorse, Heartbeat: hb, Signed: signed, Withdrawal: withdrawal})
	if err != nil {
		return err
	}
	s.offers.putOffer(k, gen, a)
	a.write(w)
	return nil
}

// signedRecord is the newest signed record of one of types about digest
// on tier, nil if there is none.
func (s *server) signedRecord(ctx context.Context, tier, digest string, types []catalog.EventType) (*federation.Envelope, error) {
	entries, err := s.store.SignedEvents(ctx, store.SignedQuery{Tier: tier, Digest: digest, Types: types, Limit: 1})
	if err != nil || len(entries) == 0 {
		return nil, err
	}
	return &federation.Envelope{Record: entries[0].Record, Sig: entries[0].Sig}, nil
}

func (s *server) checkIn(w http.ResponseWriter, r *http.Request, t catalog.Token) error {
	var req struct {
		State         catalog.MachineState `json:"state"`
		Kernel        string               `json:"kernel"`
		Arch          string               `json:"arch"`
		PatchVersion  string               `json:"patch_version"`
		ClientVersion string               `json:"client_version"`
		UptimeSeconds int64                `json:"uptime_seconds"`
	}
	if err := s.decode(w, r, &req); err != nil {
		return err
	}
	for _, err := range []error{
		catalog.ValidState(req.State),
		catalog.ValidKernel(req.Kernel),
		catalog.ValidArch(req.Arch),
		validPatchVersion(req.PatchVersion),
		catalog.ValidClientVersion(req.ClientVersion),
	} {
		if err != nil {
			return err
		}
	}
	if req.UptimeSeconds < 0 {
		return invalid("uptime_seconds", "must not be negative")
	}
	m := catalog.Machine{
		ID:            t.MachineID,
		Tier:          t.Tier,
		Kernel:        req.Kernel,
		Arch:          req.Arch,
		State:         req.State,
		PatchVersion:  req.PatchVersion,
		ClientVersion: req.ClientVersion,
		UptimeSeconds: req.UptimeSeconds,
		LastSeen:      s.now().UTC().Truncate(time.Microsecond),
	}
	if err := s.store.CheckIn(r.Context(), m); err != nil {
		return err
	}
	stored, err := s.store.Machine(r.Context(), t.MachineID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, stored)
	return nil
}

// validPatchVersion allows the empty version of a state that concerns no
// patch (docs/api.md); a version given must be valid, under its own name.
func validPatchVersion(v string) error {
	if v == "" {
		return nil
	}
	if catalog.ValidVersion(v) != nil {
		return invalid("patch_version", "must be empty or up to four dot-separated numbers, such as 107.1")
	}
	return nil
}
