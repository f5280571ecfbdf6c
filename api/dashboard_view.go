package api

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/patchmesh/patchmesh/blob"
	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/federation"
	"github.com/patchmesh/patchmesh/store"
	"github.com/patchmesh/patchmesh/topology"
)

// Dashboard view bounds.
const (
	// dashboardTick is how often a stream sends the view: changes reach
	// the page within about a second, and a page that hears nothing for a
	// few ticks knows its node is gone.
	dashboardTick = time.Second
	// dashboardFresh is how long one computed view serves every viewer,
	// so that many open pages cost one computation a tick.
	dashboardFresh = 500 * time.Millisecond
	// dashboardPatches is how many patches, newest version first, the view
	// follows node by node.
	dashboardPatches = 20
	// dashboardMachines caps the count of machines registered here.
	dashboardMachines = 10000
	// holderTimeout bounds one HEAD to another node; holderBudget the
	// whole round of them, so a hung node delays the view by no more.
	holderTimeout = DashboardPeerTimeout
	holderBudget  = 1500 * time.Millisecond
	holderWorkers = 8
	// heldFor is how long a node known to hold a blob is not asked again.
	heldFor = 30 * time.Second
	// maxDashboardStreams caps the open event streams of a node.
	maxDashboardStreams = 64
	// countsEvery is how often the view counts blobs and machines anew.
	countsEvery = 5 * time.Second
	// fleetEvery is how often the view totals the fleet reports anew: a
	// query over every machine of the subtree, and reports arrive every
	// reports.interval anyway.
	fleetEvery = 2 * time.Second
	// recheckEvery is how many events a stream sends between checks of
	// its credential, so that an expired login stops being served.
	recheckEvery = 30
)

// DashboardPeerTimeout bounds one question to another node about a blob
// it holds; DashboardConfig.PeerClient should use it.
const DashboardPeerTimeout = time.Second

// Holder states of a patch on a node.
const (
	holdHeld    = "held"
	holdMissing = "missing"
	holdUnknown = "unknown"
)

// DashboardView is what the dashboard shows: GET /v1/dashboard/snapshot,
// and each event of GET /v1/dashboard/events.
type DashboardView struct {
	Time time.Time `json:"time"`
	// User is the admin reading, "" for an anonymous reader (public
	// reads on).
	User string        `json:"user"`
	Node DashboardNode `json:"node"`
	// Topology is GET /v1/topology's body.
	Topology topology.View `json:"topology"`
	// LinkLagSeconds is each downstream's lag in seconds, by name: this
	// node's own as its sync loop measures it, others' as how long this
	// node has seen them behind (a non-zero lag in gossip).
	LinkLagSeconds map[string]float64 `json:"link_lag_seconds"`
	// UpstreamMoves are the downstreams this node saw move to another
	// upstream in the last hour, newest first, at most 20.
	UpstreamMoves []UpstreamMove `json:"upstream_moves"`
	// Sync is GET /v1/sync/status's body.
	Sync federation.SyncStatusResponse `json:"sync"`
	// Storage sums this node's blobs (GET /v1/admin/storage).
	Storage DashboardStorage `json:"storage"`
	// Machines counts the machines registered at this node.
	Machines DashboardMachines `json:"machines"`
	// Fleet is GET /v1/admin/reports/summary's body, unfiltered: this
	// node's subtree, its totals summed over kernels and patch versions
	// (both ""), so that its size grows with tiers, data centres and
	// states, not with the fleet's variety of kernels. Nil for an
	// anonymous reader, as fleet reports are admin data even with public
	// reads, and when the reports could not be read (FleetError says so).
	Fleet      *FleetSummary `json:"fleet,omitempty"`
	FleetError string        `json:"fleet_error,omitempty"`
	// Rollouts are the live rollouts, then those finished in the last
	// day, as this node holds their signed state, each wave with its
	// reach from the fleet reports. Nil for an anonymous reader, as for
	// the fleet.
	Rollouts []DashboardRollout `json:"rollouts,omitempty"`
	// Patches are the newest patches, with the nodes holding each.
	Patches []DashboardPatch `json:"patches"`
	// Unavailable names the panels this node's API does not offer yet;
	// the page shows them as "not available".
	Unavailable []string `json:"unavailable"`
}

// DashboardNode is the node serving the view, as /debug/info names it.
type DashboardNode struct {
	Name          string `json:"name"`
	Role          string `json:"role"`
	Version       string `json:"version"`
	URL           string `json:"url"`
	UptimeSeconds int64  `json:"uptime_seconds"`
}

// DashboardStorage is the count and size of the blobs stored here.
type DashboardStorage struct {
	Blobs int    `json:"blobs"`
	Bytes int64  `json:"bytes"`
	Error string `json:"error,omitempty"`
}

// DashboardMachines counts machines registered here; More says there are
// more than Count.
type DashboardMachines struct {
	Count int    `json:"count"`
	More  bool   `json:"more"`
	Error string `json:"error,omitempty"`
}

// DashboardPatch is a patch (as GET /v1/admin/patches lists it) and, per
// member of the topology, whether it holds the patch's blob.
type DashboardPatch struct {
	catalog.Patch
	Holders []Holder `json:"holders"`
	// Held and Expected count holders: the nodes holding the blob, among
	// the nodes expected to (the hub, and every node serving one of the
	// patch's tiers, that has not left).
	Held     int `json:"held"`
	Expected int `json:"expected"`
}

// Holder says whether one node holds a patch's blob: held, missing (the
// node answered that it does not) or unknown (not asked: dead, left, no
// URL, gossip off; or it did not answer).
type Holder struct {
	Node     string `json:"node"`
	State    string `json:"state"`
	Expected bool   `json:"expected"`
}

// dashState is the view shared between viewers, and what the node learnt
// of other nodes' blobs.
type dashState struct {
	mu      sync.Mutex
	view    DashboardView
	at      time.Time
	held    map[string]time.Time // node + " " + digest → when seen held
	members map[string]*memberWatch
	moves   []UpstreamMove

	countsAt time.Time
	storage  DashboardStorage
	machines DashboardMachines

	fleetAt  time.Time
	fleet    *FleetSummary
	fleetErr string
	// fleetRaw is the fleet's totals by kernel and version too, which
	// the rollouts' reach reads.
	fleetRaw []FleetTotal

	streams atomic.Int32
}

func (s *server) dashboardSnapshotGet(w http.ResponseWriter, r *http.Request) error {
	user, err := s.dashboardViewer(r)
	if err != nil {
		return err
	}
	v := viewFor(s.dashboardView(r.Context()), user)
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, v)
	return nil
}

// dashboardEvents streams the view as server-sent events: one "view"
// event a tick, so that a page sees changes within a tick and notices a
// silent node. limit, if given, ends the stream after that many events.
func (s *server) dashboardEvents(w http.ResponseWriter, r *http.Request) error {
	user, err := s.dashboardViewer(r)
	if err != nil {
		return err
	}
	limit := 0
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return invalid("limit", "must be an integer from 1 to 1000")
		}
		limit = n
	}
	if s.dash.streams.Add(1) > maxDashboardStreams {
		s.dash.streams.Add(-1)
		s.metrics.overloads.WithLabelValues(laneAdmin).Inc()
		return errOverloaded
	}
	defer s.dash.streams.Add(-1)

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	// Reconnect quickly after the node comes back.
	if _, err := fmt.Fprint(w, "retry: 1000\n\n"); err != nil {
		return nil
	}
	t := time.NewTicker(dashboardTick)
	defer t.Stop()
	for id := 1; limit == 0 || id <= limit; id++ {
		if id%recheckEvery == 0 {
			if _, err := s.dashboardViewer(r); err != nil {
				return nil // the page reconnects, and is refused then
			}
		}
		v := viewFor(s.dashboardView(r.Context()), user)
		b, err := json.Marshal(v)
		if err != nil {
			return nil // the status is out; nothing better to say
		}
		if _, err := fmt.Fprintf(w, "event: view\nid: %d\ndata: %s\n\n", id, b); err != nil {
			return nil
		}
		if err := rc.Flush(); err != nil {
			return nil
		}
		if limit != 0 && id == limit {
			break
		}
		select {
		case <-r.Context().Done():
			return nil
		case <-s.stopping:
			return nil
		case <-t.C:
		}
	}
	return nil
}

// viewFor is the shared view as user may read it: an anonymous reader
// (public reads) is not shown the fleet nor the rollouts, admin data.
func viewFor(v DashboardView, user string) DashboardView {
	v.User = user
	if user == "" {
		v.Fleet, v.FleetError, v.Rollouts = nil, "", nil
	}
	return v
}

// dashboardView returns the view, computed at most once per
// dashboardFresh whatever the number of viewers.
func (s *server) dashboardView(ctx context.Context) DashboardView {
	s.dash.mu.Lock()
	defer s.dash.mu.Unlock()
	now := s.now()
	if !s.dash.at.IsZero() && now.Sub(s.dash.at) < dashboardFresh {
		return s.dash.view
	}
	v := s.computeView(ctx)
	s.dash.view, s.dash.at = v, now
	return v
}

func (s *server) computeView(ctx context.Context) DashboardView {
	v := DashboardView{
		Time: s.now().UTC(),
		Node: DashboardNode{
			Name: s.info.Node, Role: s.info.Role, Version: s.info.Version, URL: s.info.URL,
			UptimeSeconds: int64(s.now().Sub(s.started).Seconds()),
		},
		Topology: s.topologyView(),
		Sync:     federation.SyncStatusResponse{Role: s.info.Role, Links: []federation.LinkStatus{}},
		Patches:  []DashboardPatch{},
		// A panel the API does not offer yet is named here (see
		// docs/api.md, "Dashboard"); every panel is offered now.
		Unavailable: []string{},
	}
	if s.sync != nil {
		v.Sync.Links = nonNil(s.sync.Status())
	}
	ownLag := 0.0
	for _, l := range v.Sync.Links {
		ownLag = max(ownLag, l.LagSeconds)
	}
	s.dash.observe(v.Topology, s.now())
	v.LinkLagSeconds = s.dash.linkLag(v.Topology, ownLag, s.now())
	v.UpstreamMoves = append([]UpstreamMove{}, s.dash.moves...)
	v.Storage, v.Machines = s.dashboardCounts(ctx)
	v.Fleet, v.FleetError = s.dashboardFleet(ctx)
	v.Rollouts = s.dashboardRollouts(ctx, v.Topology, s.dash.fleetRaw)
	patches, err := s.store.Patches(ctx, store.PatchFilter{Limit: dashboardPatches})
	if err != nil {
		s.log.LogAttrs(ctx, slog.LevelWarn, "dashboard: list patches", slog.String("error", err.Error()))
		return v
	}
	v.Patches = s.holders(ctx, v.Topology, patches)
	return v
}

// dashboardCounts counts this node's blobs and machines, at most every
// countsEvery: both walk a whole table or directory. Call with s.dash.mu
// held.
func (s *server) dashboardCounts(ctx context.Context) (DashboardStorage, DashboardMachines) {
	d := s.dash
	if !d.countsAt.IsZero() && s.now().Sub(d.countsAt) < countsEvery {
		return d.storage, d.machines
	}
	var st DashboardStorage
	if err := s.blobs.Enumerate(ctx, func(i blob.Info) error {
		st.Blobs++
		st.Bytes += i.Size
		return nil
	}); err != nil {
		st = DashboardStorage{Error: "could not list the blobs; see the node's log"}
		s.log.LogAttrs(ctx, slog.LevelWarn, "dashboard: list blobs", slog.String("error", err.Error()))
	}
	var mc DashboardMachines
	if ms, err := s.store.Machines(ctx, store.MachineFilter{Limit: dashboardMachines + 1}); err != nil {
		mc.Error = "could not count the machines; see the node's log"
		s.log.LogAttrs(ctx, slog.LevelWarn, "dashboard: count machines", slog.String("error", err.Error()))
	} else {
		mc.Count, mc.More = min(len(ms), dashboardMachines), len(ms) > dashboardMachines
	}
	d.storage, d.machines, d.countsAt = st, mc, s.now()
	return st, mc
}

// dashboardFleet totals the fleet reports of this node's subtree, at most
// every fleetEvery. Call with s.dash.mu held.
func (s *server) dashboardFleet(ctx context.Context) (*FleetSummary, string) {
	d := s.dash
	if !d.fleetAt.IsZero() && s.now().Sub(d.fleetAt) < fleetEvery {
		return d.fleet, d.fleetErr
	}
	d.fleet, d.fleetErr, d.fleetRaw = nil, "", nil
	if sum, err := s.fleetSummary(ctx, store.FleetFilter{}); err != nil {
		d.fleetErr = "could not read the fleet reports; see the node's log"
		s.log.LogAttrs(ctx, slog.LevelWarn, "dashboard: fleet summary", slog.String("error", err.Error()))
	} else {
		d.fleetRaw = sum.Totals
		sum.Totals = byTierDCState(sum.Totals)
		d.fleet = &sum
	}
	d.fleetAt = s.now()
	return d.fleet, d.fleetErr
}

// byTierDCState sums totals over kernels and patch versions, ordered by
// tier, data centre and state.
func byTierDCState(ts []FleetTotal) []FleetTotal {
	type key struct {
		tier, dc string
		state    catalog.MachineState
	}
	at := map[key]int{}
	out := []FleetTotal{}
	for _, t := range ts {
		k := key{t.Tier, t.DC, t.State}
		if i, ok := at[k]; ok {
			out[i].Machines += t.Machines
			continue
		}
		at[k] = len(out)
		out = append(out, FleetTotal{Tier: t.Tier, DC: t.DC, State: t.State, Machines: t.Machines})
	}
	slices.SortFunc(out, func(a, b FleetTotal) int {
		return cmp.Or(cmp.Compare(a.Tier, b.Tier), cmp.Compare(a.DC, b.DC), cmp.Compare(a.State, b.State))
	})
	return out
}

// holders asks every member of the view whether it holds each patch's
// blob: this node its own store, the others HEAD /v1/peer/blobs/{digest}
// at its peer listener, over mutual TLS. A node seen holding a blob is not asked again for
// heldFor, so a settled patch costs nothing.
func (s *server) holders(ctx context.Context, view topology.View, patches []catalog.Patch) []DashboardPatch {
	ctx, cancel := context.WithTimeout(ctx, holderBudget)
	defer cancel()
	out := make([]DashboardPatch, len(patches))
	type job struct{ p, n int }
	var jobs []job
	now := s.now()
	for i, p := range patches {
		out[i] = DashboardPatch{Patch: p, Holders: make([]Holder, len(view.Nodes))}
		for j, n := range view.Nodes {
			h := &out[i].Holders[j]
			h.Node, h.State = n.Name, holdUnknown
			h.Expected = n.State != topology.Left && (n.Role == "hub" || intersects(n.Tiers, p.Tiers))
			key := n.Name + " " + p.Digest
			if at, ok := s.dash.held[key]; ok && now.Sub(at) < heldFor {
				h.State = holdHeld
				continue
			}
			if n.Name == view.Self || n.State == topology.Alive && n.URL != "" && s.peer != nil {
				jobs = append(jobs, job{i, j})
			}
		}
	}
	work := make(chan job)
	var wg sync.WaitGroup
	for range min(holderWorkers, len(jobs)) {
		wg.Go(func() {
			for jb := range work {
				n := view.Nodes[jb.n]
				out[jb.p].Holders[jb.n].State = s.holds(ctx, n.Name == view.Self, n.URL, out[jb.p].Digest)
			}
		})
	}
	for _, jb := range jobs {
		work <- jb
	}
	close(work)
	wg.Wait()

	if s.dash.held == nil {
		s.dash.held = map[string]time.Time{}
	}
	for k, at := range s.dash.held {
		if now.Sub(at) >= heldFor {
			delete(s.dash.held, k)
		}
	}
	for i := range out {
		for _, h := range out[i].Holders {
			if h.State == holdHeld {
				if _, ok := s.dash.held[h.Node+" "+out[i].Digest]; !ok {
					s.dash.held[h.Node+" "+out[i].Digest] = now
				}
				if h.Expected {
					out[i].Held++
				}
			}
			if h.Expected {
				out[i].Expected++
			}
		}
	}
	return out
}

// holds says whether a node holds a blob: this node's store, or another
// node's answer to HEAD /v1/peer/blobs.
func (s *server) holds(ctx context.Context, self bool, baseURL, digest string) string {
	d, err := blob.ParseDigest(digest)
	if err != nil {
		return holdUnknown
	}
	if self {
		switch _, err := s.blobs.Stat(ctx, d); {
		case err == nil:
			return holdHeld
		case errors.Is(err, blob.ErrNotFound):
			return holdMissing
		}
		return holdUnknown
	}
	ctx, cancel := context.WithTimeout(ctx, holderTimeout)
	defer cancel()
	peerURL := s.peer.URL(baseURL)
	if peerURL == "" {
		return holdUnknown
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, peerURL+"/v1/peer/blobs/"+digest, nil)
	if err != nil {
		return holdUnknown
	}
	resp, err := s.peerClient.Do(req)
	if err != nil {
		return holdUnknown
	}
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		return holdHeld
	case http.StatusNotFound:
		return holdMissing
	}
	return holdUnknown
}

func intersects(a, b []string) bool {
	for _, x := range a {
		if slices.Contains(b, x) {
			return true
		}
	}
	return false
}
