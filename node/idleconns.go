package node

import (
	"container/list"
	"net"
	"net/http"
	"sync"
)

// idleConns bounds how many of the main listener's connections wait idle
// for a next request. net/http keeps every keep-alive connection, with
// its read and write buffers (about 12 KiB of heap) and its goroutine,
// until server.idle_timeout: after a burst of thousands of clients the
// node held all their connections, so its memory followed the burst's
// peak rather than what it serves (bench/RESULTS.md, "The node's heap
// after an overload"). Past max idle connections, the one idle longest
// is closed, as http.Transport's MaxIdleConns does on the client side.
// Connections with a request in flight are never closed: under a load
// clients keep reusing theirs, so the bound costs them no reconnection;
// only once the load is gone do the idle ones pile up, and the bound
// then holds them to max.
//
// Closing an idle connection races with a request the client may be
// sending on it, as the idle timeout does; HTTP/1.1 clients retry such a
// request on a new connection (RFC 9112, 9.3.1), and the oldest idle
// connection is the least likely to be reused that instant.
type idleConns struct {
	max int

	mu    sync.Mutex
	order *list.List                 // idle connections, longest idle first
	elems map[net.Conn]*list.Element // where each idle connection is in order
}

func newIdleConns(max int) *idleConns {
	return &idleConns{max: max, order: list.New(), elems: map[net.Conn]*list.Element{}}
}

// track follows each connection's state; it is the server's ConnState.
func (c *idleConns) track(conn net.Conn, state http.ConnState) {
	var evict []net.Conn
	c.mu.Lock()
	if e, ok := c.elems[conn]; ok {
		c.order.Remove(e)
		delete(c.elems, conn)
	}
	if state == http.StateIdle {
		c.elems[conn] = c.order.PushBack(conn)
		for c.order.Len() > c.max {
			old := c.order.Remove(c.order.Front()).(net.Conn)
			delete(c.elems, old)
			evict = append(evict, old)
		}
	}
	c.mu.Unlock()
	// Outside the lock: closing a TLS connection writes its close_notify.
	// The server's goroutine for each then sees its read fail and ends it.
	for _, old := range evict {
		old.Close()
	}
}

// idle is how many connections wait idle now.
func (c *idleConns) idle() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}
