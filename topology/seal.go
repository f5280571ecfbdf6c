package topology

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"

	"github.com/hashicorp/memberlist"
)

// Gossip is encrypted by the transport, not by memberlist, in memberlist's
// own wire format, so that a node of either kind talks to the other: a
// packet is [version 1][12-byte nonce][AES-GCM ciphertext and tag]; a
// stream message is [type encryptMsg][uint32 length] then such a payload,
// authenticated with those first five bytes. patchmesh sets no memberlist
// Label, and must not: memberlist would write a stream's label header in a
// Write of its own, which the transport would seal as a message, and
// authenticate the label with each payload, which the transport does not.
//
// Memberlist's own encryption expands the key and builds the GCM tables
// again for every packet it seals or opens, 3.6 KiB of garbage each, and
// the transport had to open every packet once more before it to see
// refusals; in a 1,000-node mesh taking a patch that was 2.5–4.8 % of the
// CPU and a share of the collector's (bench/RESULTS.md, "Gossip sealed in the
// transport"). The transport keeps each key's cipher
// (gcmCache), opens every packet once, and memberlist, given no keyring,
// handles plaintext only.
const (
	// encVersion is the only version sealed or opened: memberlist's for
	// protocol version 2 and up, which every patchmesh node speaks.
	// (Version 0, padded, is memberlist's for protocol version 1.)
	encVersion  = 1
	encNonce    = 12
	encTag      = 16
	encOverhead = 1 + encNonce + encTag
	// streamEncryptMsg is memberlist's encryptMsg message type, and
	// streamHeader its type and length.
	streamEncryptMsg = 10
	streamHeader     = 5
	// streamMax is memberlist's bound on a stream message
	// (maxPushStateBytes): a longer one is refused before it is read.
	streamMax = 20 << 20
)

// keyring gives the transport the keys in use now: every installed key
// opens, the primary seals.
type keyring interface {
	GetKeys() [][]byte
	GetPrimaryKey() []byte
}

var _ keyring = (*memberlist.Keyring)(nil)

// gcmCache keeps the AES-GCM of each key it has used, and a buffer for
// what it opens. One goroutine uses a cache at a time.
type gcmCache struct {
	aeads   map[string]cipher.AEAD
	scratch []byte
}

// gcmCacheMax bounds the ciphers kept, or twice the installed keys if
// more: past it, after keys were rotated out, the cache starts again.
const gcmCacheMax = 16

// open returns the plaintext of payload, sealed with any of keys and aad.
// The plaintext lives in the cache's buffer until the next open.
func (g *gcmCache) open(keys [][]byte, payload, aad []byte) ([]byte, error) {
	if len(payload) == 0 {
		return nil, errors.New("empty payload")
	}
	if payload[0] != encVersion {
		return nil, fmt.Errorf("not encrypted (or unknown encryption version %d)", payload[0])
	}
	if len(payload) < encOverhead {
		return nil, fmt.Errorf("payload too short to be encrypted: %d bytes", len(payload))
	}
	g.bound(len(keys))
	nonce, sealed := payload[1:1+encNonce], payload[1+encNonce:]
	for _, k := range keys {
		gcm := g.aead(k)
		if gcm == nil {
			continue
		}
		// Into scratch, not in place: a failed try may overwrite its
		// output, and the next key needs the ciphertext.
		plain, err := gcm.Open(g.scratch[:0], nonce, sealed, aad)
		if err == nil {
			g.scratch = plain[:0]
			return plain, nil
		}
	}
	return nil, errors.New("no installed key decrypts it")
}

// seal appends plain, sealed with key and aad, to dst. aad must not share
// memory with dst.
func (g *gcmCache) seal(dst, key, plain, aad []byte) ([]byte, error) {
	g.bound(1)
	gcm := g.aead(key)
	if gcm == nil {
		return nil, fmt.Errorf("primary gossip key of %d bytes is not an AES key", len(key))
	}
	n := len(dst)
	dst = slices.Grow(dst, encOverhead+len(plain))[:n+1+encNonce]
	dst[n] = encVersion
	nonce := dst[n+1:]
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return gcm.Seal(dst, nonce, plain, aad), nil
}

// bound starts the cache again once it holds gcmCacheMax ciphers, or twice
// the keys in use if more: keys rotated out are not kept for ever.
func (g *gcmCache) bound(keys int) {
	if len(g.aeads) >= max(gcmCacheMax, 2*keys) {
		clear(g.aeads)
	}
}

// aead returns key's AES-GCM, nil for a key AES refuses.
func (g *gcmCache) aead(key []byte) cipher.AEAD {
	if a, ok := g.aeads[string(key)]; ok {
		return a
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil
	}
	a, err := cipher.NewGCM(block)
	if err != nil {
		return nil
	}
	if g.aeads == nil {
		g.aeads = map[string]cipher.AEAD{}
	}
	g.aeads[string(key)] = a
	return a
}

// sealedConn carries memberlist's stream messages sealed, over the wire
// below it (which counts them). Memberlist writes each message in one
// Write, so each Write is sealed as one; Read hands out the plaintext of
// the messages that arrive, one after another, as a plain stream would.
// Reads and writes keep separate ciphers and buffers.
type sealedConn struct {
	net.Conn
	keys    keyring
	refused func(error)

	rd, wr gcmCache
	hdr    [streamHeader]byte
	msg    []byte // the message being opened
	plain  []byte // what is opened and not yet read
	err    error  // the refusal, for every later Read
}

// streamChunk is how much more of a stream message is taken into memory
// at a time: a header may claim up to streamMax, and only bytes that
// arrive should cost memory.
const streamChunk = 64 << 10

func (s *sealedConn) Write(p []byte) (int, error) {
	if len(p) > streamMax-encOverhead {
		return 0, fmt.Errorf("topology: gossip stream message of %d bytes, over the limit of %d", len(p), streamMax-encOverhead)
	}
	var hdr [streamHeader]byte
	hdr[0] = streamEncryptMsg
	binary.BigEndian.PutUint32(hdr[1:], uint32(encOverhead+len(p)))
	out, err := s.wr.seal(append(make([]byte, 0, streamHeader+encOverhead+len(p)), hdr[:]...), s.keys.GetPrimaryKey(), p, hdr[:])
	if err != nil {
		return 0, fmt.Errorf("topology: seal gossip stream: %w", err)
	}
	if _, err := s.Conn.Write(out); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (s *sealedConn) Read(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	for len(s.plain) == 0 {
		if err := s.next(); err != nil {
			return 0, err
		}
	}
	n := copy(p, s.plain)
	s.plain = s.plain[n:]
	return n, nil
}

// next reads and opens the next message. A stream that ends between
// messages reads io.EOF, as a plain one would.
func (s *sealedConn) next() error {
	if _, err := io.ReadFull(s.Conn, s.hdr[:1]); err != nil {
		return err
	}
	if s.hdr[0] != streamEncryptMsg {
		return s.refuse(fmt.Errorf("stream not encrypted (message type %d)", s.hdr[0]))
	}
	if _, err := io.ReadFull(s.Conn, s.hdr[1:]); err != nil {
		return unexpectedEOF(err)
	}
	n := binary.BigEndian.Uint32(s.hdr[1:])
	if n > streamMax {
		return s.refuse(fmt.Errorf("stream message of %d bytes, over the limit of %d", n, streamMax))
	}
	s.msg = s.msg[:0]
	for len(s.msg) < int(n) {
		k := min(int(n)-len(s.msg), streamChunk)
		s.msg = slices.Grow(s.msg, k)
		got, err := io.ReadFull(s.Conn, s.msg[len(s.msg):len(s.msg)+k])
		s.msg = s.msg[:len(s.msg)+got]
		if err != nil {
			return unexpectedEOF(err)
		}
	}
	plain, err := s.rd.open(s.keys.GetKeys(), s.msg, s.hdr[:])
	if err != nil {
		return s.refuse(err)
	}
	s.plain = plain
	return nil
}

func (s *sealedConn) refuse(why error) error {
	s.refused(why)
	s.err = fmt.Errorf("topology: gossip stream refused: %w", why)
	return s.err
}

// unexpectedEOF turns an end of stream inside a message into
// io.ErrUnexpectedEOF.
func unexpectedEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
