package topology

import (
	"bufio"
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"log"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// refSeal encrypts msg as memberlist's version 1 does: [1][nonce][AES-GCM],
// written apart from the transport's code so that the format is checked.
func refSeal(t testing.TB, key, msg, aad []byte) []byte {
	gcm := refGCM(t, key)
	out := make([]byte, 1+encNonce, 1+encNonce+len(msg)+encTag)
	out[0] = 1
	if _, err := rand.Read(out[1 : 1+encNonce]); err != nil {
		t.Fatal(err)
	}
	return gcm.Seal(out, out[1:1+encNonce], msg, aad)
}

func refGCM(t testing.TB, key []byte) cipher.AEAD {
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	return gcm
}

type keys [][]byte

func (k keys) GetKeys() [][]byte     { return k }
func (k keys) GetPrimaryKey() []byte { return k[0] }

func TestOpenAcceptsAnyInstalledKeyOnly(t *testing.T) {
	old, cur, other := key(t), key(t), key(t)
	pkt := refSeal(t, old, []byte("ping"), nil)
	var g gcmCache
	plain, err := g.open([][]byte{cur, old}, pkt, nil)
	if err != nil || string(plain) != "ping" {
		t.Errorf("sealed with the second installed key: got %q, %v", plain, err)
	}
	v0 := bytes.Clone(pkt)
	v0[0] = 0
	for _, tc := range []struct {
		name    string
		keys    [][]byte
		payload []byte
	}{
		{"another key", [][]byte{cur, other}, pkt},
		{"plaintext", [][]byte{cur, old}, append([]byte{4}, make([]byte, 40)...)},
		{"version 0", [][]byte{cur, old}, v0},
		{"too short", [][]byte{cur, old}, pkt[:20]},
		{"empty", [][]byte{cur, old}, nil},
		{"tampered", [][]byte{cur, old}, append(pkt[:len(pkt)-1:len(pkt)-1], pkt[len(pkt)-1]^1)},
	} {
		if plain, err := g.open(tc.keys, tc.payload, nil); err == nil {
			t.Errorf("%s: opened, to %q", tc.name, plain)
		}
	}
}

func TestSealIsMemberlistsFormat(t *testing.T) {
	k := key(t)
	var g gcmCache
	aad := []byte("header")
	wire, err := g.seal([]byte("kept"), k, []byte("suspect"), aad)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(wire, []byte("kept")) || len(wire) != 4+encOverhead+len("suspect") {
		t.Fatalf("sealed to %d bytes %q, want what dst held then %d more", len(wire), wire, encOverhead+len("suspect"))
	}
	wire = wire[4:]
	if wire[0] != 1 {
		t.Errorf("version %d, want 1", wire[0])
	}
	plain, err := refGCM(t, k).Open(nil, wire[1:1+encNonce], wire[1+encNonce:], aad)
	if err != nil || string(plain) != "suspect" {
		t.Errorf("memberlist's format opens to %q, %v", plain, err)
	}
	again, _ := g.seal(nil, k, []byte("suspect"), aad)
	if bytes.Equal(again[1:1+encNonce], wire[1:1+encNonce]) {
		t.Error("two packets sealed with one nonce")
	}
	if _, err := g.seal(nil, []byte("short"), []byte("x"), nil); err == nil {
		t.Error("sealed with a 5-byte key")
	}
}

// One cache serves a transport for its life: a key rotated out no longer
// opens a packet though its cipher is still cached, and the cache stays
// bounded however many keys come and go.
func TestGCMCacheFollowsTheInstalledKeys(t *testing.T) {
	old, cur := key(t), key(t)
	pkt := refSeal(t, old, []byte("ping"), nil)
	var g gcmCache
	for range 2 {
		if _, err := g.open([][]byte{cur, old}, pkt, nil); err != nil {
			t.Fatalf("sealed with an installed key: %v", err)
		}
	}
	if _, err := g.open([][]byte{cur}, pkt, nil); err == nil {
		t.Error("opened with a key no longer installed")
	}
	for range 3 * gcmCacheMax {
		g.open([][]byte{key(t)}, pkt, nil)
	}
	if len(g.aeads) > gcmCacheMax {
		t.Errorf("%d ciphers cached, want at most %d", len(g.aeads), gcmCacheMax)
	}
	if _, err := g.open([][]byte{old}, pkt, nil); err != nil {
		t.Errorf("after the cache started again: %v", err)
	}
}

// refStream is one stream message as memberlist's encryptLocalState
// writes it.
func refStream(t testing.TB, key, body []byte) []byte {
	hdr := []byte{streamEncryptMsg, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(hdr[1:], uint32(encOverhead+len(body)))
	return append(hdr, refSeal(t, key, body, hdr)...)
}

// pipe returns the reading end of a sealed stream with keys and what it
// reported refused, and writes wire into the other end.
func pipe(t *testing.T, ks keys, wire []byte) (*sealedConn, *[]error) {
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	go func() {
		b.Write(wire)
		b.Close()
	}()
	var refused []error
	return &sealedConn{Conn: a, keys: ks, refused: func(err error) { refused = append(refused, err) }}, &refused
}

func TestSealedConnReadsMemberlistsMessages(t *testing.T) {
	old, cur := key(t), key(t)
	wire := append(refStream(t, old, []byte("push-pull state")), refStream(t, cur, []byte(" and more"))...)
	c, refused := pipe(t, keys{cur, old}, wire)
	// Through bufio, in small reads, as memberlist reads a stream.
	var got []byte
	r := bufio.NewReaderSize(c, 16)
	buf := make([]byte, 3)
	for {
		n, err := r.Read(buf)
		got = append(got, buf[:n]...)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("after %q: %v", got, err)
		}
	}
	if string(got) != "push-pull state and more" || len(*refused) != 0 {
		t.Errorf("read %q, refused %v; want both messages, nothing refused", got, *refused)
	}
}

func TestSealedConnRefuses(t *testing.T) {
	k := key(t)
	good := refStream(t, k, []byte("state"))
	tampered := bytes.Clone(good)
	tampered[len(tampered)-1] ^= 1
	over := []byte{streamEncryptMsg, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(over[1:], streamMax+1)
	for _, tc := range []struct {
		name    string
		wire    []byte
		refused bool
		err     error
	}{
		{"plaintext", []byte{6, 1, 2, 3, 4, 5, 6, 7}, true, nil},
		{"wrong key", refStream(t, key(t), []byte("state")), true, nil},
		{"tampered", tampered, true, nil},
		{"over the limit", over, true, nil},
		{"cut in the header", good[:3], false, io.ErrUnexpectedEOF},
		{"cut in the body", good[:len(good)-1], false, io.ErrUnexpectedEOF},
		{"nothing", nil, false, io.EOF},
	} {
		c, refused := pipe(t, keys{k}, tc.wire)
		n, err := c.Read(make([]byte, 64))
		if n != 0 || err == nil {
			t.Errorf("%s: read %d bytes, %v; want an error", tc.name, n, err)
		}
		if tc.err != nil && !errors.Is(err, tc.err) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.err)
		}
		if got := len(*refused) == 1; got != tc.refused {
			t.Errorf("%s: refusals reported %v, want one: %v", tc.name, *refused, tc.refused)
		}
		if tc.refused {
			if _, again := c.Read(make([]byte, 64)); again == nil || again.Error() != err.Error() || len(*refused) != 1 {
				t.Errorf("%s: read again after the refusal: %v, refusals %d; want the same error, one", tc.name, again, len(*refused))
			}
		}
	}
}

// A header may claim up to streamMax; memory goes only to bytes that
// arrive, so a peer without the key cannot pin megabytes a connection by
// sending five.
func TestSealedConnTakesMemoryAsBytesArrive(t *testing.T) {
	hdr := []byte{streamEncryptMsg, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(hdr[1:], streamMax)
	c, _ := pipe(t, keys{key(t)}, append(hdr, make([]byte, 1000)...))
	if _, err := c.Read(make([]byte, 64)); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("got %v, want io.ErrUnexpectedEOF", err)
	}
	if cap(c.msg) > 2*streamChunk {
		t.Errorf("%d bytes taken for 1,000 that arrived of a claimed %d", cap(c.msg), streamMax)
	}
}

// Each Write goes out as one message of memberlist's, whole, and comes
// back out of a sealedConn at the other end.
func TestSealedConnWritesMemberlistsMessages(t *testing.T) {
	k := key(t)
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	w := &sealedConn{Conn: a, keys: keys{k}, refused: func(err error) { t.Error(err) }}
	go func() {
		for _, m := range []string{"first", "second"} {
			if n, err := w.Write([]byte(m)); n != len(m) || err != nil {
				t.Errorf("write %q: %d, %v", m, n, err)
			}
		}
		a.Close()
	}()
	wire, err := io.ReadAll(b)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"first", "second"} {
		n := encOverhead + len(m)
		if len(wire) < streamHeader+n || wire[0] != streamEncryptMsg || binary.BigEndian.Uint32(wire[1:5]) != uint32(n) {
			t.Fatalf("message %q: header % x, want type %d and length %d", m, wire[:min(5, len(wire))], streamEncryptMsg, n)
		}
		body := wire[streamHeader : streamHeader+n]
		plain, err := refGCM(t, k).Open(nil, body[1:1+encNonce], body[1+encNonce:], wire[:streamHeader])
		if err != nil || string(plain) != m {
			t.Errorf("message %q opens to %q, %v", m, plain, err)
		}
		wire = wire[streamHeader+n:]
	}
	if len(wire) != 0 {
		t.Errorf("%d bytes after the two messages", len(wire))
	}
}

// BenchmarkPacketOpen opens one gossip packet of typical size (a probe
// with piggybacked gossip) with two installed keys, the packet sealed with
// the second: the worst case during a rotation. cached is the transport's
// own (a gcmCache for its life); fresh builds the ciphers for every
// packet, as memberlist's own encryption does.
func BenchmarkPacketOpen(b *testing.B) {
	k1, k2 := make([]byte, 32), make([]byte, 32)
	rand.Read(k1)
	rand.Read(k2)
	pkt := refSeal(b, k2, make([]byte, 300), nil)
	ks := [][]byte{k1, k2}
	b.Run("cached", func(b *testing.B) {
		var g gcmCache
		b.SetBytes(int64(len(pkt)))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := g.open(ks, pkt, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("fresh", func(b *testing.B) {
		b.SetBytes(int64(len(pkt)))
		b.ReportAllocs()
		for b.Loop() {
			var g gcmCache
			if _, err := g.open(ks, pkt, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// Memberlist, given no keyring, warns at start on a public address that
// it does not encrypt; the transport does, so the warning is dropped, and
// only it.
func TestLogBridgeDropsTheFalseEncryptionWarning(t *testing.T) {
	var out lockedLog
	l := log.New(logBridge{l: slog.New(slog.NewTextHandler(&out, nil))}, "", 0)
	l.Printf("[WARN] memberlist: " + publicWithoutEncryption)
	if got := out.String(); got != "" {
		t.Errorf("logged %q", got)
	}
	l.Printf("[WARN] memberlist: Refuting a suspect message (from: b)")
	if got := out.String(); !strings.Contains(got, "Refuting a suspect message") {
		t.Errorf("logged %q, want the other warning", got)
	}
}

// A packet goes out sealed with the primary key, counted as it is on the
// wire, and comes out of the other transport as memberlist sent it; one
// sealed with a key not installed there is dropped and counted refused.
func TestTransportSealsAndOpensPackets(t *testing.T) {
	k, other := key(t), key(t)
	open := func(ks keys) (*countingTransport, *rejectLog) {
		rl := newRejectLog(slog.New(slog.DiscardHandler))
		c, err := newCountingTransport(loopback(t), 0, log.New(io.Discard, "", 0), ks, rl)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Shutdown() })
		return c, rl
	}
	a, _ := open(keys{other, k})
	b, bRejects := open(keys{k})
	c, _ := open(keys{k, other})
	to := memberlist.Address{Addr: net.JoinHostPort(b.inner.udp.LocalAddr().(*net.UDPAddr).IP.String(), strconv.Itoa(b.port()))}
	msg := []byte("ping with piggybacked gossip")
	if _, err := c.WriteToAddress(msg, to); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-b.PacketCh():
		if string(p.Buf) != string(msg) {
			t.Errorf("got %q, want %q", p.Buf, msg)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no packet within 5 s")
	}
	if want := int64(len(msg) + encOverhead); c.sent.Load() != want || b.received.Load() != want {
		t.Errorf("sent %d, received %d bytes; want %d both", c.sent.Load(), b.received.Load(), want)
	}
	if _, err := a.WriteToAddress(msg, to); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for bRejects.counts()[EventKeyFail] == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := bRejects.counts()[EventKeyFail]; got != 1 {
		t.Errorf("%d refusals counted, want 1", got)
	}
	select {
	case p := <-b.PacketCh():
		t.Errorf("a packet sealed with a key b lacks reached memberlist: %q", p.Buf)
	default:
	}
}
