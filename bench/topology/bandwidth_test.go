package topology_test

import (
	"context"
	"testing"
	"time"
)

// BenchmarkGossipBandwidth watches the 13-node mesh idle for -idle and
// reports what gossip cost each node on the wire, sent and received
// (patchmesh_gossip_sent_bytes_total and _received_, UDP and TCP,
// encrypted): the mean over the nodes and the busiest node, in bytes per
// second. Idle means no upload and no kill; the links' long polls are not
// gossip and are not counted.
func BenchmarkGossipBandwidth(b *testing.B) {
	x := startMesh13(b)
	all := x.all()
	read := func() (sent, recv []float64) {
		for _, n := range all {
			g, err := n.GossipView(context.Background())
			if err != nil {
				b.Fatal(err)
			}
			sent, recv = append(sent, g.SentBytes), append(recv, g.ReceivedBytes)
		}
		return sent, recv
	}
	s0, r0 := read()
	start := time.Now()
	time.Sleep(*idle)
	s1, r1 := read()
	secs := time.Since(start).Seconds()
	var sumS, sumR, maxS, maxR float64
	for i := range all {
		ds, dr := (s1[i]-s0[i])/secs, (r1[i]-r0[i])/secs
		sumS, sumR = sumS+ds, sumR+dr
		maxS, maxR = max(maxS, ds), max(maxR, dr)
		b.Logf("%s: sent %.0f B/s, received %.0f B/s", all[i].Name, ds, dr)
	}
	k := float64(len(all))
	b.ReportMetric(sumS/k, "sent-B/s/node")
	b.ReportMetric(sumR/k, "recv-B/s/node")
	b.ReportMetric(maxS, "sent-max-B/s")
	b.ReportMetric(maxR, "recv-max-B/s")
	b.Logf("%d nodes idle for %.1fs: per node sent %.0f B/s (max %.0f), received %.0f B/s (max %.0f)",
		len(all), secs, sumS/k, maxS, sumR/k, maxR)
}
