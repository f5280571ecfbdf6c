package storetest

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/store"
)

func actor(action string) store.Actor {
	return store.Actor{User: "alice", TokenID: "0123456789abcdef", RequestID: "req-" + action,
		Client: "127.0.0.1", Action: action, Target: "/v1/admin/x"}
}

func audit(t *testing.T, s store.Store, f store.AuditFilter) []store.AuditEntry {
	t.Helper()
	es, err := s.Audit(t.Context(), f)
	if err != nil {
		t.Fatalf("Audit: %v", err)
	}
	return es
}

// testAuditInChangeTx: a change made under an actor leaves exactly one
// audit row with the actor's every field; a refused change and a change
// without an actor (none given, or one taken away) leave none.
func testAuditInChangeTx(t *testing.T, s store.Store) {
	ctx := t.Context()
	if _, err := s.AddTier(store.WithActor(ctx, actor("add-tier")), "gamma"); err != nil {
		t.Fatalf("AddTier: %v", err)
	}
	// Refused: the tier exists. No row.
	if _, err := s.AddTier(store.WithActor(ctx, actor("add-tier-again")), "gamma"); !errors.Is(err, catalog.ErrConflict) {
		t.Fatalf("AddTier duplicate: want ErrConflict, got %v", err)
	}
	// No actor: the node's own change. No row.
	if _, err := s.AddTier(ctx, "delta"); err != nil {
		t.Fatalf("AddTier: %v", err)
	}
	// An actor taken away (the node's own step within an admin request).
	// No row.
	if _, err := s.AddTier(store.WithoutActor(store.WithActor(ctx, actor("runner"))), "epsilon"); err != nil {
		t.Fatalf("AddTier: %v", err)
	}
	if err := s.AddTrustedKey(store.WithActor(ctx, actor("trust")), store.TrustedKey{
		ID: "00112233445566aa", Key: "ed25519:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}); err != nil {
		t.Fatalf("AddTrustedKey: %v", err)
	}
	if err := s.RemoveTrustedKey(store.WithActor(ctx, actor("untrust-missing")), "ffffffffffffffff"); !errors.Is(err, catalog.ErrNotFound) {
		t.Fatalf("RemoveTrustedKey unknown: want ErrNotFound, got %v", err)
	}
	es := audit(t, s, store.AuditFilter{})
	got := []string{}
	for _, e := range es {
		got = append(got, e.Action)
	}
	if want := []string{"trust", "add-tier"}; !slices.Equal(got, want) {
		t.Fatalf("audit actions newest first: want %v, got %v", want, got)
	}
	wantSame(t, "audit actor", es[1].Actor, actor("add-tier"))
	if es[1].At.IsZero() || es[0].ID <= es[1].ID {
		t.Errorf("audit rows: want times set and IDs rising, got %+v", es)
	}
	// Paging: Before and Limit.
	if page := audit(t, s, store.AuditFilter{Limit: 1}); len(page) != 1 || page[0].Action != "trust" {
		t.Errorf("Limit 1: want [trust], got %+v", page)
	}
	if page := audit(t, s, store.AuditFilter{Before: es[0].ID}); len(page) != 1 || page[0].Action != "add-tier" {
		t.Errorf("Before newest: want [add-tier], got %+v", page)
	}
	if page := audit(t, s, store.AuditFilter{Since: es[0].At.Add(time.Hour)}); len(page) != 0 {
		t.Errorf("Since an hour later: want nothing, got %+v", page)
	}
}

func hook(id string, events ...string) store.Webhook {
	return store.Webhook{ID: id, URL: "https://receiver.example/" + id, Events: events, Secret: []byte("secret-" + id)}
}

func msg(event, id string) store.OutboxMessage {
	return store.OutboxMessage{Event: event, ID: id, Body: []byte(`{"id":"` + id + `"}`)}
}

// testWebhooks: hooks are kept with their secret, listed in order, and
// refused twice; removing one drops its deliveries.
func testWebhooks(t *testing.T, s store.Store) {
	ctx := t.Context()
	for _, h := range []store.Webhook{hook("aaaaaaaaaaaaaaaa", "node.down"), hook("bbbbbbbbbbbbbbbb", "node.down", "sync.failing")} {
		if err := s.AddWebhook(ctx, h); err != nil {
			t.Fatalf("AddWebhook %s: %v", h.ID, err)
		}
	}
	wantErr(t, "AddWebhook duplicate", s.AddWebhook(ctx, hook("aaaaaaaaaaaaaaaa", "node.down")), catalog.ErrConflict)
	wantInvalid(t, "AddWebhook without events", s.AddWebhook(ctx, hook("cccccccccccccccc")))
	hs, err := s.Webhooks(ctx)
	if err != nil {
		t.Fatalf("Webhooks: %v", err)
	}
	if len(hs) != 2 || hs[0].ID != "aaaaaaaaaaaaaaaa" || string(hs[1].Secret) != "secret-bbbbbbbbbbbbbbbb" ||
		!slices.Equal(hs[1].Events, []string{"node.down", "sync.failing"}) {
		t.Fatalf("Webhooks: want both hooks with events and secrets, got %+v", hs)
	}
	h, err := s.Webhook(ctx, "bbbbbbbbbbbbbbbb")
	if err != nil || h.URL != "https://receiver.example/bbbbbbbbbbbbbbbb" {
		t.Fatalf("Webhook: want hook b, got %+v, %v", h, err)
	}
	_, err = s.Webhook(ctx, "dddddddddddddddd")
	wantErr(t, "Webhook unknown", err, catalog.ErrNotFound)
	if err := s.Enqueue(ctx, []store.OutboxMessage{msg("node.down", "e1")}, store.NoCursor); err != nil {
		t.Fatalf("Enqueue: %v", err)
	}
	if _, ok, err := s.WebhookCursor(ctx); err != nil || ok {
		t.Errorf("WebhookCursor after an Enqueue with NoCursor: want unset, got ok=%v err=%v", ok, err)
	}
	if err := s.RemoveWebhook(ctx, "aaaaaaaaaaaaaaaa"); err != nil {
		t.Fatalf("RemoveWebhook: %v", err)
	}
	wantErr(t, "RemoveWebhook again", s.RemoveWebhook(ctx, "aaaaaaaaaaaaaaaa"), catalog.ErrNotFound)
	if ds, err := s.Deliveries(ctx, "aaaaaaaaaaaaaaaa", 0); err != nil || len(ds) != 0 {
		t.Errorf("Deliveries of a removed hook: want none, got %+v, %v", ds, err)
	}
	if ds, err := s.Deliveries(ctx, "bbbbbbbbbbbbbbbb", 0); err != nil || len(ds) != 1 {
		t.Errorf("Deliveries of the other hook: want one, got %+v, %v", ds, err)
	}
}

func next(t *testing.T, s store.Store, hook string) (store.Delivery, bool) {
	t.Helper()
	d, err := s.NextDelivery(t.Context(), hook)
	if errors.Is(err, catalog.ErrNotFound) {
		return d, false
	}
	if err != nil {
		t.Fatalf("NextDelivery %s: %v", hook, err)
	}
	return d, true
}

// testOutbox: messages reach only subscribed hooks (or the one named), in
// order; a failed attempt keeps a delivery pending with its record; a
// delivered one is passed over; the log cursor moves only forward.
func testOutbox(t *testing.T, s store.Store) {
	ctx := t.Context()
	a, b := "aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb"
	for _, h := range []store.Webhook{hook(a, "node.down"), hook(b, "sync.failing", "node.down")} {
		if err := s.AddWebhook(ctx, h); err != nil {
			t.Fatalf("AddWebhook: %v", err)
		}
	}
	if _, ok, err := s.WebhookCursor(ctx); err != nil || ok {
		t.Fatalf("WebhookCursor before any: want unset, got ok=%v err=%v", ok, err)
	}
	ping := msg("ping", "p1")
	ping.Hook = a
	if err := s.Enqueue(ctx, []store.OutboxMessage{msg("node.down", "e1"), msg("sync.failing", "e2"), ping}, 7); err != nil {
		t.Fatalf("Enqueue: %v", err)
	}
	// A stretch of log enqueued already (cursor 7 > 5): nothing added.
	if err := s.Enqueue(ctx, []store.OutboxMessage{msg("node.down", "stale")}, 5); err != nil {
		t.Fatalf("Enqueue: %v", err)
	}
	if err := s.Enqueue(ctx, []store.OutboxMessage{msg("node.down", "e3")}, store.NoCursor); err != nil {
		t.Fatalf("Enqueue: %v", err)
	}
	if seq, ok, err := s.WebhookCursor(ctx); err != nil || !ok || seq != 7 {
		t.Errorf("WebhookCursor after 7, then 5: want 7, got %d ok=%v err=%v", seq, ok, err)
	}
	order := func(hook string) []string {
		ds, err := s.Deliveries(ctx, hook, 0)
		if err != nil {
			t.Fatalf("Deliveries: %v", err)
		}
		var ids []string
		for _, d := range slices.Backward(ds) {
			ids = append(ids, d.EventID)
		}
		return ids
	}
	if got, want := order(a), []string{"e1", "p1", "e3"}; !slices.Equal(got, want) {
		t.Errorf("hook a's deliveries: want %v, got %v", want, got)
	}
	if got, want := order(b), []string{"e1", "e2", "e3"}; !slices.Equal(got, want) {
		t.Errorf("hook b's deliveries: want %v, got %v", want, got)
	}

	d, ok := next(t, s, a)
	if !ok || d.EventID != "e1" || string(d.Body) != `{"id":"e1"}` || d.Event != "node.down" {
		t.Fatalf("NextDelivery a: want e1, got %+v", d)
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)
	if err := s.RecordAttempt(ctx, d.ID, store.Attempt{At: at, Status: 500, Error: "status 500"}); err != nil {
		t.Fatalf("RecordAttempt: %v", err)
	}
	d, _ = next(t, s, a)
	if d.EventID != "e1" || d.Attempts != 1 || d.LastStatus != 500 || d.LastError != "status 500" || !d.LastAttempt.Equal(at) {
		t.Fatalf("after a failed attempt: want e1 pending with its record, got %+v", d)
	}
	if err := s.RecordAttempt(ctx, d.ID, store.Attempt{At: at, Status: 204, Delivered: true}); err != nil {
		t.Fatalf("RecordAttempt: %v", err)
	}
	if d, _ = next(t, s, a); d.EventID != "p1" {
		t.Fatalf("after delivery: want p1 next, got %+v", d)
	}
	ds, _ := s.Deliveries(ctx, a, 0)
	if first := ds[len(ds)-1]; first.Attempts != 2 || first.Delivered.IsZero() || first.LastError != "" {
		t.Errorf("delivered record: want 2 attempts, delivered, no error, got %+v", first)
	}
	if d, _ := next(t, s, b); d.EventID != "e1" {
		t.Errorf("hook b is independent: want e1 next, got %+v", d)
	}
	wantErr(t, "RecordAttempt unknown", s.RecordAttempt(ctx, 1<<40, store.Attempt{}), catalog.ErrNotFound)

	// Pruning drops delivered records older than the cut, never pending ones.
	if n, err := s.PruneDeliveries(ctx, at); err != nil || n != 0 {
		t.Errorf("PruneDeliveries at the delivery time: want 0 pruned, got %d, %v", n, err)
	}
	if n, err := s.PruneDeliveries(ctx, at.Add(time.Hour*24*365*100)); err != nil || n != 1 {
		t.Errorf("PruneDeliveries far ahead: want the 1 delivered record pruned, got %d, %v", n, err)
	}
	if got := order(a); !slices.Equal(got, []string{"p1", "e3"}) {
		t.Errorf("after pruning: want the pending p1 e3 kept, got %v", got)
	}
	if _, ok := next(t, s, "cccccccccccccccc"); ok {
		t.Errorf("NextDelivery of an unknown hook: want none")
	}
}
