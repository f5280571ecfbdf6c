package meshtest

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
)

// A test proxy stands between two nodes, in the test process, as a hostile
// or slow network or a lying relay would. Under Mesh.MTLS a proxy that
// forwards HTTP cannot sit on a mutual TLS connection unseen, so it plays
// what can: an admitted node that alters what it passes on. It serves the
// downstream over mutual TLS with the harness's certificate (every node
// pins the harness's key, and the hub admits it) and reaches the upstream's
// peer listener with the same certificate. What a downstream must catch
// (an altered record or blob, a withheld or replayed one) is then caught
// by the signatures and digests, not by the TLS in between.

// ProxyTarget is where a test proxy in front of n forwards to, and the
// transport to forward with: n's peer listener with the harness's
// certificate under Mesh.MTLS, n's URL and the default transport otherwise.
func (m *Mesh) ProxyTarget(t testing.TB, n *Node) (*url.URL, http.RoundTripper) {
	t.Helper()
	base, rt := n.URL, http.DefaultTransport
	if m.MTLS && n.PeerURL != "" {
		base = n.PeerURL
		rt = &http.Transport{TLSClientConfig: m.harnessTLS(), ForceAttemptHTTP2: false}
	}
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("meshtest: %v", err)
	}
	return u, rt
}

// ServeProxy serves h, a test proxy between nodes, until the test ends and
// returns its URL for a downstream's link: https with the harness's
// certificate, client certificates required, under Mesh.MTLS; plain http
// otherwise.
func (m *Mesh) ServeProxy(t testing.TB, h http.Handler) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	if m.MTLS {
		srv.TLS = m.harnessTLS()
		// Whose certificate the downstream presents is the upstream's to
		// judge: the proxy passes it on as the harness's.
		srv.TLS.ClientAuth = tls.RequireAnyClientCert
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	return srv.URL
}

// harnessTLS presents the harness's certificate. It does not check the
// other side's: the harness talks only to processes it started.
func (m *Mesh) harnessTLS() *tls.Config {
	m.mu.Lock()
	cert := m.harnessCert
	m.mu.Unlock()
	return &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{*cert}, InsecureSkipVerify: true}
}
