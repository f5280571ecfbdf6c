package api

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/federation"
	"github.com/patchmesh/patchmesh/store"
)

// Fleet operations (docs/api.md, "Fleet reports"): the mesh-wide machine
// key a downstream fetches, the report pushes this node takes from its
// downstreams, and the listings of this node's subtree.

// Security event codes of report pushes.
const (
	eventReportRefused = "report_refused"
)

// machineKey is the key a raw machine ID is HMAC'd under: the mesh key
// once this node holds it, so that a machine has one ID at every node;
// until then this node's own key, with a warning, as a node whose upstream
// cannot state a mesh key yet must still register machines.
func (s *server) machineKey(r *http.Request) []byte {
	if k := s.meshKey.Load(); k != nil {
		return *k
	}
	mk, err := s.store.MeshKey(r.Context())
	if err == nil {
		s.meshKey.Store(&mk.Secret)
		return mk.Secret
	}
	s.log.LogAttrs(r.Context(), slog.LevelWarn, "no mesh key yet: machine ID under this node's own key",
		slog.String("error", err.Error()))
	return s.key
}

// serveMeshKey gives a downstream the hub's signed mesh key statement.
func (s *server) serveMeshKey(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Cache-Control", "no-store")
	if _, err := s.bearer(r, catalog.TokenSync); err != nil {
		return err
	}
	mk, err := s.store.MeshKey(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, federation.Envelope{Record: mk.Record, Sig: mk.Sig})
	return nil
}

// takeReport keeps a downstream link's fleet report push, whole or not
// at all.
func (s *server) takeReport(w http.ResponseWriter, r *http.Request) error {
	t, err := s.bearer(r, catalog.TokenSync)
	if err != nil {
		return err
	}
	var p federation.ReportPush
	if err := decodeLimited(w, r, &p, false, s.limits.MaxReportBytes); err != nil {
		return err
	}
	if err := p.Validate(s.now()); err != nil {
		return err
	}
	if p.Tier != t.Tier {
		// A relay's link names the hub tier; a token of a local tier fed
		// by that hub tier grants it too.
		cur, err := s.store.Cursor(r.Context(), t.Tier)
		if err != nil {
			return err
		}
		if cur.HubTier == "" || cur.HubTier != p.Tier {
			s.securityEvent(r, eventReportRefused, slog.String("reason", "wrong_tier"), slog.String("token_id", t.ID),
				slog.String("token_tier", t.Tier), slog.String("tier", p.Tier), slog.String("node", p.Node))
			return &httpError{http.StatusForbidden, codeForbidden, "the report is for tier " + p.Tier + "; this sync token grants tier " + t.Tier}
		}
	}
	err = s.store.PutFleetReport(r.Context(), store.FleetPush{Tier: t.Tier, TokenID: t.ID, Node: p.Node, Seq: p.Seq, Entries: p.StoreEntries()})
	if err != nil {
		if errors.Is(err, catalog.ErrConflict) {
			s.securityEvent(r, eventReportRefused, slog.String("reason", "replay"), slog.String("token_id", t.ID),
				slog.String("node", p.Node), slog.Int64("seq", p.Seq))
		}
		return err
	}
	if s.progress != nil {
		for _, e := range p.Entries {
			if e.Progress != nil {
				s.progress.Note(e.Node, *e.Progress)
			}
		}
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// fleetFilter reads a report listing's query.
func fleetFilter(r *http.Request) (store.FleetFilter, error) {
	q := newQuery(r)
	f := store.FleetFilter{
		Tier:         q.get("tier", validTier),
		DC:           q.get("dc", validDC),
		Kernel:       q.get("kernel", catalog.ValidKernel),
		State:        catalog.MachineState(q.get("state", validStateString)),
		PatchVersion: q.get("version", catalog.ValidVersion),
		After:        q.get("after", validMachineHex),
		Limit:        q.limit(),
	}
	return f, q.err
}

func validDC(v string) error {
	return catalog.ValidNodeName("dc", v)
}

func validMachineHex(v string) error {
	if len(v) != 64 || catalog.ValidMachineID(v) != nil {
		return invalid("after", "must be a machine ID of 64 hex digits, the last of the previous page")
	}
	return nil
}

// fleetMachine is a machine as the report listing shows it.
type fleetMachine struct {
	ID           string               `json:"id"`
	Tier         string               `json:"tier"`
	Node         string               `json:"node"`
	DC           string               `json:"dc"`
	Kernel       string               `json:"kernel"`
	Arch         string               `json:"arch"`
	State        catalog.MachineState `json:"state"`
	PatchVersion string               `json:"patch_version"`
	LastSeen     time.Time            `json:"last_seen"`
}

// reportMachines pages through every machine of this node's subtree, one
// row per machine ID.
func (s *server) reportMachines(w http.ResponseWriter, r *http.Request, _ string) error {
	f, err := fleetFilter(r)
	if err != nil {
		return err
	}
	if f.Limit == 0 {
		f.Limit = 1000
	}
	ms, err := s.store.FleetMachines(r.Context(), s.info.Node, s.info.DC, f)
	if err != nil {
		return err
	}
	out := make([]fleetMachine, len(ms))
	for i, m := range ms {
		out[i] = fleetMachine(m)
	}
	next := ""
	if len(ms) == f.Limit {
		next = ms[len(ms)-1].ID
	}
	writeJSON(w, http.StatusOK, struct {
		Node     string         `json:"node"`
		Machines []fleetMachine `json:"machines"`
		Next     string         `json:"next,omitempty"`
	}{s.info.Node, out, next})
	return nil
}

// FleetTotal is one row of a fleet summary: how many machines share a
// tier, data centre, kernel, patch version and state.
type FleetTotal struct {
	Tier         string               `json:"tier"`
	DC           string               `json:"dc"`
	Kernel       string               `json:"kernel"`
	PatchVersion string               `json:"patch_version"`
	State        catalog.MachineState `json:"state"`
	Machines     int64                `json:"machines"`
}

// FleetNode is one node of a summary's subtree and how recent its figures
// are.
type FleetNode struct {
	Node string    `json:"node"`
	DC   string    `json:"dc"`
	Tier string    `json:"tier,omitempty"`
	AsOf time.Time `json:"as_of"`
	// Received is when this node took the entry; absent for its own.
	Received time.Time `json:"received,omitzero"`
	Rows     bool      `json:"rows"`
}

// FleetSummary is the body of GET /v1/admin/reports/summary, and the
// dashboard view's fleet.
type FleetSummary struct {
	Node     string       `json:"node"`
	AsOf     time.Time    `json:"as_of"`
	Machines int64        `json:"machines"`
	Totals   []FleetTotal `json:"totals"`
	Nodes    []FleetNode  `json:"nodes"`
}

// reportSummary totals this node's subtree and says, per node, how
// recent its figures are.
func (s *server) reportSummary(w http.ResponseWriter, r *http.Request, _ string) error {
	f, err := fleetFilter(r)
	if err != nil {
		return err
	}
	if f.After != "" || f.Limit != 0 {
		return invalid("limit", "a summary takes no paging")
	}
	sum, err := s.fleetSummary(r.Context(), f)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, sum)
	return nil
}

// fleetSummary totals this node's subtree under f.
func (s *server) fleetSummary(ctx context.Context, f store.FleetFilter) (FleetSummary, error) {
	now := s.now().UTC()
	ts, err := s.store.FleetSummary(ctx, s.info.Node, s.info.DC, f)
	if err != nil {
		return FleetSummary{}, err
	}
	out := FleetSummary{Node: s.info.Node, AsOf: now, Totals: make([]FleetTotal, len(ts))}
	for i, t := range ts {
		out.Totals[i] = FleetTotal(t)
		out.Machines += t.Machines
	}
	entries, err := s.store.FleetEntries(ctx, f.Tier, false)
	if err != nil {
		return FleetSummary{}, err
	}
	out.Nodes = []FleetNode{{Node: s.info.Node, DC: s.info.DC, AsOf: now, Rows: true}}
	for _, e := range entries {
		if f.DC != "" && e.DC != f.DC {
			continue
		}
		out.Nodes = append(out.Nodes, FleetNode{Node: e.Node, DC: e.DC, Tier: e.Tier, AsOf: e.AsOf, Received: e.Received, Rows: e.HasMachines})
	}
	return out, nil
}
