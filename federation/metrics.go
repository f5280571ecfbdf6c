package federation

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Collector exports the links' states as metrics, read from Status at
// scrape time, so the metrics and GET /v1/sync/status never disagree.
// Series carry the local tier only: the upstream in use changes on
// failover and is in patchmesh_sync_link_info instead, so that a failover
// does not start new series for every other metric.
type Collector struct {
	c Control
}

// NewCollector returns a collector over c's links.
func NewCollector(c Control) *Collector { return &Collector{c: c} }

var (
	tierLabel = []string{"tier"}

	descInfo = prometheus.NewDesc("patchmesh_sync_link_info",
		"A sync link: the local tier it feeds, the hub tier it applies and the upstream in use.",
		[]string{"tier", "hub_tier", "upstream"}, nil)
	descUp = prometheus.NewDesc("patchmesh_sync_up",
		"1 if the link's last sync round succeeded and the link is not stale, else 0.", tierLabel, nil)
	descCursor = prometheus.NewDesc("patchmesh_sync_cursor",
		"The upstream's change-log sequence number of the last event applied.", tierLabel, nil)
	descUpstreamHead = prometheus.NewDesc("patchmesh_sync_upstream_head",
		"The upstream's newest change-log sequence number for the tier.", tierLabel, nil)
	descHubSeq = prometheus.NewDesc("patchmesh_sync_hub_seq",
		"The hub's tier sequence number of the last record applied.", tierLabel, nil)
	descHubHead = prometheus.NewDesc("patchmesh_sync_hub_head",
		"The newest hub tier sequence number the upstream has.", tierLabel, nil)
	descLagEvents = prometheus.NewDesc("patchmesh_sync_lag_events",
		"Hub records the upstream has and this node has not applied.", tierLabel, nil)
	descLagSeconds = prometheus.NewDesc("patchmesh_sync_lag_seconds",
		"How long the link has been behind its upstream; 0 when caught up.", tierLabel, nil)
	descLastSuccess = prometheus.NewDesc("patchmesh_sync_last_success_timestamp_seconds",
		"Unix time of the link's last successful round; 0 if none yet.", tierLabel, nil)
	descBytes = prometheus.NewDesc("patchmesh_sync_replicated_bytes_total",
		"Blob bytes the link fetched from upstreams.", tierLabel, nil)
	descApplied = prometheus.NewDesc("patchmesh_sync_records_applied_total",
		"Hub records the link applied (or logged, when skipped or filtered).", tierLabel, nil)
	descRounds = prometheus.NewDesc("patchmesh_sync_rounds_total",
		"Sync rounds the link finished.", tierLabel, nil)
	descRoundsFailed = prometheus.NewDesc("patchmesh_sync_rounds_failed_total",
		"Sync rounds the link finished with an error.", tierLabel, nil)
	descRejected = prometheus.NewDesc("patchmesh_sync_records_rejected_total",
		"Records or blobs the link refused: bad signature, unpinned key, replay, gap, wrong tier or digest mismatch; also refused heartbeats and unexplained skips.", tierLabel, nil)
	descStale = prometheus.NewDesc("patchmesh_sync_stale",
		"1 if the hub's heartbeat shows the link's upstream frozen or withholding a record (see sync status for the reason), else 0.", tierLabel, nil)
	descHeartbeatAge = prometheus.NewDesc("patchmesh_sync_heartbeat_age_seconds",
		"Age of the newest hub heartbeat the link holds; absent until it holds one.", tierLabel, nil)
	descHeartbeatHead = prometheus.NewDesc("patchmesh_sync_heartbeat_hub_head",
		"The hub sequence number the newest heartbeat announced; absent until the link holds one.", tierLabel, nil)
)

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descInfo, descUp, descCursor, descUpstreamHead, descHubSeq, descHubHead,
		descLagEvents, descLagSeconds, descLastSuccess, descBytes, descApplied, descRejected, descRounds, descRoundsFailed,
		descStale, descHeartbeatAge, descHeartbeatHead} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.c.Status() {
		gauge := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, s.Tier)
		}
		counter := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, s.Tier)
		}
		ch <- prometheus.MustNewConstMetric(descInfo, prometheus.GaugeValue, 1, s.Tier, s.HubTier, s.Upstream)
		up := 0.0
		if s.State == LinkSynced || s.State == LinkSyncing {
			up = 1
		}
		gauge(descUp, up)
		gauge(descCursor, float64(s.Cursor))
		gauge(descUpstreamHead, float64(s.UpstreamHead))
		gauge(descHubSeq, float64(s.HubSeq))
		gauge(descHubHead, float64(s.HubHead))
		gauge(descLagEvents, float64(s.LagEvents))
		gauge(descLagSeconds, s.LagSeconds)
		last := 0.0
		if !s.LastSuccess.IsZero() {
			last = float64(s.LastSuccess.UnixNano()) / 1e9
		}
		gauge(descLastSuccess, last)
		counter(descBytes, float64(s.BytesReplicated))
		counter(descApplied, float64(s.RecordsApplied))
		counter(descRejected, float64(s.RecordsRejected))
		counter(descRounds, float64(s.Rounds))
		counter(descRoundsFailed, float64(s.RoundsFailed))
		stale := 0.0
		if s.Stale {
			stale = 1
		}
		gauge(descStale, stale)
		if !s.HeartbeatTime.IsZero() {
			gauge(descHeartbeatAge, s.HeartbeatAge)
			gauge(descHeartbeatHead, float64(s.HeartbeatHubHead))
		}
	}
}
