package federation

import (
	"slices"
	"sync"
	"testing"
	"time"
)

// FakeMembership is a Membership with a fixed list of members. It stands
// for gossip, which needs running nodes, so that the sync policy (Mesh) is
// tested on its own; topology's tests run the real membership on loopback.
type FakeMembership struct {
	mu sync.Mutex
	ms []Member
}

func (f *FakeMembership) Members() []Member {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.ms)
}

func (f *FakeMembership) set(ms ...Member) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ms = ms
}

const (
	hubURL = "https://hub.example"
	relayA = "https://relay-a.example"
	relayB = "https://relay-b.example"
)

func edge(name, dc, tier, upstream string) Member {
	return Member{Name: name, DC: dc, API: "https://" + name + ".example", Tiers: []string{tier},
		Upstreams: map[string]string{tier: upstream}, Alive: true}
}

func TestPeerGroupIsTheSameLevelOfTheSameDataCentre(t *testing.T) {
	self := edge("edge-c", "dc-a", "stable", relayA)
	self.Self = true
	twoLinks := edge("edge-a", "dc-a", "stable", relayA+"/")
	twoLinks.Tiers = append(twoLinks.Tiers, "beta")
	twoLinks.Upstreams["beta"] = hubURL
	dead := edge("edge-0", "dc-a", "stable", relayA)
	dead.Alive = false
	fake := &FakeMembership{}
	fake.set(
		edge("edge-d", "dc-a", "stable", relayA),
		self,
		twoLinks,
		dead,
		edge("edge-b", "dc-b", "stable", relayA), // another data centre
		edge("edge-e", "dc-a", "stable", relayB), // another upstream
		edge("edge-f", "dc-a", "beta", relayA),   // another tier
		edge("edge-g", "dc-a", "stable", "https://edge-c"), // pulls from this node
		Member{Name: "relay-a", DC: "dc-a", API: relayA, Tiers: []string{"stable"}, Upstreams: map[string]string{"stable": hubURL}, Alive: true},
	)
	m := NewMesh(fake, "edge-c", "dc-a", nil)

	designated, peers := m.PeerGroup("stable", relayA)
	if designated {
		t.Error("edge-c designated, want edge-a (lowest alive name in the group)")
	}
	if want := []string{"https://edge-a.example", "https://edge-d.example"}; !slices.Equal(peers, want) {
		t.Errorf("peers of edge-c for stable from relay-a: got %v, want %v", peers, want)
	}

	// The second link of edge-a: its upstream for beta is the hub, so for
	// a node pulling beta from the hub it is a peer, whatever its first
	// link says.
	m2 := NewMesh(fake, "edge-z", "dc-a", nil)
	designated, peers = m2.PeerGroup("beta", hubURL)
	if designated || !slices.Equal(peers, []string{"https://edge-a.example"}) {
		t.Errorf("edge-z, beta from the hub: got designated=%v peers=%v, want edge-a's second link as the only peer", designated, peers)
	}

	// The designated peer dies: the next one is designated, at once.
	twoLinks.Alive = false
	fake.set(self, twoLinks, edge("edge-d", "dc-a", "stable", relayA))
	designated, peers = m.PeerGroup("stable", relayA)
	if !designated || !slices.Equal(peers, []string{"https://edge-d.example"}) {
		t.Errorf("after edge-a died: got designated=%v peers=%v, want edge-c designated with edge-d", designated, peers)
	}

	// Alone: designated, no peers.
	fake.set(self)
	if designated, peers := m.PeerGroup("stable", relayA); !designated || len(peers) != 0 {
		t.Errorf("alone: got designated=%v peers=%v", designated, peers)
	}
}

func TestHealthDrivesTheFailoverChoice(t *testing.T) {
	fake := &FakeMembership{}
	a := Member{Name: "relay-a", API: relayA + "/", Alive: true}
	b := Member{Name: "relay-b", API: relayB, Alive: true}
	fake.set(a, b)
	m := NewMesh(fake, "edge-1", "dc-a", nil)
	l := newLinkState(Link{Tier: "stable", Upstreams: []Upstream{{URL: relayA}, {URL: relayB}, {URL: "https://outside.example"}}})
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

	if up, _ := l.choose(now, m.Health); up.URL != relayA {
		t.Fatalf("both alive: chose %s, want the preferred %s", up.URL, relayA)
	}
	a.Alive = false
	fake.set(a, b)
	if up, changed := l.choose(now, m.Health); up.URL != relayB || !changed {
		t.Errorf("preferred dead: chose %s (changed %v), want %s", up.URL, changed, relayB)
	}
	b.Alive = false
	fake.set(a, b)
	if up, _ := l.choose(now, m.Health); up.URL != "https://outside.example" {
		t.Errorf("both gossiping upstreams dead: chose %s, want the one gossip does not know", up.URL)
	}
	// A node back under a new name at relay-a's URL: alive wins over the
	// old dead record, and the link returns to its preferred upstream.
	fake.set(a, b, Member{Name: "relay-a2", API: relayA, Alive: true})
	if up, _ := l.choose(now, m.Health); up.URL != relayA {
		t.Errorf("relay-a back under a new name: chose %s, want %s", up.URL, relayA)
	}
	if known, alive := m.Health("https://unknown.example"); known || alive {
		t.Errorf("unknown URL: got known=%v alive=%v, want neither", known, alive)
	}
}

func TestObservePokesOnLivenessChanges(t *testing.T) {
	var poked []string
	m := NewMesh(&FakeMembership{}, "edge-1", "dc-a", func(url string) { poked = append(poked, url) })
	a := Member{Name: "relay-a", API: relayA, Alive: true}
	steps := []struct {
		m    Member
		poke bool
		why  string
	}{
		{a, true, "first news of relay-a"},
		{a, false, "same health"},
		{Member{Name: "relay-a", API: relayA, Alive: true, Tiers: []string{"stable"}}, false, "other meta moved: the long poll brings news"},
		{Member{Name: "relay-a", API: relayA, Alive: false}, true, "died"},
		{Member{Name: "relay-a", API: relayA, Alive: true}, true, "back"},
		{Member{Name: "edge-1", API: "https://edge-1.example", Alive: true, Self: true}, false, "itself"},
		{Member{Name: "hub", Alive: true}, false, "no API URL"},
	}
	for _, s := range steps {
		before := len(poked)
		m.Observe(s.m)
		if got := len(poked) > before; got != s.poke {
			t.Errorf("%s: poked=%v, want %v", s.why, got, s.poke)
		}
	}
}

func TestAdvertisedIsEveryLinksUpstream(t *testing.T) {
	p := &Puller{}
	for _, l := range []Link{
		{Tier: "stable", Upstreams: []Upstream{{URL: relayA}, {URL: relayB}}},
		{Tier: "beta", Upstreams: []Upstream{{URL: hubURL}}},
	} {
		p.links = append(p.links, newLinkState(l))
	}
	first, byTier := p.Advertised()
	if first != relayA || byTier["stable"] != relayA || byTier["beta"] != hubURL || len(byTier) != 2 {
		t.Errorf("got first=%s byTier=%v, want relay-a first and both links", first, byTier)
	}
	if first, byTier := (&Puller{}).Advertised(); first != "" || byTier != nil {
		t.Errorf("no links: got %q %v", first, byTier)
	}
}
