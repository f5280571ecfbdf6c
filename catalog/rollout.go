package catalog

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"path"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// RolloutState is where a rollout plan stands.
type RolloutState string

// Rollout states. Active and halted rollouts hold their patch back from
// machines outside an open wave; completed and aborted ones hold nothing
// back (an abort withdraws the patch instead).
const (
	RolloutActive    RolloutState = "active"
	RolloutHalted    RolloutState = "halted"
	RolloutCompleted RolloutState = "completed"
	RolloutAborted   RolloutState = "aborted"
)

// Wave is one step of a rollout: the data centres whose label matches DC
// (a path.Match glob over node.datacenter), opened After the previous
// wave opened (after the plan's creation for the first), for Percent of
// their machines (0 means all).
type Wave struct {
	DC string `json:"dc"`
	// AfterSeconds is the delay from the previous wave's opening.
	AfterSeconds int64 `json:"after_seconds"`
	// Percent of the matching machines, picked stably by machine ID;
	// 0 means every machine.
	Percent float64 `json:"percent,omitempty"`
}

// After is the wave's delay as a duration.
func (w Wave) After() time.Duration { return time.Duration(w.AfterSeconds) * time.Second }

// Matches reports whether the data centre labelled dc is in the wave.
func (w Wave) Matches(dc string) bool {
	ok, err := path.Match(w.DC, dc)
	return err == nil && ok
}

// Selects reports whether the machine with mesh-wide ID machineID falls
// in the wave's percentage of rollout id. The pick hashes the rollout ID
// with the machine ID, so it is stable for one machine across checks and
// nodes, and independent between rollouts.
func (w Wave) Selects(id, machineID string) bool {
	if w.Percent <= 0 || w.Percent >= 100 {
		return true
	}
	return Bucket(id, machineID) < uint64(w.Percent*100)
}

// Bucket places a machine in one of 10000 buckets for rollout id.
func Bucket(id, machineID string) uint64 {
	h := sha256.Sum256([]byte(id + "\x00" + machineID))
	return binary.BigEndian.Uint64(h[:8]) % 10000
}

// Gate is what the machines of the waves already open must show before
// the next wave opens: at least MinReporting of them report the rollout's
// version, the share of those in apply-failed or check-failed stays below
// MaxFailedPercent, and that has held for SoakSeconds. A failed share at
// or above the threshold halts the rollout.
type Gate struct {
	MaxFailedPercent float64 `json:"max_failed_percent"`
	MinReporting     int64   `json:"min_reporting"`
	SoakSeconds      int64   `json:"soak_seconds"`
}

// Gate defaults, for plans that do not set them.
const (
	DefaultGateMaxFailedPercent = 5
	DefaultGateMinReporting     = 1
	DefaultGateSoak             = 10 * time.Minute
)

// Soak is the gate's soak time as a duration.
func (g Gate) Soak() time.Duration { return time.Duration(g.SoakSeconds) * time.Second }

// GateVerdict is the gate's reading of the reports of the open waves.
type GateVerdict int

// Gate verdicts.
const (
	// GateWait: too few machines report yet.
	GateWait GateVerdict = iota
	// GatePass: enough report, few enough failed.
	GatePass
	// GateFail: too many failed; the rollout halts.
	GateFail
)

// Check reads reporting machines of which failed are in a failed state. A
// gate of MinReporting 0 passes with nobody reporting: the waves then go
// by their delays alone.
func (g Gate) Check(reporting, failed int64) GateVerdict {
	if failed < 0 {
		failed = 0
	}
	if reporting < g.MinReporting || (reporting <= 0 && g.MinReporting > 0) {
		return GateWait
	}
	if failed > 0 && float64(failed)*100 >= g.MaxFailedPercent*float64(reporting) {
		return GateFail
	}
	return GatePass
}

// Rollout is a plan to open a patch version on a tier data centre by data
// centre, and where it stands. The hub runs it; every node holds the
// latest signed copy and enforces its own data centre's wave from it.
type Rollout struct {
	// ID is 16 lowercase hex digits.
	ID      string       `json:"id"`
	Tier    string       `json:"tier"`
	Version string       `json:"version"`
	Waves   []Wave       `json:"waves"`
	Gate    Gate         `json:"gate"`
	State   RolloutState `json:"state"`
	// Opened holds when each open wave opened, in wave order: waves
	// [0, len(Opened)) are open.
	Opened []time.Time `json:"opened"`
	// Reason says why a halted rollout halted (or was halted by hand).
	Reason string `json:"reason,omitempty"`
	// AckFailed is how many failed machines the operator accepted on the
	// last resume: the gate counts only failures beyond them.
	AckFailed int64     `json:"ack_failed,omitempty"`
	Created   time.Time `json:"created"`
	Updated   time.Time `json:"updated"`
}

// Live reports whether r still holds its version back somewhere.
func (r Rollout) Live() bool { return r.State == RolloutActive || r.State == RolloutHalted }

// Holds reports whether r keeps its version from the machine machineID
// checking in at a node of data centre dc: while r is live, unless an open
// wave matches dc and selects the machine. It reads only r, the signed
// state, so a node cut off from the hub holds what it last heard.
func (r Rollout) Holds(dc, machineID string) bool {
	if !r.Live() {
		return false
	}
	for i := 0; i < len(r.Opened) && i < len(r.Waves); i++ {
		if w := r.Waves[i]; w.Matches(dc) && w.Selects(r.ID, machineID) {
			return false
		}
	}
	return true
}

// Step is the hub's state machine: given the time and the gate's reading
// of the open waves' machines (reporting, failed), it returns r after
// one step and whether it changed. gateSince is when the gate started to
// pass without a break (zero if it does not pass now); the caller keeps it.
func (r Rollout) Step(now time.Time, reporting, failed int64, gateSince time.Time) (Rollout, bool) {
	if r.State != RolloutActive {
		return r, false
	}
	n := len(r.Opened)
	if n == 0 {
		if now.Before(r.Created.Add(r.Waves[0].After())) {
			return r, false
		}
		return r.open(now), true
	}
	switch r.Gate.Check(reporting, failed-r.AckFailed) {
	case GateFail:
		r.State = RolloutHalted
		r.Reason = fmt.Sprintf("gate before %s: %d of %d machines of the open waves failed (apply-failed or check-failed), %.1f%% at or above the %.1f%% allowed",
			r.nextName(), failed-r.AckFailed, reporting, 100*float64(failed-r.AckFailed)/float64(reporting), r.Gate.MaxFailedPercent)
		r.Updated = now
		return r, true
	case GateWait:
		return r, false
	}
	if gateSince.IsZero() || now.Before(gateSince.Add(r.Gate.Soak())) {
		return r, false
	}
	if n == len(r.Waves) {
		r.State = RolloutCompleted
		r.Updated = now
		return r, true
	}
	if now.Before(r.Opened[n-1].Add(r.Waves[n].After())) {
		return r, false
	}
	return r.open(now), true
}

// nextName names what the gate guards: the next wave, or completion.
func (r Rollout) nextName() string {
	n := len(r.Opened)
	if n >= len(r.Waves) {
		return "completion"
	}
	return fmt.Sprintf("wave %d (%s)", n+1, r.Waves[n].DC)
}

func (r Rollout) open(now time.Time) Rollout {
	r.Opened = append(append([]time.Time(nil), r.Opened...), now)
	r.Updated = now
	return r
}

// waveDCRE is the alphabet of a data-centre glob: a label's characters
// plus the glob's * ? [ ] ! -.
var waveDCRE = regexp.MustCompile(`^[A-Za-z0-9_.*?\[\]!-]{1,64}$`)

// ParseWaves reads a wave spec, "dc-canary:0h,eu-*:6h:10%,us-*:24h": a
// comma-separated list of DC-GLOB:DELAY[:PERCENT%], DELAY a Go duration
// (0h, 30s, 6h) from the previous wave's opening.
func ParseWaves(spec string) ([]Wave, error) {
	if strings.TrimSpace(spec) == "" {
		return nil, &InvalidError{Field: "waves", Message: "must list at least one wave, e.g. dc-canary:0h,eu-*:6h"}
	}
	parts := strings.Split(spec, ",")
	if len(parts) > 64 {
		return nil, &InvalidError{Field: "waves", Message: "at most 64 waves"}
	}
	waves := make([]Wave, 0, len(parts))
	for i, p := range parts {
		field := fmt.Sprintf("waves[%d]", i)
		f := strings.Split(strings.TrimSpace(p), ":")
		if len(f) < 2 || len(f) > 3 {
			return nil, &InvalidError{Field: field, Message: fmt.Sprintf("%q is not DC-GLOB:DELAY[:PERCENT%%]", p)}
		}
		d, err := time.ParseDuration(f[1])
		if err != nil || d < 0 {
			return nil, &InvalidError{Field: field, Message: fmt.Sprintf("delay %q is not a duration such as 0h, 30s or 6h", f[1])}
		}
		w := Wave{DC: f[0], AfterSeconds: int64(d / time.Second)}
		if len(f) == 3 {
			pct, ok := strings.CutSuffix(f[2], "%")
			v, err := strconv.ParseFloat(pct, 64)
			if !ok || err != nil || !(v > 0 && v <= 100) {
				return nil, &InvalidError{Field: field, Message: fmt.Sprintf("percentage %q is not one such as 10%%, above 0 and at most 100", f[2])}
			}
			w.Percent = v
		}
		if err := w.validate(field); err != nil {
			return nil, err
		}
		waves = append(waves, w)
	}
	return waves, nil
}

// FormatWaves writes waves back in ParseWaves's form.
func FormatWaves(waves []Wave) string {
	var b strings.Builder
	for i, w := range waves {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s:%s", w.DC, w.After())
		if w.Percent > 0 && w.Percent < 100 {
			fmt.Fprintf(&b, ":%s%%", strconv.FormatFloat(w.Percent, 'f', -1, 64))
		}
	}
	return b.String()
}

func (w Wave) validate(field string) error {
	if !waveDCRE.MatchString(w.DC) {
		return &InvalidError{Field: field, Message: fmt.Sprintf("data centre %q must be a label or glob of letters, digits, . _ - and * ? [ ]", w.DC)}
	}
	if _, err := path.Match(w.DC, ""); err != nil {
		return &InvalidError{Field: field, Message: fmt.Sprintf("data centre glob %q is malformed", w.DC)}
	}
	if w.AfterSeconds < 0 {
		return &InvalidError{Field: field, Message: "delay must not be negative"}
	}
	if w.Percent < 0 || w.Percent > 100 {
		return &InvalidError{Field: field, Message: "percentage must be within 0 to 100"}
	}
	return nil
}

var rolloutIDRE = regexp.MustCompile(`^[0-9a-f]{16}$`)

// ValidRolloutID checks a rollout ID's form.
func ValidRolloutID(id string) error {
	if !rolloutIDRE.MatchString(id) {
		return &InvalidError{Field: "id", Message: "must be a rollout ID of 16 lowercase hex digits"}
	}
	return nil
}

// Validate checks r is a plan a node may keep and enforce.
func (r Rollout) Validate() error {
	if err := ValidRolloutID(r.ID); err != nil {
		return err
	}
	if err := ValidName("tier", r.Tier); err != nil {
		return err
	}
	if err := ValidVersion(r.Version); err != nil {
		return err
	}
	if len(r.Waves) == 0 || len(r.Waves) > 64 {
		return &InvalidError{Field: "waves", Message: "must list 1 to 64 waves"}
	}
	for i, w := range r.Waves {
		if err := w.validate(fmt.Sprintf("waves[%d]", i)); err != nil {
			return err
		}
	}
	if g := r.Gate; g.MaxFailedPercent <= 0 || g.MaxFailedPercent > 100 || g.MinReporting < 0 || g.SoakSeconds < 0 {
		return &InvalidError{Field: "gate", Message: "max failed percent must be above 0 and at most 100; min reporting and soak not negative"}
	}
	switch r.State {
	case RolloutActive, RolloutHalted, RolloutCompleted, RolloutAborted:
	default:
		return &InvalidError{Field: "state", Message: fmt.Sprintf("unknown rollout state %q", r.State)}
	}
	if len(r.Opened) > len(r.Waves) {
		return &InvalidError{Field: "opened", Message: "more waves opened than planned"}
	}
	if len(r.Reason) > 1024 {
		return &InvalidError{Field: "reason", Message: "at most 1024 bytes"}
	}
	if r.Created.IsZero() {
		return &InvalidError{Field: "created", Message: "must be set"}
	}
	return nil
}
