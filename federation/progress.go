package federation

import (
	"fmt"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
)

// Sync progress travels on the sync links, not in gossip. Every node's head
// moves with every patch; gossiped, each move was handled by every member
// of the node's pools, half the CPU a 300-node mesh spent on a patch
// (bench/RESULTS.md, "Propagation's CPU"). Instead a downstream names
// itself and its figures on each feed request (ProgressQuery), so its
// upstream knows them within a round, and fleet reports carry each node's
// figures up the links (ReportEntry.Progress), so every node knows its
// subtree's and the hub the mesh's, as of the report. Figures are a
// downstream's word, for the dashboard and `admin topology`; nothing
// decides on them.

// NodeProgress is a node's sync position as of a time.
type NodeProgress struct {
	// Head is the node's change-log head seq.
	Head int64 `json:"head"`
	// Synced is the sum over its links of the hub seq applied (0 on the
	// hub); Lag the hub records its links know of and have not applied.
	Synced int64 `json:"synced"`
	Lag    int64 `json:"lag"`
	// AsOf is when the node's figures were taken, by its clock.
	AsOf time.Time `json:"as_of"`
}

// Validate checks figures a downstream sent.
func (p NodeProgress) Validate(field string, now time.Time) error {
	if p.Head < 0 || p.Synced < 0 || p.Lag < 0 {
		return &catalog.InvalidError{Field: field, Message: "head, synced and lag must be non-negative"}
	}
	if p.AsOf.IsZero() || p.AsOf.After(now.Add(MaxClockSkew)) {
		return &catalog.InvalidError{Field: field + ".as_of", Message: "must be set and not in the future"}
	}
	return nil
}

// Feed request parameters a downstream sends its progress in.
const (
	queryNode   = "node"
	queryHead   = "node_head"
	querySynced = "node_synced"
	queryLag    = "node_lag"
)

// ProgressQuery adds node's figures to a feed request's query.
func ProgressQuery(q url.Values, node string, p NodeProgress) {
	q.Set(queryNode, node)
	q.Set(queryHead, strconv.FormatInt(p.Head, 10))
	q.Set(querySynced, strconv.FormatInt(p.Synced, 10))
	q.Set(queryLag, strconv.FormatInt(p.Lag, 10))
}

// ParseProgressQuery reads what ProgressQuery wrote, as of now; ok is
// false for a request that names no node (an older downstream). A node
// named with missing or bad figures is an *catalog.InvalidError.
func ParseProgressQuery(q url.Values, now time.Time) (node string, p NodeProgress, ok bool, err error) {
	node = q.Get(queryNode)
	if node == "" {
		return "", NodeProgress{}, false, nil
	}
	if err := catalog.ValidNodeName(queryNode, node); err != nil {
		return "", NodeProgress{}, false, err
	}
	for _, f := range []struct {
		name string
		to   *int64
	}{{queryHead, &p.Head}, {querySynced, &p.Synced}, {queryLag, &p.Lag}} {
		n, err := strconv.ParseInt(q.Get(f.name), 10, 64)
		if err != nil || n < 0 {
			return "", NodeProgress{}, false, &catalog.InvalidError{Field: f.name,
				Message: fmt.Sprintf("must be a non-negative integer with %s", queryNode)}
		}
		*f.to = n
	}
	p.AsOf = now
	return node, p, true, nil
}

// Progress bounds.
const (
	// maxProgressNodes bounds the nodes a Progress table holds, as
	// MaxReportEntries bounds a push's; past it the oldest figures go.
	maxProgressNodes = 4 * MaxReportEntries
	// progressKeep is how long a node's figures are kept without news:
	// a node gone for that long is not shown with its last position.
	progressKeep = time.Hour
)

// Progress is what a node knows of other nodes' sync positions: its
// downstreams' from their feed requests, deeper ones from fleet reports.
// The newest figures of a node win. It is safe for concurrent use.
type Progress struct {
	now     func() time.Time
	mu      sync.Mutex
	nodes   map[string]NodeProgress
	changes atomic.Uint64
}

// NewProgress returns an empty table on clock now (nil: time.Now).
func NewProgress(now func() time.Time) *Progress {
	if now == nil {
		now = time.Now
	}
	return &Progress{now: now, nodes: map[string]NodeProgress{}}
}

// Note keeps p as node's figures unless newer ones are known. Changes
// moves when the figures do, not when only their time does.
func (t *Progress) Note(node string, p NodeProgress) {
	t.mu.Lock()
	defer t.mu.Unlock()
	old, ok := t.nodes[node]
	if ok && !p.AsOf.After(old.AsOf) {
		return
	}
	if !ok && len(t.nodes) >= maxProgressNodes {
		t.pruneLocked()
	}
	t.nodes[node] = p
	if !ok || old.Head != p.Head || old.Synced != p.Synced || old.Lag != p.Lag {
		t.changes.Add(1)
	}
}

// pruneLocked forgets figures older than progressKeep and, if the table is
// still full, the oldest. Call with t.mu held.
func (t *Progress) pruneLocked() {
	var oldest string
	for n, p := range t.nodes {
		if t.now().Sub(p.AsOf) > progressKeep {
			delete(t.nodes, n)
			continue
		}
		if oldest == "" || p.AsOf.Before(t.nodes[oldest].AsOf) {
			oldest = n
		}
	}
	if len(t.nodes) >= maxProgressNodes {
		delete(t.nodes, oldest)
	}
}

// Get returns node's newest figures, if they are younger than progressKeep.
func (t *Progress) Get(node string) (NodeProgress, bool) {
	t.mu.Lock()
	p, ok := t.nodes[node]
	t.mu.Unlock()
	if !ok || t.now().Sub(p.AsOf) > progressKeep {
		return NodeProgress{}, false
	}
	return p, true
}

// Changes counts the changes of figures Note took, for watchers that look
// again only when something moved.
func (t *Progress) Changes() uint64 { return t.changes.Load() }
