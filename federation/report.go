package federation

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/store"
)

// Fleet reports travel upstream on the sync links: every node pushes, per
// link, what the machines of the link's tier reported to it and what its
// own downstreams pushed to it (its subtree), to the upstream the link
// uses, with the link's sync token. The upstream keeps the push whole, as
// the latest word of that link, so every node holds its subtree and the
// hub the fleet. Each entry names the node it is about and when its
// figures are as of; relays pass their downstreams' entries on unchanged.
// A report is a hint about the fleet, never a decision about what runs:
// nothing in it is signed.

// Report limits, checked by the receiving node.
const (
	// MaxReportEntries bounds the nodes of one subtree in a push.
	MaxReportEntries = 10000
	// MaxReportCounts bounds the count rows of one entry.
	MaxReportCounts = 100000
	// DefaultMaxReportBytes is the default bound on a push's body: about
	// 300,000 machine rows.
	DefaultMaxReportBytes = 64 << 20
)

// ReportPush is the body of POST /v1/sync/report.
type ReportPush struct {
	V int `json:"v"`
	// Node is the pushing node's name.
	Node string `json:"node"`
	// Tier is the tier the push is for: the pushing link's hub tier. It
	// must be the tier of the sync token it comes with (or that tier's
	// hub tier).
	Tier string `json:"tier"`
	// Seq rises with every push of a link (Unix microseconds of the
	// push, or the last one plus one): an older or repeated push is
	// refused.
	Seq     int64         `json:"seq"`
	Entries []ReportEntry `json:"entries"`
}

// ReportEntry is one node's figures as of a time.
type ReportEntry struct {
	Node string    `json:"node"`
	DC   string    `json:"dc"`
	AsOf time.Time `json:"as_of"`
	// Counts group the node's machines by kernel, patch version and state.
	Counts []ReportCount `json:"counts"`
	// Rows says Machines lists every machine of the node (the pushing
	// chain sends per-machine rows); without it Machines is empty.
	Rows     bool            `json:"rows,omitempty"`
	Machines []ReportMachine `json:"machines,omitempty"`
	// Progress is the node's sync position, as of its own time: the
	// pushing node's own, or the newest it knows of a node below it
	// (progress.go). Absent from older nodes.
	Progress *NodeProgress `json:"progress,omitempty"`
}

// ReportCount is how many of a node's machines share a kernel, patch
// version and state.
type ReportCount struct {
	Kernel       string               `json:"kernel"`
	PatchVersion string               `json:"patch_version"`
	State        catalog.MachineState `json:"state"`
	Machines     int64                `json:"machines"`
}

// ReportMachine is one machine under its mesh-wide ID.
type ReportMachine struct {
	ID           string               `json:"id"`
	Kernel       string               `json:"kernel"`
	Arch         string               `json:"arch"`
	State        catalog.MachineState `json:"state"`
	PatchVersion string               `json:"patch_version"`
	LastSeen     time.Time            `json:"last_seen"`
}

var machineIDRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// Validate checks a push as a receiving node must before keeping any of
// it; the error is a *catalog.InvalidError naming the field.
func (p ReportPush) Validate(now time.Time) error {
	bad := func(field, format string, args ...any) error {
		return &catalog.InvalidError{Field: field, Message: fmt.Sprintf(format, args...)}
	}
	if p.V != FormatVersion {
		return bad("v", "format version %d, this node reads %d", p.V, FormatVersion)
	}
	if err := catalog.ValidNodeName("node", p.Node); err != nil {
		return err
	}
	if err := catalog.ValidName("tier", p.Tier); err != nil {
		return err
	}
	if p.Seq < 1 {
		return bad("seq", "must be at least 1")
	}
	if len(p.Entries) > MaxReportEntries {
		return bad("entries", "at most %d nodes in one push, got %d", MaxReportEntries, len(p.Entries))
	}
	seen := make(map[string]bool, len(p.Entries))
	for i, e := range p.Entries {
		f := fmt.Sprintf("entries[%d]", i)
		if err := catalog.ValidNodeName(f+".node", e.Node); err != nil {
			return err
		}
		if seen[e.Node] {
			return bad(f+".node", "node %s is listed twice", e.Node)
		}
		seen[e.Node] = true
		if err := catalog.ValidNodeName(f+".dc", e.DC); err != nil {
			return err
		}
		if e.AsOf.IsZero() || e.AsOf.After(now.Add(MaxClockSkew)) {
			return bad(f+".as_of", "must be set and not in the future")
		}
		if e.Progress != nil {
			if err := e.Progress.Validate(f+".progress", now); err != nil {
				return err
			}
		}
		if len(e.Counts) > MaxReportCounts {
			return bad(f+".counts", "at most %d rows", MaxReportCounts)
		}
		for j, c := range e.Counts {
			cf := fmt.Sprintf("%s.counts[%d]", f, j)
			if err := validFigures(cf, c.Kernel, c.PatchVersion, c.State); err != nil {
				return err
			}
			if c.Machines < 1 {
				return bad(cf+".machines", "must be at least 1")
			}
		}
		if !e.Rows && len(e.Machines) > 0 {
			return bad(f+".machines", "must be empty unless rows is set")
		}
		for j, m := range e.Machines {
			mf := fmt.Sprintf("%s.machines[%d]", f, j)
			if !machineIDRE.MatchString(m.ID) {
				return bad(mf+".id", "must be a machine ID of 64 lowercase hex digits")
			}
			if err := validFigures(mf, m.Kernel, m.PatchVersion, m.State); err != nil {
				return err
			}
			if m.Arch != "" && catalog.ValidArch(m.Arch) != nil {
				return bad(mf+".arch", "must be a machine architecture")
			}
			if m.LastSeen.IsZero() {
				return bad(mf+".last_seen", "must be set")
			}
		}
	}
	return nil
}

func validFigures(field, kernel, version string, state catalog.MachineState) error {
	if kernel != "" && catalog.ValidKernel(kernel) != nil {
		return &catalog.InvalidError{Field: field + ".kernel", Message: "must be a kernel release"}
	}
	if version != "" && catalog.ValidVersion(version) != nil {
		return &catalog.InvalidError{Field: field + ".patch_version", Message: "must be empty or a patch version"}
	}
	if catalog.ValidState(state) != nil {
		return &catalog.InvalidError{Field: field + ".state", Message: "must be a machine state"}
	}
	return nil
}

// StoreEntries turns a push's entries into what the store keeps.
func (p ReportPush) StoreEntries() []store.FleetEntry {
	out := make([]store.FleetEntry, len(p.Entries))
	for i, e := range p.Entries {
		se := store.FleetEntry{Node: e.Node, DC: e.DC, AsOf: e.AsOf.UTC(), HasMachines: e.Rows}
		for _, c := range e.Counts {
			se.Counts = append(se.Counts, store.FleetCount(c))
		}
		for _, m := range e.Machines {
			se.Machines = append(se.Machines, store.FleetMachine{ID: m.ID, Node: e.Node, DC: e.DC, Kernel: m.Kernel,
				Arch: m.Arch, State: m.State, PatchVersion: m.PatchVersion, LastSeen: m.LastSeen.UTC()})
		}
		out[i] = se
	}
	return out
}

// ReportStore is what the reporter reads of the store.
type ReportStore interface {
	FleetEntries(ctx context.Context, tier string, withMachines bool) ([]store.FleetEntry, error)
	LocalFleet(ctx context.Context, tier string, withMachines bool) ([]store.FleetCount, []store.FleetMachine, error)
}

// LinkUpstream is a link's local tier, hub tier and the upstream it uses
// now, with that upstream's sync token.
type LinkUpstream struct {
	Tier, HubTier string
	Upstream      Upstream
}

// Links returns every link with the upstream it uses now.
func (p *Puller) Links() []LinkUpstream {
	out := make([]LinkUpstream, len(p.links))
	for i, l := range p.links {
		out[i] = LinkUpstream{Tier: l.cfg.Tier, HubTier: l.cfg.HubTier, Upstream: l.upstream()}
	}
	return out
}

// ReporterConfig is what NewReporter builds the report loop from.
type ReporterConfig struct {
	Store  ReportStore
	Client *http.Client
	// Links returns the links and the upstream each uses now
	// (Puller.Links), so that reports follow a failover.
	Links func() []LinkUpstream
	// Node and DC name this node in its own entry.
	Node, DC string
	// Interval is the mean time between pushes; each wait is drawn from
	// 0.75 to 1.25 of it. Default 60s.
	Interval time.Duration
	// Machines sends per-machine rows, not only counts.
	Machines bool
	// Progress, if set, gives this node's own sync figures for its entry;
	// Known, if set, the newest figures this node knows of another, for
	// the entries of its subtree.
	Progress func() NodeProgress
	Known    func(node string) (NodeProgress, bool)
	Log      *slog.Logger
	Now      func() time.Time
}

// Reporter pushes fleet reports up every link.
type Reporter struct {
	cfg ReporterConfig
	mu  sync.Mutex
	seq map[string]int64 // last seq pushed, by local tier

	pushes, failures, bytes *prometheus.CounterVec
	lastBytes               atomic.Int64
}

// NewReporter checks cfg and returns a Reporter ready to Run.
func NewReporter(cfg ReporterConfig) (*Reporter, error) {
	if cfg.Store == nil || cfg.Client == nil || cfg.Links == nil {
		return nil, errors.New("federation: ReporterConfig needs Store, Client and Links")
	}
	if err := catalog.ValidNodeName("node", cfg.Node); err != nil {
		return nil, fmt.Errorf("federation: reporter: %w", err)
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Minute
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	r := &Reporter{cfg: cfg, seq: map[string]int64{},
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "patchmesh_report_pushes_total",
			Help: "Fleet report pushes to the upstream, by local tier."}, tierLabel),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "patchmesh_report_push_failures_total",
			Help: "Fleet report pushes that failed, by local tier."}, tierLabel),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "patchmesh_report_push_bytes_total",
			Help: "Bytes of fleet report bodies pushed upstream, by local tier."}, tierLabel),
	}
	// Every link's series exist, at 0, from the start, so that a rate over
	// them reads 0 on a node that never failed.
	for _, l := range cfg.Links() {
		r.pushes.WithLabelValues(l.Tier)
		r.failures.WithLabelValues(l.Tier)
		r.bytes.WithLabelValues(l.Tier)
	}
	return r, nil
}

// Describe implements prometheus.Collector.
func (r *Reporter) Describe(ch chan<- *prometheus.Desc) {
	r.pushes.Describe(ch)
	r.failures.Describe(ch)
	r.bytes.Describe(ch)
}

// Collect implements prometheus.Collector.
func (r *Reporter) Collect(ch chan<- prometheus.Metric) {
	r.pushes.Collect(ch)
	r.failures.Collect(ch)
	r.bytes.Collect(ch)
}

// Run pushes until ctx ends, the first push at once and then about every
// Interval, each wait drawn from a quarter either side of it: nodes
// started together (a data centre back from an outage, a mesh simulated
// on one machine) would otherwise push to their upstreams in the same
// second every Interval, for good.
func (r *Reporter) Run(ctx context.Context) {
	for {
		r.PushAll(ctx)
		t := time.NewTimer(jittered(r.cfg.Interval, rand.Float64()))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// jittered is d scaled to between 0.75 and 1.25 of it by u in [0, 1).
func jittered(d time.Duration, u float64) time.Duration {
	return time.Duration(float64(d) * (0.75 + u/2))
}

// PushAll pushes one report up every link now and returns the errors.
func (r *Reporter) PushAll(ctx context.Context) error {
	var errs []error
	for _, l := range r.cfg.Links() {
		if err := r.push(ctx, l); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			r.failures.WithLabelValues(l.Tier).Inc()
			r.cfg.Log.Warn("fleet report push failed", slog.String("tier", l.Tier),
				slog.String("upstream", l.Upstream.URL), slog.String("error", err.Error()))
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Build returns the report link l pushes now: this node's own entry, then
// the newest entry of each node its downstreams reported for l's tier.
func (r *Reporter) Build(ctx context.Context, l LinkUpstream) (ReportPush, error) {
	now := r.cfg.Now().UTC()
	counts, machines, err := r.cfg.Store.LocalFleet(ctx, l.Tier, r.cfg.Machines)
	if err != nil {
		return ReportPush{}, err
	}
	own := ReportEntry{Node: r.cfg.Node, DC: r.cfg.DC, AsOf: now, Counts: reportCounts(counts), Rows: r.cfg.Machines}
	if r.cfg.Progress != nil {
		p := r.cfg.Progress()
		own.Progress = &p
	}
	for _, m := range machines {
		own.Machines = append(own.Machines, reportMachine(m))
	}
	push := ReportPush{V: FormatVersion, Node: r.cfg.Node, Tier: l.HubTier, Entries: []ReportEntry{own}}
	below, err := r.cfg.Store.FleetEntries(ctx, l.Tier, r.cfg.Machines)
	if err != nil {
		return ReportPush{}, err
	}
	for _, e := range below {
		if e.Node == r.cfg.Node {
			continue // this node's own word is the one above
		}
		re := ReportEntry{Node: e.Node, DC: e.DC, AsOf: e.AsOf, Counts: reportCounts(e.Counts), Rows: r.cfg.Machines && e.HasMachines}
		if r.cfg.Known != nil {
			if p, ok := r.cfg.Known(e.Node); ok {
				re.Progress = &p
			}
		}
		if re.Rows {
			for _, m := range e.Machines {
				re.Machines = append(re.Machines, reportMachine(m))
			}
		}
		push.Entries = append(push.Entries, re)
	}
	r.mu.Lock()
	push.Seq = max(now.UnixMicro(), r.seq[l.Tier]+1)
	r.seq[l.Tier] = push.Seq
	r.mu.Unlock()
	return push, nil
}

func reportCounts(cs []store.FleetCount) []ReportCount {
	out := make([]ReportCount, 0, len(cs))
	for _, c := range cs {
		out = append(out, ReportCount(c))
	}
	return out
}

func reportMachine(m store.FleetMachine) ReportMachine {
	return ReportMachine{ID: m.ID, Kernel: m.Kernel, Arch: m.Arch, State: m.State, PatchVersion: m.PatchVersion, LastSeen: m.LastSeen.UTC()}
}

func (r *Reporter) push(ctx context.Context, l LinkUpstream) error {
	p, err := r.Build(ctx, l)
	if err != nil {
		return fmt.Errorf("build report: %w", err)
	}
	body, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, l.Upstream.URL+"/v1/sync/report", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+l.Upstream.Token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := r.cfg.Client.Do(req)
	if err != nil {
		return fmt.Errorf("report to %s: %w", l.Upstream.URL, err)
	}
	defer resp.Body.Close()
	r.pushes.WithLabelValues(l.Tier).Inc()
	r.bytes.WithLabelValues(l.Tier).Add(float64(len(body)))
	r.lastBytes.Store(int64(len(body)))
	if resp.StatusCode != http.StatusNoContent {
		return fmt.Errorf("report to %s: %s%s", l.Upstream.URL, resp.Status, errorBody(resp.Body, l.Upstream.Token))
	}
	return nil
}

// LastBytes is the size of the last push's body, for measurements.
func (r *Reporter) LastBytes() int64 { return r.lastBytes.Load() }
