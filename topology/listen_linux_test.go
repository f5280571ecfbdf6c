package topology

import (
	"io"
	"log"
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// A dial in flight gives up when the listener closes, rather than hold
// memberlist's Join, and the Close that waits for it, until its timeout.
func TestListenerCloseCancelsDialInFlight(t *testing.T) {
	addr := unansweredAddr(t)
	l, err := listenNet("127.0.0.1", 0, log.New(io.Discard, "", 0))
	if err != nil {
		t.Fatal(err)
	}
	const timeout = 30 * time.Second
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		conn, err := l.dial(addr, timeout)
		if conn != nil {
			conn.Close()
		}
		done <- err
	}()
	time.Sleep(200 * time.Millisecond)
	l.close()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("dial to an address that never answers succeeded")
		}
		t.Logf("dial gave up %v after it began: %v", time.Since(start).Round(time.Millisecond), err)
	case <-time.After(timeout / 2):
		t.Fatalf("dial still in flight %v after the listener closed", timeout/2)
	}
}

// unansweredAddr is a loopback address whose SYNs go unanswered, as a peer's
// behind a partition that drops packets: a listener with a backlog of 0
// that never accepts, its queue filled. Linux drops a SYN to a full queue
// and the dialer retransmits it until its timeout.
func unansweredAddr(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
	for range 16 {
		conn, err := net.DialTimeout("tcp", addr, 300*time.Millisecond)
		if err != nil {
			return addr
		}
		t.Cleanup(func() { conn.Close() })
	}
	t.Fatalf("%s kept answering after 16 connections nobody accepted", addr)
	return ""
}
