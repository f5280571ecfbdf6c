package api

import (
	"time"

	"github.com/patchmesh/patchmesh/topology"
)

// What the dashboard learns by watching the gossip view over time, rather
// than from one view: how long each downstream has been behind, and which
// downstreams moved to another upstream (a failover, or the move back).

// Watch bounds.
const (
	// maxMoves is how many upstream moves the view keeps, newest first;
	// movesFor how long it keeps one.
	maxMoves = 20
	movesFor = time.Hour
	// watchEvery is how often a node with gossip watches its view, so that
	// moves and lag are seen whether or not a page is open.
	watchEvery = time.Second
	// watchAnyway is how often the watch looks even when the viewer says
	// nothing changed, so that old moves still age out.
	watchAnyway = 30 * time.Second
	// watchBusy is how often the watch looks at most while changes keep
	// coming: a change after a quiet spell is seen within watchEvery, but
	// a mesh in churn (members suspected and refuted every second) had
	// every node build its view every second, 5.6 % of the CPU of a
	// 1,000-node simulation (bench/RESULTS.md, issue 15).
	watchBusy = 5 * time.Second
)

// ChangeCounter is a TopologyViewer that counts the changes of its view.
// The watch then builds a view only when the count moved: a mesh of n
// nodes has each build one of n members every second otherwise, n² work
// across the mesh while nothing happens (bench/RESULTS.md, issue 15).
type ChangeCounter interface {
	Changes() uint64
}

// UpstreamMove is a downstream seen pulling from another upstream than
// before: From and To are the upstream URLs it advertised, FromNode and
// ToNode the members advertising them then ("" if none).
type UpstreamMove struct {
	Node     string    `json:"node"`
	From     string    `json:"from"`
	To       string    `json:"to"`
	FromNode string    `json:"from_node"`
	ToNode   string    `json:"to_node"`
	At       time.Time `json:"at"`
}

// memberWatch is what the node remembers of one member between views.
type memberWatch struct {
	upstream string
	// behindSince is when the member was first seen with a non-zero lag;
	// zero while it is caught up.
	behindSince time.Time
}

// watch runs while the node does, observing its gossip view every
// watchEvery when it changed (but not again within watchBusy), and every
// watchAnyway regardless. Without gossip there is nothing to watch.
func (s *server) watch(stopping <-chan struct{}) {
	t := time.NewTicker(watchEvery)
	defer t.Stop()
	cc, counted := s.topo.(ChangeCounter)
	var seen uint64
	var lastAt time.Time
	for {
		select {
		case <-stopping:
			return
		case <-t.C:
			if counted {
				k := cc.Changes()
				if !lookAgain(k != seen, time.Since(lastAt)) {
					continue
				}
				seen, lastAt = k, time.Now()
			}
			v := s.topologyView()
			s.dash.mu.Lock()
			s.dash.observe(v, s.now())
			s.dash.mu.Unlock()
		}
	}
}

// lookAgain says whether the watch builds a view now, the view having
// changed or not since the last look, which was since ago.
func lookAgain(changed bool, since time.Duration) bool {
	if changed {
		return since >= watchBusy
	}
	return since >= watchAnyway
}

// observe records what changed since the last view. Call with d.mu held.
func (d *dashState) observe(v topology.View, now time.Time) {
	if d.members == nil {
		d.members = map[string]*memberWatch{}
	}
	byURL := map[string]string{}
	for _, n := range v.Nodes {
		if n.URL != "" && (byURL[n.URL] == "" || n.State == topology.Alive) {
			byURL[n.URL] = n.Name
		}
	}
	seen := map[string]bool{}
	for _, n := range v.Nodes {
		seen[n.Name] = true
		w, ok := d.members[n.Name]
		if !ok {
			w = &memberWatch{upstream: n.Upstream}
			d.members[n.Name] = w
		}
		if n.Upstream != w.upstream && n.Upstream != "" && w.upstream != "" {
			d.moves = append([]UpstreamMove{{
				Node: n.Name, From: w.upstream, To: n.Upstream,
				FromNode: byURL[w.upstream], ToNode: byURL[n.Upstream], At: now.UTC(),
			}}, d.moves...)
		}
		if n.Upstream != "" {
			w.upstream = n.Upstream
		}
		switch {
		case n.ProgressAsOf.IsZero():
			// Not known here (progress travels up the sync links): no
			// word either way.
		case n.Lag == 0:
			w.behindSince = time.Time{}
		case w.behindSince.IsZero():
			w.behindSince = now
		}
	}
	for name := range d.members {
		if !seen[name] {
			delete(d.members, name)
		}
	}
	keep := d.moves[:0]
	for _, m := range d.moves {
		if now.Sub(m.At) < movesFor && len(keep) < maxMoves {
			keep = append(keep, m)
		}
	}
	d.moves = keep
}

// linkLag gives each downstream's lag in seconds: this node's own from its
// sync loop (the age of the oldest record it has not applied), others' as
// how long this node has seen them report a non-zero lag; none for a
// downstream whose progress this node does not know. Call with d.mu held,
// after observe.
func (d *dashState) linkLag(v topology.View, ownLag float64, now time.Time) map[string]float64 {
	out := map[string]float64{}
	known := make(map[string]bool, len(v.Nodes))
	for _, n := range v.Nodes {
		known[n.Name] = !n.ProgressAsOf.IsZero()
	}
	for _, l := range v.Links {
		switch {
		case l.To == v.Self:
			out[l.To] = ownLag
		case !known[l.To]:
		case l.LagEvents == 0:
			out[l.To] = 0
		default:
			if w := d.members[l.To]; w != nil && !w.behindSince.IsZero() {
				out[l.To] = now.Sub(w.behindSince).Seconds()
			}
		}
	}
	return out
}
