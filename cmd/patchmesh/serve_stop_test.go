package main

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// stopNode is a real `patchmesh serve` with an admin session, a patch and
// a sync token for its tier, for the stop tests.
type stopNode struct {
	srv       *server
	url       string
	token     string // a sync token for tier edge
	digest    string
	size      int64
	sum       string // hex SHA-256 of the patch
	head      int64  // the edge feed's head
	dataDir   string
	serveArgs []string
}

func startStopNode(t *testing.T, patchSize int) *stopNode {
	t.Helper()
	work := t.TempDir()
	n := &stopNode{dataDir: filepath.Join(work, "data")}
	n.serveArgs = []string{"--data-dir", n.dataDir, "--listen", "127.0.0.1:0"}
	n.srv = startServe(t, cleanEnv(), n.serveArgs...)
	n.url = n.srv.url(t)
	m := e2ePasswordRE.FindStringSubmatch(n.srv.stderr.String())
	if m == nil {
		t.Fatalf("no bootstrap password in:\n%s", n.srv.stderr.String())
	}
	adminEnv := cleanEnv("PATCHMESH_CONFIG_DIR="+filepath.Join(work, "admin"), "PATCHMESH_URL="+n.url)
	pm(t, adminEnv, m[1]+"\n", 0, "admin", "login", "--user", "admin", "--password-stdin")

	file := filepath.Join(work, "lp.ko")
	content := make([]byte, patchSize)
	rand.Read(content)
	if err := os.WriteFile(file, content, 0o600); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(content)
	n.sum, n.size = hex.EncodeToString(sum[:]), int64(patchSize)
	var p e2ePatch
	pmJSON(t, adminEnv, &p, "admin", "patches", "upload", file, "--kernel", "6.1.0-18-amd64", "--arch", "x86_64", "--version", "1.1")
	n.digest = p.Digest
	var tok struct{ Token string }
	pmJSON(t, adminEnv, &tok, "admin", "sync-tokens", "add", "edge", "dc-test")
	n.token = tok.Token

	var page struct{ Head int64 }
	resp := n.get(t, "/v1/sync/feed")
	if err := json.NewDecoder(resp.Body).Decode(&page); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("feed: %d %v", resp.StatusCode, err)
	}
	resp.Body.Close()
	n.head = page.Head
	return n
}

// get sends a GET with the sync token.
func (n *stopNode) get(t *testing.T, path string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, n.url+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+n.token)
	resp, err := (&http.Client{Timeout: 2 * time.Minute}).Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return resp
}

// feedReads is how many times the node has read its feed, from the
// store query count it exports.
func (n *stopNode) feedReads(t *testing.T) string {
	t.Helper()
	resp, err := http.Get(n.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	const series = `patchmesh_store_query_duration_seconds_count{op="Feed"} `
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, series); ok {
			return v
		}
	}
	t.Fatalf("no %s in /metrics", strings.TrimSpace(series))
	return ""
}

// longPoll opens a feed long poll of 60s and returns once the node has
// read the feed for it, so that SIGTERM meets it waiting; the answer's
// status arrives on the channel.
func (n *stopNode) longPoll(t *testing.T) <-chan int {
	t.Helper()
	before := n.feedReads(t)
	status := make(chan int, 1)
	go func() {
		resp := n.get(t, fmt.Sprintf("/v1/sync/feed?after=%d&wait=60s", n.head))
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		status <- resp.StatusCode
	}()
	deadline := time.Now().Add(30 * time.Second)
	for n.feedReads(t) == before {
		if time.Now().After(deadline) {
			t.Fatal("the long poll did not reach the feed within 30s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return status
}

func TestStopEndsLongPollsAtOnce(t *testing.T) {
	n := startStopNode(t, 1<<10)
	poll := n.longPoll(t)

	sigterm := time.Now()
	if err := n.srv.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-n.srv.done:
	case <-time.After(30 * time.Second):
		t.Fatal("patchmesh serve still runs 30s after SIGTERM with a 60s long poll open")
	}
	if took := time.Since(sigterm); took > 2*time.Second {
		t.Errorf("patchmesh serve took %v to exit after SIGTERM with a long poll open; want at most 2s", took)
	}
	if n.srv.err != nil {
		t.Errorf("exit after SIGTERM: %v, want 0", n.srv.err)
	}
	if s := <-poll; s != http.StatusOK {
		t.Errorf("the long poll was answered %d at the stop, want 200 (the empty page)", s)
	}
}

func TestStopLetsDownloadsInFlightFinish(t *testing.T) {
	// 64 MiB: far more than loopback socket buffers hold, so most of the
	// body is still to be written when SIGTERM arrives.
	n := startStopNode(t, 64<<20)
	resp := n.get(t, "/v1/blobs/"+n.digest)
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("download: status %d", resp.StatusCode)
	}
	h := sha256.New()
	if _, err := io.CopyN(h, resp.Body, 1<<20); err != nil {
		t.Fatal(err)
	}
	poll := n.longPoll(t)

	if err := n.srv.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// The long poll answers at once, though the download holds the stop.
	select {
	case s := <-poll:
		if s != http.StatusOK {
			t.Errorf("long poll at the stop: %d, want 200", s)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the long poll was not answered within 10s of SIGTERM while a download drains")
	}
	// Read the rest slowly: 1 MiB per 20ms, about 1.3 s.
	read := int64(1 << 20)
	for {
		k, err := io.CopyN(h, resp.Body, 1<<20)
		read += k
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("download after SIGTERM: cut at %d of %d bytes: %v", read, n.size, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := hex.EncodeToString(h.Sum(nil)); read != n.size || got != n.sum {
		t.Fatalf("download across the stop: %d bytes hashing to %s, want %d bytes hashing to %s", read, got, n.size, n.sum)
	}
	select {
	case <-n.srv.done:
	case <-time.After(30 * time.Second):
		t.Fatal("patchmesh serve still runs 30s after its last download ended")
	}
	out := n.srv.stderr.String()
	if n.srv.err != nil || !strings.Contains(out, `"msg":"node_stopped"`) || strings.Contains(out, "node_drain_timeout") {
		t.Errorf("exit after the drain: %v; want 0 and node_stopped without a drain timeout:\n%s", n.srv.err, out)
	}
}
