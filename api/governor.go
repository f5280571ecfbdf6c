package api

import (
	"context"
	"net/http"
	"strconv"
	"time"
)

// GovernorConfig bounds how much work a node takes on at once. Beyond
// MaxInFlight running requests, up to MaxQueue wait (each at most
// QueueTimeout); the rest are refused at once with 503 overloaded, which
// is cheaper for everyone than a node that slows to a crawl.
type GovernorConfig struct {
	// MaxInFlight caps API requests running at once. 0 means 1000.
	MaxInFlight int
	// MaxQueue caps requests waiting for a slot. 0 means 500; a negative
	// value means no queue: a request that finds no free slot is refused.
	MaxQueue int
	// QueueTimeout is the longest a request waits for a slot. 0 means 30s.
	QueueTimeout time.Duration
}

// Governor defaults, as the seed server had them.
const (
	DefaultMaxInFlight  = 1000
	DefaultMaxQueue     = 500
	DefaultQueueTimeout = 30 * time.Second
)

func (c GovernorConfig) withDefaults() GovernorConfig {
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = DefaultMaxInFlight
	}
	switch {
	case c.MaxQueue == 0:
		c.MaxQueue = DefaultMaxQueue
	case c.MaxQueue < 0:
		c.MaxQueue = 0
	}
	if c.QueueTimeout <= 0 {
		c.QueueTimeout = DefaultQueueTimeout
	}
	return c
}

// retryAfterSeconds is what an overloaded node asks a client to wait: long
// enough for a burst to drain, short enough not to idle a recovered node.
const retryAfterSeconds = 1

type governor struct {
	slots   chan struct{} // one element per running request
	waiting chan struct{} // one element per queued request
	timeout time.Duration
	m       *Metrics
}

func newGovernor(c GovernorConfig, m *Metrics) *governor {
	c = c.withDefaults()
	return &governor{
		slots:   make(chan struct{}, c.MaxInFlight),
		waiting: make(chan struct{}, c.MaxQueue),
		timeout: c.QueueTimeout,
		m:       m,
	}
}

// errOverloaded is the governor's refusal.
var errOverloaded = &httpError{http.StatusServiceUnavailable, codeOverloaded, "the node is overloaded; retry later"}

// acquire takes a slot, waiting in the queue if there is room there. It
// fails with errOverloaded, or the context's error if the client left.
func (g *governor) acquire(ctx context.Context) error {
	select {
	case g.slots <- struct{}{}:
		g.m.inFlight.Inc()
		return nil
	default:
	}
	select {
	case g.waiting <- struct{}{}:
	default:
		g.m.overloads.Inc()
		return errOverloaded
	}
	g.m.queued.Inc()
	defer func() {
		<-g.waiting
		g.m.queued.Dec()
	}()
	t := time.NewTimer(g.timeout)
	defer t.Stop()
	select {
	case g.slots <- struct{}{}:
		g.m.inFlight.Inc()
		return nil
	case <-t.C:
		g.m.overloads.Inc()
		return errOverloaded
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

func (g *governor) release() {
	<-g.slots
	g.m.inFlight.Dec()
}

// middleware admits requests through the governor.
func (g *governor) middleware(s *server) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if err := g.acquire(r.Context()); err != nil {
				if err == errOverloaded {
					w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds))
					s.fail(w, r, err)
					return
				}
				// The client is gone; the answer is for the access log.
				writeError(w, http.StatusServiceUnavailable, errorDetail{Code: codeOverloaded, Message: "request abandoned while queued"})
				return
			}
			sl := &slot{g: g, held: true}
			defer sl.release()
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), slotKey, sl)))
		})
	}
}

// slot is one admitted request's hold on the governor. A handler that
// waits on nothing but a wake-up (a long-polling feed request) releases it
// for the wait, so that idle downstreams cannot crowd out real work, and
// takes it back, queueing like a new request, before it works again.
type slot struct {
	g    *governor
	held bool
}

const slotKey ctxKey = 1

// slotFrom returns the request's slot, nil outside the governor.
func slotFrom(ctx context.Context) *slot {
	sl, _ := ctx.Value(slotKey).(*slot)
	return sl
}

func (sl *slot) release() {
	if sl != nil && sl.held {
		sl.held = false
		sl.g.release()
	}
}

// reacquire takes the slot back; errOverloaded or the context's error if
// it cannot.
func (sl *slot) reacquire(ctx context.Context) error {
	if sl == nil || sl.held {
		return nil
	}
	if err := sl.g.acquire(ctx); err != nil {
		return err
	}
	sl.held = true
	return nil
}
