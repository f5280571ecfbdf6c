package api_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/api"
	"github.com/patchmesh/patchmesh/blob"
	"github.com/patchmesh/patchmesh/replicate"
)

// heldUpstream serves one blob at /v1/blobs/{digest}, as a node's upstream
// would, but holds the answer until release is closed, so that a test
// decides when this node commits it.
func heldUpstream(t *testing.T, data []byte) (srv *httptest.Server, arrived, release chan struct{}) {
	t.Helper()
	arrived, release = make(chan struct{}, 1), make(chan struct{})
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case arrived <- struct{}{}:
		default:
		}
		select {
		case <-release:
		case <-r.Context().Done():
			return
		case <-time.After(10 * time.Second):
		}
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
	}))
	t.Cleanup(srv.Close)
	return srv, arrived, release
}

// A peer asking with ?wait= for a blob this node is fetching is answered
// when the blob commits, not at the end of the wait; an absent blob is 404
// once the wait ends; a bad wait is 400 invalid_input.
func TestPeerBlobWaitsForTheCommit(t *testing.T) {
	p := &pins{}
	var rep *replicate.Replicator
	e := newEnv(t, func(c *api.Config) {
		var err error
		rep, err = replicate.New(replicate.Config{Client: &http.Client{Timeout: 30 * time.Second}, Blobs: c.Blobs})
		if err != nil {
			t.Fatal(err)
		}
		c.Peer = &api.PeerConfig{Pins: p, URL: func(string) string { return "" }, Commits: rep}
	})
	self, admitted := newPeerNode(t), newPeerNode(t)
	p.set(self.id, admitted.id)
	srv := peerServer(t, e, p, self)
	c := admitted.dial(self)
	ask := func(method, path string) (int, []byte, time.Duration) {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, nil)
		start := time.Now()
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b, time.Since(start)
	}

	data := content(30000, "arriving")
	d := blob.FromBytes(data)
	up, arrived, release := heldUpstream(t, data)
	fetched := make(chan error, 1)
	go func() {
		_, err := rep.Fetch(t.Context(), replicate.Source{BaseURL: up.URL, Token: "pms_test"}, []replicate.Want{{Digest: d, Size: int64(len(data))}})
		fetched <- err
	}()
	<-arrived

	type answer struct {
		status int
		took   time.Duration
	}
	answered := make(chan answer, 1)
	go func() {
		st, _, took := ask(http.MethodHead, "/v1/peer/blobs/"+string(d)+"?wait=5s")
		answered <- answer{st, took}
	}()
	// The HEAD is waiting, not answered: the blob is not committed yet.
	select {
	case a := <-answered:
		t.Fatalf("HEAD with a wait answered %d before the blob was committed", a.status)
	case <-time.After(300 * time.Millisecond):
	}
	close(release)
	if err := <-fetched; err != nil {
		t.Fatal(err)
	}
	a := <-answered
	if a.status != http.StatusOK {
		t.Fatalf("HEAD with a wait, blob committed meanwhile: want 200, got %d", a.status)
	}
	if a.took >= 4*time.Second {
		t.Errorf("HEAD with a 5s wait answered after %s: want it answered at the commit, not at the wait's end", a.took)
	}
	if st, b, _ := ask(http.MethodGet, "/v1/peer/blobs/"+string(d)+"?wait=5s"); st != 200 || !bytes.Equal(b, data) {
		t.Errorf("GET with a wait of a committed blob: want 200 with its bytes, got %d (%d bytes)", st, len(b))
	}

	absent := digestOf([]byte("never committed"))
	if st, _, took := ask(http.MethodHead, "/v1/peer/blobs/"+absent+"?wait=200ms"); st != 404 || took < 200*time.Millisecond {
		t.Errorf("absent blob with a 200ms wait: want 404 after the wait, got %d after %s", st, took)
	}
	for _, bad := range []string{"soon", "-1s", "5"} {
		st, b, _ := ask(http.MethodGet, "/v1/peer/blobs/"+absent+"?wait="+bad)
		var body struct {
			Error struct{ Code, Field string }
		}
		_ = json.Unmarshal(b, &body)
		if st != 400 || body.Error.Code != "invalid_input" || body.Error.Field != "wait" {
			t.Errorf("wait=%s: want 400 invalid_input on field wait, got %d %s", bad, st, b)
		}
	}
}
