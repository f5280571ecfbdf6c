package api

import (
	"context"
	"crypto/ed25519"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/patchmesh/patchmesh/blob"
	"github.com/patchmesh/patchmesh/federation"
)

// debugInfo says who this node is. The node key and its ID are public:
// they are what the hub admits and what a hello is checked against.
func (s *server) debugInfo(w http.ResponseWriter, r *http.Request) error {
	out := struct {
		Version       string `json:"version"`
		UptimeSeconds int64  `json:"uptime_seconds"`
		Role          string `json:"role"`
		Node          string `json:"node"`
		NodeKey       string `json:"node_key,omitempty"`
		KeyID         string `json:"key_id,omitempty"`
		PeerURL       string `json:"peer_url,omitempty"`
	}{Version: s.info.Version, UptimeSeconds: int64(s.now().Sub(s.started).Seconds()), Role: s.info.Role, Node: s.info.Node,
		PeerURL: s.info.PeerURL}
	if s.nodeKey != nil {
		out.NodeKey = federation.FormatPublicKey(s.nodeKey.Public().(ed25519.PublicKey))
		out.KeyID = s.nodeKeyID
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

type health struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

// probeDigest names no blob; a reachable blob store answers ErrNotFound.
const probeDigest = blob.Digest("sha256:0000000000000000000000000000000000000000000000000000000000000000")

// debugStatus checks that the store and the blob store answer. The cause of
// a failure goes to the log, not to an unauthenticated caller.
func (s *server) debugStatus(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	check := func(what string, err error) health {
		if err == nil {
			return health{OK: true}
		}
		s.log.LogAttrs(ctx, slog.LevelError, "health check failed", slog.String("component", what), slog.String("error", err.Error()))
		return health{Error: what + " unavailable; request " + RequestID(ctx)}
	}
	st := check("store", s.store.Ping(ctx))
	bl := check("blob store", s.probe.check(ctx, s.blobs, s.now()))
	if bl.OK {
		s.metrics.blobProbeUp.Set(1)
	} else {
		s.metrics.blobProbeUp.Set(0)
	}
	status := http.StatusOK
	if !st.OK || !bl.OK {
		status = http.StatusServiceUnavailable
	}
	writeJSON(w, status, struct {
		Store health `json:"store"`
		Blobs health `json:"blobs"`
	}{st, bl})
	return nil
}

// probeEvery is how often /debug/status really checks the blob store; a
// request in between gets the last result. Checks write to the store, and
// the status endpoint is unauthenticated: a flood of requests must not
// become a flood of writes.
const probeEvery = 5 * time.Second

// probeCache runs at most one blob store check per probeEvery.
type probeCache struct {
	mu   sync.Mutex
	at   time.Time
	last error
}

// check probes bs end to end if it can (blob.Prober: a tiny object written,
// read back and deleted, so a vanished bucket or directory shows), else
// asks it about a digest that names nothing.
func (p *probeCache) check(ctx context.Context, bs blob.Store, now time.Time) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.at.IsZero() && now.Sub(p.at) < probeEvery && now.Sub(p.at) >= 0 {
		return p.last
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var err error
	if pr, ok := bs.(blob.Prober); ok {
		err = pr.Probe(ctx)
	} else if _, err = bs.Stat(ctx, probeDigest); errors.Is(err, blob.ErrNotFound) {
		err = nil
	}
	p.at, p.last = now, err
	return err
}
