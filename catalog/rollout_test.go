package catalog

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"
)

func TestParseWaves(t *testing.T) {
	for _, tc := range []struct {
		spec    string
		want    []Wave
		wantErr string // the InvalidError's field; "" for success
	}{
		{"dc-canary:0h,eu-*:6h,us-*:24h", []Wave{{DC: "dc-canary"}, {DC: "eu-*", AfterSeconds: 6 * 3600}, {DC: "us-*", AfterSeconds: 24 * 3600}}, ""},
		{"eu-*:6h:10%", []Wave{{DC: "eu-*", AfterSeconds: 6 * 3600, Percent: 10}}, ""},
		{" a:30s , b:1m:0.5% ", []Wave{{DC: "a", AfterSeconds: 30}, {DC: "b", AfterSeconds: 60, Percent: 0.5}}, ""},
		{"dc-[ab]?:0s", []Wave{{DC: "dc-[ab]?"}}, ""},
		{"", nil, "waves"},
		{"dc-canary", nil, "waves[0]"},
		{"a:0s,b", nil, "waves[1]"},
		{"a:6 hours", nil, "waves[0]"},
		{"a:-1h", nil, "waves[0]"},
		{"a:1h:10", nil, "waves[0]"},
		{"a:1h:0%", nil, "waves[0]"},
		{"a:1h:101%", nil, "waves[0]"},
		{"a:1h:10%:x", nil, "waves[0]"},
		{"a b:1h", nil, "waves[0]"},
		{"dc-[:1h", nil, "waves[0]"},
		{"dc-[a:1h", nil, "waves[0]"},
	} {
		t.Run(tc.spec, func(t *testing.T) {
			got, err := ParseWaves(tc.spec)
			if tc.wantErr != "" {
				var ie *InvalidError
				if !errors.As(err, &ie) || ie.Field != tc.wantErr {
					t.Fatalf("ParseWaves(%q): want an InvalidError on %s, got %v (%v)", tc.spec, tc.wantErr, err, got)
				}
				return
			}
			if err != nil || !slices.Equal(got, tc.want) {
				t.Fatalf("ParseWaves(%q): want %v, got %v, %v", tc.spec, tc.want, got, err)
			}
			again, err := ParseWaves(FormatWaves(got))
			if err != nil || !slices.Equal(again, got) {
				t.Fatalf("FormatWaves round trip of %q: %q reads back as %v, %v", tc.spec, FormatWaves(got), again, err)
			}
		})
	}
}

func TestWaveMatches(t *testing.T) {
	for _, tc := range []struct {
		glob, dc string
		want     bool
	}{
		{"eu-*", "eu-west", true},
		{"eu-*", "eu-", true},
		{"eu-*", "us-east", false},
		{"eu-*", "xeu-west", false},
		{"dc-canary", "dc-canary", true},
		{"dc-canary", "dc-canary2", false},
		{"*", "anything", true},
		{"dc-?", "dc-a", true},
		{"dc-?", "dc-ab", false},
		{"dc-[ab]", "dc-b", true},
		{"dc-[ab]", "dc-c", false},
		{"dc-[", "dc-[", false}, // malformed never matches
	} {
		if got := (Wave{DC: tc.glob}).Matches(tc.dc); got != tc.want {
			t.Errorf("%q matches %q: want %v, got %v", tc.glob, tc.dc, tc.want, got)
		}
	}
}

// The machines a percentage picks are the same on every call (and so on
// every node), a larger percentage picks a superset, and the share picked
// is close to the percentage.
func TestWaveSelectsStably(t *testing.T) {
	const n = 20000
	picked := func(id string, pct float64) map[int]bool {
		out := map[int]bool{}
		w := Wave{DC: "*", Percent: pct}
		for i := range n {
			if w.Selects(id, fmt.Sprintf("machine-%d", i)) {
				out[i] = true
			}
		}
		return out
	}
	ten, again, twenty := picked("0123456789abcdef", 10), picked("0123456789abcdef", 10), picked("0123456789abcdef", 20)
	if len(ten) != len(again) {
		t.Fatalf("10%%: %d machines, then %d", len(ten), len(again))
	}
	for i := range ten {
		if !again[i] {
			t.Fatalf("machine-%d picked once, not the second time", i)
		}
		if !twenty[i] {
			t.Fatalf("machine-%d in 10%% but not in 20%%", i)
		}
	}
	for _, tc := range []struct {
		got  int
		pct  float64
		name string
	}{{len(ten), 10, "10%"}, {len(twenty), 20, "20%"}} {
		want := n * tc.pct / 100
		if d := float64(tc.got) - want; d > want/10 || d < -want/10 {
			t.Errorf("%s: %d of %d machines picked, want about %.0f", tc.name, tc.got, n, want)
		}
	}
	other := picked("fedcba9876543210", 10)
	same := 0
	for i := range ten {
		if other[i] {
			same++
		}
	}
	if same > len(ten)/5 {
		t.Errorf("two rollouts' 10%% share %d of %d machines: the pick should not depend on the machine alone", same, len(ten))
	}
	for _, pct := range []float64{0, 100} {
		if got := picked("0123456789abcdef", pct); len(got) != n {
			t.Errorf("%v%%: want every machine, got %d", pct, len(got))
		}
	}
}

func TestGateCheck(t *testing.T) {
	g := Gate{MaxFailedPercent: 5, MinReporting: 20}
	for _, tc := range []struct {
		reporting, failed int64
		want              GateVerdict
	}{
		{0, 0, GateWait},
		{19, 0, GateWait},
		{19, 19, GateWait}, // too few to judge
		{20, 0, GatePass},
		{20, 1, GateFail}, // 5% is not below 5%
		{21, 1, GatePass}, // 4.76%
		{100, 4, GatePass},
		{100, 5, GateFail},
		{100, -3, GatePass}, // fewer failures than accepted on resume
	} {
		if got := g.Check(tc.reporting, tc.failed); got != tc.want {
			t.Errorf("%d of %d failed: want %v, got %v", tc.failed, tc.reporting, tc.want, got)
		}
	}
	if got := (Gate{MaxFailedPercent: 50}).Check(0, 0); got != GatePass {
		t.Errorf("nobody reporting with min 0: want pass (delays alone), got %v", got)
	}
	if got := (Gate{MaxFailedPercent: 50, MinReporting: 1}).Check(0, 0); got != GateWait {
		t.Errorf("nobody reporting with min 1: want wait, got %v", got)
	}
}

func testRollout(t0 time.Time) Rollout {
	return Rollout{
		ID: "0123456789abcdef", Tier: "stable", Version: "107.2", State: RolloutActive, Created: t0, Updated: t0,
		Waves: []Wave{{DC: "dc-canary"}, {DC: "eu-*", AfterSeconds: 3600}, {DC: "us-*", AfterSeconds: 7200, Percent: 50}},
		Gate:  Gate{MaxFailedPercent: 5, MinReporting: 1, SoakSeconds: 600},
	}
}

func TestRolloutStep(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r := testRollout(t0)
	r, ok := r.Step(t0, 0, 0, time.Time{})
	if !ok || len(r.Opened) != 1 {
		t.Fatalf("at creation: want the 0h wave open, got %v %+v", ok, r)
	}
	steps := []struct {
		name              string
		at                time.Duration
		reporting, failed int64
		since             time.Duration // -1: the gate does not pass
		wantOpen          int
		wantState         RolloutState
	}{
		{"nobody reports", 2 * time.Hour, 0, 0, -1, 1, RolloutActive},
		{"delay not passed", 30 * time.Minute, 5, 0, 0, 1, RolloutActive},
		{"soak not passed", 2 * time.Hour, 5, 0, 2*time.Hour - 5*time.Minute, 1, RolloutActive},
		{"opens", 2 * time.Hour, 5, 0, time.Hour, 2, RolloutActive},
		{"next delay counts from the last opening", 3 * time.Hour, 5, 0, time.Hour, 2, RolloutActive},
		{"failure halts", 3 * time.Hour, 5, 1, -1, 2, RolloutHalted},
	}
	for _, s := range steps {
		since := time.Time{}
		if s.since >= 0 {
			since = t0.Add(s.since)
		}
		next, _ := r.Step(t0.Add(s.at), s.reporting, s.failed, since)
		if len(next.Opened) != s.wantOpen || next.State != s.wantState {
			t.Fatalf("%s: want %d open, %s; got %d, %s (%q)", s.name, s.wantOpen, s.wantState, len(next.Opened), next.State, next.Reason)
		}
		r = next
	}
	if want := "gate before wave 3 (us-*): 1 of 5 machines"; len(r.Reason) < len(want) || r.Reason[:len(want)] != want {
		t.Errorf("halt reason: want it to start %q, got %q", want, r.Reason)
	}
	if next, ok := r.Step(t0.Add(10*time.Hour), 5, 0, t0); ok || next.State != RolloutHalted {
		t.Errorf("a halted rollout moved on its own: %+v", next)
	}
	// Resumed with the failure accepted, it goes on and completes.
	r.State, r.Reason, r.AckFailed = RolloutActive, "", 1
	r, _ = r.Step(t0.Add(4*time.Hour), 5, 1, t0.Add(3*time.Hour))
	if len(r.Opened) != 3 {
		t.Fatalf("resumed: want wave 3 open, got %d (%s %q)", len(r.Opened), r.State, r.Reason)
	}
	r, _ = r.Step(t0.Add(5*time.Hour), 5, 1, t0.Add(4*time.Hour))
	if r.State != RolloutCompleted {
		t.Fatalf("want completed, got %s", r.State)
	}
}

func TestRolloutHolds(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r := testRollout(t0)
	r.Opened = []time.Time{t0}
	if r.Holds("dc-canary", "m1") || !r.Holds("eu-west", "m1") || !r.Holds("elsewhere", "m1") {
		t.Fatal("canary open: want canary released, eu and unknown DCs held")
	}
	r.Opened = []time.Time{t0, t0, t0}
	if r.Holds("eu-west", "m1") || !r.Holds("elsewhere", "m1") {
		t.Fatal("all open: want eu released, a DC in no wave held until completion")
	}
	in, out := 0, 0
	for i := range 1000 {
		if r.Holds("us-east", fmt.Sprintf("m%d", i)) {
			out++
		} else {
			in++
		}
	}
	if in < 400 || in > 600 {
		t.Errorf("us at 50%%: %d released, %d held", in, out)
	}
	r.State = RolloutHalted
	if r.Holds("eu-west", "m1") {
		t.Error("halted: an open wave stays open")
	}
	for _, s := range []RolloutState{RolloutCompleted, RolloutAborted} {
		r.State = s
		if r.Holds("elsewhere", "m1") {
			t.Errorf("%s: want nothing held", s)
		}
	}
}

func TestRolloutValidate(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name   string
		mutate func(*Rollout)
		field  string
	}{
		{"valid", func(*Rollout) {}, ""},
		{"id", func(r *Rollout) { r.ID = "XYZ" }, "id"},
		{"tier", func(r *Rollout) { r.Tier = "" }, "tier"},
		{"no waves", func(r *Rollout) { r.Waves = nil }, "waves"},
		{"state", func(r *Rollout) { r.State = "paused" }, "state"},
		{"gate", func(r *Rollout) { r.Gate.MaxFailedPercent = 0 }, "gate"},
		{"opened", func(r *Rollout) { r.Opened = make([]time.Time, 4) }, "opened"},
		{"created", func(r *Rollout) { r.Created = time.Time{} }, "created"},
	} {
		r := testRollout(t0)
		tc.mutate(&r)
		err := r.Validate()
		var ie *InvalidError
		switch {
		case tc.field == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.field != "" && (!errors.As(err, &ie) || ie.Field != tc.field):
			t.Errorf("%s: want an InvalidError on %s, got %v", tc.name, tc.field, err)
		}
	}
}
