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

func TestLinkFailsOverAfterConsecutiveFailures(t *testing.T) {
	l := testLink()
	for i := 1; i < 3; i++ {
		if l.noteFailure(3) {
			t.Fatalf("failure %d of 3: moved upstream too early", i)
		}
	}
	if !l.noteFailure(3) || l.upstream().URL != "http://127.0.0.1:2" {
		t.Fatalf("third failure: want a move to the second upstream, on %s", l.upstream().URL)
	}
	if got := l.status(time.Now()).Upstream; got != "http://127.0.0.1:2" {
		t.Errorf("status upstream: want the second, got %s", got)
	}
	// A success in between resets the count.
	l.noteFailure(3)
	l.endRound(l.startRound(), nil, time.Now())
	l.noteFailure(3)
	if l.noteFailure(3) {
		t.Error("two failures after a success moved the link")
	}
	l.endRound(l.startRound(), errors.New("upstream down"), time.Now())
	if s := l.status(time.Now()); s.Rounds != 2 || s.RoundsFailed != 1 || s.State != LinkFailing {
		t.Errorf("after one good and one failed round: want 2 rounds, 1 failed, failing; got %d, %d, %s", s.Rounds, s.RoundsFailed, s.State)
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

	l.endRound(inFlight, nil, time.Now())
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
	l.endRound(l.startRound(), nil, time.Now())
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
