package main

// Mesh commands: `patchmesh admin topology` draws the mesh as a node's
// gossip sees it; `patchmesh gossip-key` makes a key for the gossip
// keyring, with no server involved.

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/patchmesh/patchmesh/topology"
)

func (a *admin) topology(ctx context.Context, args []string) error {
	api, _, err := a.prepare(ctx, "topology", args)
	if err != nil {
		return err
	}
	raw, err := api.call(ctx, http.MethodGet, "/v1/topology", nil, nil)
	if err != nil {
		return err
	}
	return a.show(raw, nil, func() error {
		var v topology.View
		if err := decode(raw, &v); err != nil {
			return err
		}
		return renderTopology(a.stdout, v, a.now())
	})
}

// renderTopology draws the mesh as trees, one from each root (a node with
// no upstream: normally the hub), children sorted by name. Nodes no root
// reaches, because their upstream is no known member or because upstreams
// form a cycle, follow in a table of their own that says why: a broken
// chain is what an operator looking at the mesh needs to see first.
//
// A node in gossip pools knows only its pools' members, so a pooled view
// says so first and shows each member's pools: the hub of a mesh with a
// pool per region sees the backbone only, and its regions are not missing.
func renderTopology(w io.Writer, v topology.View, now time.Time) error {
	if len(v.Nodes) == 0 {
		_, err := fmt.Fprintln(w, "No member known.")
		return err
	}
	t := newTopologyTree(v, now)
	header := []string{"NODE", "ROLE", "DC", "STATE", "SYNC"}
	if t.pooled {
		header = append(header, "POOLS")
		if len(v.Pools) > 0 {
			in := "pool"
			if len(v.Pools) > 1 {
				in = "pools"
			}
			fmt.Fprintf(w, "%s gossips in %s %s: members of other pools are not in this view (ask a node of that pool).\n\n",
				v.Self, in, strings.Join(v.Pools, ", "))
		}
	}
	var rows [][]string
	for _, n := range v.Nodes {
		if n.Upstream == "" {
			rows = t.draw(rows, n.Name, "", "", "")
		}
	}
	var lost [][]string
	// First the subtrees hanging from an unknown upstream, then whatever is
	// left, which can only be upstream cycles.
	for _, n := range v.Nodes {
		if l, ok := t.up[n.Name]; ok && l.From == "" && !t.seen[n.Name] {
			lost = t.draw(lost, n.Name, "", "", t.unknownUpstream(l.FromURL))
		}
	}
	for _, n := range v.Nodes {
		if !t.seen[n.Name] {
			lost = t.draw(lost, n.Name, "", "", "in an upstream cycle")
		}
	}
	if len(rows) > 0 {
		if err := table(w, header, rows); err != nil {
			return err
		}
	}
	if len(lost) == 0 {
		return nil
	}
	if len(rows) > 0 {
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w, "Not reachable from a node without upstream:")
	return table(w, append(header, "WHY"), lost)
}

// unknownUpstream says why a node whose upstream is no member of the view
// is drawn apart. In a pooled view that is the rule for a region's top
// relay seen from its region, whose upstream gossips in the backbone only,
// so the reason names the pools rather than suggesting the upstream is gone.
func (t *topologyTree) unknownUpstream(url string) string {
	if t.pooled {
		return "upstream " + url + " is in none of this node's pools"
	}
	return "upstream " + url + " is no known member"
}

// pooledView says whether v comes from gossip split into pools: more than
// one pool, or any pool but the default. A single default pool is drawn as
// before pools existed.
func pooledView(v topology.View) bool {
	if len(v.Pools) > 1 {
		return true
	}
	notDefault := func(p string) bool { return p != topology.DefaultPool }
	if slices.ContainsFunc(v.Pools, notDefault) {
		return true
	}
	for _, n := range v.Nodes {
		if slices.ContainsFunc(n.Pools, notDefault) {
			return true
		}
	}
	return false
}

// topologyTree indexes a View for drawing.
type topologyTree struct {
	now      time.Time
	pooled   bool // a POOLS column; see pooledView
	nodes    map[string]topology.ViewNode
	up       map[string]topology.ViewLink // by downstream
	children map[string][]string          // by upstream, sorted
	seen     map[string]bool              // drawn already
}

func newTopologyTree(v topology.View, now time.Time) *topologyTree {
	t := &topologyTree{
		now:      now,
		pooled:   pooledView(v),
		nodes:    make(map[string]topology.ViewNode, len(v.Nodes)),
		up:       make(map[string]topology.ViewLink, len(v.Links)),
		children: make(map[string][]string),
		seen:     make(map[string]bool, len(v.Nodes)),
	}
	for _, n := range v.Nodes {
		t.nodes[n.Name] = n
	}
	for _, l := range v.Links {
		if _, ok := t.nodes[l.To]; !ok {
			continue // a link to a node the view does not list draws nothing
		}
		t.up[l.To] = l
		if l.From != "" {
			t.children[l.From] = append(t.children[l.From], l.To)
		}
	}
	for _, c := range t.children {
		slices.Sort(c)
	}
	return t
}

// draw appends name's row and those of its subtree. branch is the
// connector before name ("├── ", "└── ", "" for a root), indent what comes
// before the connectors of its children; why, if set, fills a last column.
// A node is drawn once, so a cycle ends where it closes.
func (t *topologyTree) draw(rows [][]string, name, indent, branch, why string) [][]string {
	t.seen[name] = true
	n := t.nodes[name]
	row := []string{indent + branch + n.Name, orDash(n.Role), orDash(n.DC), t.state(n), t.progress(n)}
	if t.pooled {
		row = append(row, orDash(strings.Join(n.Pools, ",")))
	}
	if why != "" {
		row = append(row, why)
	}
	rows = append(rows, row)
	switch branch {
	case "├── ":
		indent += "│   "
	case "└── ":
		indent += "    "
	}
	var todo []string
	for _, c := range t.children[name] {
		if !t.seen[c] {
			todo = append(todo, c)
		}
	}
	for i, c := range todo {
		b := "├── "
		if i == len(todo)-1 {
			b = "└── "
		}
		var cwhy string
		if why != "" {
			cwhy = "below " + name
		}
		rows = t.draw(rows, c, indent, b, cwhy)
	}
	return rows
}

// state is the health, with since when unless alive.
func (t *topologyTree) state(n topology.ViewNode) string {
	if n.State == topology.Alive || n.Since.IsZero() {
		return orDash(n.State)
	}
	return n.State + " (since " + t.when(n.Since) + ")"
}

// when shows a time of today (UTC) as its clock time, others in full.
func (t *topologyTree) when(at time.Time) string {
	at, now := at.UTC(), t.now.UTC()
	if at.YearDay() == now.YearDay() && at.Year() == now.Year() {
		return at.Format(time.TimeOnly)
	}
	return fmtTime(at)
}

// progress is the hub's log head, or a downstream's lag behind the hub,
// with its age where the figures are older than a few seconds. Dead and
// departed nodes show none: their last report is stale. A node whose
// progress the asked node does not know (not below it) shows "lag ?":
// progress travels up the sync links, not through gossip.
func (t *topologyTree) progress(n topology.ViewNode) string {
	var s string
	switch {
	case n.State == topology.Dead || n.State == topology.Left:
		return "-"
	case n.ProgressAsOf.IsZero() && n.Upstream == "":
		return "head ?"
	case n.ProgressAsOf.IsZero():
		return "lag ?"
	case n.Upstream == "":
		s = fmt.Sprintf("head %d", n.Head)
	default:
		s = fmt.Sprintf("lag %d", n.Lag)
	}
	if age := t.now.Sub(n.ProgressAsOf); age >= progressFresh {
		s += fmt.Sprintf(" (%s ago)", age.Truncate(time.Second))
	}
	return s
}

// progressFresh is the age under which a node's progress is shown without
// one: a downstream's feed requests keep its upstream's figures that fresh,
// a fleet report is up to a report interval or more older.
const progressFresh = 5 * time.Second

const gossipKeyUsage = `Usage: patchmesh gossip-key

Prints a new random gossip encryption key: 32 bytes (AES-256), base64. Put
it in every node's gossip.keys (or PATCHMESH_GOSSIP_KEYS), or one per line
in the file gossip.keyring_file names. The first key encrypts, every key
decrypts.

To rotate: add the new key after the old one on every node, then put it
first on every node, then remove the old one; restart each node after each
step. Nodes that share no key cannot gossip with each other.

Exit codes: 0 success, 1 no randomness available, 2 usage.
`

// runGossipKey is `patchmesh gossip-key`.
func runGossipKey(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("patchmesh gossip-key")
	err := func() error {
		pos, err := parseArgs(fs, args)
		if err != nil {
			return err
		}
		if err := wantArgs("patchmesh gossip-key", pos); err != nil {
			return err
		}
		k, err := topology.NewKey()
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(stdout, base64.StdEncoding.EncodeToString(k))
		return err
	}()
	return finish("patchmesh gossip-key", gossipKeyUsage, err, stdout, stderr)
}
