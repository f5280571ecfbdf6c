package api

import (
	"net/http"
	"testing"
)

// TestClientAddrTrustsOnlyConfiguredProxies guards clientAddr:
// X-Forwarded-For counts only from a trusted peer, and only as far left as
// trusted hops go.
func TestClientAddrTrustsOnlyConfiguredProxies(t *testing.T) {
	trusted, err := ParseTrustedProxies([]string{"10.0.0.0/8", "192.0.2.1"})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, remote, xff, want string
	}{
		{"no proxy", "198.51.100.7:4000", "", "198.51.100.7"},
		{"header from an untrusted peer is ignored", "198.51.100.7:4000", "203.0.113.1", "198.51.100.7"},
		{"one trusted proxy", "10.1.2.3:4000", "203.0.113.1", "203.0.113.1"},
		{"spoofed hop left of the real client", "10.1.2.3:4000", "6.6.6.6, 203.0.113.1", "203.0.113.1"},
		{"two trusted proxies", "192.0.2.1:4000", "203.0.113.1, 10.9.9.9", "203.0.113.1"},
		{"malformed hop stops the walk", "10.1.2.3:4000", "203.0.113.1, junk", "10.1.2.3"},
		{"trusted proxy without the header", "10.1.2.3:4000", "", "10.1.2.3"},
		{"IPv4-mapped IPv6 peer", "[::ffff:198.51.100.7]:4000", "", "198.51.100.7"},
		{"IPv6 client", "10.1.2.3:4000", "2001:db8::1", "2001:db8::1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := &http.Request{RemoteAddr: c.remote, Header: http.Header{}}
			if c.xff != "" {
				r.Header.Set("X-Forwarded-For", c.xff)
			}
			if got := clientAddr(r, trusted); got != c.want {
				t.Fatalf("want %s, got %s", c.want, got)
			}
		})
	}
	if _, err := ParseTrustedProxies([]string{"10.0.0.0/33"}); err == nil {
		t.Errorf("ParseTrustedProxies(10.0.0.0/33): want an error")
	}
}
