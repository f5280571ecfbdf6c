package main

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// spec is one node of the simulated mesh.
type spec struct {
	Name  string
	Role  string // hub, relay, edge
	Level int    // 0 for the hub
	DC    string
	// Upstreams are indexes into the shape, the first the node's parent;
	// none for the hub.
	Upstreams []int
}

// shape is a mesh as a list of nodes, parents before children.
type shape []spec

// treeShape builds a tree from the node count of each level, e.g.
// 1,10,100,889: the hub, then each level's nodes spread round-robin over
// the level above. The last level are edges, the levels between relays.
// Every node below level 1 also lists its parent's next sibling (the next
// node under the same grandparent) as a second upstream, so that a killed
// relay's children have somewhere to fail over to. A level-1 node and
// everything under it form one data centre.
func treeShape(counts []int) (shape, error) {
	if len(counts) < 2 || counts[0] != 1 {
		return nil, fmt.Errorf("shape: want 1,<level 1>[,<level 2>…], got %v", counts)
	}
	var s shape
	s = append(s, spec{Name: "hub", Role: "hub", DC: "dc-hub"})
	prev := []int{0}             // indexes of the level above
	region := map[int]int{0: -1} // node index -> its level-1 ancestor's number
	parentOf := map[int]int{}
	childrenOf := map[int][]int{}
	for level := 1; level < len(counts); level++ {
		if counts[level] < 1 {
			return nil, fmt.Errorf("shape: level %d has %d nodes", level, counts[level])
		}
		role := "relay"
		if level == len(counts)-1 {
			role = "edge"
		}
		var cur []int
		for k := range counts[level] {
			parent := prev[k%len(prev)]
			i := len(s)
			reg := region[parent]
			if level == 1 {
				reg = k
			}
			region[i] = reg
			parentOf[i] = parent
			childrenOf[parent] = append(childrenOf[parent], i)
			s = append(s, spec{
				Name: fmt.Sprintf("l%d-%04d", level, k), Role: role, Level: level,
				DC: fmt.Sprintf("dc-%03d", reg), Upstreams: []int{parent},
			})
			cur = append(cur, i)
		}
		prev = cur
	}
	// Second upstreams, once every level is known.
	for i := range s {
		if s[i].Level < 2 {
			continue
		}
		p := parentOf[i]
		sibs := childrenOf[parentOf[p]]
		if len(sibs) < 2 {
			continue
		}
		for j, q := range sibs {
			if q == p {
				s[i].Upstreams = append(s[i].Upstreams, sibs[(j+1)%len(sibs)])
				break
			}
		}
	}
	return s, nil
}

// parseCounts reads "1,10,100,889".
func parseCounts(v string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(v, ",") {
		k, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return nil, fmt.Errorf("shape %q: %w", v, err)
		}
		out = append(out, k)
	}
	return out, nil
}

// fileShape reads a shape file: one node a line, "name role dc
// [upstream[,upstream…]]", upstreams by name and listed before the node;
// the first line is the hub. Blank lines and lines from # on are skipped.
func fileShape(r io.Reader) (shape, error) {
	var s shape
	index := map[string]int{}
	sc := bufio.NewScanner(r)
	line := 0
	for sc.Scan() {
		line++
		text, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(text)
		if len(f) == 0 {
			continue
		}
		if len(f) < 3 || len(f) > 4 {
			return nil, fmt.Errorf("shape file line %d: want name role dc [upstreams], got %q", line, sc.Text())
		}
		sp := spec{Name: f[0], Role: f[1], DC: f[2]}
		if _, dup := index[sp.Name]; dup {
			return nil, fmt.Errorf("shape file line %d: node %s twice", line, sp.Name)
		}
		switch {
		case len(s) == 0 && (sp.Role != "hub" || len(f) == 4):
			return nil, fmt.Errorf("shape file line %d: the first node is the hub, without upstreams", line)
		case len(s) > 0 && (sp.Role != "relay" && sp.Role != "edge" || len(f) == 3):
			return nil, fmt.Errorf("shape file line %d: want a relay or edge with upstreams", line)
		}
		if len(f) == 4 {
			for u := range strings.SplitSeq(f[3], ",") {
				k, ok := index[u]
				if !ok {
					return nil, fmt.Errorf("shape file line %d: upstream %s not listed before", line, u)
				}
				sp.Upstreams = append(sp.Upstreams, k)
				sp.Level = max(sp.Level, s[k].Level+1)
			}
		}
		index[sp.Name] = len(s)
		s = append(s, sp)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(s) == 0 {
		return nil, fmt.Errorf("shape file: no node")
	}
	return s, nil
}

// children lists the nodes whose first upstream is i.
func (s shape) children(i int) []int {
	var out []int
	for j, sp := range s {
		if len(sp.Upstreams) > 0 && sp.Upstreams[0] == i {
			out = append(out, j)
		}
	}
	return out
}

// subtree lists every node below i by first upstreams, i excluded.
func (s shape) subtree(i int) []int {
	var out []int
	for _, c := range s.children(i) {
		out = append(out, c)
		out = append(out, s.subtree(c)...)
	}
	return out
}
