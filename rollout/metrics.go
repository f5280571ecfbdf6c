package rollout

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/store"
)

// Lister lists the rollouts a node holds.
type Lister interface {
	ListRollouts(ctx context.Context, tier string) ([]store.SignedRollout, error)
}

// Collector exports the rollouts a node holds (the signed states it
// enforces) by state, read from the store at each scrape, so that a halted
// rollout, which waits for an operator, shows on every node's dashboard.
type Collector struct {
	l     Lister
	count *prometheus.Desc
	waves *prometheus.Desc
}

// NewCollector returns a Collector over l.
func NewCollector(l Lister) *Collector {
	return &Collector{
		l: l,
		count: prometheus.NewDesc("patchmesh_rollouts",
			"Rollouts this node holds, by state (active, halted, completed, aborted).", []string{"state"}, nil),
		waves: prometheus.NewDesc("patchmesh_rollout_waves_open",
			"Waves open, summed over this node's live (active or halted) rollouts, by state.", []string{"state"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.count
	ch <- c.waves
}

// Collect implements prometheus.Collector. A store error exports nothing
// rather than zeros that would read as "no rollouts".
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rs, err := c.l.ListRollouts(ctx, "")
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.count, err)
		return
	}
	count := map[catalog.RolloutState]int{}
	waves := map[catalog.RolloutState]int{}
	for _, sr := range rs {
		count[sr.Rollout.State]++
		if sr.Rollout.Live() {
			waves[sr.Rollout.State] += len(sr.Rollout.Opened)
		}
	}
	for _, s := range []catalog.RolloutState{catalog.RolloutActive, catalog.RolloutHalted, catalog.RolloutCompleted, catalog.RolloutAborted} {
		ch <- prometheus.MustNewConstMetric(c.count, prometheus.GaugeValue, float64(count[s]), string(s))
	}
	for _, s := range []catalog.RolloutState{catalog.RolloutActive, catalog.RolloutHalted} {
		ch <- prometheus.MustNewConstMetric(c.waves, prometheus.GaugeValue, float64(waves[s]), string(s))
	}
}
