package api

import (
	"crypto/ed25519"
	"errors"
	"log/slog"
	"net/http"

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
	}{Version: s.info.Version, UptimeSeconds: int64(s.now().Sub(s.started).Seconds()), Role: s.info.Role, Node: s.info.Node}
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
	_, err := s.blobs.Stat(ctx, probeDigest)
	if errors.Is(err, blob.ErrNotFound) {
		err = nil
	}
	bl := check("blob store", err)
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
