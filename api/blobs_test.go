package api_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/patchmesh/patchmesh/api"
	"github.com/patchmesh/patchmesh/blob"
)

func TestBlobDownloadRules(t *testing.T) {
	e := newEnv(t)
	file := content(10000, "blob-bytes")
	p := e.upload(file, "107.1") // on edge only
	edge := e.machine("edge", "edge-machine-000001")
	stable := e.machine("stable", "stable-machine-00001")
	syncEdge, _ := e.token("sync", "edge", "down-edge")
	syncStable, _ := e.token("sync", "stable", "down-stable")
	at, _ := e.token("auth", "edge", "fleet")
	path := "/v1/blobs/" + p.Digest

	for _, tc := range []struct {
		name, authz string
		status      int
		code        string
	}{
		{"machine on the patch's tier", edge, 200, ""},
		{"sync token on the patch's tier", "Bearer " + syncEdge, 200, ""},
		{"admin", e.admin, 200, ""},
		{"machine on another tier", stable, 404, "not_found"},
		{"sync token on another tier", "Bearer " + syncStable, 404, "not_found"},
		{"auth token", "Bearer " + at, 403, "forbidden"},
		{"no credentials", "", 401, "unauthorized"},
		{"malformed bearer", "Bearer nonsense", 401, "unauthorized"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.request(http.MethodGet, path, tc.authz, nil)
			if r.StatusCode != tc.status || (tc.code != "" && r.errCode() != tc.code) {
				t.Fatalf("%d %s, want %d %s", r.StatusCode, r.body, tc.status, tc.code)
			}
			if tc.status == 200 && string(r.body) != string(file) {
				t.Errorf("body of %d bytes differs from the uploaded file", len(r.body))
			}
		})
	}
	// A refused read looks exactly like a blob that does not exist.
	missing := e.request(http.MethodGet, "/v1/blobs/"+digestOf([]byte("no such file")), edge, nil)
	refused := e.request(http.MethodGet, path, stable, nil)
	if missing.StatusCode != refused.StatusCode || missing.errCode() != refused.errCode() {
		t.Errorf("missing blob %d %s vs refused blob %d %s; want the same answer", missing.StatusCode, missing.body, refused.StatusCode, refused.body)
	}
	var authzFail bool
	for _, l := range e.logs.lines(t) {
		if l["event"] == "authz_fail" && l["digest"] == p.Digest && l["tier"] == "stable" && l["reason"] == "not_on_tier" {
			authzFail = true
		}
	}
	if !authzFail {
		t.Errorf("no authz_fail event for the stable machine's refused read")
	}
	if r := e.request(http.MethodGet, "/v1/blobs/sha256:short", edge, nil); r.StatusCode != 400 || r.errField() != "digest" {
		t.Errorf("bad digest: %d %s, want 400 invalid_input digest", r.StatusCode, r.body)
	}

	// Withdrawn: machines and sync tokens lose it, admins keep it.
	e.want(e.request(http.MethodPost, "/v1/admin/patches/"+p.Digest+"/withdraw", e.admin, nil), http.StatusOK, nil)
	for _, authz := range []string{edge, "Bearer " + syncEdge} {
		if r := e.request(http.MethodGet, path, authz, nil); r.StatusCode != 404 {
			t.Errorf("withdrawn blob for a token: %d, want 404", r.StatusCode)
		}
	}
	if r := e.request(http.MethodGet, path, e.admin, nil); r.StatusCode != 200 {
		t.Errorf("withdrawn blob for the admin: %d, want 200", r.StatusCode)
	}
}

func TestBlobHTTPSemantics(t *testing.T) {
	e := newEnv(t)
	file := content(10000, "0123456789abcdef")
	p := e.upload(file, "107.1")
	edge := e.machine("edge", "edge-machine-000001")
	path := "/v1/blobs/" + p.Digest
	etag := `"` + p.Digest + `"`

	r := e.request(http.MethodGet, path, edge, nil)
	e.want(r, http.StatusOK, nil)
	for k, v := range map[string]string{
		"ETag":           etag,
		"Cache-Control":  "public, max-age=31536000, immutable",
		"Content-Type":   "application/octet-stream",
		"Content-Length": "10000",
		"Accept-Ranges":  "bytes",
	} {
		if got := r.Header.Get(k); got != v {
			t.Errorf("%s: %q, want %q", k, got, v)
		}
	}

	r = e.request(http.MethodGet, path, edge, nil, "Range", "bytes=100-199")
	if r.StatusCode != http.StatusPartialContent || string(r.body) != string(file[100:200]) ||
		r.Header.Get("Content-Range") != "bytes 100-199/10000" {
		t.Errorf("range 100-199: %d, %d bytes, Content-Range %q; want 206 with bytes 100-199/10000",
			r.StatusCode, len(r.body), r.Header.Get("Content-Range"))
	}
	r = e.request(http.MethodGet, path, edge, nil, "Range", "bytes=9990-")
	if r.StatusCode != http.StatusPartialContent || string(r.body) != string(file[9990:]) {
		t.Errorf("range 9990-: %d, %d bytes; want 206 with the last 10 bytes", r.StatusCode, len(r.body))
	}
	r = e.request(http.MethodGet, path, edge, nil, "Range", "bytes=20000-")
	if r.StatusCode != http.StatusRequestedRangeNotSatisfiable {
		t.Errorf("range past the end: %d, want 416", r.StatusCode)
	}
	r = e.request(http.MethodGet, path, edge, nil, "If-None-Match", etag)
	if r.StatusCode != http.StatusNotModified || len(r.body) != 0 || r.Header.Get("ETag") != etag {
		t.Errorf("If-None-Match with the ETag: %d, %d bytes, ETag %q; want 304, empty, same ETag", r.StatusCode, len(r.body), r.Header.Get("ETag"))
	}
	r = e.request(http.MethodGet, path, edge, nil, "If-None-Match", `"sha256:other"`)
	if r.StatusCode != http.StatusOK {
		t.Errorf("If-None-Match with another ETag: %d, want 200", r.StatusCode)
	}
	r = e.request(http.MethodGet, path, edge, nil, "Range", "bytes=0-9", "If-Range", etag)
	if r.StatusCode != http.StatusPartialContent {
		t.Errorf("If-Range with the ETag: %d, want 206", r.StatusCode)
	}
	r = e.request(http.MethodHead, path, edge, nil)
	if r.StatusCode != http.StatusOK || len(r.body) != 0 || r.Header.Get("Content-Length") != "10000" {
		t.Errorf("HEAD: %d, %d body bytes, Content-Length %q; want 200, no body, 10000", r.StatusCode, len(r.body), r.Header.Get("Content-Length"))
	}
}

// A whole-blob GET or HEAD (no range, no precondition) is answered without
// http.ServeContent; its answer must be the one ServeContent gives, which
// a GET with a non-matching If-None-Match still gets.
func TestBlobWholeAnswerIsServeContents(t *testing.T) {
	e := newEnv(t)
	file := content(10000, "whole")
	p := e.upload(file, "107.1")
	edge := e.machine("edge", "edge-machine-000001")
	path := "/v1/blobs/" + p.Digest
	for _, method := range []string{http.MethodGet, http.MethodHead} {
		whole := e.request(method, path, edge, nil)
		served := e.request(method, path, edge, nil, "If-None-Match", `"sha256:other"`)
		if whole.StatusCode != http.StatusOK || served.StatusCode != http.StatusOK {
			t.Fatalf("%s: status %d and %d, want 200 both", method, whole.StatusCode, served.StatusCode)
		}
		if string(whole.body) != string(served.body) {
			t.Errorf("%s: %d body bytes, ServeContent's answer %d", method, len(whole.body), len(served.body))
		}
		if method == http.MethodGet && string(whole.body) != string(file) {
			t.Errorf("GET: the body is not the file")
		}
		for _, h := range []http.Header{whole.Header, served.Header} {
			h.Del("Date")
			h.Del("X-Request-Id")
		}
		if !reflect.DeepEqual(whole.Header, served.Header) {
			t.Errorf("%s: headers\n%v\nServeContent's\n%v", method, whole.Header, served.Header)
		}
		if whole.Header.Get("Last-Modified") == "" {
			t.Errorf("%s: no Last-Modified", method)
		}
	}
}

func TestBlobBytesServedAreCounted(t *testing.T) {
	e := newEnv(t)
	p := e.upload(content(5000, "count-me"), "107.1")
	edge := e.machine("edge", "edge-machine-000001")
	e.want(e.request(http.MethodGet, "/v1/blobs/"+p.Digest, edge, nil), http.StatusOK, nil)
	e.want(e.request(http.MethodGet, "/v1/blobs/"+p.Digest, edge, nil, "Range", "bytes=0-99"), http.StatusPartialContent, nil)
	e.want(e.request(http.MethodHead, "/v1/blobs/"+p.Digest, edge, nil), http.StatusOK, nil)
	got := gatheredValue(t, e, "patchmesh_blob_served_bytes_total")
	if got != 5100 {
		t.Errorf("patchmesh_blob_served_bytes_total = %v, want 5100 (a full GET, a 100-byte range, a HEAD)", got)
	}
}

func gatheredValue(t *testing.T, e *env, name string) float64 {
	t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			var sum float64
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
			return sum
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// readFromRecorder is the connection end of a response: it records what
// ReadFrom was handed, as net/http's response does before sendfile.
type readFromRecorder struct {
	*httptest.ResponseRecorder
	mu  sync.Mutex
	src []io.Reader
}

func (w *readFromRecorder) ReadFrom(src io.Reader) (int64, error) {
	w.mu.Lock()
	w.src = append(w.src, src)
	w.mu.Unlock()
	return io.Copy(w.ResponseRecorder, src)
}

// TestBlobReachesConnectionReadFromWithTheFile guards the sendfile path:
// through every middleware and the byte counter, ServeContent's copy must
// hand the connection's ReadFrom the driver's *os.File (inside the
// io.LimitedReader that io.CopyN makes), not a wrapper around it.
func TestBlobReachesConnectionReadFromWithTheFile(t *testing.T) {
	e := newEnv(t)
	file := content(70000, "sendfile")
	p := e.upload(file, "107.1")
	edge := e.machine("edge", "edge-machine-000001")
	for _, rng := range []string{"", "bytes=10-65009"} {
		w := &readFromRecorder{ResponseRecorder: httptest.NewRecorder()}
		req := httptest.NewRequest(http.MethodGet, "/v1/blobs/"+p.Digest, nil)
		req.Header.Set("Authorization", edge)
		if rng != "" {
			req.Header.Set("Range", rng)
		}
		e.handler.ServeHTTP(w, req)
		if w.Code != 200 && w.Code != 206 {
			t.Fatalf("range %q: status %d, want 200 or 206; body %s", rng, w.Code, w.Body)
		}
		if len(w.src) != 1 {
			t.Fatalf("range %q: ReadFrom called %d times, want once", rng, len(w.src))
		}
		src := w.src[0]
		if lr, ok := src.(*io.LimitedReader); ok {
			src = lr.R
		}
		if _, ok := src.(*os.File); !ok {
			t.Errorf("range %q: ReadFrom got %T, want an *os.File (or io.LimitedReader of one) so sendfile applies", rng, w.src[0])
		}
		want := file
		if rng != "" {
			want = file[10:65010]
		}
		if w.Body.String() != string(want) {
			t.Errorf("range %q: body of %d bytes, want %d bytes of the file", rng, w.Body.Len(), len(want))
		}
	}
}

func TestGovernorRefusesBeyondCapacity(t *testing.T) {
	e := newEnv(t, func(c *api.Config) {
		c.Governor = api.GovernorConfig{AdminMaxInFlight: 1, AdminMaxQueue: -1}
	})
	// An upload whose body we hold open keeps the admin lane's one slot
	// busy.
	file := content(1000, "slow")
	pr, pw := io.Pipe()
	done := make(chan response, 1)
	go func() {
		done <- e.request(http.MethodPost, uploadPath(digestOf(file), testKernel, "1.1"), e.admin, pr)
	}()
	pw.Write(file[:10])
	waitFor(t, "the upload to hold the slot", func() bool {
		return gatheredValue(t, e, "patchmesh_governor_in_flight_requests") == 1
	})

	r := e.request(http.MethodGet, "/v1/admin/tiers", e.admin, nil)
	if r.StatusCode != http.StatusServiceUnavailable || r.errCode() != "overloaded" || r.Header.Get("Retry-After") == "" {
		t.Errorf("second request: %d %s Retry-After %q; want 503 overloaded with Retry-After", r.StatusCode, r.body, r.Header.Get("Retry-After"))
	}
	if got := gatheredValue(t, e, "patchmesh_governor_overloads_total"); got != 1 {
		t.Errorf("overloads_total = %v, want 1", got)
	}
	// Operators still see the node.
	for _, path := range []string{"/metrics", "/debug/info", "/debug/status"} {
		if r := e.request(http.MethodGet, path, "", nil); r.StatusCode != 200 {
			t.Errorf("GET %s while overloaded: %d, want 200", path, r.StatusCode)
		}
	}

	pw.Write(file[10:])
	pw.Close()
	select {
	case r := <-done:
		if r.StatusCode != http.StatusCreated {
			t.Errorf("the held upload: %d %s, want 201", r.StatusCode, r.body)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the held upload did not finish within 10s of its body closing")
	}
	e.want(e.request(http.MethodGet, "/v1/admin/tiers", e.admin, nil), http.StatusOK, nil)
}

// TestGovernorAdminLaneAnsweredWhileClientsFlood: with every client-lane
// slot held by an unauthenticated request that never finishes its body,
// client requests are refused with 503 and Retry-After, while admin calls,
// logins' lane aside, and the operations endpoints are still answered.
func TestGovernorAdminLaneAnsweredWhileClientsFlood(t *testing.T) {
	e := newEnv(t, func(c *api.Config) {
		c.Governor = api.GovernorConfig{MaxInFlight: 1, MaxQueue: -1}
	})
	pr, pw := io.Pipe()
	done := make(chan response, 1)
	go func() { done <- e.request(http.MethodPost, "/v1/client/register", "", pr) }()
	pw.Write([]byte(`{"machine_id":`))
	waitFor(t, "the held request to take the client slot", func() bool {
		return gatheredValue(t, e, "patchmesh_governor_in_flight_requests") == 1
	})
	r := e.request(http.MethodGet, "/v1/client/nodes", "", nil)
	if r.StatusCode != http.StatusServiceUnavailable || r.errCode() != "overloaded" || r.Header.Get("Retry-After") == "" {
		t.Errorf("client request with the client lane full: %d %s Retry-After %q; want 503 overloaded with Retry-After",
			r.StatusCode, r.body, r.Header.Get("Retry-After"))
	}
	for _, path := range []string{"/v1/admin/tiers", "/v1/topology", "/v1/admin/machines"} {
		if r := e.request(http.MethodGet, path, e.admin, nil); r.StatusCode != http.StatusOK {
			t.Errorf("GET %s with the client lane full: %d %s, want 200", path, r.StatusCode, r.body)
		}
	}
	for _, path := range []string{"/metrics", "/debug/info"} {
		if r := e.request(http.MethodGet, path, "", nil); r.StatusCode != http.StatusOK {
			t.Errorf("GET %s with the client lane full: %d, want 200", path, r.StatusCode)
		}
	}
	pw.Close()
	<-done
}

func TestGovernorQueueWaitsThenTimesOut(t *testing.T) {
	e := newEnv(t, func(c *api.Config) {
		c.Governor = api.GovernorConfig{AdminMaxInFlight: 1, AdminMaxQueue: 1, QueueTimeout: 50 * time.Millisecond}
	})
	file := content(1000, "slow")
	pr, pw := io.Pipe()
	done := make(chan response, 1)
	go func() {
		done <- e.request(http.MethodPost, uploadPath(digestOf(file), testKernel, "1.1"), e.admin, pr)
	}()
	pw.Write(file[:10])
	waitFor(t, "the upload to hold the slot", func() bool {
		return gatheredValue(t, e, "patchmesh_governor_in_flight_requests") == 1
	})
	r := e.request(http.MethodGet, "/v1/admin/tiers", e.admin, nil)
	if r.StatusCode != http.StatusServiceUnavailable || r.errCode() != "overloaded" {
		t.Errorf("queued request past its timeout: %d %s, want 503 overloaded", r.StatusCode, r.body)
	}
	if got := gatheredValue(t, e, "patchmesh_governor_queued_requests"); got != 0 {
		t.Errorf("queued_requests after the timeout = %v, want 0", got)
	}
	pw.Write(file[10:])
	pw.Close()
	<-done
}

// waitFor polls cond every 5ms for at most 10s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for range 2000 {
		if cond() {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("gave up after 10s waiting for %s", what)
}

func TestMetricsEndpointServesLintCleanFamilies(t *testing.T) {
	e := newEnv(t)
	p := e.upload(content(100, "m"), "1.1")
	edge := e.machine("edge", "edge-machine-000001")
	e.want(e.request(http.MethodGet, "/v1/blobs/"+p.Digest, edge, nil), http.StatusOK, nil)
	e.request(http.MethodGet, "/v1/client/status", "Bearer pmm_0123456789abcdef_"+strings.Repeat("A", 43), nil)
	// A store failure, for the errors counter.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	e.store.Ping(ctx)
	e.store.Close()
	e.store.Ping(context.Background())

	r := e.request(http.MethodGet, "/metrics", "", nil)
	e.want(r, http.StatusOK, nil)
	for _, fam := range []string{
		"patchmesh_http_request_duration_seconds",
		"patchmesh_auth_decisions_total",
		"patchmesh_auth_duration_seconds",
		"patchmesh_store_query_duration_seconds",
		"patchmesh_store_errors_total",
		"patchmesh_governor_in_flight_requests",
		"patchmesh_governor_queued_requests",
		"patchmesh_governor_overloads_total",
		"patchmesh_blob_served_bytes_total",
	} {
		if !strings.Contains(string(r.body), "# TYPE "+fam+" ") {
			t.Errorf("/metrics lacks the family %s", fam)
		}
	}
	for _, series := range []string{
		`patchmesh_http_request_duration_seconds_count{code="200",method="GET",route="/v1/blobs/{digest}"} 1`,
		`patchmesh_auth_decisions_total{kind="machine",outcome="ok"}`,
		`patchmesh_auth_decisions_total{kind="machine",outcome="unauthenticated"} 1`,
		`patchmesh_auth_decisions_total{kind="admin",outcome="ok"}`,
		`patchmesh_auth_decisions_total{kind="login",outcome="ok"} 1`,
		`patchmesh_store_errors_total{op="Ping"} 1`,
	} {
		if !strings.Contains(string(r.body), series) {
			t.Errorf("/metrics lacks the series %s", series)
		}
	}
	// A method that never failed still exports its error counter, at 0.
	if !regexp.MustCompile(`(?m)^patchmesh_store_errors_total\{op="[A-Za-z]+"\} 0$`).Match(r.body) {
		t.Errorf("/metrics: want a store errors counter at 0 for a method that never failed, got none")
	}
	problems, err := testutil.GatherAndLint(e.reg)
	if err != nil {
		t.Fatalf("lint: %v", err)
	}
	for _, p := range problems {
		t.Errorf("metric %s: %s", p.Metric, p.Text)
	}
}

func TestStorageListAndRefresh(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	kept := e.upload(content(100, "kept"), "1.1")
	lost := e.upload(content(200, "lost"), "1.2")
	orphan := content(300, "orphan")
	if _, err := blob.Put(ctx, e.blobs, blob.FromBytes(orphan), strings.NewReader(string(orphan))); err != nil {
		t.Fatal(err)
	}
	if err := e.blobs.Remove(ctx, blob.Digest(lost.Digest)); err != nil {
		t.Fatal(err)
	}

	var list struct {
		Blobs []struct {
			Digest   string
			Size     int64
			Modified time.Time
		}
	}
	e.want(e.request(http.MethodGet, "/v1/admin/storage", e.admin, nil), http.StatusOK, &list)
	sizes := map[string]int64{}
	for _, b := range list.Blobs {
		sizes[b.Digest] = b.Size
		if b.Modified.IsZero() {
			t.Errorf("blob %s has no modified time", b.Digest)
		}
	}
	if len(sizes) != 2 || sizes[kept.Digest] != 100 || sizes[digestOf(orphan)] != 300 {
		t.Errorf("storage list %v, want %s (100 bytes) and the orphan (300 bytes)", sizes, kept.Digest)
	}

	var ref struct {
		Blobs, Patches   int
		Orphans, Missing []string
	}
	before := e.snapshot()
	e.want(e.request(http.MethodPost, "/v1/admin/storage/refresh", e.admin, nil), http.StatusOK, &ref)
	if ref.Blobs != 2 || ref.Patches != 2 || len(ref.Orphans) != 1 || ref.Orphans[0] != digestOf(orphan) ||
		len(ref.Missing) != 1 || ref.Missing[0] != lost.Digest {
		t.Errorf("refresh %+v, want 2 blobs, 2 patches, orphan %s, missing %s", ref, digestOf(orphan), lost.Digest)
	}
	e.unchanged("storage refresh", before)
}

// TestFailedUploadKeepsOnlyBlobsItDidNotCreate guards the clean-up after a
// commit: a refused upload removes the blob it committed, but never a blob
// that was there before it (another patch's, or one an operator keeps).
func TestFailedUploadKeepsOnlyBlobsItDidNotCreate(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	file := content(1000, "size-lies")
	d := blob.FromBytes(file)
	// A chunked body has no length, so the declared size is checked only
	// after the blob was committed.
	path := uploadPath(string(d), testKernel, "1.1") + "&size=999"
	chunked := func() io.Reader { return io.MultiReader(strings.NewReader(string(file))) }

	before := e.snapshot()
	r := e.request(http.MethodPost, path, e.admin, chunked())
	if r.StatusCode != 400 || r.errField() != "size" {
		t.Fatalf("size mismatch: %d %s, want 400 invalid_input size", r.StatusCode, r.body)
	}
	if _, err := e.blobs.Stat(ctx, d); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("blob the refused upload created: Stat err %v, want ErrNotFound", err)
	}
	e.unchanged("a refused upload", before)

	if _, err := blob.Put(ctx, e.blobs, d, strings.NewReader(string(file))); err != nil {
		t.Fatal(err)
	}
	r = e.request(http.MethodPost, path, e.admin, chunked())
	if r.StatusCode != 400 {
		t.Fatalf("size mismatch over an existing blob: %d %s, want 400", r.StatusCode, r.body)
	}
	if _, err := e.blobs.Stat(ctx, d); err != nil {
		t.Errorf("blob that existed before the refused upload: Stat err %v, want it kept", err)
	}
}

// A repair removes orphans past the grace period, keeps younger ones and
// every recorded blob, and on the hub (no upstream) leaves missing blobs
// reported.
func TestStorageRefreshRepair(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	kept := e.upload(content(100, "kept"), "107.1")
	lost := e.upload(content(200, "lost"), "107.2")
	orphan := content(300, "orphan")
	if _, err := blob.Put(ctx, e.blobs, blob.FromBytes(orphan), strings.NewReader(string(orphan))); err != nil {
		t.Fatal(err)
	}
	if err := e.blobs.Remove(ctx, blob.Digest(lost.Digest)); err != nil {
		t.Fatal(err)
	}
	type result struct {
		Blobs, Patches                       int
		Orphans, Missing, Removed, Refetched []string
	}
	for _, tc := range []struct {
		name, query string
		status      int
		removed     []string
	}{
		{"bad grace", "?repair=true&grace=soon", 400, nil},
		{"negative grace", "?repair=true&grace=-1h", 400, nil},
		{"orphan younger than the grace", "?repair=true&grace=1h", 200, []string{}},
		{"no repair", "?grace=0s", 200, []string{}},
		{"orphan older than the grace", "?repair=true&grace=0s", 200, []string{digestOf(orphan)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var res result
			r := e.request(http.MethodPost, "/v1/admin/storage/refresh"+tc.query, e.admin, nil)
			if r.StatusCode != tc.status {
				t.Fatalf("%d %s, want %d", r.StatusCode, r.body, tc.status)
			}
			if tc.status != 200 {
				if r.errField() != "grace" {
					t.Errorf("error field %q, want grace", r.errField())
				}
				return
			}
			e.want(r, 200, &res)
			if !slices.Equal(res.Removed, tc.removed) {
				t.Errorf("removed %v, want %v", res.Removed, tc.removed)
			}
			if !slices.Equal(res.Missing, []string{lost.Digest}) || len(res.Refetched) != 0 {
				t.Errorf("missing %v, refetched %v; want %s still missing on the hub", res.Missing, res.Refetched, lost.Digest)
			}
		})
	}
	if _, err := e.blobs.Stat(ctx, blob.FromBytes(orphan)); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("orphan after the repair: Stat %v, want ErrNotFound", err)
	}
	if _, err := e.blobs.Stat(ctx, blob.Digest(kept.Digest)); err != nil {
		t.Errorf("recorded blob after the repair: Stat %v, want it kept", err)
	}
}
