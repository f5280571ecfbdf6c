package node

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// TestIdleConnsClosesTheLongestIdlePastTheBound leaves four connections
// idle, in turn, behind a bound of two, and wants the first two closed
// and the last two still serving.
func TestIdleConnsClosesTheLongestIdlePastTheBound(t *testing.T) {
	c, srv := idleConnsServer(t, 2)
	conns := dial(t, srv.Listener.Addr().String(), 4)
	for i, conn := range conns {
		get(t, conn)
		// In turn: the server has counted this one idle before the next.
		waitIdle(t, c, min(i+1, 2))
	}
	for i, conn := range conns[:2] {
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.r.ReadByte(); !errors.Is(err, io.EOF) {
			t.Errorf("connection %d, idle longest with 4 idle (bound 2): want it closed (EOF), got %v", i, err)
		}
	}
	for i, conn := range conns[2:] {
		if resp := get(t, conn); resp.StatusCode != http.StatusOK {
			t.Errorf("connection %d, among the 2 idle last: want it still serving, got status %d", i+2, resp.StatusCode)
		}
	}
}

// TestIdleConnsKeepsBusyConnections holds one connection busy, the
// oldest, while three more go idle behind a bound of one, and wants the
// busy one answered: only idle connections count and are closed.
func TestIdleConnsKeepsBusyConnections(t *testing.T) {
	c := newIdleConns(1)
	release := make(chan struct{})
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-release
		}
		w.Write([]byte("ok"))
	}))
	srv.Config.ConnState = c.track
	srv.Start()
	t.Cleanup(srv.Close)
	conns := dial(t, srv.Listener.Addr().String(), 4)
	busy := conns[0]
	busy.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := busy.Write([]byte("GET /slow HTTP/1.1\r\nHost: node\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	for _, conn := range conns[1:] {
		get(t, conn)
		waitIdle(t, c, 1)
	}
	close(release)
	resp, err := http.ReadResponse(busy.r, nil)
	if err != nil {
		t.Fatalf("the oldest connection, busy while 3 others went idle (bound 1): want its answer, got %v", err)
	}
	resp.Body.Close()
}

// idleConnsServer serves "ok" with idle connections bounded to max.
func idleConnsServer(t *testing.T, max int) (*idleConns, *httptest.Server) {
	c := newIdleConns(max)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok"))
	}))
	srv.Config.ConnState = c.track
	srv.Start()
	t.Cleanup(srv.Close)
	return c, srv
}

type clientConn struct {
	net.Conn
	r *bufio.Reader
}

func dial(t *testing.T, addr string, n int) []clientConn {
	t.Helper()
	var out []clientConn
	for range n {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		out = append(out, clientConn{c, bufio.NewReader(c)})
	}
	return out
}

func get(t *testing.T, c clientConn) *http.Response {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: node\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

// waitIdle waits, at most 5 s, for the server to count want idle
// connections (it learns of each state on the connection's goroutine,
// after the answer went out).
func waitIdle(t *testing.T, c *idleConns, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for c.idle() != want {
		if time.Now().After(deadline) {
			t.Fatalf("want %d connections idle, the server counts %d", want, c.idle())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
