package federation

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode"
)

// The hub's answers to a joining node, fuzzed as Join reads them
// (readJoinAnswer, then checkChallenge or checkJoinResult) over one fixed
// exchange, so that the committed seeds hold the right answers.
var (
	joinHub       = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{5}, ed25519.SeedSize))
	joinHubPub    = joinHub.Public().(ed25519.PublicKey)
	joinNodeKeyID = KeyID(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{3}, ed25519.SeedSize)).Public().(ed25519.PublicKey))
	joinMACKey    = JoinMACKey(strings.Repeat("c2VjcmV0", 5) + "abc")
)

const (
	joinTokenID   = "0123456789abcdef"
	joinNodeNonce = "bm9kZS1ub25jZS1mb3ItdGhlLWZ1enotdGFyZ2V0cw"
	joinHubNonce  = "aHViLW5vbmNlLWZvci10aGUtZnV6ei10YXJnZXRzLg"
)

func hubMAC(nonce string) []byte {
	return JoinMAC(joinMACKey, JoinRoleHub, joinTokenID, joinNodeNonce, nonce, joinNodeKeyID, KeyID(joinHubPub))
}

// joinRefusals are the hub's error answers, as api writes them, and some
// an impostor on the path might: a long one, one with terminal escapes.
func joinRefusals() [][]byte {
	return [][]byte{
		[]byte(`{"error":{"code":"unauthorized","message":"join refused: unknown, used, expired or dead token, or a wrong answer"}}`),
		[]byte(`{"error":{"code":"too_many_requests","message":"at most 10 join attempts a minute from one address"}}`),
		[]byte(`{"error":{"code":"unauthorized\u001b[2J","message":"` + strings.Repeat(`\u001b]0;pwned\u0007`, 40) + `"}}`),
		[]byte(`not json`),
	}
}

func joinChallengeSeeds(t testing.TB) [][]byte {
	t.Helper()
	var out [][]byte
	for _, ch := range []JoinChallenge{
		{Session: "c2Vzc2lvbi1pZC0xMjM0NQ", Nonce: joinHubNonce, MAC: hubMAC(joinHubNonce)},
		{Session: "c2Vzc2lvbi1pZC0xMjM0NQ", Nonce: joinHubNonce, MAC: hubMAC(joinNodeNonce)},
		{Session: "c2Vzc2lvbi1pZC0xMjM0NQ", Nonce: joinHubNonce + "\n" + joinHubNonce, MAC: hubMAC(joinHubNonce + "\n" + joinHubNonce)},
	} {
		b, err := json.Marshal(ch)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return append(out, []byte(`{}`), []byte(`{"mac":"!!"}`))
}

func joinResultSeeds(t testing.TB) [][]byte {
	t.Helper()
	edge := FormatPublicKey(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{6}, ed25519.SeedSize)).Public().(ed25519.PublicKey))
	signing := FormatPublicKey(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize)).Public().(ed25519.PublicKey))
	var out [][]byte
	for _, r := range []JoinResult{
		{Name: "edge-1", Tiers: []string{"stable", "beta"}, Hub: "hub", HubKey: FormatPublicKey(joinHubPub), SigningKey: signing,
			Pins: []string{FormatPublicKey(joinHubPub), edge}},
		{Name: "edge-1", Tiers: []string{}, Hub: "hub", HubKey: FormatPublicKey(joinHubPub), Pins: []string{}},
		{Name: "edge-1", Hub: "hub", HubKey: edge},
		{Name: "edge 1\x1b[2J", Hub: "hub", HubKey: FormatPublicKey(joinHubPub)},
		{Name: "edge-1", Hub: "hub", HubKey: FormatPublicKey(joinHubPub), Pins: []string{"ed25519:short"}},
	} {
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// checkJoinError: whatever the hub answers, an error Join returns for it
// names the refusal as ErrBadJoin, and holds no control character (it
// reaches the operator's terminal) and nothing unbounded.
func checkJoinError(t *testing.T, status int, err error) {
	t.Helper()
	if status != 200 && !errors.Is(err, ErrBadJoin) {
		t.Fatalf("status %d: error %v does not wrap ErrBadJoin", status, err)
	}
	if msg := err.Error(); strings.ContainsFunc(msg, unicode.IsControl) || len(msg) > 1024 {
		t.Fatalf("error of %d bytes with control characters or unbounded: %q", len(msg), msg)
	}
}

// FuzzJoinChallenge: a joining node reads the hub's challenge without
// panicking and answers only a challenge that carries the hub's MAC over
// the exchange and a nonce of the nonce rule.
func FuzzJoinChallenge(f *testing.F) {
	for _, b := range joinChallengeSeeds(f) {
		f.Add(200, b)
	}
	for _, b := range joinRefusals() {
		f.Add(401, b)
	}
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		var ch JoinChallenge
		if err := readJoinAnswer(status, body, &ch); err != nil {
			checkJoinError(t, status, err)
			return
		}
		if status != 200 {
			t.Fatalf("status %d read as an answer", status)
		}
		err := checkChallenge(ch, joinMACKey, joinTokenID, joinNodeNonce, joinNodeKeyID, KeyID(joinHubPub))
		if err != nil {
			checkJoinError(t, status, err)
			return
		}
		if ValidNonce(ch.Nonce) != nil || !bytes.Equal(ch.MAC, hubMAC(ch.Nonce)) {
			t.Fatalf("answered a challenge with nonce %q and MAC %x", ch.Nonce, ch.MAC)
		}
	})
}

// FuzzJoinResult: a joining node reads the hub's result without
// panicking and keeps only one whose hub key is the key the token named,
// whose names and tiers the catalog allows and whose keys parse.
func FuzzJoinResult(f *testing.F) {
	for _, b := range joinResultSeeds(f) {
		f.Add(200, b)
	}
	for _, b := range joinRefusals() {
		f.Add(403, b)
	}
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		var res JoinResult
		if err := readJoinAnswer(status, body, &res); err != nil {
			checkJoinError(t, status, err)
			return
		}
		if err := checkJoinResult(res, KeyID(joinHubPub)); err != nil {
			checkJoinError(t, status, err)
			return
		}
		if pub, err := ParsePublicKey(res.HubKey); err != nil || !pub.Equal(joinHubPub) {
			t.Fatalf("kept a result whose hub key is %q", res.HubKey)
		}
		for _, s := range append([]string{res.Name, res.Hub}, res.Tiers...) {
			if s == "" || strings.ContainsFunc(s, func(r rune) bool { return unicode.IsControl(r) || unicode.IsSpace(r) || r > unicode.MaxASCII }) {
				t.Fatalf("kept a result naming %q", s)
			}
		}
		keys := res.Pins
		if res.SigningKey != "" {
			keys = append(keys, res.SigningKey)
		}
		for _, k := range keys {
			if _, err := ParsePublicKey(k); err != nil {
				t.Fatalf("kept a result with key %q: %v", k, err)
			}
		}
	})
}

// The seeds are what they say: the hub's real answers are taken, the rest
// refused, and a refusal keeps the hub's code and message, cleaned.
func TestJoinAnswerSeeds(t *testing.T) {
	for i, b := range joinChallengeSeeds(t) {
		var ch JoinChallenge
		err := readJoinAnswer(200, b, &ch)
		if err == nil {
			err = checkChallenge(ch, joinMACKey, joinTokenID, joinNodeNonce, joinNodeKeyID, KeyID(joinHubPub))
		}
		if (i == 0) != (err == nil) || (err != nil && !errors.Is(err, ErrBadJoin) && i < 3) {
			t.Errorf("challenge seed %d: %v, want %s", i, err, map[bool]string{true: "taken", false: "refused as ErrBadJoin"}[i == 0])
		}
	}
	for i, b := range joinResultSeeds(t) {
		var res JoinResult
		err := readJoinAnswer(200, b, &res)
		if err == nil {
			err = checkJoinResult(res, KeyID(joinHubPub))
		}
		if (i < 2) != (err == nil) || (err != nil && !errors.Is(err, ErrBadJoin)) {
			t.Errorf("result seed %d: %v, want %s", i, err, map[bool]string{true: "taken", false: "refused as ErrBadJoin"}[i < 2])
		}
	}
	r := joinRefusals()
	if err := readJoinAnswer(401, r[0], &JoinChallenge{}); err == nil ||
		!strings.Contains(err.Error(), "401 (unauthorized: join refused: unknown, used") {
		t.Errorf("the hub's refusal: %v, want its status, code and message", err)
	}
	if err := readJoinAnswer(401, r[2], &JoinChallenge{}); err == nil || strings.ContainsFunc(err.Error(), unicode.IsControl) ||
		!strings.Contains(err.Error(), "unauthorized [2J") {
		t.Errorf("a refusal with terminal escapes: %q, want them blanked", err)
	}
}
