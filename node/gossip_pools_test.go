package node

import (
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// A region's top relay as the example file shows it: the backbone with a
// key file and wan timing, the region with its own key and the section's
// lan profile.
const poolsYAML = `
gossip:
  profile: lan
  probe_interval: 300ms
  compression: "off"
  keys: [%REGION%]
  pools:
    - name: backbone
      bind: 127.0.0.1:7946
      join: [127.0.0.2:7946]
      profile: wan
      keyring_file: %BACKBONE_FILE%
      compression: "on"
    - name: region-eu
      bind: 127.0.0.1:7947
      advertise: 10.0.0.5:7947
      join: [127.0.0.3:7947, 127.0.0.4:7947]
      suspicion_mult: 6
`

func poolsConfig(t *testing.T) (c Config, backbone, region []byte) {
	t.Helper()
	backbone, region = make([]byte, 32), make([]byte, 16)
	for i := range backbone {
		backbone[i] = byte(i)
	}
	for i := range region {
		region[i] = byte(100 + i)
	}
	file := filepath.Join(t.TempDir(), "backbone.keys")
	if err := os.WriteFile(file, []byte(base64.StdEncoding.EncodeToString(backbone)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	y := strings.NewReplacer("%REGION%", base64.StdEncoding.EncodeToString(region), "%BACKBONE_FILE%", file).Replace(poolsYAML)
	path := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return c, backbone, region
}

func TestGossipPoolsTakeTheSectionsValuesWhereEmpty(t *testing.T) {
	c, backbone, region := poolsConfig(t)
	if err := c.Validate(); err != nil {
		t.Fatalf("want the pools config valid, got %v", err)
	}
	if !c.Gossip.On() {
		t.Fatal("gossip with pools and no bind: want On")
	}
	pools, err := c.gossipPools()
	if err != nil {
		t.Fatal(err)
	}
	if len(pools) != 2 {
		t.Fatalf("want 2 pools, got %d", len(pools))
	}
	bb, eu := pools[0], pools[1]
	for _, check := range []struct {
		what      string
		got, want any
	}{
		{"backbone name", bb.Name, "backbone"},
		{"backbone bind", bb.BindAddr + ":" + strconv.Itoa(bb.BindPort), "127.0.0.1:7946"},
		{"backbone profile (its own)", bb.Profile, "wan"},
		{"backbone compression (its own)", bb.Compression, "on"},
		{"backbone probe interval (the section's)", bb.ProbeInterval, 300 * time.Millisecond},
		{"backbone keys (its file)", len(bb.Keys) == 1 && string(bb.Keys[0]) == string(backbone), true},
		{"region profile (the section's)", eu.Profile, "lan"},
		{"region compression (the section's)", eu.Compression, "off"},
		{"region suspicion (its own)", eu.SuspicionMult, 6},
		{"region keys (the section's)", len(eu.Keys) == 1 && string(eu.Keys[0]) == string(region), true},
		{"region advertise", eu.AdvertiseAddr + ":" + strconv.Itoa(eu.AdvertisePort), "10.0.0.5:7947"},
		{"region join", slices.Equal(eu.Join, []string{"127.0.0.3:7947", "127.0.0.4:7947"}), true},
	} {
		if check.got != check.want {
			t.Errorf("%s: got %v, want %v", check.what, check.got, check.want)
		}
	}
	one := Defaults()
	if one.Gossip.On() {
		t.Error("the defaults gossip: want off")
	}
	if ps, err := one.gossipPools(); err != nil || ps != nil {
		t.Errorf("one pool: want no pools listed, got %v, %v", ps, err)
	}
}

func TestGossipPoolsRejects(t *testing.T) {
	key := base64.StdEncoding.EncodeToString(make([]byte, 16))
	pool := func(name, bind string) GossipPoolConfig {
		return GossipPoolConfig{Name: name, Bind: bind, Keys: []string{key}}
	}
	tests := []struct {
		name   string
		change func(*GossipConfig)
		want   string
	}{
		{"bind beside pools", func(g *GossipConfig) { g.Bind = "127.0.0.1:7000" }, "gossip.bind: must be empty with gossip.pools"},
		{"join beside pools", func(g *GossipConfig) { g.Join = []string{"127.0.0.1:7000"} }, "gossip.join: must be empty with gossip.pools"},
		{"no name", func(g *GossipConfig) { g.Pools[0].Name = "" }, "gossip.pools[0].name"},
		{"name with a space", func(g *GossipConfig) { g.Pools[0].Name = "region eu" }, "gossip.pools[0].name"},
		{"name twice", func(g *GossipConfig) { g.Pools[1].Name = "a" }, `gossip.pools[1].name: pool "a" is listed twice`},
		{"no bind", func(g *GossipConfig) { g.Pools[1].Bind = "" }, "gossip.pools[1].bind: required"},
		{"one port for two pools", func(g *GossipConfig) { g.Pools[1].Bind = g.Pools[0].Bind }, "gossip.pools[1].bind: 127.0.0.1:7001 is already pool a's"},
		{"bad join", func(g *GossipConfig) { g.Pools[1].Join = []string{"nohost"} }, "gossip.pools[1].join[0]"},
		{"bad profile", func(g *GossipConfig) { g.Pools[0].Profile = "moon" }, "gossip.pools[0].profile"},
		{"bad compression", func(g *GossipConfig) { g.Pools[0].Compression = "lzw" }, "gossip.pools[0].compression"},
		{"negative probe", func(g *GossipConfig) { g.Pools[1].ProbeInterval = -time.Second }, "gossip.pools[1].probe_interval"},
		{"bad key", func(g *GossipConfig) { g.Pools[1].Keys = []string{"not-a-key"} }, "gossip.pools[1].keys[0]"},
		{"no key anywhere", func(g *GossipConfig) { g.Pools[1].Keys = nil }, "gossip.pools[1].keys: gossip is always encrypted"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Defaults()
			c.Gossip.Pools = []GossipPoolConfig{pool("a", "127.0.0.1:7001"), pool("b", "127.0.0.1:7002")}
			if err := c.Validate(); err != nil {
				t.Fatalf("before the change: want valid, got %v", err)
			}
			tt.change(&c.Gossip)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("want an error mentioning %q, got %v", tt.want, err)
			}
			if err != nil && strings.Contains(err.Error(), key) {
				t.Errorf("the error echoes a key: %v", err)
			}
		})
	}
}

func TestGossipPoolsRoundTripThroughYAML(t *testing.T) {
	c, _, _ := poolsConfig(t)
	c.Gossip.Pools[1].ProbeTimeout = 150 * time.Millisecond
	b, err := yaml.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	var back Config
	if err := back.decode(b); err != nil {
		t.Fatalf("decode: %v\n%s", err, b)
	}
	// Printed, as an absent list reads back empty.
	if fmt.Sprintf("%+v", back.Gossip) != fmt.Sprintf("%+v", c.Gossip) {
		t.Fatalf("gossip after a round trip:\n got %+v\nwant %+v\nyaml:\n%s", back.Gossip, c.Gossip, b)
	}
	if !strings.Contains(string(b), "probe_timeout: 150ms") {
		t.Errorf("want a pool's durations written as Go durations, got:\n%s", b)
	}
}
