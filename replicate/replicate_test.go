package replicate

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/blob"
	"github.com/patchmesh/patchmesh/blob/fsblob"
)

const testToken = "pms_0123456789abcdef_secretsecretsecretsecretsecretsecretsecret"

// upstream is a node serving GET /v1/blobs/{digest} the way the api does
// (Bearer token, ServeContent with the digest as ETag), with hooks to
// misbehave. It counts what it is asked.
type upstream struct {
	srv   *httptest.Server
	token string

	mu       sync.Mutex
	blobs    map[blob.Digest][]byte
	requests map[blob.Digest]int
	ranges   []string // Range and If-Range of every request that had a Range
	paths    []string // method and path of every authorized request
	// serve, if set, answers instead of ServeContent; n counts the
	// requests for this digest so far, this one included.
	serve func(w http.ResponseWriter, r *http.Request, data []byte, n int)

	inflight, maxInflight atomic.Int64
	hold                  time.Duration // how long each answer waits, to let requests overlap
}

func newUpstream(t *testing.T) *upstream {
	t.Helper()
	u := &upstream{token: testToken, blobs: map[blob.Digest][]byte{}, requests: map[blob.Digest]int{}}
	u.srv = httptest.NewServer(http.HandlerFunc(u.handle))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *upstream) add(data []byte) Want {
	d := blob.FromBytes(data)
	u.mu.Lock()
	u.blobs[d] = data
	u.mu.Unlock()
	return Want{Digest: d, Size: int64(len(data))}
}

func (u *upstream) source() Source { return Source{BaseURL: u.srv.URL, Token: u.token} }

func (u *upstream) count(d blob.Digest) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.requests[d]
}

func (u *upstream) total() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := 0
	for _, c := range u.requests {
		n += c
	}
	return n
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Request-ID", "req-42")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"error":{"code":%q,"message":%q}}`, code, msg)
}

func (u *upstream) handle(w http.ResponseWriter, r *http.Request) {
	cur := u.inflight.Add(1)
	defer u.inflight.Add(-1)
	for {
		m := u.maxInflight.Load()
		if cur <= m || u.maxInflight.CompareAndSwap(m, cur) {
			break
		}
	}
	if r.Header.Get("Authorization") != "Bearer "+u.token {
		writeError(w, http.StatusUnauthorized, "unauthorized", "bad token")
		return
	}
	d := blob.Digest(path.Base(r.URL.Path))
	u.mu.Lock()
	u.paths = append(u.paths, r.Method+" "+r.URL.Path)
	data, ok := u.blobs[d]
	u.requests[d]++
	n := u.requests[d]
	if rg := r.Header.Get("Range"); rg != "" {
		u.ranges = append(u.ranges, rg+" if "+r.Header.Get("If-Range"))
	}
	serve := u.serve
	u.mu.Unlock()
	if !ok {
		writeError(w, http.StatusNotFound, "not_found", "no such blob")
		return
	}
	if u.hold > 0 {
		time.Sleep(u.hold)
	}
	if serve != nil {
		serve(w, r, data, n)
		return
	}
	serveBlob(w, r, data)
}

// serveBlob answers as api.getBlob does.
func serveBlob(w http.ResponseWriter, r *http.Request, data []byte) {
	w.Header().Set("ETag", `"`+string(blob.FromBytes(data))+`"`)
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
}

// cutAfter sends a full-length 200 header and the first n bytes, then
// drops the connection, as a failing link would.
func cutAfter(t *testing.T, w http.ResponseWriter, data []byte, n int) {
	conn, buf, err := http.NewResponseController(w).Hijack()
	if err != nil {
		t.Errorf("hijack: %v", err)
		return
	}
	defer conn.Close()
	fmt.Fprintf(buf, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nETag: \"%s\"\r\n\r\n", len(data), blob.FromBytes(data))
	buf.Write(data[:n])
	buf.Flush()
}

// local is a real filesystem store in a temp dir.
type localStore struct {
	*fsblob.Store
	dir string
}

func newLocal(t testing.TB) localStore {
	t.Helper()
	dir := t.TempDir()
	s, err := fsblob.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	return localStore{s, dir}
}

// mustHave checks that d is committed with exactly data.
func (l localStore) mustHave(t *testing.T, d blob.Digest, data []byte) {
	t.Helper()
	rc, _, err := l.Open(context.Background(), d)
	if err != nil {
		t.Fatalf("blob %s: want it committed, got %v", d, err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("blob %s: committed %d bytes differ from the %d served", d, len(got), len(data))
	}
}

// mustLack checks that d is not committed and nothing is left staged.
func (l localStore) mustLack(t *testing.T, d blob.Digest) {
	t.Helper()
	if _, err := l.Stat(context.Background(), d); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("blob %s: want absent, got Stat error %v", d, err)
	}
	staged, err := os.ReadDir(filepath.Join(l.dir, "tmp"))
	if err != nil {
		t.Fatal(err)
	}
	if len(staged) != 0 {
		t.Errorf("want nothing staged, found %d files", len(staged))
	}
}

func newReplicator(t testing.TB, l localStore, cfg Config) *Replicator {
	t.Helper()
	cfg.Blobs = l
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: 30 * time.Second}
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.pause = func(int) time.Duration { return time.Millisecond }
	return r
}

func randomBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestFetchOneAndMany(t *testing.T) {
	up := newUpstream(t)
	l := newLocal(t)
	r := newReplicator(t, l, Config{})

	one := randomBytes(t, 100_000)
	w := up.add(one)
	res, err := r.Fetch(context.Background(), up.source(), []Want{w})
	if err != nil {
		t.Fatal(err)
	}
	if want := (Result{Fetched: 1, Bytes: int64(len(one))}); !reflect.DeepEqual(res, want) {
		t.Errorf("one blob: want %+v, got %+v", want, res)
	}
	l.mustHave(t, w.Digest, one)

	var wants []Want
	var all [][]byte
	var total int64
	for i := range 12 {
		data := randomBytes(t, 1+i*7919)
		all = append(all, data)
		wants = append(wants, up.add(data))
		total += int64(len(data))
	}
	// Size unknown for one of them: only the digest check applies.
	wants[3].Size = 0
	res, err = r.Fetch(context.Background(), up.source(), wants)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Result{Fetched: 12, Bytes: total}); !reflect.DeepEqual(res, want) {
		t.Errorf("12 blobs: want %+v, got %+v", want, res)
	}
	for i, w := range wants {
		l.mustHave(t, w.Digest, all[i])
	}
}

func TestPresentBlobsAreNotRequested(t *testing.T) {
	up := newUpstream(t)
	l := newLocal(t)
	r := newReplicator(t, l, Config{})
	var wants []Want
	for i := range 5 {
		data := randomBytes(t, 1000+i)
		wants = append(wants, up.add(data))
		if i < 3 {
			if _, err := blob.Put(context.Background(), l, blob.FromBytes(data), bytes.NewReader(data)); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The same digest twice in one batch is fetched once.
	res, err := r.Fetch(context.Background(), up.source(), append(wants, wants[4]))
	if err != nil {
		t.Fatal(err)
	}
	if res.Fetched != 2 || res.Present != 3 {
		t.Errorf("want 2 fetched and 3 present, got %+v", res)
	}
	for i, w := range wants {
		if want := 0; i >= 3 {
			want = 1
			if got := up.count(w.Digest); got != want {
				t.Errorf("blob %d: want %d requests, got %d", i, want, got)
			}
		} else if got := up.count(w.Digest); got != want {
			t.Errorf("present blob %d: want %d requests, got %d", i, want, got)
		}
	}
	res, err = r.Fetch(context.Background(), up.source(), wants)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Result{Present: 5}); !reflect.DeepEqual(res, want) || up.total() != 2 {
		t.Errorf("second fetch: want %+v and still 2 requests, got %+v and %d", want, res, up.total())
	}
}

// waitFor polls cond for up to 10 seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for range 1000 {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("gave up waiting for %s", what)
}

func (r *Replicator) waiters(d blob.Digest) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if t, ok := r.inflight[d]; ok {
		return t.waiters
	}
	return 0
}

// holdFirst makes the upstream's first answer for a digest wait until
// release is closed, and reports when that request has arrived.
func holdFirst(up *upstream) (arrived, release chan struct{}) {
	arrived, release = make(chan struct{}), make(chan struct{})
	up.serve = func(w http.ResponseWriter, r *http.Request, data []byte, n int) {
		if n == 1 {
			close(arrived)
			select {
			case <-release:
			case <-time.After(10 * time.Second):
			}
		}
		serveBlob(w, r, data)
	}
	return arrived, release
}

func TestConcurrentFetchesOfOneDigestShareOneTransfer(t *testing.T) {
	up := newUpstream(t)
	l := newLocal(t)
	r := newReplicator(t, l, Config{})
	data := randomBytes(t, 50_000)
	w := up.add(data)
	arrived, release := holdFirst(up)

	const callers = 3
	results := make([]Result, callers)
	errs := make([]error, callers)
	var wg sync.WaitGroup
	wg.Go(func() { results[0], errs[0] = r.Fetch(context.Background(), up.source(), []Want{w}) })
	<-arrived
	for i := 1; i < callers; i++ {
		wg.Go(func() { results[i], errs[i] = r.Fetch(context.Background(), up.source(), []Want{w}) })
	}
	waitFor(t, "all callers to join the transfer", func() bool { return r.waiters(w.Digest) == callers })
	close(release)
	wg.Wait()

	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if got := up.count(w.Digest); got != 1 {
		t.Errorf("want 1 request for the shared blob, got %d", got)
	}
	if want := (Result{Fetched: 1, Bytes: int64(len(data))}); !reflect.DeepEqual(results[0], want) {
		t.Errorf("leader: want %+v, got %+v", want, results[0])
	}
	for i := 1; i < callers; i++ {
		if want := (Result{Present: 1}); !reflect.DeepEqual(results[i], want) {
			t.Errorf("follower %d: want %+v, got %+v", i, want, results[i])
		}
	}
	l.mustHave(t, w.Digest, data)
}

func TestSharedTransferOutlivesTheCallerThatStartedIt(t *testing.T) {
	up := newUpstream(t)
	l := newLocal(t)
	r := newReplicator(t, l, Config{})
	data := randomBytes(t, 50_000)
	w := up.add(data)
	arrived, release := holdFirst(up)

	ctx, cancel := context.WithCancel(context.Background())
	var leaderErr, followerErr error
	var follower Result
	var wg sync.WaitGroup
	wg.Go(func() { _, leaderErr = r.Fetch(ctx, up.source(), []Want{w}) })
	<-arrived
	wg.Go(func() { follower, followerErr = r.Fetch(context.Background(), up.source(), []Want{w}) })
	waitFor(t, "the follower to join", func() bool { return r.waiters(w.Digest) == 2 })
	cancel()
	waitFor(t, "the leader to leave", func() bool { return r.waiters(w.Digest) == 1 })
	close(release)
	wg.Wait()

	if !errors.Is(leaderErr, context.Canceled) {
		t.Errorf("leader: want context.Canceled, got %v", leaderErr)
	}
	if followerErr != nil || follower.Present != 1 {
		t.Errorf("follower: want the shared transfer to finish for it, got %+v, %v", follower, followerErr)
	}
	if got := up.count(w.Digest); got != 1 {
		t.Errorf("want 1 request, got %d", got)
	}
	l.mustHave(t, w.Digest, data)
}

// A mismatch from another link's upstream is that link's security event,
// not ours: a caller waiting on it fetches from its own source.
func TestFailedTransferFromAnotherUpstreamIsRetriedFromOurs(t *testing.T) {
	bad, good := newUpstream(t), newUpstream(t)
	l := newLocal(t)
	r := newReplicator(t, l, Config{})
	data := randomBytes(t, 20_000)
	w := good.add(data)
	bad.add(data)
	arrived, release := make(chan struct{}), make(chan struct{})
	bad.serve = func(w http.ResponseWriter, r *http.Request, data []byte, n int) {
		if n == 1 {
			close(arrived)
			select {
			case <-release:
			case <-time.After(10 * time.Second):
			}
		}
		serveBlob(w, r, bytes.Repeat([]byte("x"), len(data)))
	}

	var badErr, goodErr error
	var goodRes Result
	var wg sync.WaitGroup
	wg.Go(func() { _, badErr = r.Fetch(context.Background(), bad.source(), []Want{w}) })
	<-arrived
	wg.Go(func() { goodRes, goodErr = r.Fetch(context.Background(), good.source(), []Want{w}) })
	waitFor(t, "the second link to join", func() bool { return r.waiters(w.Digest) == 2 })
	close(release)
	wg.Wait()

	if !errors.Is(badErr, blob.ErrDigestMismatch) {
		t.Errorf("link to the bad upstream: want ErrDigestMismatch, got %v", badErr)
	}
	if goodErr != nil || goodRes.Fetched != 1 {
		t.Errorf("link to the good upstream: want its own fetch, got %+v, %v", goodRes, goodErr)
	}
	l.mustHave(t, w.Digest, data)
}

func TestParallelBoundIsSharedAcrossCalls(t *testing.T) {
	up := newUpstream(t)
	up.hold = 20 * time.Millisecond
	l := newLocal(t)
	r := newReplicator(t, l, Config{Parallel: 2})
	var batches [3][]Want
	for i := range 18 {
		batches[i%3] = append(batches[i%3], up.add(randomBytes(t, 4096)))
	}
	var wg sync.WaitGroup
	errs := make([]error, len(batches))
	for i, b := range batches {
		wg.Go(func() { _, errs[i] = r.Fetch(context.Background(), up.source(), b) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if got := up.total(); got != 18 {
		t.Errorf("want 18 requests, got %d", got)
	}
	if got := up.maxInflight.Load(); got > 2 || got < 1 {
		t.Errorf("want at most 2 requests in flight at once, saw %d", got)
	}
}

func TestCorruptBytesAreNotCommitted(t *testing.T) {
	up := newUpstream(t)
	l := newLocal(t)
	r := newReplicator(t, l, Config{})
	data := randomBytes(t, 30_000)
	w := up.add(data)
	up.serve = func(rw http.ResponseWriter, r *http.Request, data []byte, n int) {
		bad := bytes.Clone(data)
		bad[len(bad)/2] ^= 1
		serveBlob(rw, r, bad)
	}
	res, err := r.Fetch(context.Background(), up.source(), []Want{w})
	if !errors.Is(err, blob.ErrDigestMismatch) {
		t.Fatalf("want ErrDigestMismatch, got %v", err)
	}
	if res.Fetched != 0 || res.Bytes != int64(len(data)) {
		t.Errorf("want nothing fetched and %d bytes read, got %+v", len(data), res)
	}
	l.mustLack(t, w.Digest)
}

func TestBrokenBodyIsResumedWithRange(t *testing.T) {
	const size, cut = 200_000, 70_001
	up := newUpstream(t)
	l := newLocal(t)
	r := newReplicator(t, l, Config{})
	data := randomBytes(t, size)
	w := up.add(data)
	up.serve = func(rw http.ResponseWriter, r *http.Request, data []byte, n int) {
		if n == 1 {
			cutAfter(t, rw, data, cut)
			return
		}
		serveBlob(rw, r, data)
	}
	res, err := r.Fetch(context.Background(), up.source(), []Want{w})
	if err != nil {
		t.Fatal(err)
	}
	l.mustHave(t, w.Digest, data)
	want := fmt.Sprintf(`bytes=%d- if "%s"`, cut, w.Digest)
	if len(up.ranges) != 1 || up.ranges[0] != want {
		t.Errorf("want one resume %q, got %q", want, up.ranges)
	}
	if res.Fetched != 1 || res.Bytes != size {
		t.Errorf("want 1 fetched and %d bytes read, got %+v", size, res)
	}
}

func TestResumesAreBounded(t *testing.T) {
	const size, step = 100_000, 1000
	up := newUpstream(t)
	l := newLocal(t)
	r := newReplicator(t, l, Config{Resumes: 3})
	data := randomBytes(t, size)
	w := up.add(data)
	// Every answer breaks after step more bytes.
	up.serve = func(rw http.ResponseWriter, r *http.Request, data []byte, n int) {
		from := (n - 1) * step
		conn, buf, err := http.NewResponseController(rw).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		defer conn.Close()
		if n == 1 {
			fmt.Fprintf(buf, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", size)
		} else {
			fmt.Fprintf(buf, "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes %d-%d/%d\r\nContent-Length: %d\r\n\r\n", from, size-1, size, size-from)
		}
		buf.Write(data[from : from+step])
		buf.Flush()
	}
	_, err := r.Fetch(context.Background(), up.source(), []Want{w})
	if err == nil || !strings.Contains(err.Error(), "3 resumes") {
		t.Fatalf("want an error after 3 resumes, got %v", err)
	}
	if got := up.count(w.Digest); got != 4 {
		t.Errorf("want 4 requests (1 + 3 resumes), got %d", got)
	}
	l.mustLack(t, w.Digest)
}

func TestBadResumeAnswerFailsTheBlob(t *testing.T) {
	const size, cut = 50_000, 10_000
	for _, tc := range []struct {
		name   string
		text   string
		answer func(w http.ResponseWriter, r *http.Request, data []byte)
	}{
		{"range ignored", "want 206, got 200", func(w http.ResponseWriter, r *http.Request, data []byte) {
			w.Header().Set("Content-Length", strconv.Itoa(len(data)))
			w.Write(data)
		}},
		{"416", "416", func(w http.ResponseWriter, r *http.Request, data []byte) {
			w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
		}},
		{"other start", "starts at byte 0", func(w http.ResponseWriter, r *http.Request, data []byte) {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes 0-%d/%d", len(data)-1, len(data)))
			w.WriteHeader(http.StatusPartialContent)
			w.Write(data)
		}},
		{"other total", "the record says 50000", func(w http.ResponseWriter, r *http.Request, data []byte) {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", cut, len(data)-1, len(data)+1))
			w.WriteHeader(http.StatusPartialContent)
			w.Write(data[cut:])
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := newUpstream(t)
			l := newLocal(t)
			r := newReplicator(t, l, Config{})
			w := up.add(randomBytes(t, size))
			up.serve = func(rw http.ResponseWriter, r *http.Request, data []byte, n int) {
				if n == 1 {
					cutAfter(t, rw, data, cut)
					return
				}
				tc.answer(rw, r, data)
			}
			_, err := r.Fetch(context.Background(), up.source(), []Want{w})
			if err == nil || !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("want an error saying %q, got %v", tc.text, err)
			}
			if got := up.count(w.Digest); got != 2 {
				t.Errorf("want no retry after a bad resume answer (2 requests), got %d", got)
			}
			l.mustLack(t, w.Digest)
		})
	}
}

func TestOversizeStreamIsRefused(t *testing.T) {
	const size = 10_000
	for _, tc := range []struct {
		name string
		// maxRead is the most the replicator may read: nothing when the
		// announced length already gives the stream away.
		maxRead int64
		serve   func(w http.ResponseWriter, r *http.Request, data []byte, n int)
	}{
		{"longer content-length", 0, func(w http.ResponseWriter, r *http.Request, data []byte, n int) {
			serveBlob(w, r, append(bytes.Clone(data), 'x'))
		}},
		{"endless chunked stream", size + 1, func(w http.ResponseWriter, r *http.Request, data []byte, n int) {
			w.Write(data)
			junk := make([]byte, 32<<10)
			for range 2048 { // 64 MiB at most, if nobody hangs up
				if _, err := w.Write(junk); err != nil {
					return
				}
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := newUpstream(t)
			l := newLocal(t)
			r := newReplicator(t, l, Config{})
			w := up.add(randomBytes(t, size))
			up.serve = tc.serve
			res, err := r.Fetch(context.Background(), up.source(), []Want{w})
			if err == nil {
				t.Fatal("want an error, got none")
			}
			if res.Bytes > tc.maxRead {
				t.Errorf("want at most %d bytes read, got %d", tc.maxRead, res.Bytes)
			}
			l.mustLack(t, w.Digest)
		})
	}
}

func TestUpstreamErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		token  string
		answer func(w http.ResponseWriter)
		is     error
		text   []string
	}{
		{"not found", testToken, nil, blob.ErrNotFound, []string{"404", "not_found", "req-42"}},
		{"wrong token", "pms_wrong_token", nil, ErrUnauthorized, []string{"401", "unauthorized"}},
		{"forbidden", testToken, func(w http.ResponseWriter) {
			writeError(w, http.StatusForbidden, "forbidden", "not your tier")
		}, ErrUnauthorized, []string{"403", "not your tier"}},
		{"server error echoing the token", testToken, func(w http.ResponseWriter) {
			writeError(w, http.StatusInternalServerError, "internal", "boom, your token was "+testToken+strings.Repeat("!", 1000))
		}, nil, []string{"500", "internal", "boom", "[token]"}},
		{"not json", testToken, func(w http.ResponseWriter) {
			w.WriteHeader(http.StatusBadGateway)
			io.WriteString(w, "<html>"+testToken+"</html>")
		}, nil, []string{"502"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := newUpstream(t)
			var logs bytes.Buffer
			var logMu sync.Mutex
			l := newLocal(t)
			r := newReplicator(t, l, Config{Log: slog.New(slog.NewJSONHandler(lockedWriter{&logMu, &logs}, &slog.HandlerOptions{Level: slog.LevelDebug}))})
			w := Want{Digest: blob.FromBytes([]byte("absent")), Size: 6}
			if tc.answer != nil {
				w = up.add([]byte("present"))
				up.serve = func(rw http.ResponseWriter, r *http.Request, data []byte, n int) { tc.answer(rw) }
			}
			src := up.source()
			src.Token = tc.token
			_, err := r.Fetch(context.Background(), src, []Want{w})
			if err == nil {
				t.Fatal("want an error, got none")
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("want an error wrapping %v, got %v", tc.is, err)
			}
			for _, s := range tc.text {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("want %q in the error, got %v", s, err)
				}
			}
			if len(err.Error()) > 1000 {
				t.Errorf("want a bounded error, got %d bytes", len(err.Error()))
			}
			logMu.Lock()
			defer logMu.Unlock()
			for what, s := range map[string]string{"error": err.Error(), "log": logs.String()} {
				if strings.Contains(s, "secret") || strings.Contains(s, tc.token) {
					t.Errorf("the token leaked into the %s: %s", what, s)
				}
			}
			l.mustLack(t, w.Digest)
		})
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestCancelMidTransfer(t *testing.T) {
	up := newUpstream(t)
	l := newLocal(t)
	r := newReplicator(t, l, Config{})
	data := randomBytes(t, 1<<20)
	w := up.add(data)
	halfSent := make(chan struct{})
	up.serve = func(rw http.ResponseWriter, r *http.Request, data []byte, n int) {
		rw.Header().Set("Content-Length", strconv.Itoa(len(data)))
		rw.Write(data[:len(data)/2])
		http.NewResponseController(rw).Flush()
		close(halfSent)
		select {
		case <-r.Context().Done():
		case <-time.After(20 * time.Second):
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := r.Fetch(ctx, up.source(), []Want{w})
		done <- err
	}()
	<-halfSent
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("want context.Canceled, got %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Fetch did not return within 10s of its context being cancelled")
	}
	l.mustLack(t, w.Digest)
}

func TestBadInputIsRefusedBeforeAnyRequest(t *testing.T) {
	up := newUpstream(t)
	l := newLocal(t)
	r := newReplicator(t, l, Config{})
	good := up.add([]byte("x"))
	for _, tc := range []struct {
		name string
		src  Source
		want []Want
	}{
		{"bad digest", up.source(), []Want{{Digest: "sha256:../../etc/passwd"}}},
		{"two sizes", up.source(), []Want{good, {Digest: good.Digest, Size: 2}}},
		{"no scheme", Source{BaseURL: "127.0.0.1:1", Token: testToken}, []Want{good}},
		{"credentials in URL", Source{BaseURL: "http://u:p@127.0.0.1:1", Token: testToken}, []Want{good}},
		{"empty token", Source{BaseURL: up.srv.URL}, []Want{good}},
		{"token with newline", Source{BaseURL: up.srv.URL, Token: testToken + "\nX-Evil: 1"}, []Want{good}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := up.total()
			_, err := r.Fetch(context.Background(), tc.src, tc.want)
			if err == nil {
				t.Fatal("want an error, got none")
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("the token leaked into the error: %v", err)
			}
			if tc.name != "two sizes" && up.total() != before {
				t.Errorf("want no request, got %d", up.total()-before)
			}
		})
	}
	if _, err := New(Config{Blobs: l}); err == nil {
		t.Error("New without a Client: want an error")
	}
	if _, err := New(Config{Client: http.DefaultClient}); err == nil {
		t.Error("New without Blobs: want an error")
	}
}

func BenchmarkFetch(b *testing.B) {
	const size = 64 << 20
	data := make([]byte, size)
	if _, err := rand.Read(data); err != nil {
		b.Fatal(err)
	}
	d := blob.FromBytes(data)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { serveBlob(w, r, data) }))
	defer srv.Close()
	l := newLocal(b)
	r := newReplicator(b, l, Config{})
	src := Source{BaseURL: srv.URL, Token: testToken}
	b.SetBytes(size)
	for b.Loop() {
		if _, err := r.Fetch(context.Background(), src, []Want{{Digest: d, Size: size}}); err != nil {
			b.Fatal(err)
		}
		if err := l.Remove(context.Background(), d); err != nil {
			b.Fatal(err)
		}
	}
}

// A first sync may want thousands of blobs; a small pool works through them.
func TestLargeBatchWithOneSlot(t *testing.T) {
	up := newUpstream(t)
	l := newLocal(t)
	r := newReplicator(t, l, Config{Parallel: 1})
	var wants []Want
	for i := range 300 {
		wants = append(wants, up.add([]byte("blob "+strconv.Itoa(i))))
	}
	res, err := r.Fetch(context.Background(), up.source(), wants)
	if err != nil {
		t.Fatal(err)
	}
	if res.Fetched != 300 || up.maxInflight.Load() != 1 {
		t.Errorf("want 300 fetched one at a time, got %+v with %d at once", res, up.maxInflight.Load())
	}
}

// An upstream that sends part of a blob and then nothing, keeping the
// connection open, does not hold the transfer forever: the idle timeout
// drops the connection and the transfer resumes with Range.
func TestStalledBodyIsDroppedAndResumed(t *testing.T) {
	const size, cut = 100_000, 30_000
	up := newUpstream(t)
	l := newLocal(t)
	r := newReplicator(t, l, Config{IdleTimeout: 200 * time.Millisecond})
	data := randomBytes(t, size)
	w := up.add(data)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	up.serve = func(rw http.ResponseWriter, req *http.Request, data []byte, n int) {
		if n == 1 {
			rw.Header().Set("Content-Length", strconv.Itoa(len(data)))
			rw.WriteHeader(http.StatusOK)
			rw.Write(data[:cut])
			rw.(http.Flusher).Flush()
			select { // stall with the connection open
			case <-release:
			case <-req.Context().Done():
			}
			return
		}
		serveBlob(rw, req, data)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := r.Fetch(ctx, up.source(), []Want{w}); err != nil {
		t.Fatalf("a stalled body: want resumed and fetched, got %v", err)
	}
	l.mustHave(t, w.Digest, data)
	if want := fmt.Sprintf(`bytes=%d- if "%s"`, cut, w.Digest); len(up.ranges) != 1 || up.ranges[0] != want {
		t.Errorf("want one resume %q, got %q", want, up.ranges)
	}
}

// claimRecorder is a real filesystem store that also records claims, as a
// store shared with other nodes (blob.Claimer) takes them.
type claimRecorder struct {
	localStore
	mu      sync.Mutex
	claimed []blob.Digest
}

func (c *claimRecorder) Claim(_ context.Context, d blob.Digest) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.claimed = append(c.claimed, d)
	return nil
}

// A blob found already present on a shared store may be another node's:
// the replicator claims it instead of fetching it.
func TestPresentBlobOnASharedStoreIsClaimed(t *testing.T) {
	up := newUpstream(t)
	c := &claimRecorder{localStore: newLocal(t)}
	r, err := New(Config{Blobs: c, Client: &http.Client{Timeout: 30 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	present, absent := randomBytes(t, 1000), randomBytes(t, 2000)
	wants := []Want{up.add(present), up.add(absent)}
	if _, err := blob.Put(context.Background(), c, blob.FromBytes(present), bytes.NewReader(present)); err != nil {
		t.Fatal(err)
	}
	res, err := r.Fetch(context.Background(), up.source(), wants)
	if err != nil {
		t.Fatal(err)
	}
	if res.Fetched != 1 || res.Present != 1 {
		t.Errorf("want 1 fetched and 1 present, got %+v", res)
	}
	if !slices.Equal(c.claimed, []blob.Digest{wants[0].Digest}) {
		t.Errorf("claims = %v, want only the present blob %s", c.claimed, wants[0].Digest)
	}
	c.mustHave(t, wants[1].Digest, absent)
}
