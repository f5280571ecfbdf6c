package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// counts are a node's totals of requests served and store queries run,
// from its own /metrics.
type counts struct {
	Requests, Queries float64
	// Store pool (database/sql): waits for a free connection, the time
	// they took, the connections in use and the pool's size.
	PoolWaits, PoolWaitSeconds, PoolInUse, PoolMax float64
}

// readCounts scrapes the node's /metrics through its handler, in process:
// no socket, so the scrape adds nothing to the bytes on the wire.
func (sn *simNode) readCounts(ctx context.Context) (counts, error) {
	// A starved node's collectors that read the store (rollouts) can miss
	// their deadline and fail the scrape: try a few times.
	var rec *httptest.ResponseRecorder
	for try := range 3 {
		if try > 0 {
			select {
			case <-time.After(time.Second):
			case <-ctx.Done():
				return counts{}, fmt.Errorf("%s: GET /metrics: %w", sn.spec.Name, ctx.Err())
			}
		}
		var err error
		if rec, err = sn.scrape(ctx); err != nil {
			return counts{}, err
		}
		if rec.Code == http.StatusOK {
			break
		}
	}
	if rec.Code != http.StatusOK {
		return counts{}, fmt.Errorf("%s: GET /metrics: status %d", sn.spec.Name, rec.Code)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(rec.Body)
	if err != nil {
		return counts{}, fmt.Errorf("%s: /metrics: %w", sn.spec.Name, err)
	}
	sum := func(name string) float64 {
		var s float64
		if mf, ok := mfs[name]; ok {
			for _, m := range mf.GetMetric() {
				s += float64(m.GetHistogram().GetSampleCount())
			}
		}
		return s
	}
	value := func(name string) float64 {
		var s float64
		if mf, ok := mfs[name]; ok {
			for _, m := range mf.GetMetric() {
				switch {
				case m.GetCounter() != nil:
					s += m.GetCounter().GetValue()
				case m.GetGauge() != nil:
					s += m.GetGauge().GetValue()
				}
			}
		}
		return s
	}
	return counts{
		Requests:        sum("patchmesh_http_request_duration_seconds"),
		Queries:         sum("patchmesh_store_query_duration_seconds"),
		PoolWaits:       value("go_sql_wait_count_total"),
		PoolWaitSeconds: value("go_sql_wait_duration_seconds_total"),
		PoolInUse:       value("go_sql_in_use_connections"),
		PoolMax:         value("go_sql_max_open_connections"),
	}, nil
}

// scrape serves one GET /metrics in process, for at most sn.timeout. The
// handler runs on in a goroutine of its own when it outlasts that or ctx:
// its collectors do not all watch the request's context, and a starved
// node must not hold the run past its -timeout (the node's stop ends it).
func (sn *simNode) scrape(ctx context.Context) (*httptest.ResponseRecorder, error) {
	ctx, cancel := context.WithTimeout(ctx, sn.timeout)
	defer cancel()
	rec := httptest.NewRecorder()
	req := httptest.NewRequestWithContext(ctx, http.MethodGet, "/metrics", nil)
	done := make(chan struct{})
	go func() {
		defer close(done)
		sn.n.Handler().ServeHTTP(rec, req)
	}()
	select {
	case <-done:
		return rec, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("%s: GET /metrics: %w", sn.spec.Name, ctx.Err())
	}
}

// reportPools prints, by role, the waits for a store connection since each
// node opened its store: how many, how long in all and at worst, and the
// most connections in use at the end against the pool's size.
func (m *mesh) reportPools(ctx context.Context, r *results) error {
	type agg struct {
		nodes, waiting         int
		waits, secs, worst     float64
		inUse, maxOpen, worstN float64
		worstName              string
	}
	by := map[string]*agg{}
	skipped := 0
	for _, sn := range m.nodes {
		if sn == nil || sn.n == nil {
			continue
		}
		c, err := sn.readCounts(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return err
			}
			// A node the kill or failover measures crashed has its store
			// closed: its scrape fails, and it is left out.
			skipped++
			continue
		}
		a := by[sn.spec.Role]
		if a == nil {
			a = &agg{}
			by[sn.spec.Role] = a
		}
		a.nodes++
		if c.PoolWaits > 0 {
			a.waiting++
		}
		a.waits += c.PoolWaits
		a.secs += c.PoolWaitSeconds
		if c.PoolWaitSeconds > a.worst {
			a.worst, a.worstN, a.worstName = c.PoolWaitSeconds, c.PoolWaits, sn.spec.Name
		}
		a.inUse = max(a.inUse, c.PoolInUse)
		a.maxOpen = max(a.maxOpen, c.PoolMax)
	}
	for _, role := range []string{"hub", "relay", "edge"} {
		a := by[role]
		if a == nil {
			continue
		}
		r.printf("store pool, %s (%d nodes): %d waited for a connection, %.0f waits, %.2f s in all; worst %s %.0f waits %.2f s; in use now max %.0f of %.0f",
			role, a.nodes, a.waiting, a.waits, a.secs, a.worstName, a.worstN, a.worst, a.inUse, a.maxOpen)
	}
	if skipped > 0 {
		r.printf("store pool: %d nodes left out (crashed by the measurements, or their scrape failed)", skipped)
	}
	return nil
}
