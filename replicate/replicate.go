// Package replicate moves verified blob bytes from one node to another: a
// downstream node asks its upstream for the patch files it lacks, streams
// each one into its own blob store through blob.Put, and resumes a transfer
// that breaks part-way with an HTTP Range request.
//
// It does not decide what to fetch (the sync loop does, from signed
// records), and it does not store anything itself (blob drivers do). The
// digest is checked only by blob.Put, so nothing that fails the check, and
// nothing partial, is ever visible in the local store. While a transfer
// runs, Stream passes its staged bytes on to a downstream node that checks
// the digest itself (cut-through), ending the stream only once the blob is
// verified here and cutting it if not.
package replicate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/patchmesh/patchmesh/blob"
)

// ErrUnauthorized means the upstream refused the sync token (401 or 403):
// the token is wrong, revoked or not for this tier. Retrying will not help.
var ErrUnauthorized = errors.New("upstream refused the sync token")

const (
	defaultParallel = 4
	defaultResumes  = 5
	// firstPause and maxPause bound the wait before a Range resume: long
	// enough for a flapping link to settle, short enough that a sync pass
	// is not held up by one bad connection.
	firstPause = 100 * time.Millisecond
	maxPause   = 2 * time.Second
)

// Config is what a Replicator needs.
type Config struct {
	// Client is the sync transport (proxy, CA, TLS settings). Required.
	Client *http.Client
	// Blobs is the local store fetched blobs are committed to. Required.
	Blobs interface {
		blob.Receiver
		blob.Statter
	}
	// Parallel bounds concurrent transfers across all Fetch calls of one
	// Replicator, so that many links syncing at once do not swamp the
	// node's uplink or disk. 0 means 4.
	Parallel int
	// Resumes bounds the Range resumes of one blob within one Fetch, so that
	// a link that breaks every few bytes fails instead of crawling. 0 means 5.
	Resumes int
	// IdleTimeout is how long a transfer may go without receiving a byte
	// before its connection is dropped and the transfer resumed (or, past
	// Resumes, failed), so that an upstream that keeps a connection open
	// and sends nothing cannot hold a sync round forever. 0 means 60s.
	IdleTimeout time.Duration
	// Log receives one line per transfer and per resume. nil discards.
	Log *slog.Logger
}

// Want is a blob the caller needs.
type Want struct {
	Digest blob.Digest
	// Size comes from the signed record; it caps how much is read from the
	// upstream. Size <= 0 means unknown: only the digest check limits it.
	Size int64
}

// Source is a node to fetch from: an upstream, or a peer in the same data
// centre.
type Source struct {
	// BaseURL is the node's root, e.g. "https://hub.example:8443".
	BaseURL string
	// Token is the bearer token: a sync token ("pms_…") for an upstream;
	// empty for a peer, which knows this node by its TLS client
	// certificate (the peer listener's mutual TLS). It is sent only in
	// the Authorization header and never appears in a log line or error.
	Token string
	// Path is where the node serves blobs by digest, with both slashes:
	// "" means DefaultPath; a peer serves them at PeerPath.
	Path string
}

// Where blobs are served: to machines and downstreams, and to peers.
const (
	DefaultPath = "/v1/blobs/"
	PeerPath    = "/v1/peer/blobs/"
)

// BlobURL is the URL src serves d at.
func (s Source) BlobURL(d blob.Digest) string {
	path := s.Path
	if path == "" {
		path = DefaultPath
	}
	return strings.TrimRight(s.BaseURL, "/") + path + string(d)
}

// Result counts what a Fetch did.
type Result struct {
	// Fetched is the number of blobs this call transferred and committed.
	Fetched int
	// Present is the number of wanted blobs that needed no transfer by this
	// call: already stored, or brought in by a concurrent call's transfer.
	Present int
	// Bytes is the number of body bytes this call's transfers read from the
	// network, failed transfers included.
	Bytes int64
	// Mismatches lists every source that sent bytes not hashing to the
	// wanted digest, including those FetchFrom then got the blob from
	// another source for: each is a node lying or a disk failing, for the
	// caller to log as a security event.
	Mismatches []Mismatch
}

// Mismatch is one blob whose bytes from one source failed the digest check.
type Mismatch struct {
	Source string // the source's BaseURL
	Digest blob.Digest
}

// local is the part of the node's blob store a Replicator uses.
type local interface {
	blob.Receiver
	blob.Statter
}

// Replicator fetches blobs from upstream nodes. It is safe for concurrent
// use; one Replicator should serve all links of a node so that Parallel and
// the sharing of transfers apply across them.
type Replicator struct {
	client  *http.Client
	blobs   local
	resumes int
	idle    time.Duration
	log     *slog.Logger
	slots   chan struct{} // one token per running transfer
	pause   func(try int) time.Duration

	mu       sync.Mutex
	inflight map[blob.Digest]*transfer
	// started is closed and replaced whenever a transfer starts, for
	// Stream to wait on one that is about to.
	started chan struct{}
	// awaits are the digests Await waits on, each closed when a transfer
	// commits it.
	awaits map[blob.Digest]*await
}

// New checks cfg and returns a Replicator.
func New(cfg Config) (*Replicator, error) {
	if cfg.Client == nil {
		return nil, errors.New("replicate: Config.Client is required")
	}
	if cfg.Blobs == nil {
		return nil, errors.New("replicate: Config.Blobs is required")
	}
	if cfg.Parallel < 0 || cfg.Resumes < 0 {
		return nil, fmt.Errorf("replicate: Parallel (%d) and Resumes (%d) must not be negative", cfg.Parallel, cfg.Resumes)
	}
	if cfg.Parallel == 0 {
		cfg.Parallel = defaultParallel
	}
	if cfg.Resumes == 0 {
		cfg.Resumes = defaultResumes
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = defaultIdleTimeout
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Replicator{
		idle:     cfg.IdleTimeout,
		client:   cfg.Client,
		blobs:    cfg.Blobs,
		resumes:  cfg.Resumes,
		log:      cfg.Log,
		slots:    make(chan struct{}, cfg.Parallel),
		pause:    backoff,
		inflight: make(map[blob.Digest]*transfer),
		started:  make(chan struct{}),
		awaits:   make(map[blob.Digest]*await),
	}, nil
}

const defaultIdleTimeout = 60 * time.Second

// backoff doubles the pause before each resume, up to maxPause.
func backoff(try int) time.Duration {
	d := firstPause << min(try, 10)
	return min(d, maxPause)
}

// Fetch makes every wanted blob present locally, fetching the missing ones
// from src with at most Config.Parallel transfers at once (shared across
// concurrent Fetch calls). A digest already present is never fetched.
// Concurrent Fetches of one digest share one transfer. Fetch returns after
// all wanted blobs are settled; the error joins the per-blob errors. A blob
// whose bytes do not hash to its digest yields an error wrapping
// blob.ErrDigestMismatch; 404 wraps blob.ErrNotFound; 401 and 403 wrap
// ErrUnauthorized.
func (r *Replicator) Fetch(ctx context.Context, src Source, want []Want) (Result, error) {
	return r.FetchFrom(ctx, []Source{src}, want)
}

// FetchFrom is Fetch from the first of sources that serves each blob: a
// source that lacks it, refuses the token, cannot be reached, fails or
// sends bytes that do not hash to the digest is passed over for the next.
// A blob fails only when the last source fails too, with that source's
// error (wrapped as Fetch says), the earlier ones' quoted after it. Every
// mismatch, passed over or not, is listed in Result.Mismatches.
func (r *Replicator) FetchFrom(ctx context.Context, sources []Source, want []Want) (Result, error) {
	if len(sources) == 0 {
		return Result{}, errors.New("replicate: no source to fetch from")
	}
	srcs := make([]Source, len(sources))
	for i, src := range sources {
		var err error
		if srcs[i], err = checkSource(src); err != nil {
			return Result{}, err
		}
	}
	wants, errs := dedupe(want)

	// A bounded set of workers rather than one goroutine per blob: a
	// first sync may want thousands, and each Stat holds an OS thread.
	outcomes := make([]outcome, len(wants))
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(len(wants), workersPerSlot*cap(r.slots)) {
		wg.Go(func() {
			for i := range next {
				outcomes[i] = r.fetchFirst(ctx, srcs, wants[i])
			}
		})
	}
	for i := range wants {
		next <- i
	}
	close(next)
	wg.Wait()

	var res Result
	for _, o := range outcomes {
		res.Bytes += o.bytes
		res.Mismatches = append(res.Mismatches, o.mismatches...)
		switch {
		case o.err != nil:
			errs = append(errs, o.err)
		case o.fetched:
			res.Fetched++
		default:
			res.Present++
		}
	}
	return res, errors.Join(errs...)
}

// fetchFirst makes w present from the first of srcs that serves it.
func (r *Replicator) fetchFirst(ctx context.Context, srcs []Source, w Want) outcome {
	var all outcome
	var passed []string
	for i, src := range srcs {
		o := r.fetchOne(ctx, src, w)
		all.bytes += o.bytes
		if o.err == nil {
			all.fetched = o.fetched
			return all
		}
		if errors.Is(o.err, blob.ErrDigestMismatch) {
			all.mismatches = append(all.mismatches, Mismatch{Source: src.BaseURL, Digest: w.Digest})
		}
		if i == len(srcs)-1 || ctx.Err() != nil {
			// Only this error is wrapped, so that errors.Is speaks of
			// the source the caller hears about last.
			all.err = o.err
			if len(passed) > 0 {
				all.err = fmt.Errorf("%w (sources passed over: %s)", o.err, strings.Join(passed, "; "))
			}
			return all
		}
		passed = append(passed, o.err.Error())
	}
	return all // not reached: srcs is not empty
}

// checkSource validates src before any request and returns it with the
// base URL's trailing slash dropped and the path filled in. Errors never
// quote the token.
func checkSource(src Source) (Source, error) {
	u, err := url.Parse(src.BaseURL)
	if err != nil {
		// Not quoted: it may hold credentials that url.Redacted cannot find.
		return Source{}, errors.New("replicate: source URL does not parse")
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return Source{}, fmt.Errorf("replicate: source URL %q: want http(s)://host[:port]", u.Redacted())
	}
	if u.User != nil {
		// Credentials in the URL would end up in every error that quotes it.
		return Source{}, fmt.Errorf("replicate: source URL for %s carries credentials; put the token in Source.Token", u.Host)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return Source{}, fmt.Errorf("replicate: source URL %s: no query or fragment allowed", u.Redacted())
	}
	if src.Path == "" {
		src.Path = DefaultPath
	}
	if (src.Token == "" && src.Path != PeerPath) || strings.ContainsFunc(src.Token, func(c rune) bool { return c <= ' ' || c == 0x7f }) {
		return Source{}, errors.New("replicate: source token is empty or has spaces or control characters")
	}
	if p, err := url.Parse(src.Path); err != nil || p.Path != src.Path || p.String() != src.Path ||
		!strings.HasPrefix(src.Path, "/") || !strings.HasSuffix(src.Path, "/") {
		return Source{}, fmt.Errorf("replicate: source path %q: want a plain /path/ with both slashes", src.Path)
	}
	src.BaseURL = strings.TrimRight(src.BaseURL, "/")
	return src, nil
}

// dedupe drops repeated digests, so one Fetch never waits on itself, and
// rejects malformed digests before they can reach a URL path.
func dedupe(want []Want) ([]Want, []error) {
	var out []Want
	var errs []error
	seen := make(map[blob.Digest]int64, len(want))
	for _, w := range want {
		if _, err := blob.ParseDigest(string(w.Digest)); err != nil {
			errs = append(errs, fmt.Errorf("replicate: %w", err))
			continue
		}
		size, dup := seen[w.Digest]
		if !dup {
			seen[w.Digest] = w.Size
			out = append(out, w)
			continue
		}
		if size != w.Size {
			errs = append(errs, fmt.Errorf("replicate: %s wanted with two sizes, %d and %d", w.Digest, size, w.Size))
		}
	}
	return out, errs
}

// outcome is what one wanted blob came to, for one Fetch call.
type outcome struct {
	fetched    bool  // this call's transfer committed it
	bytes      int64 // network bytes this call's transfers read
	mismatches []Mismatch
	err        error
}

// transfer is one digest being made present, shared by every Fetch that
// wants it meanwhile. Its context belongs to none of them: it is cancelled
// only when every waiter has given up, so one caller's cancellation does
// not fail the others.
type transfer struct {
	src    Source
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	// spool is the staged bytes as they arrive, for Stream.
	spool *spool

	waiters int // guarded by Replicator.mu

	// Set before done is closed.
	fetched bool
	bytes   int64
	err     error
}

// workersPerSlot sizes one Fetch's worker pool against Config.Parallel:
// enough workers that Stat calls and waits on shared transfers do not keep
// the transfer slots idle.
const workersPerSlot = 4

// maxJoins bounds how often one Fetch waits on other callers' transfers
// from other upstreams that fail, before it gives up.
const maxJoins = 3

// fetchOne makes w present, either by joining a transfer already under way
// or by leading a new one from src.
func (r *Replicator) fetchOne(ctx context.Context, src Source, w Want) outcome {
	for range maxJoins {
		t, lead := r.join(ctx, src, w)
		select {
		case <-t.done:
		case <-ctx.Done():
			r.leave(t)
			return outcome{err: fmt.Errorf("replicate %s: %w", w.Digest, ctx.Err())}
		}
		if lead {
			return outcome{fetched: t.fetched, bytes: t.bytes, err: t.err}
		}
		// Someone else's transfer failed against another upstream: its
		// error (a mismatch above all) says nothing about ours, so try
		// our own source rather than report it as this link's fault.
		if t.err != nil && t.src != src {
			continue
		}
		return outcome{err: t.err}
	}
	return outcome{err: fmt.Errorf("replicate %s: transfers from other upstreams kept failing", w.Digest)}
}

// join returns the transfer of w's digest under way, or starts one from src
// and reports that this caller leads it.
func (r *Replicator) join(ctx context.Context, src Source, w Want) (*transfer, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if t, ok := r.inflight[w.Digest]; ok {
		t.waiters++
		return t, false
	}
	tctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	t := &transfer{src: src, ctx: tctx, cancel: cancel, done: make(chan struct{}), spool: newSpool(w.Size), waiters: 1}
	r.inflight[w.Digest] = t
	close(r.started)
	r.started = make(chan struct{})
	go r.run(t, w)
	return t, true
}

// leave drops a waiter that gave up. The last one to leave cancels the
// transfer and waits for it, so that when Fetch returns on cancellation
// the staged bytes are already gone.
func (r *Replicator) leave(t *transfer) {
	r.mu.Lock()
	t.waiters--
	last := t.waiters == 0
	if last {
		t.cancel()
	}
	r.mu.Unlock()
	if last {
		<-t.done
	}
}

// run carries out t and then retires it, so later callers start afresh.
func (r *Replicator) run(t *transfer, w Want) {
	defer func() {
		r.mu.Lock()
		if r.inflight[w.Digest] == t {
			delete(r.inflight, w.Digest)
		}
		if t.err == nil {
			r.committedLocked(w.Digest)
		}
		r.mu.Unlock()
		t.cancel()
		close(t.done)
	}()
	t.fetched, t.bytes, t.err = r.transfer(t.ctx, t.src, w, t.spool)
	t.spool.end(t.err)
}

// transfer makes w present from src unless it already is.
func (r *Replicator) transfer(ctx context.Context, src Source, w Want, sp *spool) (fetched bool, n int64, err error) {
	if _, err := r.blobs.Stat(ctx, w.Digest); err == nil {
		// On a store shared with other nodes the blob may be another
		// node's: claim it, so that their delete keeps it for us.
		if c, ok := r.blobs.(blob.Claimer); ok {
			if err := c.Claim(ctx, w.Digest); err != nil {
				return false, 0, fmt.Errorf("replicate %s: claim: %w", w.Digest, err)
			}
		}
		return false, 0, nil
	} else if !errors.Is(err, blob.ErrNotFound) {
		return false, 0, fmt.Errorf("replicate %s: stat: %w", w.Digest, err)
	}
	select {
	case r.slots <- struct{}{}:
		defer func() { <-r.slots }()
	case <-ctx.Done():
		return false, 0, fmt.Errorf("replicate %s: %w", w.Digest, ctx.Err())
	}

	start := time.Now()
	b := &body{r: r, ctx: ctx, src: src, want: w}
	defer b.close()
	if err := b.open(); err != nil {
		return false, b.n, fmt.Errorf("replicate %s from %s: %w", w.Digest, src.BaseURL, err)
	}
	info, err := blob.Put(ctx, spoolReceiver{local: r.blobs, s: sp}, w.Digest, b)
	if err != nil {
		return false, b.n, fmt.Errorf("replicate from %s: %w", src.BaseURL, err)
	}
	r.log.LogAttrs(ctx, slog.LevelInfo, "blob fetched", slog.String("digest", string(w.Digest)),
		slog.String("source", src.BaseURL), slog.Int64("size", info.Size), slog.Int64("network_bytes", b.n),
		slog.Int("resumes", b.resumes), slog.Duration("took", time.Since(start)))
	return true, b.n, nil
}
