package topology

import (
	"bytes"
	"net/url"
	"testing"
)

// metaSeeds are members' meta as Encode writes it (a hub, an edge with
// one link and a compact peer URL, a relay with two links) and some that
// CheckMeta must refuse.
func metaSeeds(t testing.TB) [][]byte {
	t.Helper()
	var out [][]byte
	for _, m := range []Meta{
		{Name: "hub", Role: "hub", DC: "fra1", API: "https://hub.fra1.example:8443", Peer: "https://hub.fra1.example:9443",
			Tiers: []string{"stable", "beta"}, Version: "v1.2.3", Key: "0123456789abcdef"},
		{Name: "edge-7", Role: "edge", DC: "fra1", API: "https://edge-7.fra1.example:8443", Peer: "https://edge-7.fra1.example:9443",
			Upstream: "https://relay-1.fra1.example:8443",
			Tiers:    []string{"stable"}, Version: "v1.2.3"},
		{Name: "relay-1", Role: "relay", DC: "ams1", API: "https://[2001:db8::1]:8443", Peer: "https://[2001:db8::1]:9443",
			Upstream: "https://hub.fra1.example:8443", Upstreams: map[string]string{"stable": "https://hub.fra1.example:8443",
				"beta": "https://hub-2.fra1.example:8443"}, Tiers: []string{"stable", "beta"}},
	} {
		b, err := m.Encode()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return append(out,
		[]byte(`{"n":"other","r":"edge"}`),
		// An older node's meta, with progress figures.
		[]byte(`{"n":"edge-8","r":"edge","h":42,"s":41,"l":1,"t":["stable"]}`),
		[]byte(`{"n":"edge-7","api":"https://u:p@edge-7.example"}`),
		[]byte(`{"n":"edge-7","api":"ftp://edge-7.example"}`),
		[]byte(`{"n":"edge-7","p":":9443"}`),
		[]byte(`{"n":"edge-7","api":"https://[fe80::1%25eth0]:8443","p":"https://[fe80::1%25eth0]:9443"}`),
		[]byte(`{"n":"edge-7","p":"http://edge-7.example:9443/x"}`),
		[]byte(`{"n":"edge-7","u":{"stable":""},"t":["stable"]}`),
		[]byte(`{"n":1}`), []byte("\x00garbage"), nil)
}

// FuzzCheckMeta: a member's gossip meta as every node reads it (CheckMeta,
// which memberlist's merge and alive delegates ask, then DecodeMeta).
// Nothing panics; meta that is accepted names the member (or no one) and
// holds only base URLs a node may dial; and what is accepted, encoded
// again as a node advertises it, is accepted again and encodes the same
// after another round trip, so that a member's view does not drift.
func FuzzCheckMeta(f *testing.F) {
	for _, b := range metaSeeds(f) {
		f.Add("edge-7", b)
	}
	f.Fuzz(func(t *testing.T, name string, b []byte) {
		m, derr := DecodeMeta(b)
		err := CheckMeta(name, b)
		if derr != nil {
			if err == nil {
				t.Fatalf("CheckMeta accepted meta that does not decode: %v", derr)
			}
			return
		}
		_ = m.UpstreamsByTier()
		if err != nil {
			return
		}
		if m.Name != "" && m.Name != name {
			t.Fatalf("accepted meta naming %q for member %q", m.Name, name)
		}
		for _, u := range []string{m.API, m.Upstream} {
			if u == "" {
				continue
			}
			if pu, err := url.Parse(u); err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" || pu.User != nil {
				t.Fatalf("accepted meta with URL %q", u)
			}
		}
		if m.Peer != "" {
			if pu, err := url.Parse(m.Peer); err != nil || pu.Scheme != "https" || pu.Port() == "" || pu.User != nil {
				t.Fatalf("accepted meta with peer URL %q", m.Peer)
			}
		}
		enc, err := m.Encode()
		if err != nil {
			return // too large once compacted differently: the sender keeps its last good meta
		}
		if err := CheckMeta(name, enc); err != nil {
			t.Fatalf("accepted meta, encoded again (%s), is refused: %v", enc, err)
		}
		m2, err := DecodeMeta(enc)
		if err != nil {
			t.Fatalf("accepted meta, encoded again (%s), does not decode: %v", enc, err)
		}
		if enc2, err := m2.Encode(); err != nil || !bytes.Equal(enc, enc2) {
			t.Fatalf("meta drifts between round trips:\n%s\n%s (%v)", enc, enc2, err)
		}
	})
}
