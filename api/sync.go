package api

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/gorilla/mux"

	"github.com/patchmesh/patchmesh/auth"
	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/federation"
	"github.com/patchmesh/patchmesh/store"
)

// The sync endpoints (docs/api.md, "Sync"): the change feed downstream
// nodes pull, the hub's public key, the sync loop's state and trigger, and
// the hub keys this node pins. The wire types are federation's, shared
// with the sync loop that reads them.

// roleHub is the role of the node where patches enter the mesh, as the
// node package names it (node.RoleHub); api sits below node and cannot
// import it.
const roleHub = "hub"

// feedPollInterval is how often a long-polling feed request looks at the
// store when no Changes tells it of new events.
const feedPollInterval = 250 * time.Millisecond

// Key sources, as GET /v1/admin/trust reports them.
const (
	sourceConfig = "config"
	sourceAdmin  = "admin"
)

func (s *server) syncRoutes(v1 *mux.Router) {
	sy := subrouter(v1, "/sync")
	sy.Handle("/feed", methods{http.MethodGet: s.handle(s.feed)})
	sy.Handle("/status", methods{http.MethodGet: s.asAdmin(s.syncStatus)})
	sy.Handle("/hub-key", methods{http.MethodGet: s.handle(s.hubKey)})
	sy.Handle("/mesh-key", methods{http.MethodGet: s.handle(s.serveMeshKey)})
	sy.Handle("/report", methods{http.MethodPost: s.handle(s.takeReport)})
}

// syncAdminRoutes joins the admin router: the trigger and the trust store
// are administration like the rest of /v1/admin.
func (s *server) syncAdminRoutes(a *mux.Router) {
	a.Handle("/sync/trigger", methods{http.MethodPost: s.asAdmin(s.syncTrigger)})
	a.Handle("/trust", methods{http.MethodGet: s.asAdmin(s.listTrust), http.MethodPost: s.asAdmin(s.addTrust)})
	a.Handle("/trust/{id}", methods{http.MethodDelete: s.asAdmin(s.removeTrust)})
}

// configKey is a hub key pinned in the node's config file, parsed once.
type configKey struct {
	id, key string
}

// parseConfigKeys checks the pinned keys at startup, so that a typo in the
// config file stops the node instead of silently trusting less.
func parseConfigKeys(keys []string) ([]configKey, error) {
	out := make([]configKey, 0, len(keys))
	for i, k := range keys {
		pub, err := federation.ParsePublicKey(k)
		if err != nil {
			return nil, fmt.Errorf("api: Config.ConfigKeys[%d]: %w", i, err)
		}
		out = append(out, configKey{id: federation.KeyID(pub), key: federation.FormatPublicKey(pub)})
	}
	return out, nil
}

// Feed.

// feedQuery is a validated feed request.
type feedQuery struct {
	pos   store.FeedPosition
	limit int
	wait  time.Duration
	// pendingAfter asks for the records past this hub sequence that the
	// node is still fetching blobs for (FeedResponse.Pending); -1: not
	// asked, as from a node that does not relay cut-through.
	pendingAfter int64
}

func parseFeedQuery(v url.Values) (feedQuery, error) {
	q := feedQuery{limit: federation.DefaultFeedLimit, pendingAfter: -1}
	after, hubAfter := v.Get("after"), v.Get("hub_after")
	if after != "" && hubAfter != "" {
		return q, invalid("hub_after", "give after or hub_after, not both")
	}
	seq := func(name, s string) (int64, error) {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			return 0, invalid(name, "must be a non-negative integer")
		}
		return n, nil
	}
	var err error
	switch {
	case hubAfter != "":
		q.pos.ByHub = true
		if q.pos.AfterHubSeq, err = seq("hub_after", hubAfter); err != nil {
			return q, err
		}
	case after != "":
		if q.pos.AfterSeq, err = seq("after", after); err != nil {
			return q, err
		}
	}
	if p := v.Get("pending_after"); p != "" {
		if q.pendingAfter, err = seq("pending_after", p); err != nil {
			return q, err
		}
	}
	if l := v.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > federation.MaxFeedLimit {
			return q, invalid("limit", "must be a number from 1 to %d", federation.MaxFeedLimit)
		}
		q.limit = n
	}
	if w := v.Get("wait"); w != "" {
		d, err := time.ParseDuration(w)
		if err != nil || d < 0 || d > federation.MaxFeedWait {
			return q, invalid("wait", "must be a duration from 0s to %s, such as 30s", federation.MaxFeedWait)
		}
		q.wait = d
	}
	return q, nil
}

// feed serves a page of the sync token's tier, and only that tier. With
// wait, a request that finds nothing new waits up to wait for an event to
// commit, then answers at once.
func (s *server) feed(w http.ResponseWriter, r *http.Request) error {
	// No cache between two nodes may keep a page: the next one differs.
	w.Header().Set("Cache-Control", "no-store")
	t, err := s.bearer(r, catalog.TokenSync)
	if err != nil {
		return err
	}
	q, err := parseFeedQuery(r.URL.Query())
	if err != nil {
		return err
	}
	node, progress, ok, err := federation.ParseProgressQuery(r.URL.Query(), s.now())
	if err != nil {
		return err
	}
	if ok && s.progress != nil {
		s.progress.Note(node, progress)
	}
	ctx := r.Context()
	deadline := time.NewTimer(q.wait)
	defer deadline.Stop()
	for {
		// Take the wake-up before reading, so that an event committed
		// between the read and the wait still wakes this request.
		wake, stop := s.wakeUp()
		page, err := s.feeds.get(ctx, t.Tier, q.pos, q.limit)
		if err != nil {
			stop()
			return err
		}
		var pending []federation.Envelope
		if q.pendingAfter >= 0 && s.arrivals != nil {
			// A new record the node is still fetching the blob of answers
			// a long poll too: the downstream can start on the blob.
			pending = s.arrivals.Pending(t.Tier, q.pendingAfter)
		}
		if len(page.Entries) > 0 || len(pending) > 0 || q.wait == 0 {
			stop()
			s.writeFeed(w, t.Tier, page, pending)
			return nil
		}
		done, err := s.idle(ctx, wake, deadline.C)
		stop()
		if err != nil {
			return err
		}
		if done {
			s.writeFeed(w, t.Tier, page, pending)
			return nil
		}
	}
}

// wakeUp returns a channel that fires at the next change, or at the next
// poll when the node has no Changes, and a function that frees it.
func (s *server) wakeUp() (<-chan struct{}, func()) {
	if s.changes != nil {
		return s.changes.Wait(), func() {}
	}
	ch := make(chan struct{})
	t := time.AfterFunc(feedPollInterval, func() { close(ch) })
	return ch, func() { t.Stop() }
}

// idle waits for wake, the deadline, the node to stop or the client to
// leave, holding no governor slot meanwhile. done says the request should answer now; after
// a wake-up it holds its slot again.
func (s *server) idle(ctx context.Context, wake <-chan struct{}, deadline <-chan time.Time) (done bool, err error) {
	sl := slotFrom(ctx)
	sl.release()
	select {
	case <-wake:
	case <-deadline:
		done = true
	case <-s.stopping:
		// The node is draining: the caller polls again, elsewhere or
		// after the restart, and this request no longer holds the stop.
		done = true
	case <-ctx.Done():
		// The client is gone; the answer only feeds the access log.
		done = true
	}
	if err := sl.reacquire(ctx); err != nil {
		if errors.Is(err, errOverloaded) {
			return false, err
		}
		// The client left while queued: answer what was read last.
		return true, nil
	}
	return done, nil
}

// writeFeed writes a page, each skipped entry with the signed record that
// explains its skip, and the newest hub heartbeat this node holds for the
// tier.
func (s *server) writeFeed(w http.ResponseWriter, tier string, page store.FeedPage, pending []federation.Envelope) {
	events := make([]federation.FeedEvent, len(page.Entries))
	for i, e := range page.Entries {
		events[i] = federation.FeedEvent{Seq: e.Seq, Envelope: federation.Envelope{Record: e.Record, Sig: e.Sig}, Skip: e.Skip}
		if e.Skip && len(e.BecauseRecord) > 0 {
			events[i].Because = &federation.Envelope{Record: e.BecauseRecord, Sig: e.BecauseSig}
		}
	}
	resp := federation.FeedResponse{Tier: tier, Head: page.Head, HubHead: page.HubHead, Events: events, Pending: pending}
	if s.heartbeats != nil {
		if hb, ok := s.heartbeats.Latest(tier); ok {
			resp.Heartbeat = &hb
		}
	}
	writeJSON(w, http.StatusOK, resp)
}

// Sync loop.

func (s *server) syncStatus(w http.ResponseWriter, r *http.Request, _ string) error {
	var links []federation.LinkStatus
	if s.sync != nil {
		links = s.sync.Status()
	}
	s.writeSyncStatus(w, links)
	return nil
}

func (s *server) writeSyncStatus(w http.ResponseWriter, links []federation.LinkStatus) {
	writeJSON(w, http.StatusOK, federation.SyncStatusResponse{Role: s.info.Role, Links: nonNil(links)})
}

// syncTrigger starts a round on every link now; with {"wait": true} it
// answers once the round has ended, or when the client gives up.
func (s *server) syncTrigger(w http.ResponseWriter, r *http.Request, _ string) error {
	if s.sync == nil {
		return &httpError{http.StatusConflict, codeNotDownstream, "this node has no upstream links to sync"}
	}
	var req struct {
		Wait bool `json:"wait"`
	}
	if err := s.decodeOptional(w, r, &req); err != nil {
		return err
	}
	links, err := s.sync.Trigger(r.Context(), req.Wait)
	if err != nil {
		return fmt.Errorf("sync trigger: %w", err)
	}
	s.writeSyncStatus(w, links)
	return nil
}

// Hub key and trusted keys.

type keyBody struct {
	Key string `json:"key"`
	ID  string `json:"id"`
}

// hubKey is public: the key only lets others verify what the hub signed,
// and an operator pinning it downstream compares it out of band anyway.
func (s *server) hubKey(w http.ResponseWriter, r *http.Request) error {
	if s.hubPub == nil {
		return &httpError{http.StatusNotFound, codeNotHub, "this node is not the hub; it signs nothing"}
	}
	writeJSON(w, http.StatusOK, keyBody{Key: federation.FormatPublicKey(s.hubPub), ID: federation.KeyID(s.hubPub)})
	return nil
}

type trustedKey struct {
	ID     string    `json:"id"`
	Key    string    `json:"key"`
	Source string    `json:"source"`
	Added  time.Time `json:"added,omitzero"`
}

func (s *server) listTrust(w http.ResponseWriter, r *http.Request, _ string) error {
	stored, err := s.store.TrustedKeys(r.Context())
	if err != nil {
		return err
	}
	keys := make([]trustedKey, 0, len(s.configKeys)+len(stored))
	for _, k := range s.configKeys {
		keys = append(keys, trustedKey{ID: k.id, Key: k.key, Source: sourceConfig})
	}
	for _, k := range stored {
		keys = append(keys, trustedKey{ID: k.ID, Key: k.Key, Source: sourceAdmin, Added: k.Added.UTC()})
	}
	writeJSON(w, http.StatusOK, struct {
		Keys []trustedKey `json:"keys"`
	}{keys})
	return nil
}

func (s *server) isConfigKey(id string) bool {
	return slices.ContainsFunc(s.configKeys, func(k configKey) bool { return k.id == id })
}

func (s *server) addTrust(w http.ResponseWriter, r *http.Request, user string) error {
	var req struct {
		Key string `json:"key"`
	}
	if err := s.decode(w, r, &req); err != nil {
		return err
	}
	pub, err := federation.ParsePublicKey(req.Key)
	if err != nil {
		return invalid("key", "%v", err)
	}
	k := store.TrustedKey{ID: federation.KeyID(pub), Key: federation.FormatPublicKey(pub), Added: s.now().UTC().Truncate(time.Microsecond)}
	if s.isConfigKey(k.ID) {
		return fmt.Errorf("trusted key %s is pinned in the config file: %w", k.ID, catalog.ErrConflict)
	}
	if err := s.store.AddTrustedKey(r.Context(), k); err != nil {
		return err
	}
	s.securityEvent(r, auth.EventTrustKeyAdded, slog.String("key_id", k.ID), slog.String("user", user))
	writeJSON(w, http.StatusCreated, trustedKey{ID: k.ID, Key: k.Key, Source: sourceAdmin, Added: k.Added})
	return nil
}

// removeTrust unpins a key added through the API. A key the config file
// pins stays pinned until the file changes; if the API pinned it as well,
// that second pin goes, so that removing the key from the file later
// really stops trusting it.
func (s *server) removeTrust(w http.ResponseWriter, r *http.Request, user string) error {
	id, err := pathVar(r, "id", validKeyID)
	if err != nil {
		return err
	}
	err = s.store.RemoveTrustedKey(r.Context(), id)
	if errors.Is(err, catalog.ErrNotFound) {
		if s.isConfigKey(id) {
			return &httpError{http.StatusConflict, codeConfigKey, "key " + id + " is pinned in the config file; remove it there and restart the node"}
		}
		return notFound("no trusted key " + id)
	}
	if err != nil {
		return err
	}
	s.securityEvent(r, auth.EventTrustKeyRemoved, slog.String("key_id", id), slog.String("user", user))
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// Patch changes on downstream nodes.

// hubOnly refuses a patch change on a node that is not the hub, before
// the body is read: patches enter the mesh at the hub and reach every
// other node signed, by sync. A change made here would be unsigned, never
// reach this node's downstreams, and fork this node from its tier.
func (s *server) hubOnly(h adminHandler) adminHandler {
	return func(w http.ResponseWriter, r *http.Request, user string) error {
		if s.info.Role != roleHub {
			return &httpError{http.StatusConflict, codeNotHub,
				"patches enter the mesh at the hub; this node receives them by sync"}
		}
		return h(w, r, user)
	}
}

// validKeyID checks a key ID as federation.KeyID makes it.
func validKeyID(id string) error {
	if !isHex16(id) {
		return invalid("id", "must be a key ID of 16 lowercase hex digits")
	}
	return nil
}

// checkHubKey refuses a hub key of the wrong size at startup.
func checkHubKey(k ed25519.PublicKey) error {
	if k != nil && len(k) != ed25519.PublicKeySize {
		return fmt.Errorf("api: Config.HubKey is %d bytes, want %d", len(k), ed25519.PublicKeySize)
	}
	return nil
}
