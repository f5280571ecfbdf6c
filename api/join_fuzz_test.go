package api

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/federation"
	"github.com/patchmesh/patchmesh/store"
)

// The join's messages as the hub reads them, fuzzed over one fixed
// exchange: a token, the node key that started the session over TLS, and
// both nonces. Everything is fixed so that the committed seeds
// (testdata/fuzz) hold the one right answer.
var (
	joinT0       = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	joinNodeKey  = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{3}, ed25519.SeedSize)).Public().(ed25519.PublicKey)
	joinOtherKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{4}, ed25519.SeedSize)).Public().(ed25519.PublicKey)
	joinHubKeyID = federation.KeyID(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{5}, ed25519.SeedSize)).Public().(ed25519.PublicKey))
	joinSecret   = strings.Repeat("c2VjcmV0", 5) + "abc" // 43 characters of base64url: 32 bytes
)

const (
	joinTokenID   = "0123456789abcdef"
	joinNodeNonce = "bm9kZS1ub25jZS1mb3ItdGhlLWZ1enotdGFyZ2V0cw"
	joinHubNonce  = "aHViLW5vbmNlLWZvci10aGUtZnV6ei10YXJnZXRzLg"
)

func fuzzJoinSession() *joinSession {
	return &joinSession{token: store.JoinToken{ID: joinTokenID, MACKey: federation.JoinMACKey(joinSecret)},
		nodeKey: joinNodeKey, nodeNonce: joinNodeNonce, hubNonce: joinHubNonce, expires: joinT0.Add(JoinSessionTTL)}
}

// joinAnswer is the node's right MAC for the fixed exchange.
func joinAnswer() []byte {
	return federation.JoinMAC(federation.JoinMACKey(joinSecret), federation.JoinRoleNode, joinTokenID, joinNodeNonce, joinHubNonce,
		federation.KeyID(joinNodeKey), joinHubKeyID)
}

func joinStartSeeds(t testing.TB) [][]byte {
	t.Helper()
	real, err := json.Marshal(federation.JoinStart{Token: joinTokenID, Nonce: joinNodeNonce})
	if err != nil {
		t.Fatal(err)
	}
	return [][]byte{real,
		[]byte(`{"token":"0123456789abcdef","nonce":"short"}`),
		[]byte(`{"token":"0123456789abcdef","nonce":"bm9uY2Ugd2l0aAphIG5ld2xpbmUgaW4gaXQu\n"}`),
		[]byte(`{"token":"0123456789abcdef","nonce":"` + joinNodeNonce + `","nonce":"` + joinNodeNonce + `"}`),
		[]byte(`{"token":"0123456789abcdef","nonce":"` + joinNodeNonce + `","extra":1}`),
		[]byte(`{"token":1}`), []byte(`null`), []byte(``),
	}
}

func joinFinishSeeds(t testing.TB) [][]byte {
	t.Helper()
	var out [][]byte
	wrong := joinAnswer()
	wrong[0] ^= 1
	for _, f := range []federation.JoinFinish{
		{Session: "c2Vzc2lvbi1pZC0xMjM0NQ", MAC: joinAnswer(), URL: "https://edge-1.example:8443", PeerURL: "https://edge-1.example:9443"},
		{Session: "c2Vzc2lvbi1pZC0xMjM0NQ", MAC: wrong, URL: "https://edge-1.example:8443"},
		{Session: "c2Vzc2lvbi1pZC0xMjM0NQ", MAC: joinAnswer()[:16]},
	} {
		b, err := json.Marshal(f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return append(out, []byte(`{"session":"x","mac":"not base64!"}`), []byte(`{"mac":null}`), []byte(`{"session":"x","session":"y"}`))
}

// joinNonceRule is what ValidNonce allows, written apart to check it by.
var joinNonceRule = regexp.MustCompile(`^[A-Za-z0-9_-]{16,128}$`)

func postJoin(path string, body []byte) *http.Request {
	r := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	return r
}

// FuzzJoinStart: the hub reads a node's first join message (readJoinStart)
// without panicking, refuses what it refuses as a client error, and
// accepts only one strict JSON object whose nonce, which goes into both
// MACs, holds nothing but the characters of its rule.
func FuzzJoinStart(f *testing.F) {
	for _, b := range joinStartSeeds(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := readJoinStart(httptest.NewRecorder(), postJoin("/v1/join/start", body), 1<<16)
		if err != nil {
			if status, _ := classify(err); status < 400 || status >= 500 {
				t.Fatalf("refusal %v classified %d, want a 4xx", err, status)
			}
			return
		}
		if !joinNonceRule.MatchString(req.Nonce) {
			t.Fatalf("accepted nonce %q", req.Nonce)
		}
		if !json.Valid(body) || checkDuplicateKeys(body) != nil {
			t.Fatalf("accepted %q, not one JSON document without duplicate keys", body)
		}
	})
}

// FuzzJoinFinish: the hub reads a node's answer as joinFinish does (strict
// JSON, then the session's check) without panicking, and admits exactly
// the right answer: the node's MAC over the fixed exchange, from the key
// that started the session, within JoinSessionTTL. Anything else is
// refused for its reason, and only a wrong MAC counts against the token.
func FuzzJoinFinish(f *testing.F) {
	for _, b := range joinFinishSeeds(f) {
		f.Add(b, int64(time.Second), false)
		f.Add(b, int64(JoinSessionTTL+time.Nanosecond), false)
		f.Add(b, int64(0), true)
	}
	right := joinAnswer()
	f.Fuzz(func(t *testing.T, body []byte, after int64, otherKey bool) {
		var req federation.JoinFinish
		if err := decodeLimited(httptest.NewRecorder(), postJoin("/v1/join/finish", body), &req, false, 1<<16); err != nil {
			if status, _ := classify(err); status < 400 || status >= 500 {
				t.Fatalf("refusal %v classified %d, want a 4xx", err, status)
			}
			return
		}
		key, now := joinNodeKey, joinT0.Add(time.Duration(after))
		if otherKey {
			key = joinOtherKey
		}
		var want string
		switch {
		case now.After(joinT0.Add(JoinSessionTTL)):
			want = "session_expired"
		case otherKey:
			want = "other_key"
		case !bytes.Equal(req.MAC, right):
			want = "bad_mac"
		}
		if got := fuzzJoinSession().check(req.MAC, key, joinHubKeyID, now); got != want {
			t.Fatalf("answer %x at +%v (other key: %v): check says %q, want %q", req.MAC, time.Duration(after), otherKey, got, want)
		}
	})
}

// The seeds are what they say: the real messages are taken, the others
// refused.
func TestJoinMessageSeeds(t *testing.T) {
	for i, b := range joinStartSeeds(t) {
		_, err := readJoinStart(httptest.NewRecorder(), postJoin("/v1/join/start", b), 1<<16)
		if (i == 0) != (err == nil) {
			t.Errorf("start seed %d (%s): %v, want it %s", i, b, err, map[bool]string{true: "taken", false: "refused"}[i == 0])
		}
	}
	for i, want := range []string{"", "bad_mac", "bad_mac"} {
		var req federation.JoinFinish
		if err := decodeLimited(httptest.NewRecorder(), postJoin("/v1/join/finish", joinFinishSeeds(t)[i]), &req, false, 1<<16); err != nil {
			t.Fatalf("finish seed %d: %v", i, err)
		}
		if got := fuzzJoinSession().check(req.MAC, joinNodeKey, joinHubKeyID, joinT0.Add(JoinSessionTTL)); got != want {
			t.Errorf("finish seed %d at the session's last instant: %q, want %q", i, got, want)
		}
	}
}
