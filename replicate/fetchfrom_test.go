package replicate

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/patchmesh/patchmesh/blob"
)

// deadSource is a source whose server has gone: connections are refused.
func deadSource(t *testing.T) Source {
	srv := httptest.NewServer(http.NotFoundHandler())
	srv.Close()
	return Source{BaseURL: srv.URL, Token: testToken}
}

// corrupt makes up serve bytes of the right length that are not the blob.
func corrupt(up *upstream) {
	up.serve = func(w http.ResponseWriter, r *http.Request, data []byte, n int) {
		serveBlob(w, r, []byte(strings.Repeat("x", len(data))))
	}
}

func TestFetchFromTakesTheFirstSourceThatServes(t *testing.T) {
	lacking, refusing, serving, last := newUpstream(t), newUpstream(t), newUpstream(t), newUpstream(t)
	refusing.token = "pms_other_token"
	data := randomBytes(t, 30_000)
	w := serving.add(data)
	refusing.add(data)
	last.add(data)
	l := newLocal(t)
	r := newReplicator(t, l, Config{})

	srcs := []Source{lacking.source(), {BaseURL: refusing.srv.URL, Token: testToken}, deadSource(t), serving.source(), last.source()}
	res, err := r.FetchFrom(context.Background(), srcs, []Want{w})
	if err != nil {
		t.Fatalf("want the blob from the fourth source, got %v", err)
	}
	if want := (Result{Fetched: 1, Bytes: int64(len(data))}); !reflect.DeepEqual(res, want) {
		t.Errorf("want %+v, got %+v", want, res)
	}
	l.mustHave(t, w.Digest, data)
	if lacking.count(w.Digest) != 1 || serving.count(w.Digest) != 1 || last.count(w.Digest) != 0 {
		t.Errorf("want one request each to the lacking and serving sources and none to the last, got %d, %d, %d",
			lacking.count(w.Digest), serving.count(w.Digest), last.count(w.Digest))
	}

	// Present now: no source is asked again.
	res, err = r.FetchFrom(context.Background(), srcs, []Want{w})
	if err != nil || res.Present != 1 || lacking.count(w.Digest) != 1 {
		t.Errorf("present blob: want it settled without a request, got %+v, %v, %d requests", res, err, lacking.count(w.Digest))
	}
}

func TestFetchFromPassesOverAMismatchAndRecordsIt(t *testing.T) {
	liar, honest := newUpstream(t), newUpstream(t)
	data := randomBytes(t, 20_000)
	w := honest.add(data)
	liar.add(data)
	corrupt(liar)
	l := newLocal(t)
	r := newReplicator(t, l, Config{})

	res, err := r.FetchFrom(context.Background(), []Source{liar.source(), honest.source()}, []Want{w})
	if err != nil {
		t.Fatalf("want the blob from the honest source, got %v", err)
	}
	if want := []Mismatch{{Source: liar.srv.URL, Digest: w.Digest}}; !reflect.DeepEqual(res.Mismatches, want) {
		t.Errorf("mismatches: want %+v, got %+v", want, res.Mismatches)
	}
	if res.Fetched != 1 || res.Bytes != 2*int64(len(data)) {
		t.Errorf("want 1 fetched and the bytes of both transfers counted, got %+v", res)
	}
	l.mustHave(t, w.Digest, data)
}

func TestFetchFromFailsWithTheLastSourcesError(t *testing.T) {
	liar, lacking := newUpstream(t), newUpstream(t)
	data := randomBytes(t, 10_000)
	w := liar.add(data)
	corrupt(liar)
	l := newLocal(t)
	r := newReplicator(t, l, Config{})

	res, err := r.FetchFrom(context.Background(), []Source{liar.source(), lacking.source()}, []Want{w})
	if !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("want the last source's 404, got %v", err)
	}
	if errors.Is(err, blob.ErrDigestMismatch) {
		t.Errorf("a passed-over source's mismatch must not read as the last source's: %v", err)
	}
	if !strings.Contains(err.Error(), "passed over") || !strings.Contains(err.Error(), "digest") {
		t.Errorf("want the passed-over mismatch quoted in the error, got %v", err)
	}
	if len(res.Mismatches) != 1 || res.Mismatches[0].Source != liar.srv.URL {
		t.Errorf("want the mismatch recorded, got %+v", res.Mismatches)
	}
	l.mustLack(t, w.Digest)

	// Every source down: the blob fails, the last source's error first.
	dead := []Source{deadSource(t), deadSource(t)}
	if _, err := r.FetchFrom(context.Background(), dead, []Want{w}); err == nil || !strings.Contains(err.Error(), dead[1].BaseURL) {
		t.Errorf("all sources down: want an error naming the last, got %v", err)
	}
	if _, err := r.FetchFrom(context.Background(), nil, []Want{w}); err == nil {
		t.Error("no source: want an error")
	}
	l.mustLack(t, w.Digest)
}

// A peer source is asked at the peer path; Has asks with HEAD and moves no
// bytes.
func TestPeerPathAndHas(t *testing.T) {
	peer := newUpstream(t)
	data := randomBytes(t, 5000)
	w := peer.add(data)
	src := Source{BaseURL: peer.srv.URL + "/", Token: testToken, Path: PeerPath}
	l := newLocal(t)
	r := newReplicator(t, l, Config{})

	absent := blob.FromBytes([]byte("absent"))
	for _, tc := range []struct {
		name string
		src  Source
		d    blob.Digest
		has  bool
		is   error
	}{
		{"present", src, w.Digest, true, nil},
		{"absent", src, absent, false, nil},
		{"refused", Source{BaseURL: peer.srv.URL, Token: "pms_wrong", Path: PeerPath}, w.Digest, false, ErrUnauthorized},
	} {
		has, err := r.Has(context.Background(), tc.src, tc.d, 0)
		if has != tc.has || (tc.is == nil) != (err == nil) || (tc.is != nil && !errors.Is(err, tc.is)) {
			t.Errorf("%s: want %v, %v; got %v, %v", tc.name, tc.has, tc.is, has, err)
		}
	}
	if has, err := r.Has(context.Background(), deadSource(t), w.Digest, 0); has || err == nil {
		t.Errorf("dead source: want false and an error, got %v, %v", has, err)
	}
	if _, err := r.Fetch(context.Background(), src, []Want{w}); err != nil {
		t.Fatal(err)
	}
	l.mustHave(t, w.Digest, data)
	want := []string{"HEAD /v1/peer/blobs/" + string(w.Digest), "HEAD /v1/peer/blobs/" + string(absent), "GET /v1/peer/blobs/" + string(w.Digest)}
	peer.mu.Lock()
	got := slices.Clone(peer.paths)
	peer.mu.Unlock()
	if !slices.Equal(got, want) {
		t.Errorf("requests: want %v, got %v", want, got)
	}
}

func TestMissingListsWhatIsNotStored(t *testing.T) {
	up := newUpstream(t)
	l := newLocal(t)
	r := newReplicator(t, l, Config{})
	a, b := up.add(randomBytes(t, 100)), up.add(randomBytes(t, 200))
	if _, err := r.Fetch(context.Background(), up.source(), []Want{a}); err != nil {
		t.Fatal(err)
	}
	got, err := r.Missing(context.Background(), []Want{a, b})
	if err != nil || !reflect.DeepEqual(got, []Want{b}) {
		t.Errorf("want only the unfetched blob missing, got %+v, %v", got, err)
	}
}

func TestBadSourcePathIsRefusedBeforeAnyRequest(t *testing.T) {
	up := newUpstream(t)
	l := newLocal(t)
	r := newReplicator(t, l, Config{})
	w := up.add(randomBytes(t, 100))
	for _, p := range []string{"v1/blobs/", "/v1/blobs", "/v1/blobs/?x=1/", "//evil.example/"} {
		src := up.source()
		src.Path = p
		if _, err := r.Fetch(context.Background(), src, []Want{w}); err == nil || !strings.Contains(err.Error(), "path") {
			t.Errorf("path %q: want refused, got %v", p, err)
		}
	}
	if up.total() != 0 {
		t.Errorf("want no request, got %d", up.total())
	}
}
