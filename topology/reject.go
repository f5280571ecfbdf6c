package topology

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

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
