package topology

import (
	"bytes"
	"io"
	"log"
	"net"
	"strconv"
	"testing"
	"time"
)

// Each packet memberlist gets is a copy of its own length: the read buffer
// is reused, so a packet that aliased it would change under memberlist's
// feet with the next read, and one that kept its capacity would hold 64 KiB.
func TestListenerPacketsAreTheirOwnCopies(t *testing.T) {
	l, err := listenNet("127.0.0.1", 0, log.New(io.Discard, "", 0))
	if err != nil {
		t.Fatal(err)
	}
	defer l.close()
	to := net.JoinHostPort("127.0.0.1", strconv.Itoa(l.port()))
	sender, err := listenNet("127.0.0.1", 0, log.New(io.Discard, "", 0))
	if err != nil {
		t.Fatal(err)
	}
	defer sender.close()

	recv := func(want []byte) []byte {
		t.Helper()
		if _, err := sender.writeTo(want, to); err != nil {
			t.Fatal(err)
		}
		select {
		case p := <-l.packets:
			if !bytes.Equal(p.Buf, want) {
				t.Fatalf("want packet %q, got %q", want, p.Buf)
			}
			if cap(p.Buf) != len(p.Buf) {
				t.Fatalf("packet of %d bytes holds a buffer of %d", len(p.Buf), cap(p.Buf))
			}
			if p.From == nil || p.Timestamp.IsZero() {
				t.Fatalf("packet without its source or time: %+v", p)
			}
			return p.Buf
		case <-time.After(5 * time.Second):
			t.Fatal("no packet within 5s")
		}
		return nil
	}
	first := recv([]byte("first packet, longer than the second"))
	recv([]byte("second"))
	if string(first) != "first packet, longer than the second" {
		t.Fatalf("the first packet changed with the second read: %q", first)
	}
}

// Streams are accepted and handed over; after close, both sockets are
// gone and close returns even though nobody takes what is pending.
func TestListenerStreamsAndClose(t *testing.T) {
	l, err := listenNet("127.0.0.1", 0, log.New(io.Discard, "", 0))
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(l.port()))
	c, err := l.dial(addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case s := <-l.streams:
		s.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("no stream within 5s")
	}
	// One more stream nobody takes: close must not wait for a reader.
	c2, err := l.dial(addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	closed := make(chan struct{})
	go func() { l.close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("close did not return within 5s with a stream pending")
	}
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Fatal("the TCP listener still accepts after close")
	}
}

// The advertised address is the configured one, else the bound one.
func TestListenerAdvertise(t *testing.T) {
	l, err := listenNet("127.0.0.1", 0, log.New(io.Discard, "", 0))
	if err != nil {
		t.Fatal(err)
	}
	defer l.close()
	ip, port, err := l.advertise("", 0)
	if err != nil || !ip.Equal(net.ParseIP("127.0.0.1")) || port != l.port() {
		t.Fatalf("bound: want 127.0.0.1:%d, got %v:%d, %v", l.port(), ip, port, err)
	}
	ip, port, err = l.advertise("10.1.2.3", 7946)
	if err != nil || !ip.Equal(net.ParseIP("10.1.2.3")) || len(ip) != net.IPv4len || port != 7946 {
		t.Fatalf("configured: want 10.1.2.3:7946 (4 bytes), got %v (%d bytes):%d, %v", ip, len(ip), port, err)
	}
	if _, _, err := l.advertise("not-an-ip", 1); err == nil {
		t.Fatal("a bad advertise address passed")
	}
}
