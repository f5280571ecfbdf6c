package node

import (
	"context"
	"encoding/base64"
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/topology"
)

type acceptCounter struct {
	net.Listener
	n *atomic.Int64
}

func (l acceptCounter) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// The hooks bench/meshsim runs many nodes in one process with: the
// listener wrap sees the node's connections, the member watch hears a
// crashed node go dead (not left), and Crash ends Run at once.
func TestHarnessHooksWrapWatchAndCrash(t *testing.T) {
	key, err := topology.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	keys := []string{base64.StdEncoding.EncodeToString(key)}
	hubCfg := testConfig(t)
	hubCfg.Node.Name = "hub-1"
	hubCfg.Gossip.Bind, hubCfg.Gossip.Profile, hubCfg.Gossip.Keys = freeGossipAddr(t, "127.0.0.1"), "local", keys
	var accepted atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hub, err := New(ctx, hubCfg, nil, WithListener(func(l net.Listener) net.Listener { return acceptCounter{l, &accepted} }))
	if err != nil {
		t.Fatal(err)
	}
	hubDone := make(chan error, 1)
	go func() { hubDone <- hub.Run(ctx) }()

	var mu sync.Mutex
	heard := map[string]string{} // hub-1's last state as edge-1 heard it
	peerCfg := testConfig(t)
	peerCfg.Node.Name = "hub-2" // a second lone hub: no sync link needed
	peerCfg.Gossip.Bind, peerCfg.Gossip.Profile, peerCfg.Gossip.Keys = freeGossipAddr(t, "127.0.0.1"), "local", keys
	peerCfg.Gossip.Join = []string{hubCfg.Gossip.Bind}
	peer, err := New(ctx, peerCfg, nil, WithMemberWatch(func(m topology.Member) {
		mu.Lock()
		heard[m.Name] = m.State
		mu.Unlock()
	}))
	if err != nil {
		t.Fatal(err)
	}
	peerDone := make(chan error, 1)
	go func() { peerDone <- peer.Run(ctx) }()
	defer func() {
		cancel()
		<-peerDone
	}()

	resp, err := http.Get(hub.URL() + "/debug/info")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if accepted.Load() == 0 {
		t.Errorf("WithListener: want the wrapped listener to accept the request's connection, got none")
	}
	state := func() string {
		mu.Lock()
		defer mu.Unlock()
		return heard["hub-1"]
	}
	if !waitFor(func() bool { return state() == topology.Alive }, 10*time.Second) {
		t.Fatalf("WithMemberWatch: want hub-1 heard alive, got %q", state())
	}
	if len(peer.Members()) != 2 || peer.GossipStats().SentBytes == 0 {
		t.Errorf("peer: want 2 members and gossip sent, got %+v and %+v", peer.Members(), peer.GossipStats())
	}

	hub.Crash()
	select {
	case err := <-hubDone:
		if !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Run after Crash: want an error wrapping http.ErrServerClosed, got %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10s of Crash")
	}
	if !waitFor(func() bool { return state() == topology.Dead }, 20*time.Second) {
		t.Fatalf("after Crash: want hub-1 heard dead (not left), got %q", state())
	}
}
