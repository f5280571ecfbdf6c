package topology

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestViewOfLinksEachDownstreamToItsUpstream(t *testing.T) {
	t0 := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	lags := map[string]int64{}
	member := func(name, role, api, up, state string, lag int64) Member {
		lags[name] = lag
		return Member{Meta: Meta{Name: name, Role: role, DC: "dc-a", API: api, Upstream: up, Tiers: []string{"stable"}},
			Addr: "127.0.0.1:7946", State: state, Since: t0}
	}
	hub := member("hub-1", "hub", "https://hub.example", "", Alive, 0)
	relay := member("region-a", "relay", "https://region-a.example/", "https://hub.example/", Alive, 0)
	edge := member("edge-a1", "edge", "https://edge-a1.example", "https://region-a.example", Alive, 2)
	edge.Pools = []string{"region-a"}
	deadEdge := member("edge-a2", "edge", "https://edge-a2.example", "https://region-a.example", Dead, 5)
	orphan := member("edge-x", "edge", "https://edge-x.example", "https://gone.example", Alive, 9)
	// A node that came back under a new name at region-a's URL: the old,
	// dead record must not take its links.
	ghost := member("region-a-old", "relay", "https://region-a.example", "https://hub.example", Dead, 0)
	// An edge with two links, each to its own upstream: a link for each.
	twoLinks := member("edge-a3", "edge", "https://edge-a3.example", "https://region-a.example", Alive, 1)
	twoLinks.Upstreams = map[string]string{"stable": "https://region-a.example", "beta": "https://hub.example/"}

	v := ViewOf("region-a", []Member{orphan, edge, ghost, relay, hub, deadEdge, twoLinks})
	// This node knows the progress of every member but edge-x: a link's
	// lag is its downstream's, and an unknown one is 0, as of no time.
	asOf := t0.Add(-time.Minute)
	v.SetProgress(func(name string) (Progress, bool) {
		if name == "edge-x" {
			return Progress{}, false
		}
		return Progress{Head: 100, Synced: 90, Lag: lags[name], AsOf: asOf}, true
	})

	if v.Self != "region-a" {
		t.Errorf("self = %q, want region-a", v.Self)
	}
	var names []string
	for _, n := range v.Nodes {
		names = append(names, n.Name)
	}
	if want := []string{"edge-a1", "edge-a2", "edge-a3", "edge-x", "hub-1", "region-a", "region-a-old"}; !reflect.DeepEqual(names, want) {
		t.Errorf("nodes %v, want every member sorted by name %v", names, want)
	}
	want := []ViewLink{
		{From: "region-a", To: "edge-a1", FromURL: "https://region-a.example", LagEvents: 2, Healthy: true},
		{From: "region-a", To: "edge-a2", FromURL: "https://region-a.example", LagEvents: 5, Healthy: false},
		{From: "hub-1", To: "edge-a3", FromURL: "https://hub.example/", LagEvents: 1, Healthy: true},
		{From: "region-a", To: "edge-a3", FromURL: "https://region-a.example", LagEvents: 1, Healthy: true},
		{From: "", To: "edge-x", FromURL: "https://gone.example", LagEvents: 0, Healthy: false},
		{From: "hub-1", To: "region-a", FromURL: "https://hub.example/", LagEvents: 0, Healthy: true},
		{From: "hub-1", To: "region-a-old", FromURL: "https://hub.example", LagEvents: 0, Healthy: false},
	}
	if !reflect.DeepEqual(v.Links, want) {
		t.Errorf("links:\n got %+v\nwant %+v", v.Links, want)
	}
	wantNode := ViewNode{Name: "edge-a1", Role: "edge", DC: "dc-a", URL: "https://edge-a1.example", Upstream: "https://region-a.example",
		Upstreams: map[string]string{"stable": "https://region-a.example"}, State: Alive, Since: t0, Head: 100, Synced: 90, Lag: 2, ProgressAsOf: asOf, Tiers: []string{"stable"}, Addr: "127.0.0.1:7946",
		Pools: []string{"region-a"}}
	if !reflect.DeepEqual(v.Nodes[0], wantNode) {
		t.Errorf("node edge-a1 = %+v, want %+v", v.Nodes[0], wantNode)
	}
	if x := v.Nodes[3]; x.Name != "edge-x" || x.Head != 0 || x.Lag != 0 || !x.ProgressAsOf.IsZero() {
		t.Errorf("node edge-x, progress unknown: got %+v, want no figures and no progress_as_of", x)
	}
	b, err := json.Marshal(v.Nodes[3])
	if err != nil || strings.Contains(string(b), "progress_as_of") {
		t.Errorf("edge-x on the wire: %s, %v; want no progress_as_of", b, err)
	}
}

func TestViewOfCopiesWhatItIsGiven(t *testing.T) {
	ms := []Member{{Meta: Meta{Name: "b", Tiers: []string{"stable"}}, State: Alive}, {Meta: Meta{Name: "a"}, State: Alive}}
	v := ViewOf("a", ms)
	ms[0].Tiers[0] = "changed"
	if ms[0].Name != "b" {
		t.Errorf("ViewOf reordered its argument: first member is %q, want b", ms[0].Name)
	}
	if v.Nodes[1].Tiers[0] != "stable" {
		t.Errorf("the view shares tiers with the members: %v", v.Nodes[1].Tiers)
	}
}

func TestViewWireNamesAndEmptyLists(t *testing.T) {
	b, err := json.Marshal(ViewOf("hub-1", []Member{{Meta: Meta{Name: "hub-1", Role: "hub"}, State: Alive}}))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"self":"hub-1"`, `"links":[]`, `"tiers":[]`, `"name":"hub-1"`, `"url":""`, `"since":`, `"head":0`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("view JSON %s lacks %s", b, want)
		}
	}
	b, err = json.Marshal(ViewLink{From: "a", To: "b", FromURL: "u", LagEvents: 1, Healthy: true})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"from":"a","to":"b","from_url":"u","lag_events":1,"healthy":true}`; string(b) != want {
		t.Errorf("link JSON %s, want %s", b, want)
	}
	if v := ViewOf("x", nil); v.Nodes == nil || v.Links == nil {
		t.Errorf("ViewOf with no members = %+v, want empty lists, not nil (null on the wire)", v)
	}
}

// TestViewOfRunningTopology checks the method against a real, lone node.
func TestViewOfRunningTopology(t *testing.T) {
	key, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	top, err := Start(t.Context(), Config{
		Name: "solo", BindAddr: "127.0.0.1", Profile: "local", Keys: [][]byte{key},
		Meta: func() Meta { return Meta{Role: "hub", API: "https://solo.example"} },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { top.Close() })
	v := top.View()
	if v.Self != "solo" || len(v.Nodes) != 1 || v.Nodes[0].Name != "solo" || v.Nodes[0].State != Alive || len(v.Links) != 0 {
		t.Errorf("view of a lone hub = %+v, want only itself, alive, head 7, no links", v)
	}
}
