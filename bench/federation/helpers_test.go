package federation_test

import (
	"bufio"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"strings"
	"testing"
	"time"
)

// The figures are only as good as the arithmetic and the counting behind
// them; these check both without starting a node.

func TestPercentileIsNearestRank(t *testing.T) {
	ms := func(ns ...int) []time.Duration {
		var out []time.Duration
		for _, n := range ns {
			out = append(out, time.Duration(n)*time.Millisecond)
		}
		return out
	}
	twenty := ms(20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1)
	for _, tc := range []struct {
		samples []time.Duration
		p       float64
		want    time.Duration
	}{
		{twenty, 50, 10 * time.Millisecond},
		{twenty, 99, 20 * time.Millisecond}, // 20 samples: p99 is the largest
		{twenty, 95, 19 * time.Millisecond},
		{twenty, 100, 20 * time.Millisecond},
		{ms(7), 50, 7 * time.Millisecond},
		{nil, 99, 0},
	} {
		if got := percentile(tc.samples, tc.p); got != tc.want {
			t.Errorf("p%v of %v: want %v, got %v", tc.p, tc.samples, tc.want, got)
		}
	}
	if twenty[0] != 20*time.Millisecond {
		t.Errorf("percentile reordered its input: %v", twenty)
	}
}

// The counted bytes of an answer are its whole HTTP/1.1 message, status
// line and headers included, once per request on a kept-alive connection.
func TestWireCounterCountsWholeAnswer(t *testing.T) {
	const body = `{"tier":"edge","head":100,"hub_head":100,"events":[]}`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, body)
	}))
	defer srv.Close()

	var wire wireCounter
	c := &http.Client{Transport: wire.transport(), Timeout: 10 * time.Second}
	for i := range 3 {
		read := wire.read.Load()
		got, err := get(c, srv.URL+"/feed", "Bearer x")
		if err != nil {
			t.Fatal(err)
		}
		counted := wire.read.Load() - read

		// What the server sent, re-read through a fresh connection and
		// dumped as the raw message: it must be what was counted.
		resp, err := http.Get(srv.URL + "/feed")
		if err != nil {
			t.Fatal(err)
		}
		raw, err := httputil.DumpResponse(resp, true)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != body || counted != int64(len(raw)) {
			t.Errorf("request %d: want %d bytes counted (%q), got %d with body %q", i, len(raw), raw, counted, got)
		}
	}
	if wire.written.Load() == 0 {
		t.Error("no request bytes counted")
	}
}

func TestMetricValueReadsUnlabelledSample(t *testing.T) {
	const expo = `# HELP patchmesh_blob_served_bytes_total Blob bytes sent.
# TYPE patchmesh_blob_served_bytes_total counter
patchmesh_blob_served_bytes_total_other 5
patchmesh_blob_served_bytes_total 1.00663296e+08
`
	v, err := metricValue(bufio.NewScanner(strings.NewReader(expo)), servedBytesMetric)
	if err != nil || v != 100663296 {
		t.Errorf("want 100663296, got %v (%v)", v, err)
	}
	if _, err := metricValue(bufio.NewScanner(strings.NewReader("other 1\n")), servedBytesMetric); err == nil {
		t.Error("want an error for an exposition without the metric")
	}
}
