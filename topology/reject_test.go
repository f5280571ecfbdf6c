package topology

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"testing"
)

// seal encrypts msg as memberlist's version 1 does: [1][nonce][AES-GCM].
func seal(t testing.TB, key, msg, aad []byte) []byte {
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]byte, 1+encNonce, 1+encNonce+len(msg)+encTag)
	out[0] = 1
	if _, err := rand.Read(out[1 : 1+encNonce]); err != nil {
		t.Fatal(err)
	}
	return gcm.Seal(out, out[1:1+encNonce], msg, aad)
}

type keys [][]byte

func (k keys) GetKeys() [][]byte { return k }

func TestDecryptsAcceptsAnyInstalledKeyOnly(t *testing.T) {
	old, cur, other := key(t), key(t), key(t)
	pkt := seal(t, old, []byte("ping"), nil)
	if err := decrypts([][]byte{cur, old}, pkt, nil); err != nil {
		t.Errorf("sealed with the second installed key: %v", err)
	}
	for _, tc := range []struct {
		name    string
		keys    [][]byte
		payload []byte
	}{
		{"another key", [][]byte{cur, other}, pkt},
		{"plaintext", [][]byte{cur, old}, append([]byte{4}, make([]byte, 40)...)},
		{"too short", [][]byte{cur, old}, pkt[:20]},
		{"empty", [][]byte{cur, old}, nil},
		{"tampered", [][]byte{cur, old}, append(pkt[:len(pkt)-1:len(pkt)-1], pkt[len(pkt)-1]^1)},
	} {
		if err := decrypts(tc.keys, tc.payload, nil); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
}

func TestStreamTapChecksTheFirstMessage(t *testing.T) {
	k := key(t)
	stream := func(sealWith []byte) []byte {
		body := []byte("push-pull state")
		n := 1 + encNonce + len(body) + encTag
		hdr := []byte{streamEncryptMsg, 0, 0, 0, 0}
		binary.BigEndian.PutUint32(hdr[1:], uint32(n))
		return append(hdr, seal(t, sealWith, body, hdr)...)
	}
	for _, tc := range []struct {
		name  string
		bytes []byte
		ok    bool
	}{
		{"right key", stream(k), true},
		{"wrong key", stream(key(t)), false},
		{"plaintext", []byte{6, 1, 2, 3, 4, 5, 6, 7}, false},
	} {
		var got error
		called := 0
		tap := &streamTap{keys: keys{k}, check: func(err error) { got = err; called++ }}
		done := false
		// In small reads, as bufio may hand them over.
		for i := 0; i < len(tc.bytes) && !done; i += 3 {
			done = tap.feed(tc.bytes[i:min(i+3, len(tc.bytes))])
		}
		if !done || called != 1 {
			t.Errorf("%s: done=%v after the whole message, check called %d times; want done, once", tc.name, done, called)
			continue
		}
		if (got == nil) != tc.ok {
			t.Errorf("%s: check got %v, want ok=%v", tc.name, got, tc.ok)
		}
	}
	// A message over the copy limit is left to memberlist.
	big := []byte{streamEncryptMsg, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(big[1:], streamCheckMax+1)
	tap := &streamTap{keys: keys{k}, check: func(err error) { t.Errorf("checked an oversized message: %v", err) }}
	if !tap.feed(big) {
		t.Error("the tap kept copying a message over streamCheckMax")
	}
}

func TestCheckMeta(t *testing.T) {
	for _, tc := range []struct {
		name, meta string
		ok         bool
	}{
		{"empty", ``, true},
		{"own name", `{"n":"a","api":"https://a.example:8443","u":{"stable":"http://hub.example"}}`, true},
		{"garbled", `{"n":`, false},
		{"another name", `{"n":"b"}`, false},
		{"ftp api", `{"n":"a","api":"ftp://a.example"}`, false},
		{"credentials", `{"n":"a","api":"https://u:p@a.example"}`, false},
		{"bad upstream", `{"n":"a","up":"file:///etc/passwd"}`, false},
		{"peer port", `{"n":"a","api":"http://10.0.0.5:8080","p":":8444"}`, true},
		{"peer URL", `{"n":"a","api":"http://10.0.0.5:8080","p":"https://peer.example:8444"}`, true},
		{"peer port without api", `{"n":"a","p":":8444"}`, false},
		{"plain http peer", `{"n":"a","api":"http://a.example","p":"http://a.example:8444"}`, false},
		{"peer with a path", `{"n":"a","p":"https://a.example:8444/v1/sync"}`, false},
		{"peer without port", `{"n":"a","p":"https://a.example"}`, false},
		{"peer without host", `{"n":"a","p":"https://:8444"}`, false},
	} {
		err := CheckMeta("a", []byte(tc.meta))
		if (err == nil) != tc.ok {
			t.Errorf("%s: got %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

// One cache serves a transport for its life: a key rotated out no longer
// opens a packet though its cipher is still cached, and the cache stays
// bounded however many keys come and go.
func TestGCMCacheFollowsTheInstalledKeys(t *testing.T) {
	old, cur := key(t), key(t)
	pkt := seal(t, old, []byte("ping"), nil)
	var g gcmCache
	for range 2 {
		if err := g.decrypts([][]byte{cur, old}, pkt, nil); err != nil {
			t.Fatalf("sealed with an installed key: %v", err)
		}
	}
	if err := g.decrypts([][]byte{cur}, pkt, nil); err == nil {
		t.Error("opened with a key no longer installed")
	}
	if err := g.decrypts([][]byte{cur}, append(pkt[:len(pkt)-1:len(pkt)-1], pkt[len(pkt)-1]^1), nil); err == nil {
		t.Error("accepted a tampered packet")
	}
	for range 3 * gcmCacheMax {
		g.decrypts([][]byte{key(t)}, pkt, nil)
	}
	if len(g.aeads) > gcmCacheMax {
		t.Errorf("%d ciphers cached, want at most %d", len(g.aeads), gcmCacheMax)
	}
	if err := g.decrypts([][]byte{old}, pkt, nil); err != nil {
		t.Errorf("after the cache started again: %v", err)
	}
}

// BenchmarkPacketCheck is the transport's check of one gossip packet of
// typical size (a probe with piggybacked gossip) with two installed keys,
// the packet sealed with the second: the worst case during a rotation.
// cached is the transport's own (a gcmCache for its life), fresh builds
// the ciphers for every packet.
func BenchmarkPacketCheck(b *testing.B) {
	k1, k2 := make([]byte, 32), make([]byte, 32)
	rand.Read(k1)
	rand.Read(k2)
	pkt := seal(b, k2, make([]byte, 300), nil)
	ks := [][]byte{k1, k2}
	b.Run("cached", func(b *testing.B) {
		var g gcmCache
		b.SetBytes(int64(len(pkt)))
		b.ReportAllocs()
		for b.Loop() {
			if err := g.decrypts(ks, pkt, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("fresh", func(b *testing.B) {
		b.SetBytes(int64(len(pkt)))
		b.ReportAllocs()
		for b.Loop() {
			if err := decrypts(ks, pkt, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
}
