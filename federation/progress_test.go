package federation

import (
	"errors"
	"net/url"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
)

func TestProgressKeepsTheNewestFigures(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	now := t0
	p := NewProgress(func() time.Time { return now })
	if _, ok := p.Get("edge-1"); ok {
		t.Fatal("an empty table knows edge-1")
	}
	p.Note("edge-1", NodeProgress{Head: 5, Synced: 4, Lag: 1, AsOf: t0})
	c := p.Changes()
	// An older word (a report that travelled longer than a feed request)
	// changes nothing.
	p.Note("edge-1", NodeProgress{Head: 3, AsOf: t0.Add(-time.Second)})
	if got, _ := p.Get("edge-1"); got.Head != 5 || p.Changes() != c {
		t.Errorf("after an older word: head %d, changes %d; want 5 and %d", got.Head, p.Changes(), c)
	}
	// Newer figures, the same: the time moves, the change count does not.
	p.Note("edge-1", NodeProgress{Head: 5, Synced: 4, Lag: 1, AsOf: t0.Add(time.Second)})
	if got, _ := p.Get("edge-1"); !got.AsOf.Equal(t0.Add(time.Second)) || p.Changes() != c {
		t.Errorf("same figures, newer: as of %v, changes %d; want %v and %d", got.AsOf, p.Changes(), t0.Add(time.Second), c)
	}
	p.Note("edge-1", NodeProgress{Head: 6, Synced: 5, AsOf: t0.Add(2 * time.Second)})
	if got, _ := p.Get("edge-1"); got.Head != 6 || got.Lag != 0 || p.Changes() != c+1 {
		t.Errorf("new figures: %+v, changes %d; want head 6, lag 0 and %d", got, p.Changes(), c+1)
	}
	// Past progressKeep without news, a node's figures are not shown.
	now = t0.Add(2*time.Second + progressKeep + time.Second)
	if got, ok := p.Get("edge-1"); ok {
		t.Errorf("figures an hour old: got %+v, want none", got)
	}
}

func TestProgressTableIsBounded(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	p := NewProgress(func() time.Time { return t0.Add(time.Hour) })
	for i := range maxProgressNodes + 10 {
		p.Note("n-"+string(rune('a'+i%26))+time.Duration(i).String(), NodeProgress{Head: int64(i), AsOf: t0.Add(time.Duration(i) * time.Millisecond)})
	}
	p.mu.Lock()
	n := len(p.nodes)
	p.mu.Unlock()
	if n > maxProgressNodes {
		t.Errorf("%d nodes held, want at most %d", n, maxProgressNodes)
	}
	if _, ok := p.Get("n-a0s"); ok {
		t.Error("the oldest node is still held in a full table")
	}
}

func TestProgressQueryRoundTrip(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	q := url.Values{"after": {"7"}}
	ProgressQuery(q, "edge-1", NodeProgress{Head: 12, Synced: 11, Lag: 2})
	node, p, ok, err := ParseProgressQuery(q, now)
	if err != nil || !ok || node != "edge-1" || p != (NodeProgress{Head: 12, Synced: 11, Lag: 2, AsOf: now}) {
		t.Fatalf("round trip: %q %+v %v %v", node, p, ok, err)
	}
	if _, _, ok, err := ParseProgressQuery(url.Values{"after": {"7"}}, now); ok || err != nil {
		t.Errorf("an older downstream's request: ok %v, err %v; want neither", ok, err)
	}
	for name, q := range map[string]url.Values{
		"bad name":        {"node": {"Edge 1!"}, "node_head": {"1"}, "node_synced": {"1"}, "node_lag": {"0"}},
		"missing figures": {"node": {"edge-1"}},
		"negative lag":    {"node": {"edge-1"}, "node_head": {"1"}, "node_synced": {"1"}, "node_lag": {"-1"}},
		"not a number":    {"node": {"edge-1"}, "node_head": {"x"}, "node_synced": {"1"}, "node_lag": {"0"}},
	} {
		var inv *catalog.InvalidError
		if _, _, _, err := ParseProgressQuery(q, now); !errors.As(err, &inv) {
			t.Errorf("%s: got %v, want an InvalidError", name, err)
		}
	}
}

func TestReportProgressIsValidated(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	push := func(p NodeProgress) ReportPush {
		return ReportPush{V: FormatVersion, Node: "relay-a", Tier: "edge", Seq: 1,
			Entries: []ReportEntry{{Node: "edge-1", DC: "dc-a", AsOf: now, Progress: &p}}}
	}
	if err := push(NodeProgress{Head: 3, Synced: 3, AsOf: now}).Validate(now); err != nil {
		t.Errorf("good progress: %v", err)
	}
	for name, p := range map[string]NodeProgress{
		"negative head": {Head: -1, AsOf: now},
		"no time":       {Head: 1},
		"in the future": {Head: 1, AsOf: now.Add(MaxClockSkew + time.Minute)},
	} {
		var inv *catalog.InvalidError
		if err := push(p).Validate(now); !errors.As(err, &inv) {
			t.Errorf("%s: got %v, want an InvalidError", name, err)
		}
	}
}
