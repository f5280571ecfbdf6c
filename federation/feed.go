package federation

import (
	"context"
	"time"
)

// The wire format of the sync API (docs/api.md, "Sync"). The api package
// serves these bodies and the sync loop reads them, so both sides share one
// definition.

// Feed limits. A page holds at most MaxFeedLimit events; a long poll waits
// at most MaxFeedWait.
const (
	DefaultFeedLimit = 100
	MaxFeedLimit     = 1000
	MaxFeedWait      = 60 * time.Second
)

// FeedResponse is the body of GET /v1/sync/feed.
type FeedResponse struct {
	// Tier is the serving node's tier the sync token grants.
	Tier string `json:"tier"`
	// Head is the serving node's Seq of the tier's newest signed event.
	Head int64 `json:"head"`
	// HubHead is the hub sequence number that event carries.
	HubHead int64       `json:"hub_head"`
	Events  []FeedEvent `json:"events"`
	// Heartbeat is the newest hub heartbeat the serving node holds for
	// the tier (signed by the hub, forwarded unchanged), absent if it
	// holds none. Head and HubHead are the serving node's word only; the
	// heartbeat is the hub's.
	Heartbeat *Envelope `json:"heartbeat,omitempty"`
	// Pending are hub records past the request's pending_after that the
	// serving node has verified and is fetching the blobs of, not applied
	// yet: a downstream may fetch those blobs now, streamed as they
	// arrive, and applies the records when they come as Events. Only
	// listed when the request asks (pending_after).
	Pending []Envelope `json:"pending,omitempty"`
}

// FeedEvent is one entry of a feed page: the hub's envelope, unchanged,
// numbered in the serving node's log.
type FeedEvent struct {
	Seq int64 `json:"seq"`
	Envelope
	// Skip: the serving node cannot serve this event's patch on this tier
	// (withdrawn, removed or filtered there). Skip is unsigned: a
	// downstream records the event without the patch only if Because,
	// the hub's later withdrawal or removal of the same patch on the same
	// tier, verifies. Without it the downstream fetches the patch anyway.
	Skip    bool      `json:"skip,omitempty"`
	Because *Envelope `json:"because,omitempty"`
}

// Link states, as LinkStatus.State reports them.
const (
	LinkStarting = "starting" // no round finished yet
	LinkSynced   = "synced"   // the last round succeeded and nothing is pending
	LinkSyncing  = "syncing"  // the last round succeeded and more is pending
	LinkFailing  = "failing"  // the last round failed; retrying with backoff
	LinkStale    = "stale"    // rounds succeed, but the hub's heartbeat says the upstream is frozen or withholding
)

// Stale reasons, as LinkStatus.StaleReason reports them.
const (
	StaleNoHeartbeat = "no_heartbeat"  // no heartbeat since the link started
	StaleHeartbeat   = "heartbeat_old" // the newest heartbeat is older than the bound: the path froze
	StaleWithheld    = "withheld"      // a record the heartbeat announced has not arrived within the bound
)

// LinkStatus is one link's state, as GET /v1/sync/status reports it and
// the sync metrics export it.
type LinkStatus struct {
	// Tier is the local tier the link feeds; HubTier the hub tier whose
	// signed records it applies.
	Tier    string `json:"tier"`
	HubTier string `json:"hub_tier"`
	// Upstream is the URL in use; Upstreams every candidate, in order.
	Upstream  string   `json:"upstream"`
	Upstreams []string `json:"upstreams"`
	State     string   `json:"state"`
	// Cursor is the upstream's Seq of the last entry applied, and
	// UpstreamHead the upstream's newest Seq for the tier.
	Cursor       int64 `json:"cursor"`
	UpstreamHead int64 `json:"upstream_head"`
	// HubSeq is the hub sequence number last applied; HubHead the newest
	// the upstream has. LagEvents is their difference.
	HubSeq    int64 `json:"hub_seq"`
	HubHead   int64 `json:"hub_head"`
	LagEvents int64 `json:"lag_events"`
	// LagSeconds is how long the link has been behind: 0 when caught up.
	LagSeconds float64 `json:"lag_seconds"`
	// LastSuccess is when a round last succeeded; LastError and
	// LastErrorAt describe the last failure.
	LastSuccess     time.Time `json:"last_success,omitzero"`
	LastError       string    `json:"last_error,omitempty"`
	LastErrorAt     time.Time `json:"last_error_at,omitzero"`
	BytesReplicated int64     `json:"bytes_replicated"`
	// RecordsApplied counts events applied; RecordsRejected records that
	// failed verification (signature, sequence, tier or blob digest).
	RecordsApplied  int64 `json:"records_applied"`
	RecordsRejected int64 `json:"records_rejected"`
	// Rounds counts finished sync rounds; RoundsFailed those that failed.
	Rounds       int64 `json:"rounds"`
	RoundsFailed int64 `json:"rounds_failed"`
	// Stale says the hub's heartbeat shows the upstream frozen or
	// withholding, for StaleReason (StaleNoHeartbeat, StaleHeartbeat or
	// StaleWithheld). HeartbeatTime is when the hub signed the newest
	// heartbeat the link holds, HeartbeatAge how old that is now, and
	// HeartbeatHubHead the hub sequence it announced.
	Stale            bool      `json:"stale"`
	StaleReason      string    `json:"stale_reason,omitempty"`
	HeartbeatTime    time.Time `json:"heartbeat_time,omitzero"`
	HeartbeatAge     float64   `json:"heartbeat_age_seconds"`
	HeartbeatHubHead int64     `json:"heartbeat_hub_head"`
}

// SyncStatusResponse is the body of GET /v1/sync/status and of the
// trigger endpoint.
type SyncStatusResponse struct {
	Role  string       `json:"role"`
	Links []LinkStatus `json:"links"`
}

// Control is what the API needs of a running sync loop.
type Control interface {
	// Status returns every link's state.
	Status() []LinkStatus
	// Trigger starts a round on every link now. With wait, it returns once
	// a round that started after the call has ended on every link (or ctx
	// ends), with the states then.
	Trigger(ctx context.Context, wait bool) ([]LinkStatus, error)
}
