package e2e_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/federation"
	"github.com/patchmesh/patchmesh/internal/meshtest"
)

// proxy stands between a downstream and its upstream in the test process,
// on loopback, as a hostile or slow network would: it can flip a byte in
// the records of feed pages, rewrite feed pages as a lying relay would,
// and throttle blob downloads.
type proxy struct {
	URL string
	// tamper, while set, flips one byte of the first record of every feed
	// page that has events.
	tamper atomic.Bool
	// tampered counts the records flipped.
	tampered atomic.Int64
	// lie, while set, rewrites every feed answer (after tamper).
	lie atomic.Pointer[func(*federation.FeedResponse)]
	// feeds counts the feed answers passed on.
	feeds atomic.Int64
	// bytesPerSec, if not zero, slows blob bodies to about that rate.
	bytesPerSec atomic.Int64
	// blobBytes counts blob body bytes passed on.
	blobBytes atomic.Int64
}

// Under mutual TLS it is an admitted node that does all this
// (meshtest.Mesh.ServeProxy), as a compromised relay would.
func newProxy(t *testing.T, m *meshtest.Mesh, upstream *meshtest.Node) *proxy {
	t.Helper()
	target, rt := m.ProxyTarget(t, upstream)
	p := &proxy{}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = rt
	direct := rp.Director
	rp.Director = func(r *http.Request) {
		direct(r)
		// Plain bodies only, so that the proxy can read what it rewrites.
		r.Header.Del("Accept-Encoding")
	}
	rp.ModifyResponse = p.modify
	// Pass throttled bytes on as they come, not when a buffer fills.
	rp.FlushInterval = -1
	p.URL = m.ServeProxy(t, rp)
	return p
}

// lies sets the rewrite of feed answers; nil passes them on unchanged.
func (p *proxy) lies(f func(*federation.FeedResponse)) {
	if f == nil {
		p.lie.Store(nil)
		return
	}
	p.lie.Store(&f)
}

func (p *proxy) modify(resp *http.Response) error {
	if resp.StatusCode == http.StatusOK && resp.Request.URL.Path == "/v1/sync/feed" {
		p.feeds.Add(1)
		if err := p.modifyFeed(resp); err != nil {
			return err
		}
	}
	switch {
	case resp.StatusCode != http.StatusOK:
	case resp.Request.URL.Path == "/v1/sync/feed" && p.tamper.Load():
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		out, flipped, err := flipRecord(body)
		if err != nil {
			return err
		}
		if flipped {
			p.tampered.Add(1)
		}
		resp.Body = io.NopCloser(bytes.NewReader(out))
		resp.ContentLength = int64(len(out))
		resp.Header.Set("Content-Length", strconv.Itoa(len(out)))
	case strings.HasPrefix(resp.Request.URL.Path, "/v1/blobs/") && resp.Request.Method == http.MethodGet:
		resp.Body = &throttled{r: resp.Body, p: p}
	}
	return nil
}

// modifyFeed applies the proxy's lie to a feed answer.
func (p *proxy) modifyFeed(resp *http.Response) error {
	lie := p.lie.Load()
	if lie == nil {
		return nil
	}
	var page federation.FeedResponse
	err := json.NewDecoder(resp.Body).Decode(&page)
	resp.Body.Close()
	if err != nil {
		return fmt.Errorf("lying proxy: feed page: %w", err)
	}
	(*lie)(&page)
	out, err := json.Marshal(page)
	if err != nil {
		return err
	}
	resp.Body = io.NopCloser(bytes.NewReader(out))
	resp.ContentLength = int64(len(out))
	resp.Header.Set("Content-Length", strconv.Itoa(len(out)))
	return nil
}

// flipRecord flips a byte in the middle of the first event's record of a
// feed page, leaving everything else as the upstream sent it.
func flipRecord(page []byte) ([]byte, bool, error) {
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(page, &doc); err != nil {
		return nil, false, fmt.Errorf("tampering proxy: feed page: %w", err)
	}
	var events []map[string]json.RawMessage
	if err := json.Unmarshal(doc["events"], &events); err != nil {
		return nil, false, fmt.Errorf("tampering proxy: events: %w", err)
	}
	if len(events) == 0 {
		return page, false, nil
	}
	var record []byte // base64 in JSON
	if err := json.Unmarshal(events[0]["record"], &record); err != nil || len(record) == 0 {
		return nil, false, fmt.Errorf("tampering proxy: record: %v", err)
	}
	record[len(record)/2] ^= 0x01
	raw, err := json.Marshal(record)
	if err != nil {
		return nil, false, err
	}
	events[0]["record"] = raw
	if doc["events"], err = json.Marshal(events); err != nil {
		return nil, false, err
	}
	out, err := json.Marshal(doc)
	return out, true, err
}

// throttled passes a blob body on at about the proxy's rate, counting it.
type throttled struct {
	r io.ReadCloser
	p *proxy
}

func (th *throttled) Read(b []byte) (int, error) {
	rate := th.p.bytesPerSec.Load()
	if rate > 0 {
		// Chunks of a 50th of a second's worth keep the pace even.
		b = b[:min(len(b), max(int(rate/50), 1))]
	}
	k, err := th.r.Read(b)
	th.p.blobBytes.Add(int64(k))
	if rate > 0 && k > 0 {
		time.Sleep(time.Duration(int64(k) * int64(time.Second) / rate))
	}
	return k, err
}

func (th *throttled) Close() error { return th.r.Close() }
