package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// counts are a node's totals of requests served and store queries run,
// from its own /metrics.
type counts struct {
	Requests, Queries float64
}

// readCounts scrapes the node's /metrics through its handler, in process:
// no socket, so the scrape adds nothing to the bytes on the wire.
func (sn *simNode) readCounts() (counts, error) {
	rec := httptest.NewRecorder()
	sn.n.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
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
	return counts{
		Requests: sum("patchmesh_http_request_duration_seconds"),
		Queries:  sum("patchmesh_store_query_duration_seconds"),
	}, nil
}
