package webhook_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/store"
	"github.com/patchmesh/patchmesh/store/sqlstore"
	"github.com/patchmesh/patchmesh/webhook"
)

// receiver is a real HTTP server on loopback that checks every signature
// and keeps what it got, in arrival order.
type receiver struct {
	t      *testing.T
	secret []byte
	srv    *httptest.Server

	mu       sync.Mutex
	got      []webhook.Envelope
	requests int
	badSigs  int
	// answer decides the status of the n-th request (from 1); nil: 204.
	answer func(n int) int
	// block, if set, holds every request until closed.
	block chan struct{}
	seen  chan struct{}
}

func newReceiver(t *testing.T, secret string) *receiver {
	r := &receiver{t: t, secret: []byte(secret), seen: make(chan struct{}, 1000)}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(func() {
		if r.block != nil {
			close(r.block)
		}
		r.srv.Close()
	})
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	r.requests++
	n := r.requests
	answer, block := r.answer, r.block
	r.mu.Unlock()
	r.seen <- struct{}{}
	if block != nil {
		select {
		case <-block:
		case <-req.Context().Done():
		}
		return
	}
	if err := webhook.Verify(r.secret, req.Header.Get(webhook.SignatureHeader), body, time.Now(), 0); err != nil {
		r.mu.Lock()
		r.badSigs++
		r.mu.Unlock()
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	status := http.StatusNoContent
	if answer != nil {
		status = answer(n)
	}
	if status < 300 {
		var env webhook.Envelope
		if err := json.Unmarshal(body, &env); err != nil {
			r.t.Errorf("receiver: body is not an envelope: %v", err)
		}
		if req.Header.Get(webhook.DeliveryHeader) != env.ID || req.Header.Get(webhook.EventHeader) != env.Event {
			r.t.Errorf("receiver: headers %v do not match the envelope %+v", req.Header, env)
		}
		r.mu.Lock()
		r.got = append(r.got, env)
		r.mu.Unlock()
	}
	w.WriteHeader(status)
}

func (r *receiver) received() []webhook.Envelope {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

// waitFor polls cond until it holds, failing after a bound.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for range 1000 {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("gave up waiting (10s) for %s", what)
}

func openStore(t *testing.T, path string) *sqlstore.Store {
	t.Helper()
	s, err := sqlstore.OpenSQLite(t.Context(), path, sqlstore.Options{})
	if err != nil {
		t.Fatalf("OpenSQLite: %v", err)
	}
	return s
}

func addHook(t *testing.T, s store.Store, id, url, secret string, events ...string) {
	t.Helper()
	if err := s.AddWebhook(t.Context(), store.Webhook{ID: id, URL: url, Events: events, Secret: []byte(secret)}); err != nil {
		t.Fatalf("AddWebhook: %v", err)
	}
}

// start runs a dispatcher over s until the returned stop is called (or
// the test ends).
func start(t *testing.T, s webhook.Store, allowHTTP bool) (*webhook.Dispatcher, func()) {
	t.Helper()
	d, err := webhook.New(webhook.Config{Store: s, Node: "hub-1", AllowHTTP: allowHTTP,
		RetryMin: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond, Poll: 50 * time.Millisecond,
		Timeout: 2 * time.Second})
	if err != nil {
		t.Fatalf("webhook.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	stop := func() { cancel(); <-done }
	t.Cleanup(stop)
	return d, sync.OnceFunc(stop)
}

func deliveries(t *testing.T, s store.Store, hook string) []store.Delivery {
	t.Helper()
	ds, err := s.Deliveries(t.Context(), hook, 0)
	if err != nil {
		t.Fatalf("Deliveries: %v", err)
	}
	return ds
}

func ids(envs []webhook.Envelope) []string {
	var out []string
	for _, e := range envs {
		out = append(out, e.ID)
	}
	return out
}

// A receiver that answers 500 at first gets retries, every delivery
// verifies, and each event arrives in the order it was emitted.
func TestDeliveriesSignedRetriedAndInOrder(t *testing.T) {
	s := openStore(t, filepath.Join(t.TempDir(), "pm.db"))
	defer s.Close()
	r := newReceiver(t, "s3cret")
	r.answer = func(n int) int {
		if n <= 3 {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	}
	addHook(t, s, "aaaaaaaaaaaaaaaa", r.srv.URL+"/hook", "s3cret", webhook.NodeDown, webhook.SyncFailing)
	d, _ := start(t, s, true)
	var want []string
	for i := range 5 {
		ev := []string{webhook.NodeDown, webhook.SyncFailing}[i%2]
		if err := d.Emit(t.Context(), ev, map[string]int{"n": i}); err != nil {
			t.Fatalf("Emit: %v", err)
		}
	}
	// An event no hook subscribes to goes nowhere; an unknown one is refused.
	if err := d.Emit(t.Context(), webhook.RolloutHalted, nil); err != nil {
		t.Fatalf("Emit rollout.halted: %v", err)
	}
	if err := d.Emit(t.Context(), "patch.deleted", nil); err == nil {
		t.Errorf("Emit of an unknown event: want an error, got none")
	}
	for _, dl := range slices.Backward(deliveries(t, s, "aaaaaaaaaaaaaaaa")) {
		want = append(want, dl.EventID)
	}
	if len(want) != 5 {
		t.Fatalf("outbox: want 5 deliveries, got %d", len(want))
	}
	waitFor(t, "5 deliveries", func() bool { return len(r.received()) >= 5 })
	if got := ids(r.received()); !slices.Equal(got, want) {
		t.Errorf("order: want %v, got %v", want, got)
	}
	first := deliveries(t, s, "aaaaaaaaaaaaaaaa")[4]
	if first.Attempts != 4 || first.LastStatus != 200 || first.Delivered.IsZero() || first.LastError != "" {
		t.Errorf("first delivery's record: want 4 attempts ending 200, got %+v", first)
	}
	r.mu.Lock()
	if r.badSigs != 0 {
		t.Errorf("bad signatures: want 0, got %d", r.badSigs)
	}
	r.mu.Unlock()
	if env := r.received()[0]; env.Node != "hub-1" || env.Event != webhook.NodeDown || string(env.Data) != `{"n":0}` {
		t.Errorf("first envelope: got %+v", env)
	}
}

// A receiver that never answers holds up only its own hook.
func TestHungReceiverDoesNotDelayOthers(t *testing.T) {
	s := openStore(t, filepath.Join(t.TempDir(), "pm.db"))
	defer s.Close()
	hung := newReceiver(t, "x")
	hung.block = make(chan struct{})
	ok := newReceiver(t, "y")
	addHook(t, s, "aaaaaaaaaaaaaaaa", hung.srv.URL, "x", webhook.NodeDown)
	addHook(t, s, "bbbbbbbbbbbbbbbb", ok.srv.URL, "y", webhook.NodeDown)
	d, _ := start(t, s, true)
	if err := d.Emit(t.Context(), webhook.NodeDown, map[string]string{"node": "edge-1"}); err != nil {
		t.Fatalf("Emit: %v", err)
	}
	<-hung.seen // the hung receiver holds its request from here on
	if err := d.Emit(t.Context(), webhook.NodeDown, map[string]string{"node": "edge-2"}); err != nil {
		t.Fatalf("Emit: %v", err)
	}
	waitFor(t, "the healthy hook to get both events", func() bool { return len(ok.received()) == 2 })
	// The hung receiver's events stay pending: an attempt it never
	// answered is not a delivery.
	for _, dl := range deliveries(t, s, "aaaaaaaaaaaaaaaa") {
		if !dl.Delivered.IsZero() {
			t.Errorf("hung receiver's delivery %s: want pending, got delivered %v", dl.EventID, dl.Delivered)
		}
	}
}

// A redirect to another host is not followed: the other host sees
// nothing and the attempt is recorded as failed.
func TestRedirectToAnotherHostIsNotFollowed(t *testing.T) {
	s := openStore(t, filepath.Join(t.TempDir(), "pm.db"))
	defer s.Close()
	elsewhere := newReceiver(t, "z")
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, elsewhere.srv.URL+"/steal", http.StatusTemporaryRedirect)
	}))
	defer redirector.Close()
	addHook(t, s, "aaaaaaaaaaaaaaaa", redirector.URL, "z", webhook.NodeDown)
	d, _ := start(t, s, true)
	if err := d.Emit(t.Context(), webhook.NodeDown, nil); err != nil {
		t.Fatalf("Emit: %v", err)
	}
	waitFor(t, "two recorded attempts", func() bool {
		ds := deliveries(t, s, "aaaaaaaaaaaaaaaa")
		return len(ds) == 1 && ds[0].Attempts >= 2
	})
	dl := deliveries(t, s, "aaaaaaaaaaaaaaaa")[0]
	if !dl.Delivered.IsZero() || dl.LastStatus != http.StatusTemporaryRedirect || dl.LastError == "" {
		t.Errorf("redirected delivery: want pending, status 307 and an error, got %+v", dl)
	}
	elsewhere.mu.Lock()
	defer elsewhere.mu.Unlock()
	if elsewhere.requests != 0 {
		t.Errorf("the other host: want no request, got %d", elsewhere.requests)
	}
}

// An http hook is refused at delivery time unless the node allows http.
func TestHTTPHookRefusedUnlessAllowed(t *testing.T) {
	s := openStore(t, filepath.Join(t.TempDir(), "pm.db"))
	defer s.Close()
	r := newReceiver(t, "k")
	addHook(t, s, "aaaaaaaaaaaaaaaa", r.srv.URL, "k", webhook.NodeDown)
	d, _ := start(t, s, false)
	if err := d.Emit(t.Context(), webhook.NodeDown, nil); err != nil {
		t.Fatalf("Emit: %v", err)
	}
	waitFor(t, "a recorded attempt", func() bool {
		ds := deliveries(t, s, "aaaaaaaaaaaaaaaa")
		return len(ds) == 1 && ds[0].Attempts >= 1
	})
	if dl := deliveries(t, s, "aaaaaaaaaaaaaaaa")[0]; dl.LastError != webhook.ErrInsecureURL.Error() {
		t.Errorf("http hook: want %q recorded, got %+v", webhook.ErrInsecureURL, dl)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.requests != 0 {
		t.Errorf("receiver: want no request, got %d", r.requests)
	}
}

// Pending deliveries survive a restart of the dispatcher and the store.
func TestPendingDeliveriesSurviveRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pm.db")
	s := openStore(t, path)
	r := newReceiver(t, "k")
	var up sync.Mutex // held: the receiver answers 503
	up.Lock()
	r.answer = func(int) int {
		if up.TryLock() {
			up.Unlock()
			return http.StatusOK
		}
		return http.StatusServiceUnavailable
	}
	addHook(t, s, "aaaaaaaaaaaaaaaa", r.srv.URL, "k", webhook.NodeDown)
	d, stop := start(t, s, true)
	for i := range 3 {
		if err := d.Emit(t.Context(), webhook.NodeDown, i); err != nil {
			t.Fatalf("Emit: %v", err)
		}
	}
	<-r.seen
	stop()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	up.Unlock()

	s = openStore(t, path)
	defer s.Close()
	start(t, s, true)
	waitFor(t, "3 deliveries after the restart", func() bool { return len(r.received()) == 3 })
	var data []string
	for _, e := range r.received() {
		data = append(data, string(e.Data))
	}
	if !slices.Equal(data, []string{"0", "1", "2"}) {
		t.Errorf("after restart: want 0 1 2 in order, got %v", data)
	}
}

// A patch that becomes available on a tier is announced, once, from the
// change log; history before the first start is not.
func TestPatchAvailableFromTheChangeLog(t *testing.T) {
	s := openStore(t, filepath.Join(t.TempDir(), "pm.db"))
	defer s.Close()
	ctx := t.Context()
	old := catalog.Patch{Digest: "sha256:" + string(slices.Repeat([]byte("1"), 64)), Kernel: "6.8.0-45.45-generic",
		Arch: "x86_64", Version: "1", Size: 10, CVEs: []string{}}
	if _, err := s.AddPatch(ctx, old); err != nil {
		t.Fatalf("AddPatch: %v", err)
	}
	r := newReceiver(t, "k")
	addHook(t, s, "aaaaaaaaaaaaaaaa", r.srv.URL, "k", webhook.PatchAvailable)
	d, _ := start(t, s, true)
	waitFor(t, "the cursor to be set", func() bool {
		_, ok, err := s.WebhookCursor(ctx)
		return ok && err == nil
	})
	p := old
	p.Digest, p.Version = "sha256:"+string(slices.Repeat([]byte("2"), 64)), "2"
	if _, err := s.AddPatch(ctx, p); err != nil {
		t.Fatalf("AddPatch: %v", err)
	}
	tiers, _ := s.Tiers(ctx)
	if _, err := s.Promote(ctx, p.Digest, tiers[1].Name); err != nil {
		t.Fatalf("Promote: %v", err)
	}
	d.Wake()
	waitFor(t, "two patch.available", func() bool { return len(r.received()) == 2 })
	var got []string
	for _, e := range r.received() {
		var pa webhook.PatchAvailableData
		if err := json.Unmarshal(e.Data, &pa); err != nil || e.Event != webhook.PatchAvailable {
			t.Fatalf("envelope %+v: %v", e, err)
		}
		got = append(got, pa.Tier+" "+pa.Patch.Version)
	}
	if want := []string{tiers[0].Name + " 2", tiers[1].Name + " 2"}; !slices.Equal(got, want) {
		t.Errorf("patch.available: want %v, got %v", want, got)
	}
}

func TestSignVerify(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	body := []byte(`{"id":"x"}`)
	good := webhook.Sign([]byte("k"), now, body)
	tests := []struct {
		name   string
		secret string
		header string
		body   string
		at     time.Time
		want   error
	}{
		{"valid", "k", good, string(body), now, nil},
		{"valid within the window", "k", good, string(body), now.Add(4 * time.Minute), nil},
		{"body changed", "k", good, `{"id":"y"}`, now, webhook.ErrBadSignature},
		{"other secret", "j", good, string(body), now, webhook.ErrBadSignature},
		{"stale", "k", good, string(body), now.Add(6 * time.Minute), webhook.ErrStale},
		{"timestamp swapped", "k", "t=1800000300," + good[len("t=1800000000,"):], string(body), now, webhook.ErrBadSignature},
		{"malformed", "k", "v1=zz", string(body), now, webhook.ErrBadSignature},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := webhook.Verify([]byte(tc.secret), tc.header, []byte(tc.body), tc.at, 0)
			if !errors.Is(err, tc.want) {
				t.Errorf("Verify: want %v, got %v", tc.want, err)
			}
		})
	}
}

func TestCheckURL(t *testing.T) {
	tests := []struct {
		url       string
		allowHTTP bool
		ok        bool
	}{
		{"https://hooks.example/patchmesh", false, true},
		{"http://127.0.0.1:9000/hook", false, false},
		{"http://127.0.0.1:9000/hook", true, true},
		{"ftp://hooks.example/", true, false},
		{"https://user:pw@hooks.example/", false, false},
		{"/relative", true, false},
		{"https://hooks.example/#frag", false, false},
		{"https:///nohost", false, false},
	}
	for _, tc := range tests {
		if err := webhook.CheckURL(tc.url, tc.allowHTTP); (err == nil) != tc.ok {
			t.Errorf("CheckURL(%q, allowHTTP=%v): want ok=%v, got %v", tc.url, tc.allowHTTP, tc.ok, err)
		}
	}
}

// On a node whose log was empty when the dispatcher started, the first
// patch is news too.
func TestFirstPatchOfANewNodeIsAnnounced(t *testing.T) {
	s := openStore(t, filepath.Join(t.TempDir(), "pm.db"))
	defer s.Close()
	r := newReceiver(t, "k")
	addHook(t, s, "aaaaaaaaaaaaaaaa", r.srv.URL, "k", webhook.PatchAvailable)
	d, _ := start(t, s, true)
	waitFor(t, "the cursor to be set", func() bool {
		_, ok, err := s.WebhookCursor(t.Context())
		return ok && err == nil
	})
	p := catalog.Patch{Digest: "sha256:" + string(slices.Repeat([]byte("3"), 64)), Kernel: "6.8.0-45.45-generic",
		Arch: "x86_64", Version: "1", Size: 10, CVEs: []string{}}
	if _, err := s.AddPatch(t.Context(), p); err != nil {
		t.Fatalf("AddPatch: %v", err)
	}
	d.Wake()
	waitFor(t, "one patch.available", func() bool { return len(r.received()) == 1 })
}

// A node that hears every write to its store (SoleWriter) does not run a
// transaction for an event no hook subscribes to: node.down with no hook
// for it leaves the store unwritten. A hook added for it is heard at
// once: the next node.down is enqueued for it, none lost while the
// dispatcher has not reread the hooks. Without SoleWriter every event is
// enqueued, as before.
func TestEmitWithNoSubscriberWritesNothing(t *testing.T) {
	for _, sole := range []bool{true, false} {
		var changes store.Changes
		s, err := sqlstore.OpenSQLite(t.Context(), filepath.Join(t.TempDir(), "meta.db"), sqlstore.Options{Changes: &changes})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		addHook(t, s, "patches", "http://127.0.0.1:1/hook", "s3cret", webhook.PatchAvailable)
		d, err := webhook.New(webhook.Config{Store: s, Node: "edge-1", AllowHTTP: true, Changes: &changes,
			SoleWriter: sole, Poll: time.Hour, RetryMin: time.Hour, RetryMax: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { d.Run(ctx); close(done) }()
		down := map[string]string{"name": "edge-2"}
		// Until the dispatcher has read the hooks at the store's current
		// generation an emit still writes; then none does (SoleWriter), or
		// every one does.
		wrote := func() bool {
			g := changes.Generation()
			if err := d.Emit(t.Context(), webhook.NodeDown, down); err != nil {
				t.Fatal(err)
			}
			return changes.Generation() != g
		}
		if sole {
			waitFor(t, "an unsubscribed node.down that writes nothing", func() bool { return !wrote() })
			for i := range 5 {
				if wrote() {
					t.Fatalf("node.down %d with no hook for it wrote the store", i)
				}
			}
		} else {
			for i := range 5 {
				if !wrote() {
					t.Fatalf("without SoleWriter: node.down %d was not enqueued", i)
				}
			}
		}
		addHook(t, s, "downs", "http://127.0.0.1:1/hook", "s3cret", webhook.NodeDown)
		if err := d.Emit(t.Context(), webhook.NodeDown, down); err != nil {
			t.Fatal(err)
		}
		if got := deliveries(t, s, "downs"); len(got) != 1 || got[0].Event != webhook.NodeDown {
			t.Errorf("sole writer %v: the node.down right after its hook was added: want 1 delivery, got %+v", sole, got)
		}
		if got := deliveries(t, s, "patches"); len(got) != 0 {
			t.Errorf("sole writer %v: the patch.available hook got %d deliveries of node.down", sole, len(got))
		}
		cancel()
		<-done
	}
}
