package packaging

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/patchmesh/patchmesh/internal/meshtest"
	"github.com/patchmesh/patchmesh/node"
)

const dashboardFile = "grafana/patchmesh.json"

// dashboard is the part of a Grafana dashboard that names metrics: every
// panel's queries (rows nest their panels) and the template variables.
type dashboard struct {
	Title      string  `json:"title"`
	UID        string  `json:"uid"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name  string          `json:"name"`
			Type  string          `json:"type"`
			Query json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID      int     `json:"id"`
	Title   string  `json:"title"`
	Type    string  `json:"type"`
	Panels  []panel `json:"panels"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
}

// query is one PromQL expression of the dashboard and where it is.
type query struct {
	where string
	expr  string
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return d
}

// queries lists every expression of the dashboard; a panel that is not a
// row and has no query is an error, as is a query with no expression.
func (d dashboard) queries() ([]query, error) {
	var out []query
	var walk func(ps []panel) error
	walk = func(ps []panel) error {
		for _, p := range ps {
			if p.Type == "row" {
				if err := walk(p.Panels); err != nil {
					return err
				}
				continue
			}
			if len(p.Targets) == 0 {
				return fmt.Errorf("panel %d %q has no query", p.ID, p.Title)
			}
			for _, tg := range p.Targets {
				if strings.TrimSpace(tg.Expr) == "" {
					return fmt.Errorf("panel %d %q query %s has no expr", p.ID, p.Title, tg.RefID)
				}
				out = append(out, query{where: fmt.Sprintf("panel %d %q query %s", p.ID, p.Title, tg.RefID), expr: tg.Expr})
			}
		}
		return nil
	}
	if err := walk(d.Panels); err != nil {
		return nil, err
	}
	labelValues := regexp.MustCompile(`^label_values\((.+),\s*[A-Za-z_][A-Za-z0-9_]*\)$`)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		// Grafana stores a variable's query as a string or, newer, as
		// {"query": "..."}.
		var q string
		if json.Unmarshal(v.Query, &q) != nil {
			var obj struct{ Query string }
			if err := json.Unmarshal(v.Query, &obj); err != nil {
				return nil, fmt.Errorf("variable %s: query: %w", v.Name, err)
			}
			q = obj.Query
		}
		m := labelValues.FindStringSubmatch(strings.TrimSpace(q))
		if m == nil {
			return nil, fmt.Errorf("variable %s: want label_values(selector, label), got %q", v.Name, q)
		}
		out = append(out, query{where: "variable " + v.Name, expr: m[1]})
	}
	return out, nil
}

// grafanaRanges are Grafana's range variables, which PromQL cannot parse;
// any duration stands in for them. Variables inside label matchers are
// strings to PromQL and stay as they are.
var grafanaRanges = strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h")

// metricNames parses expr with Prometheus's own PromQL parser and returns
// the metric names its selectors name.
func metricNames(expr string) ([]string, error) {
	e, err := parser.NewParser(parser.Options{}).ParseExpr(grafanaRanges.Replace(expr))
	if err != nil {
		return nil, err
	}
	var names []string
	var bad error
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name := vs.Name
		if name == "" {
			for _, m := range vs.LabelMatchers {
				if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
					name = m.Value
				}
			}
		}
		if name == "" {
			bad = fmt.Errorf("selector %s names no metric", vs)
			return bad
		}
		names = append(names, name)
		return nil
	})
	return names, bad
}

// exported says whether a series name exists in families: the name of a
// family, or a histogram's or summary's _bucket, _sum or _count series.
func exported(families map[string]*dto.MetricFamily, name string) bool {
	if _, ok := families[name]; ok {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suffix)
		if !ok {
			continue
		}
		f, ok := families[base]
		if !ok {
			continue
		}
		switch f.GetType() {
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			return true
		case dto.MetricType_SUMMARY:
			return suffix != "_bucket"
		}
	}
	return false
}

func scrape(ctx context.Context, n *meshtest.Node) (map[string]*dto.MetricFamily, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.URL+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	// Ask for the text format expfmt's text parser reads.
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s/metrics: status %d", n.URL, resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(resp.Body)
}

func TestDashboardQueriesParse(t *testing.T) {
	d := loadDashboard(t)
	if d.Title == "" || d.UID == "" {
		t.Errorf("%s: want a title and a uid, got %q and %q", dashboardFile, d.Title, d.UID)
	}
	qs, err := d.queries()
	if err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	for _, q := range qs {
		if _, err := metricNames(q.expr); err != nil {
			t.Errorf("%s: %q: %v", q.where, q.expr, err)
		}
	}
}

func TestMetricNames(t *testing.T) {
	tests := []struct {
		expr string
		want []string
	}{
		{`histogram_quantile(0.99, sum by (le) (rate(a_bucket{instance=~"$instance"}[$__rate_interval])))`, []string{"a_bucket"}},
		{`time() - max(b > 0)`, []string{"b"}},
		{`c - on(tier) d{x="y"}`, []string{"c", "d"}},
		{`{__name__="e"}`, []string{"e"}},
	}
	for _, tt := range tests {
		got, err := metricNames(tt.expr)
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("metricNames(%q): want %v, got %v (err %v)", tt.expr, tt.want, got, err)
		}
	}
	if _, err := metricNames(`{job="x"}`); err == nil {
		t.Errorf("metricNames of a selector without a name: want an error, got none")
	}
	if _, err := metricNames(`sum(rate(a[`); err == nil {
		t.Errorf("metricNames of broken PromQL: want an error, got none")
	}
}

// TestDashboardMetricsExist runs a hub and an edge that syncs from it, with
// gossip on, drives some traffic through them, and checks that every
// metric the dashboard queries is one of the nodes exports: the sync
// metrics exist only on a downstream, the rest on both.
func TestDashboardMetricsExist(t *testing.T) {
	d := loadDashboard(t)
	qs, err := d.queries()
	if err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}

	m := meshtest.New(t)
	m.Gossip = "local"
	hub := m.Start(meshtest.Spec{Name: "hub", Role: node.RoleHub})
	edge := m.Start(meshtest.Spec{Name: "edge", Role: node.RoleEdge, Links: []meshtest.Link{{
		Tier: "stable", Upstreams: []meshtest.Upstream{{URL: hub.URL, Token: hub.SyncToken(t, "stable", "edge")}},
	}}})

	content := []byte("dashboard test patch")
	p := hub.Upload(t, content, meshtest.PatchMeta{Kernel: "5.15.0-107.117-generic", Arch: "x86_64", Version: "1"})
	hub.Promote(t, p.Digest, "stable")
	meshtest.WaitFor(t, 30*time.Second, "the patch at the edge", func() error {
		ps, err := edge.TryPatches(t, nil)
		if err != nil {
			return err
		}
		if len(ps) != 1 {
			return fmt.Errorf("edge has %d patches", len(ps))
		}
		return nil
	})
	if b, err := edge.FetchBlob(t.Context(), p.Digest, edge.Admin(t)); err != nil || b.Digest != p.Digest {
		t.Fatalf("blob from the edge: want %s, got %+v (%v)", p.Digest, b, err)
	}

	families := map[string]*dto.MetricFamily{}
	for _, n := range []*meshtest.Node{hub, edge} {
		fs, err := scrape(t.Context(), n)
		if err != nil {
			t.Fatalf("%s: %v", n.Name, err)
		}
		for k, v := range fs {
			families[k] = v
		}
	}
	// The test must be able to fail: the sync families come from the edge
	// only, and a scrape that lost them would pass everything vacuously.
	for _, want := range []string{"patchmesh_sync_lag_events", "patchmesh_gossip_members", "patchmesh_http_request_duration_seconds"} {
		if _, ok := families[want]; !ok {
			t.Fatalf("scrapes lack %s; got %d families", want, len(families))
		}
	}

	used := map[string]bool{}
	for _, q := range qs {
		names, err := metricNames(q.expr)
		if err != nil {
			t.Errorf("%s: %q: %v", q.where, q.expr, err)
			continue
		}
		for _, name := range names {
			used[name] = true
			if !exported(families, name) {
				t.Errorf("%s: metric %s is not exported by a hub or an edge", q.where, name)
			}
		}
	}
	// Every family of patchmesh's own should have a panel.
	for name := range families {
		if !strings.HasPrefix(name, "patchmesh_") {
			continue
		}
		if !used[name] && !used[name+"_bucket"] && !used[name+"_count"] && !used[name+"_sum"] {
			t.Errorf("%s: no panel shows %s", dashboardFile, name)
		}
	}
}
