// Package webhook posts a node's events to the receivers operators
// register: signed (HMAC-SHA256 over a timestamp and the body), retried
// with backoff until a receiver takes them, in order per receiver, at
// least once, across restarts.
//
// It owns the delivery: the event envelope and its signature, the outbox
// worker of each hook, the URL and redirect policy, and the reading of
// the change log for patch.available. It does not own persistence (the
// store's webhooks and outbox, which are written in one transaction per
// enqueue), the admin API that adds and lists hooks (api), or noticing a
// dead member or a failing link (the node watches topology and federation
// and calls Emit).
package webhook

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/store"
)

// Event names a receiver can subscribe to.
const (
	// PatchAvailable: a patch became available on a tier at this node (an
	// upload or promotion at the hub, a synced record downstream).
	PatchAvailable = "patch.available"
	// RolloutWaveOpened and RolloutHalted are emitted by rollouts.
	RolloutWaveOpened = "rollout.wave_opened"
	RolloutHalted     = "rollout.halted"
	// NodeDown: gossip marks a member dead.
	NodeDown = "node.down"
	// SyncFailing: a sync link of this node goes failing.
	SyncFailing = "sync.failing"
	// Ping is the test delivery (`patchmesh admin webhooks test`); no
	// hook subscribes to it.
	Ping = "ping"
)

// Events are the names a hook may subscribe to, in documentation order.
var Events = []string{PatchAvailable, RolloutWaveOpened, RolloutHalted, NodeDown, SyncFailing}

// ValidEvent reports whether a hook may subscribe to name.
func ValidEvent(name string) bool { return slices.Contains(Events, name) }

// Envelope is the JSON body of every delivery.
type Envelope struct {
	// ID is the event's ID, the same on every retry and in the
	// Patchmesh-Delivery header.
	ID      string          `json:"id"`
	Event   string          `json:"event"`
	Created time.Time       `json:"created"`
	Node    string          `json:"node"`
	Data    json.RawMessage `json:"data"`
}

// PatchAvailableData is the data of a patch.available event.
type PatchAvailableData struct {
	Tier  string        `json:"tier"`
	Patch catalog.Patch `json:"patch"`
}

// NewMessage encodes an event for the outbox: a fresh ID, the envelope as
// the exact bytes every attempt will post.
func NewMessage(event, node string, payload any, now time.Time) (store.OutboxMessage, error) {
	data, err := json.Marshal(payload)
	if err != nil {
		return store.OutboxMessage{}, fmt.Errorf("webhook: encode %s data: %w", event, err)
	}
	var id [12]byte
	_, _ = rand.Read(id[:]) // crypto/rand.Read does not fail on supported platforms
	env := Envelope{ID: hex.EncodeToString(id[:]), Event: event, Created: now.UTC(), Node: node, Data: data}
	body, err := json.Marshal(env)
	if err != nil {
		return store.OutboxMessage{}, fmt.Errorf("webhook: encode %s: %w", event, err)
	}
	return store.OutboxMessage{Event: event, ID: env.ID, Body: body}, nil
}

// Store is what the dispatcher needs of the node's store.
type Store interface {
	store.Webhooks
	Events(ctx context.Context, after int64, limit int) ([]catalog.Event, error)
	Head(ctx context.Context) (int64, error)
}

// Config tunes a Dispatcher.
type Config struct {
	Store Store
	// Node names this node in every envelope.
	Node string
	// AllowHTTP lets hooks use plain http URLs (loopback receivers,
	// tests). Default false: https only.
	AllowHTTP bool
	// Timeout bounds one attempt, connection to last byte. Default 10s.
	Timeout time.Duration
	// RetryMin and RetryMax bound the backoff between failed attempts on
	// one hook. Defaults 1s and 5m.
	RetryMin, RetryMax time.Duration
	// Poll is how often the dispatcher rereads the hook list and the
	// change log, and an idle hook its outbox, without being woken.
	// Default 2s: on a store other nodes write too, their changes wake
	// nothing here. A store only this node writes can wait far longer,
	// since every change, hook edit and event wakes the dispatcher.
	Poll time.Duration
	// Keep is how long the record of a delivered event is kept (pending
	// ones are kept until delivered). Default 7 days.
	Keep time.Duration
	// Changes wakes the dispatcher when the change log grows; nil means
	// it polls.
	Changes *store.Changes
	// SoleWriter says every write to Store is this node's own and bumps
	// Changes' generation once committed (an embedded store no other node
	// writes): a hook list read at one generation is then current for as
	// long as the generation stays, and Emit skips an event no hook in it
	// subscribes to instead of running a transaction that enqueues
	// nothing. Each node.down was such a transaction on every node that
	// saw the death, hooks or not (bench/RESULTS.md, issue 15).
	SoleWriter bool
	// Transport carries the requests; nil means a clone of
	// http.DefaultTransport.
	Transport http.RoundTripper
	// UserAgent is sent with every delivery.
	UserAgent string
	Log       *slog.Logger
	// Registerer takes the dispatcher's metrics; nil registers none.
	Registerer prometheus.Registerer
	Now        func() time.Time
}

// Defaults of Config.
const (
	DefaultTimeout  = 10 * time.Second
	DefaultRetryMin = time.Second
	DefaultRetryMax = 5 * time.Minute
	DefaultPoll     = 2 * time.Second
	DefaultKeep     = 7 * 24 * time.Hour
)

// pruneEvery is how often delivered records older than Keep are deleted.
const pruneEvery = time.Hour

// Dispatcher delivers the outbox: one worker per hook, so a slow or
// failing receiver delays only its own deliveries.
type Dispatcher struct {
	cfg     Config
	client  *http.Client
	log     *slog.Logger
	wake    chan struct{}
	metrics metrics

	mu      sync.Mutex
	workers map[string]*worker
	// events are the events the hooks subscribe to, as reconcile last read
	// them at store generation eventsAt (with Config.SoleWriter); eventsRead
	// says it has.
	events     map[string]bool
	eventsAt   uint64
	eventsRead bool
}

type worker struct {
	wake chan struct{}
	stop context.CancelFunc
}

type metrics struct {
	attempts *prometheus.CounterVec
	duration prometheus.Histogram
	emitted  *prometheus.CounterVec
}

// New returns a dispatcher; Run starts it.
func New(cfg Config) (*Dispatcher, error) {
	if cfg.Store == nil {
		return nil, errors.New("webhook: Config.Store is nil")
	}
	if cfg.Timeout < 0 || cfg.RetryMin < 0 || cfg.RetryMax < 0 || cfg.Poll < 0 || cfg.Keep < 0 {
		return nil, errors.New("webhook: Config durations must not be negative")
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.RetryMin == 0 {
		cfg.RetryMin = DefaultRetryMin
	}
	if cfg.RetryMax == 0 {
		cfg.RetryMax = DefaultRetryMax
	}
	if cfg.RetryMax < cfg.RetryMin {
		return nil, errors.New("webhook: Config.RetryMax is below RetryMin")
	}
	if cfg.Poll == 0 {
		cfg.Poll = DefaultPoll
	}
	if cfg.Keep == 0 {
		cfg.Keep = DefaultKeep
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = "patchmesh-webhook"
	}
	tr := cfg.Transport
	if tr == nil {
		tr = http.DefaultTransport.(*http.Transport).Clone()
	}
	d := &Dispatcher{
		cfg:     cfg,
		client:  &http.Client{Transport: tr, Timeout: cfg.Timeout, CheckRedirect: sameHostRedirects},
		log:     cfg.Log,
		wake:    make(chan struct{}, 1),
		workers: map[string]*worker{},
		metrics: metrics{
			attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "patchmesh_webhook_attempts_total",
				Help: "Webhook delivery attempts, by result (delivered, failed).",
			}, []string{"result"}),
			duration: prometheus.NewHistogram(prometheus.HistogramOpts{
				Name:    "patchmesh_webhook_attempt_duration_seconds",
				Help:    "How long one webhook delivery attempt took, whatever its result.",
				Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
			}),
			emitted: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "patchmesh_webhook_events_total",
				Help: "Events put in the webhook outbox, by event name (one per event, whatever the number of hooks).",
			}, []string{"event"}),
		},
	}
	for _, r := range []string{"delivered", "failed"} {
		d.metrics.attempts.WithLabelValues(r)
	}
	for _, e := range append(slices.Clone(Events), Ping) {
		d.metrics.emitted.WithLabelValues(e)
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{d.metrics.attempts, d.metrics.duration, d.metrics.emitted} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("webhook: register metrics: %w", err)
			}
		}
	}
	return d, nil
}

// AllowHTTP says whether plain http receivers are allowed here.
func (d *Dispatcher) AllowHTTP() bool { return d.cfg.AllowHTTP }

// Emit puts an event in the outbox of every hook subscribed to it and
// wakes their workers. It returns once the event is stored: from then on
// it is delivered, at least once, even across a restart. Rollouts call it
// with RolloutWaveOpened and RolloutHalted; payload is any JSON-encodable
// value and becomes the envelope's data.
func (d *Dispatcher) Emit(ctx context.Context, event string, payload any) error {
	if !ValidEvent(event) {
		return fmt.Errorf("webhook: unknown event %q", event)
	}
	if d.unheard(event) {
		return nil
	}
	m, err := NewMessage(event, d.cfg.Node, payload, d.cfg.Now())
	if err != nil {
		return err
	}
	if err := d.cfg.Store.Enqueue(ctx, []store.OutboxMessage{m}, store.NoCursor); err != nil {
		return fmt.Errorf("webhook: emit %s: %w", event, err)
	}
	d.metrics.emitted.WithLabelValues(event).Inc()
	d.Wake()
	return nil
}

// unheard reports whether no hook subscribes to event, as far as a hook
// list that is still current says (Config.SoleWriter); false whenever
// the store was written since it was read.
func (d *Dispatcher) unheard(event string) bool {
	if !d.cfg.SoleWriter || d.cfg.Changes == nil {
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.eventsRead && d.eventsAt == d.cfg.Changes.Generation() && !d.events[event]
}

// Wake makes the dispatcher reread the hook list and the log and every
// worker look at its outbox now, after a hook was added or a message
// enqueued elsewhere.
func (d *Dispatcher) Wake() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// Run delivers until ctx ends, then stops every worker (an attempt in
// flight is cut off and stays pending) and returns.
func (d *Dispatcher) Run(ctx context.Context) {
	var wg sync.WaitGroup
	defer func() {
		d.mu.Lock()
		for id, w := range d.workers {
			w.stop()
			delete(d.workers, id)
		}
		d.mu.Unlock()
		wg.Wait()
	}()
	t := time.NewTicker(d.cfg.Poll)
	defer t.Stop()
	var pruned time.Time
	for {
		if now := d.cfg.Now(); now.Sub(pruned) >= pruneEvery {
			pruned = now
			if _, err := d.cfg.Store.PruneDeliveries(ctx, now.Add(-d.cfg.Keep)); err != nil && ctx.Err() == nil {
				d.log.Warn("webhook_prune_failed", "error", err.Error())
			}
		}
		var changed <-chan struct{}
		if d.cfg.Changes != nil {
			changed = d.cfg.Changes.Wait()
		}
		// The log first: its cursor's write moves the store generation,
		// which the hook list read after it is then current at.
		if err := d.tail(ctx); err != nil && ctx.Err() == nil {
			d.log.Warn("webhook_log_unreadable", "error", err.Error())
		}
		if err := d.reconcile(ctx, &wg); err != nil && ctx.Err() == nil {
			d.log.Warn("webhook_hooks_unreadable", "error", err.Error())
		}
		d.wakeWorkers()
		select {
		case <-ctx.Done():
			return
		case <-d.wake:
		case <-changed:
		case <-t.C:
		}
	}
}

// reconcile runs one worker per hook in the store.
func (d *Dispatcher) reconcile(ctx context.Context, wg *sync.WaitGroup) error {
	var gen uint64
	if d.cfg.Changes != nil {
		// Before the read: a hook added during it moves the generation.
		gen = d.cfg.Changes.Generation()
	}
	hooks, err := d.cfg.Store.Webhooks(ctx)
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.events, d.eventsAt, d.eventsRead = map[string]bool{}, gen, true
	live := map[string]bool{}
	for _, h := range hooks {
		for _, e := range h.Events {
			d.events[e] = true
		}
		live[h.ID] = true
		if d.workers[h.ID] != nil {
			continue
		}
		wctx, stop := context.WithCancel(ctx)
		w := &worker{wake: make(chan struct{}, 1), stop: stop}
		d.workers[h.ID] = w
		wg.Go(func() { d.work(wctx, h.ID, w.wake) })
	}
	for id, w := range d.workers {
		if !live[id] {
			w.stop()
			delete(d.workers, id)
		}
	}
	return nil
}

func (d *Dispatcher) wakeWorkers() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, w := range d.workers {
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
}

// tailBatch is how many log events one enqueue covers.
const tailBatch = 100

// tail moves the change log's patch.available events into the outbox,
// each batch in one transaction with the cursor, so none is enqueued
// twice or lost across a restart. At the first start it begins at the
// log's head: hooks hear of what happens from then on, not of history.
func (d *Dispatcher) tail(ctx context.Context) error {
	cursor, ok, err := d.cfg.Store.WebhookCursor(ctx)
	if err != nil {
		return err
	}
	if !ok {
		head, err := d.cfg.Store.Head(ctx)
		if err != nil {
			return err
		}
		return d.cfg.Store.Enqueue(ctx, nil, head)
	}
	for range 1000 { // bounded: at most 100k events per wake
		events, err := d.cfg.Store.Events(ctx, cursor, tailBatch)
		if err != nil || len(events) == 0 {
			return err
		}
		var msgs []store.OutboxMessage
		for _, e := range events {
			data, ok := patchAvailable(e)
			if !ok {
				continue
			}
			m, err := NewMessage(PatchAvailable, d.cfg.Node, data, d.cfg.Now())
			if err != nil {
				return err
			}
			msgs = append(msgs, m)
		}
		cursor = events[len(events)-1].Seq
		if err := d.cfg.Store.Enqueue(ctx, msgs, cursor); err != nil {
			return err
		}
		d.metrics.emitted.WithLabelValues(PatchAvailable).Add(float64(len(msgs)))
		if len(events) < tailBatch {
			return nil
		}
	}
	return nil
}

// patchAvailable reads a log event as a patch becoming available on its
// tier: an added or promoted patch that the event left live on the tier.
// A synced record this node did not apply (filtered) carries no tier in
// its patch, and is not news here.
func patchAvailable(e catalog.Event) (PatchAvailableData, bool) {
	if e.Type != catalog.EventPatchAdded && e.Type != catalog.EventPatchPromoted || e.Tier == "" {
		return PatchAvailableData{}, false
	}
	var p catalog.Patch
	if err := json.Unmarshal(e.Data, &p); err != nil || p.Withdrawn || !slices.Contains(p.Tiers, e.Tier) {
		return PatchAvailableData{}, false
	}
	return PatchAvailableData{Tier: e.Tier, Patch: p}, true
}

// work delivers one hook's outbox in order: the oldest pending delivery
// until it succeeds, with backoff between failures, then the next.
func (d *Dispatcher) work(ctx context.Context, hookID string, wake <-chan struct{}) {
	b := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(d.cfg.RetryMin),
		backoff.WithMaxInterval(d.cfg.RetryMax),
		backoff.WithMaxElapsedTime(0), // never give up: the outbox is durable
	)
	wait := func(dur time.Duration, wakeable bool) bool {
		t := time.NewTimer(dur)
		defer t.Stop()
		var w <-chan struct{}
		if wakeable {
			w = wake
		}
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		case <-w:
		}
		return true
	}
	for ctx.Err() == nil {
		dl, err := d.cfg.Store.NextDelivery(ctx, hookID)
		if errors.Is(err, catalog.ErrNotFound) {
			if !wait(d.cfg.Poll, true) {
				return
			}
			continue
		}
		if err != nil {
			if ctx.Err() == nil {
				d.log.Warn("webhook_outbox_unreadable", "hook", hookID, "error", err.Error())
			}
			if !wait(d.cfg.RetryMin, false) {
				return
			}
			continue
		}
		h, err := d.cfg.Store.Webhook(ctx, hookID)
		if errors.Is(err, catalog.ErrNotFound) {
			return // removed; reconcile stops us too
		}
		if err != nil {
			if !wait(d.cfg.RetryMin, false) {
				return
			}
			continue
		}
		a := d.attempt(ctx, h, dl)
		if ctx.Err() != nil {
			return // cut off by the stop: the delivery stays pending, unrecorded
		}
		if err := d.cfg.Store.RecordAttempt(context.WithoutCancel(ctx), dl.ID, a); err != nil {
			d.log.Warn("webhook_record_failed", "hook", hookID, "delivery", dl.ID, "error", err.Error())
		}
		if a.Delivered {
			b.Reset()
			continue
		}
		d.log.Info("webhook_attempt_failed", "hook", hookID, "delivery", dl.ID, "event", dl.Event,
			"attempt", dl.Attempts+1, "status", a.Status, "error", a.Error)
		if !wait(b.NextBackOff(), false) {
			return
		}
	}
}

// attempt posts one delivery, signed now.
func (d *Dispatcher) attempt(ctx context.Context, h store.Webhook, dl store.Delivery) store.Attempt {
	start := time.Now()
	a := d.post(ctx, h, dl)
	d.metrics.duration.Observe(time.Since(start).Seconds())
	if a.Delivered {
		d.metrics.attempts.WithLabelValues("delivered").Inc()
	} else {
		d.metrics.attempts.WithLabelValues("failed").Inc()
	}
	a.At = d.cfg.Now()
	return a
}

func (d *Dispatcher) post(ctx context.Context, h store.Webhook, dl store.Delivery) store.Attempt {
	// The URL was checked when the hook was added; check again, as the
	// node's policy may have changed since (allow_http turned off).
	if err := CheckURL(h.URL, d.cfg.AllowHTTP); err != nil {
		return store.Attempt{Error: err.Error()}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.URL, bytes.NewReader(dl.Body))
	if err != nil {
		return store.Attempt{Error: "build request: " + err.Error()}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", d.cfg.UserAgent)
	req.Header.Set(EventHeader, dl.Event)
	req.Header.Set(DeliveryHeader, dl.EventID)
	req.Header.Set(SignatureHeader, Sign(h.Secret, d.cfg.Now(), dl.Body))
	resp, err := d.client.Do(req)
	if err != nil {
		a := store.Attempt{Error: describe(err)}
		if resp != nil { // a redirect refused: its status, body closed
			a.Status = resp.StatusCode
		}
		return a
	}
	defer resp.Body.Close()
	// Drain a little so the connection can be reused; never more.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return store.Attempt{Status: resp.StatusCode, Delivered: true}
	}
	msg := fmt.Sprintf("receiver answered %d", resp.StatusCode)
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		msg += " (a redirect; only 307 and 308 to the same host are followed)"
	}
	return store.Attempt{Status: resp.StatusCode, Error: msg}
}

// describe keeps an attempt's error free of the URL, whose query may
// carry a receiver's own token.
func describe(err error) string {
	if ue, ok := errors.AsType[*url.Error](err); ok {
		return ue.Err.Error()
	}
	return err.Error()
}
