package topology

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"slices"
	"strings"
	"testing"
)

func TestPeerTokenIsTheKeysHMACOfTheLabel(t *testing.T) {
	k := []byte("0123456789abcdef0123456789abcdef")
	mac := hmac.New(sha256.New, k)
	mac.Write([]byte("patchmesh peer blob v1"))
	want := "pmp_" + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
	if got := PeerToken(k); got != want {
		t.Fatalf("PeerToken: want %s, got %s", want, got)
	}
	if PeerToken(k) != PeerToken(slices.Clone(k)) {
		t.Error("PeerToken: want the same token for the same key")
	}
	other := []byte("fedcba9876543210fedcba9876543210")
	if PeerToken(other) == want {
		t.Error("PeerToken: two keys gave one token")
	}
	if strings.Contains(want, base64.StdEncoding.EncodeToString(k)) || strings.Contains(want, string(k)) {
		t.Error("PeerToken: the token carries the key")
	}
}

// The tokens follow the live keyring, primary first, so that a rotation
// changes what a node sends and accepts without a restart.
func TestPeerTokensFollowTheKeyring(t *testing.T) {
	k1, k2 := key(t), key(t)
	top := start(t, fast(t, "peer-a", [][]byte{k1}))
	if got, want := top.PeerTokens(), []string{PeerToken(k1)}; !slices.Equal(got, want) {
		t.Fatalf("one key: want %v, got %v", want, got)
	}
	if err := top.InstallKey(k2); err != nil {
		t.Fatal(err)
	}
	if err := top.UseKey(k2); err != nil {
		t.Fatal(err)
	}
	got := top.PeerTokens()
	if len(got) != 2 || got[0] != PeerToken(k2) || !slices.Contains(got, PeerToken(k1)) {
		t.Fatalf("after UseKey(k2): want k2's token first and k1's after, got %v", got)
	}
	if err := top.RemoveKey(k1); err != nil {
		t.Fatal(err)
	}
	if got, want := top.PeerTokens(), []string{PeerToken(k2)}; !slices.Equal(got, want) {
		t.Fatalf("after RemoveKey(k1): want %v, got %v", want, got)
	}
}
