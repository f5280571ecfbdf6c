package objtest

import (
	"context"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Proxy is a fault-injecting HTTP proxy in front of a real object store.
// It keeps the Host header the client sent, so that S3 signatures and
// Swift's storage URLs stay valid through it. Faults:
//
//   - Fail(n): the next n requests are answered 500 without reaching the
//     store;
//   - Delay(d): every request waits d before it is forwarded;
//   - CutUpload(n) / CutDownload(n): after n more request (response) body
//     bytes the connection is cut and the proxy goes down, as if the store
//     had stopped mid-transfer;
//   - Down/Up: while down, every connection is closed without an answer.
type Proxy struct {
	URL string
	srv *httptest.Server

	mu       sync.Mutex
	fail     int
	delay    time.Duration
	cutUp    int64 // bytes left before a cut; <0 off
	cutDown  int64
	down     bool
	requests atomic.Int64
	failed   atomic.Int64
	paths    []string // every request's URL path, in order
}

// NewProxy starts a proxy to target (scheme://host:port), closed when t
// ends.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatalf("proxy target %q: %v", target, err)
	}
	p := &Proxy{cutUp: -1, cutDown: -1}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(u)
			r.Out.Host = r.In.Host
		},
		ModifyResponse: func(resp *http.Response) error {
			resp.Body = &cutReader{ReadCloser: resp.Body, p: p, left: &p.cutDown}
			return nil
		},
		// Cut transfers are the point; their errors are noise here.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	p.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.requests.Add(1)
		p.mu.Lock()
		p.paths = append(p.paths, r.URL.Path)
		down, delay := p.down, p.delay
		fail := p.fail > 0
		if fail {
			p.fail--
		}
		p.mu.Unlock()
		if down {
			hangUp(w)
			return
		}
		if delay > 0 {
			select {
			case <-time.After(delay):
			case <-r.Context().Done():
				return
			}
		}
		if fail {
			p.failed.Add(1)
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusInternalServerError)
			io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code><Message>injected by the test proxy</Message></Error>`)
			return
		}
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = &cutReader{ReadCloser: r.Body, p: p, left: &p.cutUp}
		}
		rp.ServeHTTP(w, r)
	}))
	p.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	p.srv.Start()
	p.URL = p.srv.URL
	t.Cleanup(p.srv.Close)
	return p
}

// hangUp closes the client's connection without an answer.
func hangUp(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if c, _, err := hj.Hijack(); err == nil {
			c.Close()
			return
		}
	}
	panic(http.ErrAbortHandler)
}

// Fail answers the next n requests with 500.
func (p *Proxy) Fail(n int) { p.mu.Lock(); p.fail = n; p.mu.Unlock() }

// Delay holds every request for d before forwarding it (0: no delay).
func (p *Proxy) Delay(d time.Duration) { p.mu.Lock(); p.delay = d; p.mu.Unlock() }

// CutUpload cuts the transfer after n more request body bytes and goes down.
func (p *Proxy) CutUpload(n int64) { p.mu.Lock(); p.cutUp = n; p.mu.Unlock() }

// CutDownload cuts the transfer after n more response body bytes and goes
// down.
func (p *Proxy) CutDownload(n int64) { p.mu.Lock(); p.cutDown = n; p.mu.Unlock() }

// Down makes the proxy hang up on every request, as a stopped store would.
func (p *Proxy) Down() { p.mu.Lock(); p.down = true; p.mu.Unlock() }

// Up clears every fault.
func (p *Proxy) Up() {
	p.mu.Lock()
	p.down, p.fail, p.delay, p.cutUp, p.cutDown = false, 0, 0, -1, -1
	p.mu.Unlock()
}

// Requests is how many requests reached the proxy.
func (p *Proxy) Requests() int64 { return p.requests.Load() }

// RequestsFor is how many requests so far had a URL path containing
// substr: a test counts the traffic of one kind while the node's own
// housekeeping talks to the store beside it.
func (p *Proxy) RequestsFor(substr string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, path := range p.paths {
		if strings.Contains(path, substr) {
			n++
		}
	}
	return n
}

// Failed is how many requests were answered 500 by Fail.
func (p *Proxy) Failed() int64 { return p.failed.Load() }

var errCut = errors.New("objtest: transfer cut by the test proxy")

// cutReader passes bytes until its budget runs out, then fails and takes
// the proxy down.
type cutReader struct {
	io.ReadCloser
	p    *Proxy
	left *int64
}

func (c *cutReader) Read(b []byte) (int, error) {
	c.p.mu.Lock()
	left := *c.left
	if left == 0 || c.p.down {
		c.p.down = true
		c.p.mu.Unlock()
		return 0, errCut
	}
	if left > 0 && int64(len(b)) > left {
		b = b[:left]
	}
	c.p.mu.Unlock()
	n, err := c.ReadCloser.Read(b)
	c.p.mu.Lock()
	if *c.left > 0 {
		*c.left = max(*c.left-int64(n), 0)
	}
	c.p.mu.Unlock()
	return n, err
}

// WaitGoroutines waits (at most a few seconds, polling) for the number of
// goroutines to fall to at most want, and returns the last count: the
// bound for leak checks, where finished transfers' goroutines take a
// moment to exit.
func WaitGoroutines(ctx context.Context, want int, count func() int) int {
	n := count()
	for i := 0; i < 100 && n > want; i++ {
		select {
		case <-ctx.Done():
			return n
		case <-time.After(50 * time.Millisecond):
		}
		n = count()
	}
	return n
}
