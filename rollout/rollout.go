// Package rollout owns the hub's rollout state machine: creating a plan
// from an operator's request, opening its waves data centre by data
// centre as their delays pass and the gate over the fleet reports of the
// waves already open holds, halting at a failed gate, and the operator's
// halt, resume and abort. Every change is one sealed rollout.changed
// record, written by the store in the change's transaction.
//
// It does not own enforcement — each node reads the signed state it holds
// (catalog.Rollout.Holds) when it answers a machine's offer, in api — nor
// the record format (federation) or storage (store).
package rollout

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/store"
)

// Store is what the runner reads and writes.
type Store interface {
	CreateRollout(ctx context.Context, r catalog.Rollout) error
	UpdateRollout(ctx context.Context, r catalog.Rollout, prevUpdated time.Time) error
	Rollout(ctx context.Context, id string) (store.SignedRollout, error)
	ListRollouts(ctx context.Context, tier string) ([]store.SignedRollout, error)
	Patches(ctx context.Context, f store.PatchFilter) ([]catalog.Patch, error)
	Withdraw(ctx context.Context, digest string) (catalog.Patch, error)
	FleetSummary(ctx context.Context, self, dc string, f store.FleetFilter) ([]store.FleetTotal, error)
}

// Emitter posts webhook events (webhook.Dispatcher).
type Emitter interface {
	Emit(ctx context.Context, event string, payload any) error
}

// Webhook event names, as the webhook package defines them.
const (
	EventWaveOpened = "rollout.wave_opened"
	EventHalted     = "rollout.halted"
)

// DefaultTick is how often the runner looks at live rollouts.
const DefaultTick = 5 * time.Second

// Config is what New builds a Manager from.
type Config struct {
	Store Store
	// Node and DC name the hub in its own fleet summary.
	Node, DC string
	// KnownDCs lists the data centres seen in gossip or fleet reports; a
	// plan's every wave must match one of them. Nil knows DC only.
	KnownDCs func(ctx context.Context) ([]string, error)
	// Emit receives rollout.wave_opened and rollout.halted; nil posts none.
	Emit Emitter
	// Tick is the runner's period; 0 means DefaultTick.
	Tick time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	Log *slog.Logger
}

// Manager runs the rollouts of a hub.
type Manager struct {
	cfg Config
	mu  sync.Mutex
	// gateSince is when each live rollout's gate began to pass without a
	// break: runner state, not signed, so a hub restart restarts a soak.
	gateSince map[string]time.Time
}

// New returns a Manager; Run drives it.
func New(cfg Config) *Manager {
	if cfg.Tick <= 0 {
		cfg.Tick = DefaultTick
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Manager{cfg: cfg, gateSince: map[string]time.Time{}}
}

// Plan is an operator's request for a rollout.
type Plan struct {
	Tier    string
	Version string
	// Waves is the spec ParseWaves reads, e.g. "dc-canary:0h,eu-*:6h:10%".
	Waves string
	// Gate is the gate of every wave; DefaultGate when nil.
	Gate *catalog.Gate
}

func (m *Manager) now() time.Time { return m.cfg.Now().UTC().Truncate(time.Microsecond) }

// Create checks p and stores it as a new active rollout. Bad input is an
// InvalidError, a version with no live patch on the tier ErrNotFound, a
// second live rollout of the tier ErrConflict; none changes anything.
func (m *Manager) Create(ctx context.Context, p Plan) (catalog.Rollout, error) {
	if err := catalog.ValidName("tier", p.Tier); err != nil {
		return catalog.Rollout{}, err
	}
	if err := catalog.ValidVersion(p.Version); err != nil {
		return catalog.Rollout{}, err
	}
	waves, err := catalog.ParseWaves(p.Waves)
	if err != nil {
		return catalog.Rollout{}, err
	}
	known, err := m.knownDCs(ctx)
	if err != nil {
		return catalog.Rollout{}, err
	}
	for i, w := range waves {
		if !slices.ContainsFunc(known, w.Matches) {
			return catalog.Rollout{}, &catalog.InvalidError{Field: fmt.Sprintf("waves[%d]", i),
				Message: fmt.Sprintf("%q matches no known data centre (known: %v)", w.DC, known)}
		}
	}
	g := DefaultGate()
	if p.Gate != nil {
		g = *p.Gate
	}
	ps, err := m.cfg.Store.Patches(ctx, store.PatchFilter{Tier: p.Tier, Version: p.Version, Limit: 1})
	if err != nil {
		return catalog.Rollout{}, err
	}
	if len(ps) == 0 {
		return catalog.Rollout{}, fmt.Errorf("no live patch of version %s on tier %q: %w", p.Version, p.Tier, catalog.ErrNotFound)
	}
	var id [8]byte
	if _, err := rand.Read(id[:]); err != nil {
		return catalog.Rollout{}, err
	}
	now := m.now()
	r := catalog.Rollout{
		ID: hex.EncodeToString(id[:]), Tier: p.Tier, Version: p.Version, Waves: waves, Gate: g,
		State: catalog.RolloutActive, Opened: []time.Time{}, Created: now, Updated: now,
	}
	if err := r.Validate(); err != nil {
		return catalog.Rollout{}, err
	}
	if err := m.cfg.Store.CreateRollout(ctx, r); err != nil {
		return catalog.Rollout{}, err
	}
	m.cfg.Log.Info("rollout created", "rollout", r.ID, "tier", r.Tier, "version", r.Version, "waves", catalog.FormatWaves(r.Waves))
	// The first wave usually opens at once: do not wait for a tick. That
	// is the runner's doing, as on a tick, not a second admin change.
	if _, err := m.step(store.WithoutActor(ctx), r.ID); err != nil {
		m.cfg.Log.Warn("rollout step", "rollout", r.ID, "err", err)
	}
	got, err := m.cfg.Store.Rollout(ctx, r.ID)
	if err != nil {
		return r, nil
	}
	return got.Rollout, nil
}

// DefaultGate is the gate of a plan that names none.
func DefaultGate() catalog.Gate {
	return catalog.Gate{
		MaxFailedPercent: catalog.DefaultGateMaxFailedPercent,
		MinReporting:     catalog.DefaultGateMinReporting,
		SoakSeconds:      int64(catalog.DefaultGateSoak / time.Second),
	}
}

func (m *Manager) knownDCs(ctx context.Context) ([]string, error) {
	known := []string{}
	if m.cfg.DC != "" {
		known = append(known, m.cfg.DC)
	}
	if m.cfg.KnownDCs != nil {
		more, err := m.cfg.KnownDCs(ctx)
		if err != nil {
			return nil, fmt.Errorf("known data centres: %w", err)
		}
		known = append(known, more...)
	}
	slices.Sort(known)
	return slices.Compact(known), nil
}

// Halt stops a rollout's waves where they stand, with the operator's
// reason. ErrConflict unless it is active.
func (m *Manager) Halt(ctx context.Context, id, reason string) (catalog.Rollout, error) {
	if reason == "" {
		reason = "halted by an operator"
	}
	return m.change(ctx, id, []catalog.RolloutState{catalog.RolloutActive}, func(r *catalog.Rollout) error {
		r.State, r.Reason = catalog.RolloutHalted, reason
		return nil
	})
}

// Resume lets a halted rollout go on. The failures the gate counts now are
// accepted: from here it halts only on failures beyond them.
func (m *Manager) Resume(ctx context.Context, id string) (catalog.Rollout, error) {
	return m.change(ctx, id, []catalog.RolloutState{catalog.RolloutHalted}, func(r *catalog.Rollout) error {
		_, failed, err := m.gateCounts(ctx, *r)
		if err != nil {
			return err
		}
		r.State, r.Reason, r.AckFailed = catalog.RolloutActive, "", failed
		return nil
	})
}

// Abort ends a live rollout and withdraws its version's patches on its
// tier, everywhere (a withdrawal is signed and reaches every tier).
func (m *Manager) Abort(ctx context.Context, id string) (catalog.Rollout, error) {
	return m.change(ctx, id, []catalog.RolloutState{catalog.RolloutActive, catalog.RolloutHalted}, func(r *catalog.Rollout) error {
		ps, err := m.cfg.Store.Patches(ctx, store.PatchFilter{Tier: r.Tier, Version: r.Version, Limit: 1000})
		if err != nil {
			return err
		}
		for _, p := range ps {
			if _, err := m.cfg.Store.Withdraw(ctx, p.Digest); err != nil && !errors.Is(err, catalog.ErrConflict) {
				return fmt.Errorf("withdraw %s: %w", p.Digest, err)
			}
		}
		r.State, r.Reason = catalog.RolloutAborted, "aborted by an operator; its patches are withdrawn"
		return nil
	})
}

// change applies fn to rollout id if it is in one of from, and stores it.
func (m *Manager) change(ctx context.Context, id string, from []catalog.RolloutState, fn func(*catalog.Rollout) error) (catalog.Rollout, error) {
	if err := catalog.ValidRolloutID(id); err != nil {
		return catalog.Rollout{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	sr, err := m.cfg.Store.Rollout(ctx, id)
	if err != nil {
		return catalog.Rollout{}, err
	}
	r := sr.Rollout
	if !slices.Contains(from, r.State) {
		return catalog.Rollout{}, fmt.Errorf("rollout %s is %s, want %v: %w", id, r.State, from, catalog.ErrConflict)
	}
	prev := r.Updated
	if err := fn(&r); err != nil {
		return catalog.Rollout{}, err
	}
	r.Updated = m.now()
	if err := m.cfg.Store.UpdateRollout(ctx, r, prev); err != nil {
		return catalog.Rollout{}, err
	}
	delete(m.gateSince, id)
	m.cfg.Log.Info("rollout changed", "rollout", id, "state", r.State, "reason", r.Reason)
	if r.State == catalog.RolloutHalted {
		m.emit(ctx, EventHalted, r)
	}
	return r, nil
}

// Run ticks until ctx ends.
func (m *Manager) Run(ctx context.Context) {
	t := time.NewTicker(m.cfg.Tick)
	defer t.Stop()
	for {
		if err := m.Tick(ctx); err != nil && ctx.Err() == nil {
			m.cfg.Log.Warn("rollout tick", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Tick steps every active rollout once.
func (m *Manager) Tick(ctx context.Context) error {
	rs, err := m.cfg.Store.ListRollouts(ctx, "")
	if err != nil {
		return err
	}
	var errs []error
	for _, sr := range rs {
		if sr.Rollout.State != catalog.RolloutActive {
			continue
		}
		if _, err := m.step(ctx, sr.Rollout.ID); err != nil {
			errs = append(errs, fmt.Errorf("rollout %s: %w", sr.Rollout.ID, err))
		}
	}
	return errors.Join(errs...)
}

// step moves one rollout on as far as it goes now, a wave at a time.
func (m *Manager) step(ctx context.Context, id string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	changed := false
	for range 65 { // at most one change per wave, plus completion
		sr, err := m.cfg.Store.Rollout(ctx, id)
		if err != nil {
			return changed, err
		}
		r := sr.Rollout
		if r.State != catalog.RolloutActive {
			return changed, nil
		}
		now := m.now()
		reporting, failed, err := m.gateCounts(ctx, r)
		if err != nil {
			return changed, err
		}
		since := m.gateSince[id]
		if len(r.Opened) > 0 && r.Gate.Check(reporting, failed-r.AckFailed) == catalog.GatePass {
			if since.IsZero() {
				since = now
				m.gateSince[id] = now
			}
		} else {
			since = time.Time{}
			delete(m.gateSince, id)
		}
		next, ok := r.Step(now, reporting, failed, since)
		if !ok {
			return changed, nil
		}
		if err := m.cfg.Store.UpdateRollout(ctx, next, r.Updated); err != nil {
			return changed, err
		}
		changed = true
		delete(m.gateSince, id)
		switch {
		case next.State == catalog.RolloutHalted:
			m.cfg.Log.Warn("rollout halted at its gate", "rollout", id, "reason", next.Reason)
			m.emit(ctx, EventHalted, next)
		case len(next.Opened) > len(r.Opened):
			w := len(next.Opened) - 1
			m.cfg.Log.Info("rollout wave opened", "rollout", id, "wave", w+1, "dc", next.Waves[w].DC)
			m.emit(ctx, EventWaveOpened, next)
		default:
			m.cfg.Log.Info("rollout "+string(next.State), "rollout", id)
		}
	}
	return changed, nil
}

// gateCounts reads the hub's fleet summary: machines in the open waves'
// data centres reporting r's version, and how many of them failed.
func (m *Manager) gateCounts(ctx context.Context, r catalog.Rollout) (reporting, failed int64, err error) {
	if len(r.Opened) == 0 {
		return 0, 0, nil
	}
	ts, err := m.cfg.Store.FleetSummary(ctx, m.cfg.Node, m.cfg.DC, store.FleetFilter{PatchVersion: r.Version})
	if err != nil {
		return 0, 0, fmt.Errorf("fleet summary: %w", err)
	}
	open := r.Waves[:len(r.Opened)]
	for _, t := range ts {
		if t.PatchVersion != r.Version || !slices.ContainsFunc(open, func(w catalog.Wave) bool { return w.Matches(t.DC) }) {
			continue
		}
		reporting += t.Machines
		if t.State == catalog.StateApplyFailed || t.State == catalog.StateCheckFailed {
			failed += t.Machines
		}
	}
	return reporting, failed, nil
}

// WaveEvent is the payload of rollout.wave_opened and rollout.halted.
type WaveEvent struct {
	Rollout catalog.Rollout `json:"rollout"`
	// Wave is the 1-based number of the wave opened (or open) and DC its
	// data centre glob.
	Wave   int    `json:"wave"`
	DC     string `json:"dc"`
	Reason string `json:"reason,omitempty"`
}

func (m *Manager) emit(ctx context.Context, event string, r catalog.Rollout) {
	if m.cfg.Emit == nil {
		return
	}
	// An event tells of a change already audited; queueing it is not one.
	ctx = store.WithoutActor(ctx)
	ev := WaveEvent{Rollout: r, Wave: len(r.Opened), Reason: r.Reason}
	if n := len(r.Opened); n > 0 {
		ev.DC = r.Waves[n-1].DC
	}
	if err := m.cfg.Emit.Emit(ctx, event, ev); err != nil {
		m.cfg.Log.Warn("rollout webhook", "event", event, "rollout", r.ID, "err", err)
	}
}
