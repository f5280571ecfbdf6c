package client

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/patchmesh/patchmesh/federation"
)

// Freshness. A node can delay what the hub signs but not forge it; what it
// could still do unseen is stop: answer "nothing to offer" for ever, or
// keep offering an old patch. The hub therefore signs a heartbeat per tier
// (its newest hub sequence, at a time) that travels down the feed and
// comes with every answer to GET /v1/client/patch, the 404 included. A
// machine keeps the newest one it verified; a node whose heartbeat is
// older than Config.StaleAfter is stale, like a failing node: the machine
// tries the next one, and reports itself stale (ErrStale) when no node is
// fresh.
//
// A machine does not judge a heartbeat's hub sequence against the offer:
// the sequence counts every record of the tier (tokens, admissions,
// patches for other kernels), so a head beyond the offered record is
// normal. Withholding of one record is the node's link's to detect
// (docs/architecture.md, "Heartbeats"); the machine bounds the age.

// DefaultStaleAfter is how old the newest hub heartbeat a node hands a
// machine may be before the machine counts that node stale. A heartbeat
// reaches an edge within about a minute of its signing on a healthy mesh
// (federation.DefaultStaleAfter bounds that for nodes at 2m); 10m leaves
// room for a few failed rounds before machines move.
const DefaultStaleAfter = 10 * time.Minute

// ErrStale means no node the machine reached handed it a hub heartbeat
// younger than Config.StaleAfter (or one at all): what it was offered may not be the newest the hub published. A
// refresh that ends stale still verifies and applies what it was offered,
// which is signed by the hub, and then returns an error wrapping ErrStale.
var ErrStale = errors.New("stale: no node handed over a fresh hub heartbeat")

// SeenHeartbeat is the newest hub heartbeat the machine verified.
type SeenHeartbeat struct {
	// Time is when the hub signed it; TierSeq the hub sequence it announced.
	Time    time.Time `json:"time"`
	TierSeq int64     `json:"tier_seq"`
	// Node is the URL of the node that handed it over, Received when.
	Node     string    `json:"node"`
	Received time.Time `json:"received"`
}

// Freshness is how fresh the machine's view of its tier is.
type Freshness struct {
	// Heartbeat is the newest hub heartbeat verified; nil if none yet
	// (no refresh since registering, or no node handed one over).
	Heartbeat *SeenHeartbeat `json:"heartbeat,omitempty"`
	// Age is how old that heartbeat is now.
	Age time.Duration `json:"age_ns,omitempty"`
	// Stale says why the machine is stale; empty when it is fresh.
	Stale string `json:"stale,omitempty"`
	// StaleAfter is the bound applied.
	StaleAfter time.Duration `json:"stale_after_ns"`
}

// Freshness reads the machine's freshness from its state: stale when the
// last refresh ended stale or the newest heartbeat has grown older than
// the bound since. It asks no node.
func (c *Client) Freshness() (Freshness, error) {
	st, err := LoadState(c.cfg.StateDir)
	if err != nil {
		return Freshness{}, err
	}
	f := Freshness{Heartbeat: st.Heartbeat, Stale: st.Stale, StaleAfter: c.cfg.StaleAfter}
	switch {
	case st.Heartbeat == nil && f.Stale == "":
		// Silence is never freshness (checkFresh): a machine that has
		// verified no heartbeat does not know what it may be missing.
		f.Stale = "no hub heartbeat verified yet (no refresh since registering)"
	case st.Heartbeat != nil:
		f.Age = time.Since(st.Heartbeat.Time).Round(time.Second)
		if f.Stale == "" && f.Age > c.cfg.StaleAfter {
			f.Stale = fmt.Sprintf("the newest hub heartbeat is %s old", f.Age)
		}
	}
	return f, nil
}

// staleNode is a node whose answer is not fresh enough to act on while
// another node may be: like a failing node, it passes the call on.
type staleNode struct{ err error }

func (e *staleNode) Error() string { return e.err.Error() }
func (e *staleNode) Unwrap() error { return e.err }

// heartbeatOf is the heartbeat a patch answer carries: the offer's field,
// else the header (the 404 answer has only that). Nil if neither.
func heartbeatOf(o federation.Offer, h http.Header) (*federation.Envelope, error) {
	if o.Heartbeat != nil {
		return o.Heartbeat, nil
	}
	v := h.Get(federation.HeartbeatHeader)
	if v == "" {
		return nil, nil
	}
	e, err := federation.DecodeHeartbeatHeader(v)
	if err != nil {
		return nil, err
	}
	return &e, nil
}

// checkFresh verifies the heartbeat node u handed over with its answer,
// keeps it when it is the newest seen, and says whether the answer is
// fresh: a *staleNode error when the heartbeat does not verify, is older
// than the bound, or is missing.
func (s *session) checkFresh(pins *Pins, u string, env *federation.Envelope, now time.Time) error {
	bound := s.c.cfg.StaleAfter
	if env == nil {
		// Every node a machine can register at (one that serves the
		// roster and the hello) sends the hub heartbeat it holds. A node
		// that sends none is stale however new the machine is: were a
		// machine that never saw one to take silence as fresh, a node
		// withholding the hub's newer patches could leave the heartbeat
		// out for ever and never be passed over.
		return &staleNode{fmt.Errorf("%s sent no hub heartbeat", u)}
	}
	var held federation.Record
	if hb := s.st.Heartbeat; hb != nil {
		held = federation.Record{Time: hb.Time, TierSeq: hb.TierSeq}
	}
	r, newer, err := pins.v.VerifyHeartbeat(*env, s.st.HubTier, held, now)
	if err != nil {
		return &staleNode{fmt.Errorf("%s: its hub heartbeat is refused: %w", u, err)}
	}
	if newer {
		s.st.Heartbeat = &SeenHeartbeat{Time: r.Time, TierSeq: r.TierSeq, Node: u, Received: now.UTC()}
		if err := s.save(); err != nil {
			return err
		}
	}
	if age := now.Sub(r.Time); age > bound {
		return &staleNode{fmt.Errorf("%s: its newest hub heartbeat is %s old (bound %s)", u, age.Round(time.Second), bound)}
	}
	return nil
}

// markStale records the outcome of a refresh's freshness check, so that
// status shows it; reason empty means fresh.
func (s *session) markStale(reason string) error {
	if s.st.Stale == reason {
		return nil
	}
	s.st.Stale = reason
	return s.save()
}
