package topology

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-sockaddr"
	"github.com/hashicorp/memberlist"
)

// netListener is the wire under countingTransport: one UDP socket for
// memberlist's packets and one TCP listener for its streams, on one address
// and port, as memberlist's NetTransport has. It exists because
// NetTransport reads every packet into a fresh 64 KiB buffer, zeroed and
// left to the collector: a gossip packet is a few hundred bytes, and at
// eight packets a second a node threw away half a megabyte a second. With
// a thousand nodes on a machine that garbage drove the collector's
// assists to a quarter of the CPU (bench/RESULTS.md, "Gossip packets read
// without a 64 KiB buffer each"). Here one buffer per socket takes each
// read, and memberlist gets a copy of the packet's own length.
type netListener struct {
	logger *log.Logger
	udp    *net.UDPConn
	tcp    *net.TCPListener

	packets chan *memberlist.Packet
	streams chan net.Conn
	closed  atomic.Bool
	done    chan struct{}
	wg      sync.WaitGroup

	// dials is cancelled by close, so that a dial in flight gives up at
	// shutdown rather than hold memberlist's Join, and the Close waiting
	// on it, until its timeout: up to 30 s to a peer behind a partition
	// that drops packets.
	dials     context.Context
	stopDials context.CancelFunc
}

const (
	// maxPacket is the most a UDP datagram can hold: memberlist's own
	// read size, so that no packet it could receive is cut short.
	maxPacket = 65536
	// udpReadBuffer is the socket's receive buffer memberlist asks for,
	// halved until the kernel takes it: a burst of gossip waits there.
	udpReadBuffer = 2 << 20
	// acceptDelayMin and acceptDelayMax bound the pause after a failed
	// accept (out of descriptors, say), doubling in between.
	acceptDelayMin = 5 * time.Millisecond
	acceptDelayMax = time.Second
)

// listenNet binds TCP and then UDP on addr:port (port 0: the port the
// kernel picks for TCP).
func listenNet(addr string, port int, logger *log.Logger) (*netListener, error) {
	ip := net.ParseIP(addr)
	if ip == nil {
		return nil, fmt.Errorf("bind address %q is not an IP address", addr)
	}
	tcp, err := net.ListenTCP("tcp", &net.TCPAddr{IP: ip, Port: port})
	if err != nil {
		return nil, err
	}
	port = tcp.Addr().(*net.TCPAddr).Port
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: ip, Port: port})
	if err != nil {
		tcp.Close()
		return nil, err
	}
	for size := udpReadBuffer; size > 0; size /= 2 {
		if udp.SetReadBuffer(size) == nil {
			break
		}
	}
	l := &netListener{logger: logger, udp: udp, tcp: tcp,
		packets: make(chan *memberlist.Packet), streams: make(chan net.Conn), done: make(chan struct{})}
	l.dials, l.stopDials = context.WithCancel(context.Background())
	l.wg.Add(2)
	go l.readPackets()
	go l.acceptStreams()
	return l, nil
}

// port is the port both sockets are bound to.
func (l *netListener) port() int { return l.tcp.Addr().(*net.TCPAddr).Port }

func (l *netListener) readPackets() {
	defer l.wg.Done()
	buf := make([]byte, maxPacket)
	for {
		n, from, err := l.udp.ReadFrom(buf)
		at := time.Now()
		if err != nil {
			if l.closed.Load() {
				return
			}
			l.logger.Printf("[ERR] memberlist: Error reading UDP packet: %v", err)
			continue
		}
		if n < 1 {
			l.logger.Printf("[ERR] memberlist: UDP packet too short (%d bytes) %s", n, memberlist.LogAddress(from))
			continue
		}
		own := make([]byte, n)
		copy(own, buf[:n])
		p := &memberlist.Packet{Buf: own, From: from, Timestamp: at}
		select {
		case l.packets <- p:
		case <-l.done:
			return
		}
	}
}

func (l *netListener) acceptStreams() {
	defer l.wg.Done()
	var delay time.Duration
	for {
		conn, err := l.tcp.AcceptTCP()
		if err != nil {
			if l.closed.Load() {
				return
			}
			delay = min(max(2*delay, acceptDelayMin), acceptDelayMax)
			l.logger.Printf("[ERR] memberlist: Error accepting TCP connection: %v", err)
			select {
			case <-time.After(delay):
			case <-l.done:
				return
			}
			continue
		}
		delay = 0
		select {
		case l.streams <- conn:
		case <-l.done:
			conn.Close()
			return
		}
	}
}

// advertise is memberlist's FinalAdvertiseAddr: the configured address if
// there is one, else the bound one, or a private address of the host when
// bound to every interface.
func (l *netListener) advertise(ip string, port int) (net.IP, int, error) {
	if ip != "" {
		a := net.ParseIP(ip)
		if a == nil {
			return nil, 0, fmt.Errorf("failed to parse advertise address %q", ip)
		}
		if a4 := a.To4(); a4 != nil {
			a = a4
		}
		return a, port, nil
	}
	bound := l.tcp.Addr().(*net.TCPAddr).IP
	if !bound.IsUnspecified() {
		return bound, l.port(), nil
	}
	private, err := sockaddr.GetPrivateIP()
	if err != nil {
		return nil, 0, fmt.Errorf("failed to get an interface address: %w", err)
	}
	if private == "" {
		return nil, 0, errors.New("no private IP address found, and explicit IP not provided")
	}
	a := net.ParseIP(private)
	if a == nil {
		return nil, 0, fmt.Errorf("failed to parse private address %q", private)
	}
	return a, l.port(), nil
}

func (l *netListener) writeTo(b []byte, addr string) (time.Time, error) {
	to, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return time.Time{}, err
	}
	// The time after the write, as memberlist's own transport takes it.
	_, err = l.udp.WriteTo(b, to)
	return time.Now(), err
}

func (l *netListener) dial(addr string, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	return d.DialContext(l.dials, "tcp", addr)
}

// close stops both listeners and waits for their goroutines, which give up
// a packet or stream nobody takes any more.
func (l *netListener) close() {
	if l.closed.Swap(true) {
		return
	}
	close(l.done)
	l.stopDials()
	l.tcp.Close()
	l.udp.Close()
	l.wg.Wait()
}
