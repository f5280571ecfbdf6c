package topology

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/patchmesh/patchmesh/auth"
)

// Security events of refused gossip, logged with auth.SecurityEvent (at
// Warn: the codes end in _fail).
const (
	// EventKeyFail: a packet or stream that no installed key decrypts, or
	// that is not encrypted at all: a node with a wrong or removed key, or
	// someone probing the port. Attrs: addr, channel (udp, tcp), reason.
	EventKeyFail = "gossip_key_fail"
	// EventMetaFail: a member whose meta does not decode or claims another
	// name; memberlist is told to ignore it. Attrs: member, addr, via,
	// reason.
	EventMetaFail = "gossip_meta_fail"
	// EventNameFail: two members with one name at different addresses;
	// memberlist keeps the one it knew. Attrs: name, known_addr,
	// other_addr, self, reason.
	EventNameFail = "gossip_name_fail"
)

// rejectEvery spaces the security events of one source: a node with a
// wrong key retries every probe and join, many times a second.
const rejectEvery = time.Minute

// rejectSources bounds the sources remembered for rejectEvery, so that a
// flood from many addresses cannot grow memory; past it, the table starts
// again (and a source may be logged twice in a minute).
const rejectSources = 1024

// rejectLog logs refused gossip as security events, at most once per
// source per rejectEvery, and counts every refusal by code.
type rejectLog struct {
	log *slog.Logger

	mu     sync.Mutex
	logged map[string]time.Time

	key, meta, name atomic.Int64
}

func newRejectLog(l *slog.Logger) *rejectLog {
	return &rejectLog{log: l, logged: map[string]time.Time{}}
}

func (r *rejectLog) event(code, source string, attrs ...slog.Attr) {
	switch code {
	case EventKeyFail:
		r.key.Add(1)
	case EventMetaFail:
		r.meta.Add(1)
	case EventNameFail:
		r.name.Add(1)
	}
	now := time.Now()
	k := code + "\x00" + source
	r.mu.Lock()
	last, seen := r.logged[k]
	if seen && now.Sub(last) < rejectEvery {
		r.mu.Unlock()
		return
	}
	if len(r.logged) >= rejectSources {
		clear(r.logged)
	}
	r.logged[k] = now
	r.mu.Unlock()
	auth.SecurityEvent(context.Background(), r.log, code, attrs...)
}

// counts returns the refusals so far by code.
func (r *rejectLog) counts() map[string]int64 {
	return map[string]int64{EventKeyFail: r.key.Load(), EventMetaFail: r.meta.Load(), EventNameFail: r.name.Load()}
}

// CheckMeta says whether a member named name may advertise meta b: it must
// decode, name no other member, and give http(s) URLs (https for the peer
// listener), which other nodes dial for sync and peer fetch.
func CheckMeta(name string, b []byte) error {
	m, err := DecodeMeta(b)
	if err != nil {
		return err
	}
	if m.Name != "" && m.Name != name {
		return fmt.Errorf("topology: meta of member %q names %q", name, m.Name)
	}
	for field, u := range map[string]string{"api": m.API, "upstream": m.Upstream} {
		if u == "" {
			continue
		}
		if pu, err := url.Parse(u); err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" || pu.User != nil {
			return fmt.Errorf("topology: meta of member %q: %s is not an http(s) URL without credentials", name, field)
		}
	}
	// Peer fetch and the links dial it with node certificates: only an
	// https base URL with a port makes sense there.
	if m.Peer != "" {
		if _, _, ok := httpsHostPort(m.Peer); !ok {
			return fmt.Errorf("topology: meta of member %q: peer is not an https URL with a port and no path", name)
		}
	}
	return nil
}

// Memberlist's encrypted wire format, which every version must keep to
// talk to the others: a packet is [version][12-byte nonce][AES-GCM
// ciphertext and tag]; a stream message is [type encryptMsg][uint32
// length] then such a payload, authenticated with those first five bytes.
// Memberlist refuses what fails to decrypt but only logs it, so the
// transport runs the same check first to see refusals without reading
// memberlist's log text. patchmesh sets no memberlist Label, so none is
// expected or authenticated.
const (
	encVersionMax = 1
	encNonce      = 12
	encTag        = 16
	// streamEncryptMsg is memberlist's encryptMsg message type.
	streamEncryptMsg = 10
	// streamCheckMax bounds the first stream message the transport copies
	// to check; larger ones (push/pulls of very large meshes) are left to
	// memberlist alone.
	streamCheckMax = 4 << 20
)

// decrypts says whether any key opens payload.
func decrypts(keys [][]byte, payload, aad []byte) error {
	var g gcmCache
	return g.decrypts(keys, payload, aad)
}

// gcmCache keeps the AES-GCM of each key it has used, and a buffer for the
// plaintext it throws away, so that checking a gossip packet neither
// expands the key nor builds the GCM tables again: that was 3.6 KiB of
// garbage a packet, and 1.7 % of the CPU of a 1,000-node mesh while a
// patch went round, the collector's share aside. One goroutine uses a
// cache at a time.
type gcmCache struct {
	aeads   map[string]cipher.AEAD
	scratch []byte
}

// gcmCacheMax bounds the ciphers kept, or twice the installed keys if
// more: past it, after keys were rotated out, the cache starts again.
const gcmCacheMax = 16

func (g *gcmCache) decrypts(keys [][]byte, payload, aad []byte) error {
	if len(payload) == 0 {
		return fmt.Errorf("empty payload")
	}
	if payload[0] > encVersionMax {
		return fmt.Errorf("not encrypted (or unknown encryption version %d)", payload[0])
	}
	if len(payload) < 1+encNonce+encTag {
		return fmt.Errorf("payload too short to be encrypted: %d bytes", len(payload))
	}
	if len(g.aeads) >= max(gcmCacheMax, 2*len(keys)) {
		clear(g.aeads)
	}
	for _, k := range keys {
		gcm := g.aead(k)
		if gcm == nil {
			continue
		}
		plain, err := gcm.Open(g.scratch[:0], payload[1:1+encNonce], payload[1+encNonce:], aad)
		if err == nil {
			g.scratch = plain[:0]
			return nil
		}
	}
	return fmt.Errorf("no installed key decrypts it")
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

// streamTap copies the first message of an accepted stream as memberlist
// reads it, and checks it once complete.
type streamTap struct {
	buf   []byte
	want  int // total bytes of the first message; 0 until the header is in
	check func(error)
	keys  keyring
}

// feed takes the next bytes read and reports whether the tap is done.
func (s *streamTap) feed(p []byte) (finished bool) {
	s.buf = append(s.buf, p...)
	if s.want == 0 {
		if s.buf[0] != streamEncryptMsg {
			s.check(fmt.Errorf("stream not encrypted (message type %d)", s.buf[0]))
			return true
		}
		if len(s.buf) < 5 {
			return false
		}
		n := binary.BigEndian.Uint32(s.buf[1:5])
		if n > streamCheckMax {
			return true // memberlist has its own limit and checks it
		}
		s.want = 5 + int(n)
	}
	if len(s.buf) < s.want {
		return false
	}
	s.check(decrypts(s.keys.GetKeys(), s.buf[5:s.want], s.buf[:5]))
	return true
}

// keyring gives the transport the keys in use now.
type keyring interface{ GetKeys() [][]byte }

var _ keyring = (*memberlist.Keyring)(nil)
