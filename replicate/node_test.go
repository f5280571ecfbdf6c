package replicate_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/api"
	"github.com/patchmesh/patchmesh/auth"
	"github.com/patchmesh/patchmesh/blob"
	"github.com/patchmesh/patchmesh/blob/fsblob"
	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/internal/nodetest"
	"github.com/patchmesh/patchmesh/replicate"
)

// realNode is an upstream running the real api, with a patch on "edge"
// and a sync token for that tier.
type realNode struct {
	url    string
	token  string
	want   replicate.Want
	data   []byte
	hidden replicate.Want // a blob stored upstream but in no patch record
	logs   *nodetest.LogBuffer
}

func newRealNode(t *testing.T) realNode {
	t.Helper()
	ctx := context.Background()
	logs := &nodetest.LogBuffer{}
	n := nodetest.Wire(t, slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), nodetest.Options{})
	h, err := api.New(n.Config)
	if err != nil {
		t.Fatalf("api.New: %v", err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)

	data := make([]byte, 300_000)
	rand.Read(data)
	d := blob.FromBytes(data)
	if _, err := blob.Put(ctx, n.Blobs, d, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	p := catalog.Patch{Digest: string(d), Kernel: "5.15.0-107.117-generic", Arch: "x86_64", Version: "107.1", Size: int64(len(data))}
	if _, err := n.Store.AddPatch(ctx, p); err != nil {
		t.Fatal(err)
	}
	hidden := []byte("stored but never recorded")
	if _, err := blob.Put(ctx, n.Blobs, blob.FromBytes(hidden), bytes.NewReader(hidden)); err != nil {
		t.Fatal(err)
	}
	secret, tok, err := auth.NewToken(catalog.TokenSync)
	if err != nil {
		t.Fatal(err)
	}
	tok.Tier, tok.Name, tok.Created = "edge", "downstream", time.Now()
	if err := n.Store.AddToken(ctx, tok); err != nil {
		t.Fatal(err)
	}
	return realNode{
		url: srv.URL, token: secret, data: data, logs: logs,
		want:   replicate.Want{Digest: d, Size: int64(len(data))},
		hidden: replicate.Want{Digest: blob.FromBytes(hidden), Size: int64(len(hidden))},
	}
}

func newLocal(t *testing.T) *fsblob.Store {
	t.Helper()
	s, err := fsblob.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newReplicator(t *testing.T, local *fsblob.Store) *replicate.Replicator {
	t.Helper()
	r, err := replicate.New(replicate.Config{Client: &http.Client{Timeout: 30 * time.Second}, Blobs: local})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestFetchFromARealNode(t *testing.T) {
	up := newRealNode(t)
	for _, tc := range []struct {
		name  string
		token string
		want  func(realNode) replicate.Want
		is    error
	}{
		{"patch on the token's tier", up.token, func(n realNode) replicate.Want { return n.want }, nil},
		{"blob in no record", up.token, func(n realNode) replicate.Want { return n.hidden }, blob.ErrNotFound},
		{"wrong kind of token", "pmm_0000_notatoken", func(n realNode) replicate.Want { return n.want }, replicate.ErrUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			local := newLocal(t)
			w := tc.want(up)
			_, err := newReplicator(t, local).Fetch(context.Background(), replicate.Source{BaseURL: up.url, Token: tc.token}, []replicate.Want{w})
			if !errors.Is(err, tc.is) {
				t.Fatalf("want %v, got %v", tc.is, err)
			}
			_, statErr := local.Stat(context.Background(), w.Digest)
			if (statErr == nil) != (tc.is == nil) {
				t.Errorf("want committed only on success, got Stat error %v", statErr)
			}
			if err != nil && strings.Contains(err.Error(), tc.token) {
				t.Errorf("the token leaked into the error: %v", err)
			}
		})
	}
}

// A link that drops the connection part-way is resumed against the real
// api's Range and If-Range handling.
func TestResumeAgainstARealNode(t *testing.T) {
	up := newRealNode(t)
	const cut = 123_457
	var mu sync.Mutex
	var seen []string // per request: Range header and the node's status
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, _ := http.NewRequestWithContext(r.Context(), r.Method, up.url+r.URL.Path, nil)
		req.Header = r.Header.Clone()
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Errorf("proxy: %v", err)
			return
		}
		defer resp.Body.Close()
		mu.Lock()
		seen = append(seen, fmt.Sprintf("%s -> %d", r.Header.Get("Range"), resp.StatusCode))
		first := len(seen) == 1
		mu.Unlock()
		if first {
			conn, buf, err := http.NewResponseController(w).Hijack()
			if err != nil {
				t.Errorf("hijack: %v", err)
				return
			}
			defer conn.Close()
			writeHead(buf, resp)
			io.CopyN(buf, resp.Body, cut)
			buf.Flush()
			return
		}
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
	}))
	t.Cleanup(proxy.Close)

	local := newLocal(t)
	res, err := newReplicator(t, local).Fetch(context.Background(), replicate.Source{BaseURL: proxy.URL, Token: up.token}, []replicate.Want{up.want})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{" -> 200", fmt.Sprintf("bytes=%d- -> 206", cut)}
	if fmt.Sprint(seen) != fmt.Sprint(want) {
		t.Errorf("want requests %q, got %q", want, seen)
	}
	if res.Fetched != 1 || res.Bytes != int64(len(up.data)) {
		t.Errorf("want 1 fetched and %d bytes read, got %+v", len(up.data), res)
	}
	if _, err := local.Stat(context.Background(), up.want.Digest); err != nil {
		t.Errorf("want the blob committed, got %v", err)
	}
	if strings.Contains(up.logs.String(), strings.SplitN(up.token, "_", 3)[2]) {
		t.Error("the upstream logged the sync token's secret")
	}
}

func writeHead(buf *bufio.ReadWriter, resp *http.Response) {
	h := resp.Header.Clone()
	h.Del("Content-Length")
	h.Del("Transfer-Encoding")
	fmt.Fprintf(buf, "HTTP/1.1 %s\r\n", resp.Status)
	h.Write(buf)
	fmt.Fprintf(buf, "Content-Length: %d\r\n\r\n", resp.ContentLength)
}
