package topology

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
)

func manyTiers(n int) []string {
	var tiers []string
	for i := range n {
		tiers = append(tiers, fmt.Sprintf("tier-%03d", i))
	}
	return tiers
}

func TestMetaEncode(t *testing.T) {
	full := Meta{Name: "edge-7", Role: "edge", DC: "fra1", API: "https://edge-7.fra1.example:8443",
		Upstream: "https://relay-1.fra1.example:8443",
		Tiers:    []string{"stable", "beta", "canary"}, Version: "v1.2.3"}
	tests := []struct {
		name    string
		meta    Meta
		tooLong bool
	}{
		{"empty", Meta{}, false},
		{"full", full, false},
		{"thirty tiers", Meta{Name: "n", Tiers: manyTiers(30)}, false},
		{"hundred tiers", Meta{Name: "n", Tiers: manyTiers(100)}, true},
		{"long API URL", Meta{API: "https://" + strings.Repeat("x", 520)}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := tc.meta.Encode()
			if tc.tooLong {
				if !errors.Is(err, ErrMetaTooLarge) || b != nil {
					t.Fatalf("want ErrMetaTooLarge and no bytes, got %d bytes, %v", len(b), err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(b) > MetaMaxSize {
				t.Fatalf("encoded %d bytes, over %d", len(b), MetaMaxSize)
			}
			got, err := DecodeMeta(b)
			if err != nil {
				t.Fatal(err)
			}
			if got.Name != tc.meta.Name || got.API != tc.meta.API || got.Upstream != tc.meta.Upstream ||
				!slices.Equal(got.Tiers, tc.meta.Tiers) ||
				got.Version != tc.meta.Version || got.Role != tc.meta.Role || got.DC != tc.meta.DC {
				t.Errorf("round trip: want %+v, got %+v", tc.meta, got)
			}
		})
	}
}

func TestMetaPeerURLIsCompactOnTheAPIHost(t *testing.T) {
	for _, tc := range []struct {
		name, api, peer, wire string
	}{
		{"same host", "http://10.0.0.5:8080", "https://10.0.0.5:8444", `"p":":8444"`},
		{"same host, trailing slash", "http://edge.example:8080", "https://edge.example:8444/", `"p":":8444"`},
		{"IPv6", "http://[::1]:8080", "https://[::1]:8444", `"p":":8444"`},
		{"IPv6 with a zone", "http://[fe80::1%25eth0]:8080", "https://[fe80::1%25eth0]:8444", `"p":":8444"`},
		{"other host", "http://10.0.0.5:8080", "https://10.1.0.5:8444", `"p":"https://10.1.0.5:8444"`},
		{"none", "http://10.0.0.5:8080", "", ``},
	} {
		b, err := Meta{Name: "a", API: tc.api, Peer: tc.peer}.Encode()
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if tc.wire != "" && !bytes.Contains(b, []byte(tc.wire)) || tc.wire == "" && bytes.Contains(b, []byte(`"p"`)) {
			t.Errorf("%s: encoded %s, want it to carry %s", tc.name, b, tc.wire)
		}
		if err := CheckMeta("a", b); err != nil {
			t.Errorf("%s: own encoding refused: %v", tc.name, err)
		}
		m, err := DecodeMeta(b)
		if want := strings.TrimSuffix(tc.peer, "/"); err != nil || m.Peer != want {
			t.Errorf("%s: decoded peer %q (%v), want %q", tc.name, m.Peer, err, want)
		}
	}
}

func TestDecodeMetaIgnoresUnknownKeysAndRefusesGarbage(t *testing.T) {
	m, err := DecodeMeta([]byte(`{"n":"a","r":"hub","new":1}`))
	if err != nil || m.Name != "a" || m.Role != "hub" {
		t.Errorf("unknown key: got %+v, %v", m, err)
	}
	if _, err := DecodeMeta([]byte("\x00garbage")); err == nil {
		t.Error("garbage: want an error")
	}
}

func TestParseKeys(t *testing.T) {
	k16, k32 := bytes.Repeat([]byte{1}, 16), bytes.Repeat([]byte{2}, 32)
	e16, e32 := base64.StdEncoding.EncodeToString(k16), base64.StdEncoding.EncodeToString(k32)
	tests := []struct {
		name    string
		in      string
		want    [][]byte
		wantErr bool
	}{
		{"one", e32, [][]byte{k32}, false},
		{"comma separated, primary first", e32 + "," + e16, [][]byte{k32, k16}, false},
		{"file with newlines, spaces and blank lines", "\n " + e16 + " \r\n\n" + e32 + "\n", [][]byte{k16, k32}, false},
		{"empty", " \n, ", nil, true},
		{"not base64", e32 + ",not*base64", nil, true},
		{"wrong length", base64.StdEncoding.EncodeToString(make([]byte, 20)), nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseKeys(tc.in)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("want an error, got %d keys", len(got))
				}
				if strings.Contains(err.Error(), "base64*") || strings.Contains(err.Error(), e32) {
					t.Errorf("error echoes key material: %v", err)
				}
				return
			}
			if err != nil || !slices.EqualFunc(got, tc.want, bytes.Equal) {
				t.Errorf("want %d keys %x, got %x, %v", len(tc.want), tc.want, got, err)
			}
		})
	}
	if _, err := ParseKeys(""); !errors.Is(err, ErrNoKeys) {
		t.Errorf("empty: want ErrNoKeys, got %v", err)
	}
}

func TestNewKey(t *testing.T) {
	a, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewKey()
	if len(a) != 32 || bytes.Equal(a, b) {
		t.Errorf("want two different 32-byte keys, got %x and %x", a, b)
	}
	if _, err := ParseKeys(base64.StdEncoding.EncodeToString(a)); err != nil {
		t.Errorf("a new key does not parse back: %v", err)
	}
}

func TestMetaAdvertisesEveryLinksUpstreamCompactly(t *testing.T) {
	one := Meta{Name: "e", Tiers: []string{"stable"}, Upstream: "https://r.example",
		Upstreams: map[string]string{"stable": "https://r.example"}}
	two := Meta{Name: "e", Tiers: []string{"stable", "beta"}, Upstream: "https://r.example",
		Upstreams: map[string]string{"stable": "https://r.example", "beta": "https://hub.example"}}
	for _, tc := range []struct {
		name   string
		m      Meta
		withU  bool
		byTier map[string]string
	}{
		{"one link says it in up alone", one, false, map[string]string{"stable": "https://r.example"}},
		{"two links need u", two, true, map[string]string{"stable": "https://r.example", "beta": "https://hub.example"}},
	} {
		b, err := tc.m.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(string(b), `"u":`); got != tc.withU {
			t.Errorf("%s: %s has u: %v, want %v", tc.name, b, got, tc.withU)
		}
		back, err := DecodeMeta(b)
		if err != nil {
			t.Fatal(err)
		}
		if got := back.UpstreamsByTier(); !maps.Equal(got, tc.byTier) {
			t.Errorf("%s: decoded upstreams by tier %v, want %v", tc.name, got, tc.byTier)
		}
	}
	if got := (Meta{Name: "hub", Tiers: []string{"stable"}}).UpstreamsByTier(); len(got) != 0 {
		t.Errorf("hub: upstreams by tier %v, want none", got)
	}
}
