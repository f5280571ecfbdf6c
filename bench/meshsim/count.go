package main

import (
	"io"
	"net"
	"sync/atomic"
)

// wire counts the bytes a node's HTTP server sends and receives on its
// accepted connections: the socket-level figure, whatever the node's own
// metrics say.
type wire struct {
	sent, received atomic.Int64
}

// countingListener hands out connections that add to a wire.
type countingListener struct {
	net.Listener
	w *wire
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, w: l.w}, nil
}

// countingConn keeps the TCP connection's ReadFrom, so that blob downloads
// still go out with sendfile and the count sees what the kernel sent.
type countingConn struct {
	net.Conn
	w *wire
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.w.received.Add(int64(n))
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.w.sent.Add(int64(n))
	return n, err
}

func (c *countingConn) ReadFrom(r io.Reader) (int64, error) {
	var n int64
	var err error
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(r)
	} else {
		n, err = io.Copy(struct{ io.Writer }{c.Conn}, r)
	}
	c.w.sent.Add(n)
	return n, err
}
