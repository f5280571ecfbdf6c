package client

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
)

// fakeServerNode stands in for the api package only to test the client's
// request shaping, verification and state handling: it implements the
// docs/api.md client endpoints for one machine and one patch, and records
// what the client sent. It checks no real credentials and keeps no catalog;
// the end-to-end test against a real `patchmesh serve` lives with the node.
type fakeServerNode struct {
	srv *httptest.Server

	mu sync.Mutex
	// patch is offered by GET /v1/client/patch; nil answers 404.
	patch *catalog.Patch
	// blob is what GET /v1/blobs/{digest} sends for patch's digest.
	blob []byte
	// blobGets counts blob downloads.
	blobGets int
	// checkins records every check-in body.
	checkins []map[string]any
	// registrations records every registration body.
	registrations []map[string]string
	// authHeaders records the Authorization header of every request.
	authHeaders []string
}

const (
	fakeAuthToken    = "pma_0123456789abcdef_c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA"
	fakeMachineToken = "pmm_fedcba9876543210_bWFjaGluZS1zZWNyZXQtbWFjaGluZS1zZWNyZXQtbWFj"
	fakeMachineHMAC  = "6d1f0c7e2b9a8d4f3e5c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a1f0e"
)

func newFakeServerNode(t *testing.T, tlsServer bool) *fakeServerNode {
	t.Helper()
	f := &fakeServerNode{}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/client/register", f.register)
	mux.HandleFunc("GET /v1/client/status", f.machineOnly(f.status))
	mux.HandleFunc("GET /v1/client/patch", f.machineOnly(f.newest))
	mux.HandleFunc("POST /v1/client/checkin", f.machineOnly(f.checkin))
	mux.HandleFunc("GET /v1/blobs/{digest}", f.machineOnly(f.blobGet))
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.authHeaders = append(f.authHeaders, r.Header.Get("Authorization"))
		f.mu.Unlock()
		w.Header().Set("X-Request-ID", "req-fake-1")
		mux.ServeHTTP(w, r)
	})
	if tlsServer {
		f.srv = httptest.NewTLSServer(h)
	} else {
		f.srv = httptest.NewServer(h)
	}
	t.Cleanup(f.srv.Close)
	return f
}

func fakeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

func fakeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func (f *fakeServerNode) machine() catalog.Machine {
	return catalog.Machine{ID: fakeMachineHMAC, Tier: "edge", Kernel: "5.15.0-107.117-generic", Arch: "x86_64", State: catalog.StateUnknown, Registered: time.Unix(1700000000, 0).UTC()}
}

func (f *fakeServerNode) machineOnly(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+fakeMachineToken {
			w.Header().Set("WWW-Authenticate", "Bearer")
			fakeError(w, http.StatusUnauthorized, "unauthorized", "bad machine token")
			return
		}
		h(w, r)
	}
}

func (f *fakeServerNode) register(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+fakeAuthToken {
		fakeError(w, http.StatusUnauthorized, "unauthorized", "bad auth token")
		return
	}
	var in map[string]string
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		fakeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	f.mu.Lock()
	f.registrations = append(f.registrations, in)
	f.mu.Unlock()
	fakeJSON(w, http.StatusCreated, map[string]any{"machine_token": fakeMachineToken, "tier": "edge", "machine": f.machine()})
}

func (f *fakeServerNode) status(w http.ResponseWriter, r *http.Request) {
	fakeJSON(w, http.StatusOK, f.machine())
}

func (f *fakeServerNode) newest(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.patch == nil || r.URL.Query().Get("kernel") != f.patch.Kernel || r.URL.Query().Get("arch") != f.patch.Arch {
		fakeError(w, http.StatusNotFound, "not_found", "no patch for this kernel on tier edge")
		return
	}
	fakeJSON(w, http.StatusOK, f.patch)
}

func (f *fakeServerNode) checkin(w http.ResponseWriter, r *http.Request) {
	var in map[string]any
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		fakeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	f.mu.Lock()
	f.checkins = append(f.checkins, in)
	f.mu.Unlock()
	m := f.machine()
	m.State = catalog.MachineState(in["state"].(string))
	fakeJSON(w, http.StatusOK, m)
}

func (f *fakeServerNode) blobGet(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.patch == nil || r.PathValue("digest") != f.patch.Digest {
		fakeError(w, http.StatusNotFound, "not_found", "no such blob")
		return
	}
	f.blobGets++
	w.Header().Set("ETag", `"`+f.patch.Digest+`"`)
	w.Write(f.blob)
}

// offer makes the fake server offer content as a patch (and serve blob as
// its bytes, which may differ to simulate tampering).
func (f *fakeServerNode) offer(content, blob []byte) catalog.Patch {
	p := catalog.Patch{
		Digest:  digestOf(content),
		Kernel:  "5.15.0-107.117-generic",
		Arch:    "x86_64",
		Version: "107.1",
		Size:    int64(len(content)),
		Tiers:   []string{"edge"},
	}
	f.mu.Lock()
	f.patch, f.blob = &p, blob
	f.mu.Unlock()
	return p
}

func (f *fakeServerNode) lastCheckin(t *testing.T) map[string]any {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.checkins) == 0 {
		t.Fatal("the client did not check in")
	}
	return f.checkins[len(f.checkins)-1]
}

func (f *fakeServerNode) checkinCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.checkins)
}

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}
