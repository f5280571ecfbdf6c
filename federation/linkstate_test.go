package federation

import (
	"context"
	"errors"
	"testing"
	"time"
)

func testLink() *linkState {
	return newLinkState(Link{Tier: "stable", HubTier: "stable", Upstreams: []Upstream{
		{URL: "http://127.0.0.1:1", Token: "a"}, {URL: "http://127.0.0.1:2", Token: "b"},
	}})
}

func TestLinkFailsOverAfterConsecutiveFailuresAndComesBack(t *testing.T) {
	l := testLink()
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	for i := 1; i < 3; i++ {
		if l.noteFailure(3, now, time.Minute) {
			t.Fatalf("failure %d of 3: demoted too early", i)
		}
	}
	if !l.noteFailure(3, now, time.Minute) {
		t.Fatal("third failure: want the upstream demoted")
	}
	if up, changed := l.choose(now, nil); !changed || up.URL != "http://127.0.0.1:2" {
		t.Fatalf("after demotion: want a switch to the second upstream, got %s (changed %v)", up.URL, changed)
	}
	if got := l.status(now).Upstream; got != "http://127.0.0.1:2" {
		t.Errorf("status upstream: want the second, got %s", got)
	}
	// While the demotion lasts the link stays; after it, it returns.
	if up, _ := l.choose(now.Add(59*time.Second), nil); up.URL != "http://127.0.0.1:2" {
		t.Errorf("within the demotion: want the second upstream, got %s", up.URL)
	}
	if up, changed := l.choose(now.Add(61*time.Second), nil); !changed || up.URL != "http://127.0.0.1:1" {
		t.Errorf("after the demotion: want back on the first upstream, got %s", up.URL)
	}

	// A success in between resets the count.
	l.noteFailure(3, now, time.Minute)
	l.endRound(l.startRound(), nil, false, now)
	l.noteFailure(3, now, time.Minute)
	if l.noteFailure(3, now, time.Minute) {
		t.Error("two failures after a success demoted the upstream")
	}
	l.endRound(l.startRound(), errors.New("upstream down"), false, time.Now())
	if s := l.status(time.Now()); s.Rounds != 2 || s.RoundsFailed != 1 || s.State != LinkFailing {
		t.Errorf("after one good and one failed round: want 2 rounds, 1 failed, failing; got %d, %d, %s", s.Rounds, s.RoundsFailed, s.State)
	}
}

func TestLinkFollowsGossipHealth(t *testing.T) {
	l := testLink()
	now := time.Now()
	down := map[string]bool{"http://127.0.0.1:1": true}
	health := func(url string) (bool, bool) { return true, !down[url] }
	if up, changed := l.choose(now, health); !changed || up.URL != "http://127.0.0.1:2" {
		t.Fatalf("preferred upstream dead: want the second, got %s", up.URL)
	}
	delete(down, "http://127.0.0.1:1")
	if up, changed := l.choose(now, health); !changed || up.URL != "http://127.0.0.1:1" {
		t.Fatalf("preferred upstream alive again: want it back, got %s", up.URL)
	}
	// Unknown to gossip counts as usable: gossip may be off.
	if up, _ := l.choose(now, func(string) (bool, bool) { return false, false }); up.URL != "http://127.0.0.1:1" {
		t.Errorf("no gossip knowledge: want the preferred upstream, got %s", up.URL)
	}
	// Every candidate down: keep trying something rather than nothing.
	all := func(string) (bool, bool) { return true, false }
	if up, _ := l.choose(now, all); up.URL == "" {
		t.Error("every candidate down: want some upstream to try")
	}
}

// Trigger with wait must not return on a round that started before it.
func TestTriggerWaitsForARoundThatStartsAfterIt(t *testing.T) {
	l := testLink()
	inFlight := l.startRound()
	target := l.trigger()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- l.awaitRound(ctx, target) }()

	l.endRound(inFlight, nil, false, time.Now())
	select {
	case err := <-done:
		t.Fatalf("awaitRound returned (%v) when only the earlier round ended", err)
	case <-time.After(50 * time.Millisecond):
	}
	select {
	case <-l.kick:
	default:
		t.Fatal("trigger left no kick for the loop")
	}
	l.endRound(l.startRound(), nil, false, time.Now())
	if err := <-done; err != nil {
		t.Fatalf("awaitRound after the triggered round ended: %v", err)
	}
}

func TestLagSecondsCountFromFirstSeenBehind(t *testing.T) {
	l := testLink()
	t0 := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	l.observeHeads(10, 10, 7, t0)
	l.observeHeads(11, 11, 7, t0.Add(5*time.Second))
	s := l.status(t0.Add(8 * time.Second))
	if s.LagEvents != 4 || s.LagSeconds != 8 {
		t.Errorf("behind since t0: want lag 4 events, 8 s; got %d, %v", s.LagEvents, s.LagSeconds)
	}
	l.observeHeads(11, 11, 11, t0.Add(9*time.Second))
	if s := l.status(t0.Add(10 * time.Second)); s.LagEvents != 0 || s.LagSeconds != 0 {
		t.Errorf("caught up: want no lag, got %d events, %v s", s.LagEvents, s.LagSeconds)
	}
}
