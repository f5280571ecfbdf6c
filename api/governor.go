package api

import (
	"context"
	"errors"
	"math"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// GovernorConfig bounds how much work a node takes on at once. Beyond
// MaxInFlight running requests, up to MaxQueue wait, each at most
// QueueTimeout, served newest first; a request that finds the queue full
// pushes the oldest waiter out, and the refused get 503 overloaded with a
// Retry-After from the measured drain rate, which is cheaper for everyone
// than a node that slows to a crawl. A request that is admitted has
// therefore waited at most QueueTimeout for its slot, and under overload
// most admitted ones far less (last in, first out).
//
// Admin requests (the admin API but its login, the topology, the
// dashboard's endpoints) run in a lane of their own, AdminMaxInFlight and
// AdminMaxQueue, so that an operator is answered while clients flood the
// node; blob downloads (machines' and peers') in another, as a download
// holds its slot for as long as its bytes take and costs the node little
// CPU (sendfile), so it would crowd the short requests out of a lane
// sized for them; /debug/* and /metrics bypass the governor altogether.
//
// The client lane is sized for the cores, not for the clients: a check-in
// is CPU and a database query, so beyond a few dozen at once more running
// requests only make each slower (measured in bench/RESULTS.md, "Check-ins
// under 10x overload"), while the queue, served newest first, absorbs
// bursts.
type GovernorConfig struct {
	// MaxInFlight caps client-lane requests running at once. 0 means 64.
	MaxInFlight int
	// MaxQueue caps client-lane requests waiting for a slot. 0 means 500;
	// a negative value means no queue: a request that finds no free slot
	// is refused.
	MaxQueue int
	// QueueTimeout is the longest a request waits for a slot, in either
	// lane. 0 means 1s.
	QueueTimeout time.Duration
	// AdminMaxInFlight caps admin-lane requests running at once. 0 means 32.
	AdminMaxInFlight int
	// AdminMaxQueue caps admin-lane requests waiting. 0 means 32; negative
	// means none.
	AdminMaxQueue int
	// BlobMaxInFlight caps blob downloads running at once. 0 means 1000.
	BlobMaxInFlight int
	// BlobMaxQueue caps blob downloads waiting. 0 means 500; negative
	// means none.
	BlobMaxQueue int
}

// Governor defaults. The queue wait is short on purpose: a request that
// would wait longer is better told to come back (Retry-After) than kept,
// since under overload a long queue only adds its wait to every answer.
const (
	DefaultMaxInFlight      = 64
	DefaultMaxQueue         = 500
	DefaultBlobMaxInFlight  = 1000
	DefaultBlobMaxQueue     = 500
	DefaultQueueTimeout     = time.Second
	DefaultAdminMaxInFlight = 32
	DefaultAdminMaxQueue    = 32
)

func (c GovernorConfig) withDefaults() GovernorConfig {
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = DefaultMaxInFlight
	}
	c.MaxQueue = queueSize(c.MaxQueue, DefaultMaxQueue)
	if c.QueueTimeout <= 0 {
		c.QueueTimeout = DefaultQueueTimeout
	}
	if c.AdminMaxInFlight <= 0 {
		c.AdminMaxInFlight = DefaultAdminMaxInFlight
	}
	c.AdminMaxQueue = queueSize(c.AdminMaxQueue, DefaultAdminMaxQueue)
	if c.BlobMaxInFlight <= 0 {
		c.BlobMaxInFlight = DefaultBlobMaxInFlight
	}
	c.BlobMaxQueue = queueSize(c.BlobMaxQueue, DefaultBlobMaxQueue)
	return c
}

func queueSize(n, def int) int {
	switch {
	case n == 0:
		return def
	case n < 0:
		return 0
	}
	return n
}

// Governor lanes, the lane label of the governor metrics.
const (
	laneClient = "client"
	laneAdmin  = "admin"
	laneBlobs  = "blobs"
	laneLogin  = "login"
)

// retryAfterSeconds is what an overloaded node asks a client to wait when
// it has no better measure: long enough for a burst to drain, short enough
// not to idle a recovered node. maxRetryAfter caps the measured wait.
const (
	retryAfterSeconds = 1
	maxRetryAfter     = 60
)

// lane is one pool of slots with its queue. The queue is served last in,
// first out, and when it is full the oldest waiter is refused to make room:
// under overload the requests that have waited least are the ones worth
// serving (their clients are still there, their deadlines not yet spent),
// so an admitted request waits little, and the wait a refused one paid is
// bounded by the queue timeout. FIFO would instead make every admitted
// request wait for the whole queue ahead of it.
type lane struct {
	name    string
	max     int // slots
	queue   int // most waiters
	timeout time.Duration

	mu      sync.Mutex
	running int
	waiters []*waiter // oldest first; served from the end

	inFlight  prometheus.Gauge
	queued    prometheus.Gauge
	overloads prometheus.Counter
	wait      prometheus.Observer
	drain     drainMeter
}

// waiter is one queued request. ready receives true when a release hands
// it a slot, false when a newer request pushed it out of a full queue.
type waiter struct {
	ready chan bool
}

func newLane(name string, inFlight, queue int, timeout time.Duration, m *Metrics) *lane {
	return &lane{
		name: name, max: inFlight, queue: queue, timeout: timeout,
		inFlight: m.inFlight.WithLabelValues(name), queued: m.queued.WithLabelValues(name),
		overloads: m.overloads.WithLabelValues(name), wait: m.queueWait.WithLabelValues(name),
	}
}

type governor struct {
	client, admin, blobs, login *lane
}

func newGovernor(c GovernorConfig, m *Metrics) *governor {
	c = c.withDefaults()
	return &governor{
		client: newLane(laneClient, c.MaxInFlight, c.MaxQueue, c.QueueTimeout, m),
		admin:  newLane(laneAdmin, c.AdminMaxInFlight, c.AdminMaxQueue, c.QueueTimeout, m),
		blobs:  newLane(laneBlobs, c.BlobMaxInFlight, c.BlobMaxQueue, c.QueueTimeout, m),
		login:  newLane(laneLogin, loginMaxInFlight, loginMaxQueue, c.QueueTimeout, m),
	}
}

// The login lane's size. A login spends its time waiting for the bcrypt
// pool (auth.bcrypt_concurrency, at most auth.bcrypt_wait), not on the
// CPU, so a flood of them must not hold the client lane's few slots: in
// the client lane, 200 concurrent wrong logins cut check-ins a
// hundredfold (bench/RESULTS.md). The auth limits bound what a login costs;
// this lane bounds how many wait at once.
const (
	loginMaxInFlight = 256
	loginMaxQueue    = 256
)

// laneFor picks a request's lane by its path: operators' requests go to
// the admin lane, except the logins, which anyone can send and which have
// a lane of their own; blob downloads to the blobs lane.
func (g *governor) laneFor(r *http.Request) *lane {
	p := r.URL.Path
	switch {
	case p == "/v1/admin/login", p == "/v1/dashboard/login":
		return g.login
	case strings.HasPrefix(p, "/v1/admin/"), strings.HasPrefix(p, "/v1/dashboard/"), p == "/v1/topology", p == "/v1/sync/status":
		return g.admin
	case strings.HasPrefix(p, "/v1/blobs/"), strings.HasPrefix(p, "/v1/peer/blobs/"):
		return g.blobs
	}
	return g.client
}

// overloadedError is the governor's refusal, with the wait it advises.
type overloadedError struct{ retryAfter int }

func (e *overloadedError) Error() string { return errOverloaded.Error() }

// Is makes every governor refusal errOverloaded to errors.Is.
func (e *overloadedError) Is(target error) bool { return target == errOverloaded }

// Unwrap lets classify answer it as errOverloaded.
func (e *overloadedError) Unwrap() error { return errOverloaded }

// errOverloaded is an overload refusal with the default wait.
var errOverloaded = &httpError{http.StatusServiceUnavailable, codeOverloaded, "the node is overloaded; retry later"}

// acquire takes a slot, waiting in the queue if need be. It fails with an
// *overloadedError when the queue has no room and this request cannot
// push an older one out (no queue at all), when a newer request pushed it
// out, or when its wait ran out; or with the context's error if the
// client left.
func (l *lane) acquire(ctx context.Context) error {
	l.mu.Lock()
	if l.running < l.max {
		l.running++
		l.mu.Unlock()
		l.inFlight.Inc()
		l.wait.Observe(0)
		return nil
	}
	if l.queue == 0 {
		l.mu.Unlock()
		return l.refuse()
	}
	if len(l.waiters) == l.queue {
		oldest := l.waiters[0]
		l.waiters = l.waiters[1:]
		oldest.ready <- false // buffered: never blocks
		l.queued.Dec()
	}
	w := &waiter{ready: make(chan bool, 1)}
	l.waiters = append(l.waiters, w)
	l.mu.Unlock()
	l.queued.Inc()

	start := time.Now()
	t := time.NewTimer(l.timeout)
	defer t.Stop()
	var err error
	select {
	case ok := <-w.ready:
		return l.admitted(ok, start)
	case <-t.C:
		err = l.refuse()
	case <-ctx.Done():
		err = context.Cause(ctx)
	}
	l.mu.Lock()
	if i := slices.Index(l.waiters, w); i >= 0 {
		l.waiters = slices.Delete(l.waiters, i, i+1)
		l.mu.Unlock()
		l.queued.Dec()
		return err
	}
	l.mu.Unlock()
	// A release or a newer request got to it first: its answer is in
	// ready. A slot handed over is this request's to use.
	return l.admitted(<-w.ready, start)
}

// admitted finishes a queued acquire: ok is what the waiter was told.
func (l *lane) admitted(ok bool, since time.Time) error {
	if !ok {
		return l.refuse()
	}
	l.inFlight.Inc()
	l.wait.Observe(time.Since(since).Seconds())
	return nil
}

func (l *lane) refuse() error {
	l.overloads.Inc()
	l.mu.Lock()
	ahead := len(l.waiters) + l.running
	l.mu.Unlock()
	return &overloadedError{retryAfter: retryAfter(ahead, l.drain.rate(time.Now()))}
}

// release gives a slot back: to the newest waiter if there is one, else
// to the pool.
func (l *lane) release() {
	l.inFlight.Dec()
	l.drain.add(time.Now())
	l.mu.Lock()
	if n := len(l.waiters); n > 0 {
		w := l.waiters[n-1]
		l.waiters = l.waiters[:n-1]
		l.mu.Unlock()
		l.queued.Dec()
		w.ready <- true
		return
	}
	l.running--
	l.mu.Unlock()
}

// retryAfter is how many seconds the requests ahead take to drain at rate
// (requests per second): at least 1, at most maxRetryAfter, the default
// when nothing has been measured.
func retryAfter(ahead int, rate float64) int {
	if rate <= 0 {
		return retryAfterSeconds
	}
	s := int(math.Ceil(float64(ahead) / rate))
	return min(max(s, 1), maxRetryAfter)
}

// drainMeter measures how many requests a lane finishes per second: an
// exponentially weighted average over one-second windows.
type drainMeter struct {
	mu     sync.Mutex
	start  time.Time // of the current window
	count  int       // releases in the current window
	perSec float64   // the average
}

func (d *drainMeter) add(now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.roll(now)
	d.count++
}

func (d *drainMeter) rate(now time.Time) float64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.roll(now)
	return d.perSec
}

// roll closes the windows that have ended, idle ones counting as zero.
// Called with mu held.
func (d *drainMeter) roll(now time.Time) {
	if d.start.IsZero() {
		d.start = now
		return
	}
	for n := 0; now.Sub(d.start) >= time.Second; n++ {
		if n == 10 { // long idle: the past no longer says anything
			d.start, d.count, d.perSec = now, 0, 0
			return
		}
		d.perSec = 0.5*d.perSec + 0.5*float64(d.count)
		d.count = 0
		d.start = d.start.Add(time.Second)
	}
}

// middleware admits requests through the governor.
func (g *governor) middleware(s *server) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			l := g.laneFor(r)
			if err := l.acquire(r.Context()); err != nil {
				if errors.Is(err, errOverloaded) {
					s.fail(w, r, err)
					return
				}
				// The client is gone; the answer is for the access log.
				writeError(w, http.StatusServiceUnavailable, errorDetail{Code: codeOverloaded, Message: "request abandoned while queued"})
				return
			}
			sl := &slot{l: l, held: true}
			defer sl.release()
			if ri := infoFrom(r.Context()); ri != nil && ri.slot == nil {
				ri.slot = sl
				next.ServeHTTP(w, r)
				ri.slot = nil
				return
			}
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), slotKey, sl)))
		})
	}
}

// slot is one admitted request's hold on its lane. A handler that waits on
// nothing but a wake-up (a long-polling feed request) releases it for the
// wait, so that idle downstreams cannot crowd out real work, and takes it
// back, queueing like a new request, before it works again.
type slot struct {
	l    *lane
	held bool
}

const slotKey ctxKey = 1

// slotFrom returns the request's slot, nil outside the governor.
func slotFrom(ctx context.Context) *slot {
	// A governor inside another puts its slot in the context: the
	// innermost slot is the one the request holds last.
	if sl, ok := ctx.Value(slotKey).(*slot); ok {
		return sl
	}
	if ri := infoFrom(ctx); ri != nil {
		return ri.slot
	}
	return nil
}

func (sl *slot) release() {
	if sl != nil && sl.held {
		sl.held = false
		sl.l.release()
	}
}

// reacquire takes the slot back; an overload error or the context's error
// if it cannot.
func (sl *slot) reacquire(ctx context.Context) error {
	if sl == nil || sl.held {
		return nil
	}
	if err := sl.l.acquire(ctx); err != nil {
		return err
	}
	sl.held = true
	return nil
}
