package api

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/gorilla/mux"

	"github.com/patchmesh/patchmesh/auth"
	"github.com/patchmesh/patchmesh/catalog"
)

func (s *server) clientRoutes(v1 *mux.Router) {
	c := subrouter(v1, "/client")
	c.Handle("/register", methods{http.MethodPost: s.handle(s.register)})
	c.Handle("/status", methods{http.MethodGet: s.asMachine(s.status)})
	c.Handle("/patch", methods{http.MethodGet: s.asMachine(s.newestPatch)})
	c.Handle("/checkin", methods{http.MethodPost: s.asMachine(s.checkIn)})
	c.Handle("/nodes", methods{http.MethodGet: s.asMachine(s.clientNodes)})
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

// register turns an auth token and a machine's own ID into a machine token
// on the auth token's tier. Registering again replaces the machine's
// earlier token.
func (s *server) register(w http.ResponseWriter, r *http.Request) error {
	at, err := s.bearer(r, catalog.TokenAuth)
	if err != nil {
		return err
	}
	var req struct {
		MachineID     string `json:"machine_id"`
		Kernel        string `json:"kernel"`
		Arch          string `json:"arch"`
		ClientVersion string `json:"client_version"`
	}
	if err := s.decode(w, r, &req); err != nil {
		return err
	}
	for _, err := range []error{
		catalog.ValidMachineID(req.MachineID),
		catalog.ValidKernel(req.Kernel),
		catalog.ValidArch(req.Arch),
		catalog.ValidClientVersion(req.ClientVersion),
	} {
		if err != nil {
			return err
		}
	}
	id := auth.MachineID(s.key, req.MachineID)
	secret, mt, err := auth.NewToken(catalog.TokenMachine)
	if err != nil {
		return err
	}
	now := s.now().UTC().Truncate(time.Microsecond)
	mt.Tier = at.Tier
	mt.Name = id
	mt.MachineID = id
	mt.Created = now
	m := catalog.Machine{
		ID:            id,
		Tier:          at.Tier,
		Kernel:        req.Kernel,
		Arch:          req.Arch,
		State:         catalog.StateUnknown,
		ClientVersion: req.ClientVersion,
		Registered:    now,
		LastSeen:      now,
	}
	if err := s.store.RegisterMachine(r.Context(), m, mt); err != nil {
		return err
	}
	s.securityEvent(r, auth.EventMachineRegistered, slog.String("machine_id", id), slog.String("tier", at.Tier),
		slog.String("token_id", mt.ID), slog.String("auth_token_id", at.ID))
	if stored, err := s.store.Machine(r.Context(), id); err == nil {
		m = stored
	}
	writeJSON(w, http.StatusCreated, struct {
		MachineToken string          `json:"machine_token"`
		Tier         string          `json:"tier"`
		Machine      catalog.Machine `json:"machine"`
	}{secret, at.Tier, m})
	return nil
}

func (s *server) status(w http.ResponseWriter, r *http.Request, t catalog.Token) error {
	m, err := s.store.Machine(r.Context(), t.MachineID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, m)
	return nil
}

// newestPatch answers a machine's check-in question: the newest live
// patch for its kernel and arch on its tier.
func (s *server) newestPatch(w http.ResponseWriter, r *http.Request, t catalog.Token) error {
	q := r.URL.Query()
	kernel, arch := q.Get("kernel"), q.Get("arch")
	if err := catalog.ValidKernel(kernel); err != nil {
		return err
	}
	if err := catalog.ValidArch(arch); err != nil {
		return err
	}
	p, err := s.store.Newest(r.Context(), t.Tier, kernel, arch)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, p)
	return nil
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
