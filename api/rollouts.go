package api

// Rollout plans: made and changed at the hub (the rollout package runs
// them), listed anywhere from the signed state the node holds, and
// enforced by every node when it answers a machine's offer.

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/gorilla/mux"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/federation"
	"github.com/patchmesh/patchmesh/rollout"
	"github.com/patchmesh/patchmesh/store"
)

func (s *server) rolloutRoutes(a *mux.Router) {
	a.Handle("/rollouts", methods{http.MethodGet: s.asAdmin(s.listRollouts), http.MethodPost: s.asAdmin(s.rolloutHub(s.createRollout))})
	a.Handle("/rollouts/{id}", methods{http.MethodGet: s.asAdmin(s.showRollout)})
	a.Handle("/rollouts/{id}/halt", methods{http.MethodPost: s.asAdmin(s.rolloutHub(s.haltRollout))})
	a.Handle("/rollouts/{id}/resume", methods{http.MethodPost: s.asAdmin(s.rolloutHub(s.resumeRollout))})
	a.Handle("/rollouts/{id}/abort", methods{http.MethodPost: s.asAdmin(s.rolloutHub(s.abortRollout))})
}

// rolloutHub refuses rollout changes on any node but the hub, which alone
// runs the plans and signs their states.
func (s *server) rolloutHub(h adminHandler) adminHandler {
	return func(w http.ResponseWriter, r *http.Request, user string) error {
		if s.info.Role != roleHub || s.rollouts == nil {
			return &httpError{http.StatusConflict, codeNotHub,
				"rollouts are planned and run at the hub; this node enforces the signed state it receives"}
		}
		return h(w, r, user)
	}
}

// rolloutRequest is the body of POST /v1/admin/rollouts. Absent gate
// fields take the defaults (5%, 1 machine, 10 minutes).
type rolloutRequest struct {
	Tier             string   `json:"tier"`
	Version          string   `json:"version"`
	Waves            string   `json:"waves"`
	MaxFailedPercent *float64 `json:"max_failed_percent"`
	MinReporting     *int64   `json:"min_reporting"`
	SoakSeconds      *int64   `json:"soak_seconds"`
}

func (s *server) createRollout(w http.ResponseWriter, r *http.Request, _ string) error {
	var req rolloutRequest
	if err := s.decode(w, r, &req); err != nil {
		return err
	}
	g := rollout.DefaultGate()
	if req.MaxFailedPercent != nil {
		g.MaxFailedPercent = *req.MaxFailedPercent
	}
	if req.MinReporting != nil {
		g.MinReporting = *req.MinReporting
	}
	if req.SoakSeconds != nil {
		g.SoakSeconds = *req.SoakSeconds
	}
	if g.MaxFailedPercent <= 0 || g.MaxFailedPercent > 100 {
		return invalid("max_failed_percent", "must be above 0 and at most 100")
	}
	if g.MinReporting < 0 {
		return invalid("min_reporting", "must not be negative")
	}
	if g.SoakSeconds < 0 {
		return invalid("soak_seconds", "must not be negative")
	}
	ro, err := s.rollouts.Create(r.Context(), rollout.Plan{Tier: req.Tier, Version: req.Version, Waves: req.Waves, Gate: &g})
	if err != nil {
		return s.createRolloutError(r, req, err)
	}
	writeJSON(w, http.StatusCreated, ro)
	return nil
}

// createRolloutError says which part of a refused plan is missing or in
// the way: a bare not_found or the store's conflict text (which names the
// ID the refused plan would have had) does not tell the operator what to
// fix. Other errors pass as they are.
func (s *server) createRolloutError(r *http.Request, req rolloutRequest, err error) error {
	switch {
	case errors.Is(err, catalog.ErrNotFound):
		// An unknown tier is the request's mistake, as for tokens and
		// promotions; a tier that exists lacks the version's patch.
		if terr := s.requireTier(r, "tier", req.Tier); terr != nil {
			return terr
		}
		return notFound(fmt.Sprintf("no live patch of version %s on tier %q", req.Version, req.Tier))
	case errors.Is(err, catalog.ErrConflict):
		srs, lerr := s.store.ListRollouts(r.Context(), req.Tier)
		if lerr != nil {
			return err
		}
		for _, sr := range srs {
			if sr.Rollout.Live() {
				return &httpError{http.StatusConflict, codeConflict,
					fmt.Sprintf("tier %q already has live rollout %s; complete or abort it first", req.Tier, sr.Rollout.ID)}
			}
		}
	}
	return err
}

func (s *server) listRollouts(w http.ResponseWriter, r *http.Request, _ string) error {
	q := newQuery(r)
	tier := q.get("tier", func(v string) error { return catalog.ValidName("tier", v) })
	if q.err != nil {
		return q.err
	}
	srs, err := s.store.ListRollouts(r.Context(), tier)
	if err != nil {
		return err
	}
	out := make([]catalog.Rollout, len(srs))
	for i, sr := range srs {
		out[i] = sr.Rollout
	}
	writeJSON(w, http.StatusOK, struct {
		Rollouts []catalog.Rollout `json:"rollouts"`
	}{out})
	return nil
}

func (s *server) showRollout(w http.ResponseWriter, r *http.Request, _ string) error {
	id, err := pathVar(r, "id", catalog.ValidRolloutID)
	if err != nil {
		return err
	}
	sr, err := s.store.Rollout(r.Context(), id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, sr.Rollout)
	return nil
}

func (s *server) haltRollout(w http.ResponseWriter, r *http.Request, _ string) error {
	id, err := pathVar(r, "id", catalog.ValidRolloutID)
	if err != nil {
		return err
	}
	var req struct {
		Reason string `json:"reason"`
	}
	if err := s.decodeOptional(w, r, &req); err != nil {
		return err
	}
	if len(req.Reason) > 512 {
		return invalid("reason", "at most 512 bytes")
	}
	ro, err := s.rollouts.Halt(r.Context(), id, req.Reason)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, ro)
	return nil
}

func (s *server) resumeRollout(w http.ResponseWriter, r *http.Request, _ string) error {
	return s.rolloutChange(w, r, s.rollouts.Resume)
}

func (s *server) abortRollout(w http.ResponseWriter, r *http.Request, _ string) error {
	return s.rolloutChange(w, r, s.rollouts.Abort)
}

func (s *server) rolloutChange(w http.ResponseWriter, r *http.Request, fn func(context.Context, string) (catalog.Rollout, error)) error {
	id, err := pathVar(r, "id", catalog.ValidRolloutID)
	if err != nil {
		return err
	}
	ro, err := fn(r.Context(), id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, ro)
	return nil
}

// offerable returns the patch to offer the machine machineID of tier for
// kernel and arch: the newest live one, unless a live rollout holds its
// version back from this node's data centre (or from this machine, for a
// wave with a percentage); then the newest not held back, which is the
// previous patch. ErrNotFound if there is none. What is held back is read
// from the signed rollout states this node holds only: a node cut off from
// the hub keeps the last state it heard and opens nothing on its own.
func (s *server) offerable(ctx context.Context, tier, kernel, arch, machineID string) (catalog.Patch, *federation.Envelope, error) {
	p, signed, err := s.newest(ctx, tier, kernel, arch)
	if err != nil {
		return catalog.Patch{}, nil, err
	}
	rs, err := s.tierRollouts(ctx, tier)
	if err != nil {
		return catalog.Patch{}, nil, err
	}
	held := heldVersions(rs, s.info.DC, machineID)
	if !held[p.Version] {
		return p, signed, nil
	}
	ps, err := s.store.Patches(ctx, store.PatchFilter{Tier: tier, Kernel: kernel, Arch: arch, Limit: 100})
	if err != nil {
		return catalog.Patch{}, nil, err
	}
	for _, q := range ps {
		if !q.Withdrawn && !held[q.Version] {
			signed, err := s.signedRecord(ctx, tier, q.Digest, offerTypes)
			if err != nil {
				return catalog.Patch{}, nil, err
			}
			return q, signed, nil
		}
	}
	return catalog.Patch{}, nil, fmt.Errorf("patch for %s %s on %q: version %s is held back by its rollout here: %w",
		kernel, arch, tier, p.Version, catalog.ErrNotFound)
}

// heldVersions is the set of versions the live rollouts rs hold back from
// machineID at a node of data centre dc.
func heldVersions(rs []store.SignedRollout, dc, machineID string) map[string]bool {
	var held map[string]bool // nil, and no allocation, when nothing is held: most check-ins
	for _, sr := range rs {
		if sr.Rollout.Holds(dc, machineID) {
			if held == nil {
				held = map[string]bool{}
			}
			held[sr.Rollout.Version] = true
		}
	}
	return held
}
