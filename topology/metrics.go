package topology

import "github.com/prometheus/client_golang/prometheus"

// Collector exports gossip membership and traffic, read from Stats at
// scrape time: for all pools together (the series without a pool label)
// and for each.
type Collector struct{ t *Topology }

// NewCollector returns a collector over t.
func NewCollector(t *Topology) *Collector { return &Collector{t: t} }

var (
	descMembers = prometheus.NewDesc("patchmesh_gossip_members",
		"Members this node knows, by health state (dead and left ones are kept for a while).",
		[]string{"state"}, nil)
	descSent = prometheus.NewDesc("patchmesh_gossip_sent_bytes_total",
		"Bytes this node sent on gossip, UDP and TCP, encrypted.", nil, nil)
	descReceived = prometheus.NewDesc("patchmesh_gossip_received_bytes_total",
		"Bytes this node received on gossip, UDP and TCP, encrypted.", nil, nil)
	descRejected = prometheus.NewDesc("patchmesh_gossip_rejected_total",
		"Gossip this node refused, by security event: gossip_key_fail (not encrypted with an installed key), gossip_meta_fail, gossip_name_fail.",
		[]string{"event"}, nil)
	descReconnects = prometheus.NewDesc("patchmesh_gossip_reconnects_total",
		"Joins this node made to members it holds dead and to join addresses no live member is at, which heal what memberlist alone would not (a long partition, a restarted hub), by result: joined (someone answered) or failed.",
		[]string{"result"}, nil)
	descPoolMembers = prometheus.NewDesc("patchmesh_gossip_pool_members",
		"Members each of this node's gossip pools knows, by health state; patchmesh_gossip_members merges the pools.",
		[]string{"pool", "state"}, nil)
	descPoolSent = prometheus.NewDesc("patchmesh_gossip_pool_sent_bytes_total",
		"Bytes this node sent on gossip, UDP and TCP, encrypted, by pool.", []string{"pool"}, nil)
	descPoolReceived = prometheus.NewDesc("patchmesh_gossip_pool_received_bytes_total",
		"Bytes this node received on gossip, UDP and TCP, encrypted, by pool.", []string{"pool"}, nil)
	descPoolRejected = prometheus.NewDesc("patchmesh_gossip_pool_rejected_total",
		"Gossip this node refused, by pool and security event.", []string{"pool", "event"}, nil)
	descPoolReconnects = prometheus.NewDesc("patchmesh_gossip_pool_reconnects_total",
		"Joins this node made to members it holds dead and to join addresses no live member is at, by pool and result.", []string{"pool", "result"}, nil)
)

// rejectEvents are the security events counted, in the order exported.
var rejectEvents = []string{EventKeyFail, EventMetaFail, EventNameFail}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descMembers
	ch <- descSent
	ch <- descReceived
	ch <- descRejected
	ch <- descReconnects
	ch <- descPoolMembers
	ch <- descPoolSent
	ch <- descPoolReceived
	ch <- descPoolRejected
	ch <- descPoolReconnects
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	s := c.t.Stats()
	for _, state := range States {
		ch <- prometheus.MustNewConstMetric(descMembers, prometheus.GaugeValue, float64(s.Members[state]), state)
	}
	ch <- prometheus.MustNewConstMetric(descSent, prometheus.CounterValue, float64(s.SentBytes))
	ch <- prometheus.MustNewConstMetric(descReceived, prometheus.CounterValue, float64(s.ReceivedBytes))
	for _, code := range rejectEvents {
		ch <- prometheus.MustNewConstMetric(descRejected, prometheus.CounterValue, float64(s.Rejected[code]), code)
	}
	ch <- prometheus.MustNewConstMetric(descReconnects, prometheus.CounterValue, float64(s.Reconnected), "joined")
	ch <- prometheus.MustNewConstMetric(descReconnects, prometheus.CounterValue, float64(s.ReconnectFailed), "failed")
	for _, p := range s.Pools {
		for _, state := range States {
			ch <- prometheus.MustNewConstMetric(descPoolMembers, prometheus.GaugeValue, float64(p.Members[state]), p.Name, state)
		}
		ch <- prometheus.MustNewConstMetric(descPoolSent, prometheus.CounterValue, float64(p.SentBytes), p.Name)
		ch <- prometheus.MustNewConstMetric(descPoolReceived, prometheus.CounterValue, float64(p.ReceivedBytes), p.Name)
		for _, code := range rejectEvents {
			ch <- prometheus.MustNewConstMetric(descPoolRejected, prometheus.CounterValue, float64(p.Rejected[code]), p.Name, code)
		}
		ch <- prometheus.MustNewConstMetric(descPoolReconnects, prometheus.CounterValue, float64(p.Reconnected), p.Name, "joined")
		ch <- prometheus.MustNewConstMetric(descPoolReconnects, prometheus.CounterValue, float64(p.ReconnectFailed), p.Name, "failed")
	}
}
