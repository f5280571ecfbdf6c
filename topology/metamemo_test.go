package topology

import (
	"fmt"
	"io"
	"log/slog"
	"testing"

	"github.com/hashicorp/memberlist"
)

// testMetaCheck is the AliveDelegate and MergeDelegate of a pool, alone.
func testMetaCheck() metaCheck {
	return metaCheck{&pool{t: &Topology{name: "self"}, rejects: newRejectLog(slog.New(slog.NewTextHandler(io.Discard, nil)))}}
}

func encodedMeta(t testing.TB, m Meta) []byte {
	t.Helper()
	b, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A remembered pass answers only for the very bytes that passed: a member
// whose meta turns bad is refused, and counted, every time it is heard.
func TestMetaMemoRemembersOnlyPasses(t *testing.T) {
	c := testMetaCheck()
	good := encodedMeta(t, Meta{Name: "edge-1", Role: "edge", API: "https://edge-1.example:8443"})
	bad := encodedMeta(t, Meta{Name: "edge-1", Role: "edge", API: "ftp://edge-1.example"})
	other := encodedMeta(t, Meta{Name: "edge-2", Role: "edge", API: "https://edge-2.example:8443"})
	steps := []struct {
		name    string
		node    string
		meta    []byte
		refused bool
	}{
		{"first pass", "edge-1", good, false},
		{"the same bytes again", "edge-1", good, false},
		{"bad meta under a name that passed", "edge-1", bad, true},
		{"the bad meta again", "edge-1", bad, true},
		{"good again", "edge-1", good, false},
		{"a pass under one name is not another's", "edge-3", good, true}, // names edge-1
		{"another member", "edge-2", other, false},
	}
	for _, s := range steps {
		err := c.NotifyAlive(&memberlist.Node{Name: s.node, Meta: s.meta})
		if (err != nil) != s.refused {
			t.Fatalf("%s: want refused=%v, got %v", s.name, s.refused, err)
		}
	}
	if got := c.p.rejects.counts()[EventMetaFail]; got != 3 {
		t.Fatalf("want 3 refusals counted, got %d", got)
	}
	// A push/pull carrying one refused member is refused whole, remembered
	// passes or not.
	err := c.NotifyMerge([]*memberlist.Node{{Name: "edge-1", Meta: good}, {Name: "edge-2", Meta: other}, {Name: "edge-1", Meta: bad}})
	if err == nil {
		t.Fatal("a push/pull with a bad member passed")
	}
}

// The memo is bounded: names made up by a peer cannot grow it past
// metaMemoMax.
func TestMetaMemoIsBounded(t *testing.T) {
	c := testMetaCheck()
	for i := range metaMemoMax + 10 {
		name := fmt.Sprintf("n-%05d", i)
		if err := c.NotifyAlive(&memberlist.Node{Name: name, Meta: encodedMeta(t, Meta{Name: name})}); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(c.p.metaOK.ok); n > metaMemoMax {
		t.Fatalf("memo holds %d names, bound %d", n, metaMemoMax)
	}
}

// BenchmarkMetaCheckPushPull is one push/pull of a 34-member pool whose
// meta did not change since the last: what memberlist's MergeDelegate
// costs a node every push/pull interval, per peer.
func BenchmarkMetaCheckPushPull(b *testing.B) {
	peers := make([]*memberlist.Node, 34)
	for i := range peers {
		name := fmt.Sprintf("l3-%04d", i)
		peers[i] = &memberlist.Node{Name: name, Meta: encodedMeta(b, Meta{Name: name, Role: "edge", DC: "dc-001",
			API: fmt.Sprintf("http://127.89.0.%d:8080", i+1), Upstream: "http://127.89.0.200:8080",
			Peer: fmt.Sprintf("https://127.89.0.%d:8444", i+1), Tiers: []string{"stable"}})}
	}
	c := testMetaCheck()
	b.ReportAllocs()
	for b.Loop() {
		if err := c.NotifyMerge(peers); err != nil {
			b.Fatal(err)
		}
	}
}
