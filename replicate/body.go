package replicate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/patchmesh/patchmesh/blob"
)

// body is one blob's bytes as blob.Put reads them: the upstream's response
// body, re-requested from the break with a Range request when the
// connection fails part-way, so Put sees one unbroken stream and hashes it
// as such. It never hands Put more than want.Size bytes.
type body struct {
	r    *Replicator
	ctx  context.Context
	src  Source
	want Want

	resp    *http.Response // current response; nil between requests
	got     int64          // bytes handed to Put
	n       int64          // bytes read from the network
	resumes int
}

// open sends the first request, before Put stages anything, so that a 404
// or a refused token touches no storage.
func (b *body) open() error {
	resp, err := b.get(0)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return fmt.Errorf("want 200, got %s", resp.Status)
	}
	// A declared length that differs from the signed size means the
	// upstream holds other bytes: no point reading them.
	if b.want.Size > 0 && resp.ContentLength >= 0 && resp.ContentLength != b.want.Size {
		resp.Body.Close()
		return fmt.Errorf("upstream announces %d bytes, the record says %d", resp.ContentLength, b.want.Size)
	}
	b.resp = resp
	return nil
}

// Read feeds Put, resuming on a broken body and stopping at Size.
func (b *body) Read(p []byte) (int, error) {
	for {
		if b.resp == nil {
			if err := b.resume(); err != nil {
				return 0, err
			}
		}
		if b.want.Size > 0 {
			if b.got >= b.want.Size {
				return 0, b.end()
			}
			p = p[:min(int64(len(p)), b.want.Size-b.got)]
		}
		k, err := b.readWatched(p)
		b.got += int64(k)
		b.n += int64(k)
		if err == nil {
			return k, nil
		}
		if errors.Is(err, io.EOF) && (b.want.Size <= 0 || b.got >= b.want.Size) {
			return k, io.EOF
		}
		if cerr := b.ctx.Err(); cerr != nil {
			return k, cerr
		}
		// The body broke, or ended short of Size: resume from b.got.
		if errors.Is(err, io.EOF) {
			err = fmt.Errorf("body ended after %d of %d bytes", b.got, b.want.Size)
		}
		if b.resumes >= b.r.resumes {
			return k, fmt.Errorf("body broke after %d bytes and %d resumes: %w", b.got, b.resumes, err)
		}
		b.r.log.LogAttrs(b.ctx, slog.LevelWarn, "blob transfer broke, resuming", slog.String("digest", string(b.want.Digest)),
			slog.String("source", b.src.BaseURL), slog.Int64("offset", b.got), slog.Int("resume", b.resumes+1),
			slog.String("error", err.Error()))
		b.close()
		if k > 0 {
			return k, nil
		}
	}
}

// readWatched reads from the current response, dropping the connection
// if no byte arrives within the idle timeout: the read then fails like a
// broken body, and Read resumes from where the bytes stopped.
func (b *body) readWatched(p []byte) (int, error) {
	resp := b.resp
	var stalled atomic.Bool
	watch := time.AfterFunc(b.r.idle, func() {
		stalled.Store(true)
		resp.Body.Close()
	})
	k, err := resp.Body.Read(p)
	watch.Stop()
	if err != nil && stalled.Load() {
		err = fmt.Errorf("no byte received for %v", b.r.idle)
	}
	return k, err
}

// end is called once Size bytes are in. It checks that the upstream has
// nothing more to send: a longer stream is not the recorded blob, whatever
// its first Size bytes hash to. At most one byte beyond Size is read.
func (b *body) end() error {
	var one [1]byte
	k, _ := b.resp.Body.Read(one[:])
	b.n += int64(k)
	if k > 0 {
		return fmt.Errorf("upstream sent more than the %d bytes the record says", b.want.Size)
	}
	// An error rather than EOF after the last byte costs nothing: the
	// bytes are all here, and Put checks them.
	return io.EOF
}

// resume re-requests the blob from the first byte Put has not seen, after
// a short pause. The upstream must answer 206 from exactly that offset, for
// this very blob (If-Range on the digest ETag); anything else fails the
// transfer rather than splice foreign bytes into the stream.
func (b *body) resume() error {
	pause := time.NewTimer(b.r.pause(b.resumes))
	defer pause.Stop()
	select {
	case <-pause.C:
	case <-b.ctx.Done():
		return b.ctx.Err()
	}
	b.resumes++
	resp, err := b.get(b.got)
	if err != nil {
		return fmt.Errorf("resume at byte %d: %w", b.got, err)
	}
	if resp.StatusCode != http.StatusPartialContent {
		resp.Body.Close()
		return fmt.Errorf("resume at byte %d: want 206, got %s", b.got, resp.Status)
	}
	start, total, err := contentRange(resp.Header.Get("Content-Range"))
	if err == nil && start != b.got {
		err = fmt.Errorf("starts at byte %d", start)
	}
	if err == nil && b.want.Size > 0 && total >= 0 && total != b.want.Size {
		err = fmt.Errorf("total %d, the record says %d", total, b.want.Size)
	}
	if err != nil {
		resp.Body.Close()
		return fmt.Errorf("resume at byte %d: Content-Range %q: %w", b.got, resp.Header.Get("Content-Range"), err)
	}
	b.resp = resp
	return nil
}

// contentRange parses "bytes <start>-<end>/<total>"; total is -1 for "*".
func contentRange(h string) (start, total int64, err error) {
	spec, ok := strings.CutPrefix(h, "bytes ")
	if !ok {
		return 0, 0, errors.New("not a byte range")
	}
	rng, size, ok := strings.Cut(spec, "/")
	first, _, ok2 := strings.Cut(rng, "-")
	if !ok || !ok2 {
		return 0, 0, errors.New("malformed")
	}
	if start, err = strconv.ParseInt(first, 10, 64); err != nil {
		return 0, 0, errors.New("malformed start")
	}
	total = -1
	if size != "*" {
		if total, err = strconv.ParseInt(size, 10, 64); err != nil {
			return 0, 0, errors.New("malformed total")
		}
	}
	return start, total, nil
}

// get requests the blob from byte off on. Non-2xx answers become errors
// here, so callers only see 2xx responses.
func (b *body) get(off int64) (*http.Response, error) {
	req, err := http.NewRequestWithContext(b.ctx, http.MethodGet, b.src.BlobURL(b.want.Digest), nil)
	if err != nil {
		return nil, fmt.Errorf("request: %w", err)
	}
	if b.src.Token != "" {
		req.Header.Set("Authorization", "Bearer "+b.src.Token)
	}
	// Transparent gzip would make Range offsets count compressed bytes.
	req.Header.Set("Accept-Encoding", "identity")
	if off > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(off, 10)+"-")
		req.Header.Set("If-Range", `"`+string(b.want.Digest)+`"`)
	}
	resp, err := b.r.client.Do(req)
	if err != nil {
		// *url.Error quotes the URL, never the headers.
		return nil, err
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return resp, nil
	}
	defer resp.Body.Close()
	detail := upstreamError(resp, b.src.Token)
	switch resp.StatusCode {
	case http.StatusNotFound:
		return nil, fmt.Errorf("%w upstream: %s%s", blob.ErrNotFound, resp.Status, detail)
	case http.StatusUnauthorized, http.StatusForbidden:
		return nil, fmt.Errorf("%w: %s%s", ErrUnauthorized, resp.Status, detail)
	default:
		return nil, fmt.Errorf("upstream answered %s%s", resp.Status, detail)
	}
}

// Bounds on what an error answer may add to our error text.
const (
	maxErrorBody   = 8 << 10
	maxErrorDetail = 200
)

// upstreamError reads a patchmesh error body ({"error":{"code","message"}})
// and the request ID, for the operator to quote to the upstream's admin.
// It is bounded, and scrubs the token in case a hostile upstream echoes it.
func upstreamError(resp *http.Response, token string) string {
	var e struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	var parts []string
	if json.NewDecoder(io.LimitReader(resp.Body, maxErrorBody)).Decode(&e) == nil && e.Error.Code != "" {
		parts = append(parts, "code "+clip(e.Error.Code, token))
		if e.Error.Message != "" {
			parts = append(parts, "message "+strconv.Quote(clip(e.Error.Message, token)))
		}
	}
	if id := resp.Header.Get("X-Request-ID"); id != "" {
		parts = append(parts, "request "+clip(id, token))
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

// clip bounds s, removes the token from it and makes it safe to log.
func clip(s, token string) string {
	if token != "" {
		s = strings.ReplaceAll(s, token, "[token]")
	}
	if len(s) > maxErrorDetail {
		s = s[:maxErrorDetail] + "…"
	}
	// No control characters: the text ends up in log lines.
	return strings.Map(func(c rune) rune {
		if c < ' ' || c == 0x7f {
			return '?'
		}
		return c
	}, strings.ToValidUTF8(s, "?"))
}

// close drops the current response, if any.
func (b *body) close() {
	if b.resp != nil {
		b.resp.Body.Close()
		b.resp = nil
	}
}
