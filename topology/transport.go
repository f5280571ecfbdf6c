package topology

import (
	"fmt"
	"log"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// countingTransport is memberlist's transport (netListener: UDP packets,
// TCP streams) with every byte counted: packets written and read, and both
// directions of every stream, dialled or accepted. The counts are of what
// goes on the wire, so they include encryption overhead. It also seals
// what memberlist sends and opens what arrives (seal.go), with the pool's
// keys: packets and streams that no installed key opens, or that are not
// encrypted at all, are dropped and reported as security events.
type countingTransport struct {
	inner          *netListener
	sent, received atomic.Int64
	keys           keyring
	rejects        *rejectLog
	// sealers keep a gcmCache and buffer for the goroutines that send
	// packets: memberlist's probe, gossip and packet handler, at once. A
	// sync.Pool would drop them at every collection and build the ciphers
	// again.
	sealers chan *packetSealer

	packets chan *memberlist.Packet
	streams chan net.Conn
	done    chan struct{}
	wg      sync.WaitGroup
	once    sync.Once
}

var _ memberlist.NodeAwareTransport = (*countingTransport)(nil)

// newCountingTransport listens on addr:port. With port 0 the kernel picks a
// TCP port and the UDP listener must get the same one, which another process
// can take in between, so that case is retried like memberlist does.
func newCountingTransport(addr string, port int, logger *log.Logger, keys keyring, rejects *rejectLog) (*countingTransport, error) {
	attempts := 1
	if port == 0 {
		attempts = 10
	}
	var inner *netListener
	var err error
	for range attempts {
		inner, err = listenNet(addr, port, logger)
		if err == nil || !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("topology: listen on %s port %d: %w", addr, port, err)
	}
	c := &countingTransport{
		inner:   inner,
		keys:    keys,
		rejects: rejects,
		sealers: make(chan *packetSealer, sealersKept),
		packets: make(chan *memberlist.Packet),
		streams: make(chan net.Conn),
		done:    make(chan struct{}),
	}
	c.wg.Add(2)
	go c.forwardPackets()
	go c.forwardStreams()
	return c, nil
}

func (c *countingTransport) port() int { return c.inner.port() }

func (c *countingTransport) forwardPackets() {
	defer c.wg.Done()
	var gcm gcmCache
	for {
		select {
		case p := <-c.inner.packets:
			c.received.Add(int64(len(p.Buf)))
			plain, err := gcm.open(c.keys.GetKeys(), p.Buf, nil)
			if err != nil {
				c.refused(p.From, "udp", err)
				continue
			}
			// The packet's buffer is its own (netListener copies each
			// read), and the plaintext is shorter.
			p.Buf = p.Buf[:copy(p.Buf, plain)]
			select {
			case c.packets <- p:
			case <-c.done:
				return
			}
		case <-c.done:
			return
		}
	}
}

func (c *countingTransport) forwardStreams() {
	defer c.wg.Done()
	for {
		select {
		case conn := <-c.inner.streams:
			select {
			case c.streams <- c.sealed(conn):
			case <-c.done:
				conn.Close()
				return
			}
		case <-c.done:
			return
		}
	}
}

// sealed counts a stream, dialled or accepted, and seals and opens its
// messages.
func (c *countingTransport) sealed(conn net.Conn) net.Conn {
	from := conn.RemoteAddr()
	return &sealedConn{Conn: &countingConn{Conn: conn, t: c}, keys: c.keys,
		refused: func(why error) { c.refused(from, "tcp", why) }}
}

// refused reports gossip that no installed key opens, per source host.
func (c *countingTransport) refused(from net.Addr, channel string, why error) {
	addr := ""
	if from != nil {
		addr = from.String()
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	c.rejects.event(EventKeyFail, host+"\x00"+channel, slog.String("addr", addr),
		slog.String("channel", channel), slog.String("reason", why.Error()))
}

func (c *countingTransport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	return c.inner.advertise(ip, port)
}

func (c *countingTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	return c.WriteToAddress(b, memberlist.Address{Addr: addr})
}

func (c *countingTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	var s *packetSealer
	select {
	case s = <-c.sealers:
	default:
		s = new(packetSealer)
	}
	defer func() {
		select {
		case c.sealers <- s:
		default:
		}
	}()
	wire, err := s.gcm.seal(s.buf[:0], c.keys.GetPrimaryKey(), b, nil)
	if err != nil {
		return time.Time{}, fmt.Errorf("topology: seal gossip packet: %w", err)
	}
	s.buf = wire[:0]
	ts, err := c.inner.writeTo(wire, a.Addr)
	if err == nil {
		c.sent.Add(int64(len(wire)))
	}
	return ts, err
}

func (c *countingTransport) PacketCh() <-chan *memberlist.Packet { return c.packets }

func (c *countingTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return c.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

func (c *countingTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	conn, err := c.inner.dial(a.Addr, timeout)
	if err != nil {
		return nil, err
	}
	return c.sealed(conn), nil
}

func (c *countingTransport) StreamCh() <-chan net.Conn { return c.streams }

// Shutdown stops the listeners, then the forwarders.
func (c *countingTransport) Shutdown() error {
	c.inner.close()
	c.once.Do(func() { close(c.done) })
	c.wg.Wait()
	return nil
}

// sealersKept bounds the packet sealers a transport keeps between sends:
// memberlist's probe, gossip and packet handler send at once, and now and
// then an indirect probe's goroutine.
const sealersKept = 4

// packetSealer is what one sending goroutine needs to seal a packet.
type packetSealer struct {
	gcm gcmCache
	buf []byte
}

type countingConn struct {
	net.Conn
	t *countingTransport
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.t.received.Add(int64(n))
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.t.sent.Add(int64(n))
	return n, err
}
