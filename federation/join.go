package federation

// The signed join: how a new node becomes an admitted one with a one-time
// token an operator made at the hub, and how each side knows the other.
//
// The token carries the hub's peer URL, the hub's node key ID and a
// secret. The new node dials the hub's peer listener with its own node
// certificate and accepts only a server holding that key ID, so it talks
// to the hub and no one else. Then both prove they hold the secret
// without sending it: each sends a nonce, and each answers with an HMAC,
// under a key derived from the secret, over both nonces and both node key
// IDs as the TLS handshake proved them. The hub's MAC comes first, so a
// node never answers a party that does not hold the token; the node's
// MAC binds its key, so the hub admits exactly the key it saw.

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
)

// JoinTokenPrefix starts a join token's text form.
const JoinTokenPrefix = "pmj_"

// ErrBadJoin means a join exchange failed: a malformed or unknown token,
// a MAC that does not verify, a session that expired.
var ErrBadJoin = errors.New("join refused")

// JoinToken is the parsed text form of a join token.
type JoinToken struct {
	// ID names the token at the hub; public.
	ID string `json:"id"`
	// Secret is 32 random bytes, base64url; never sent in the exchange.
	Secret string `json:"secret"`
	// Hub is the hub's peer listener URL, HubKey its node key ID.
	Hub    string `json:"hub"`
	HubKey string `json:"hub_key"`
}

var joinIDRE = regexp.MustCompile(`^[0-9a-f]{16}$`)

// NewJoinToken makes a token for the hub at peerURL with node key ID
// hubKey, and returns it with its text form and the MAC key the hub keeps
// (JoinMACKey of the secret).
func NewJoinToken(peerURL, hubKey string) (JoinToken, string, error) {
	id, secret := make([]byte, 8), make([]byte, 32)
	if _, err := rand.Read(id); err != nil {
		return JoinToken{}, "", err
	}
	if _, err := rand.Read(secret); err != nil {
		return JoinToken{}, "", err
	}
	t := JoinToken{ID: hex.EncodeToString(id), Secret: base64.RawURLEncoding.EncodeToString(secret), Hub: peerURL, HubKey: hubKey}
	b, err := json.Marshal(t)
	if err != nil {
		return JoinToken{}, "", err
	}
	return t, JoinTokenPrefix + base64.RawURLEncoding.EncodeToString(b), nil
}

// ParseJoinToken reads a token's text form. The error wraps ErrBadJoin
// and never quotes the token.
func ParseJoinToken(s string) (JoinToken, error) {
	body, ok := strings.CutPrefix(strings.TrimSpace(s), JoinTokenPrefix)
	if !ok || len(body) > 2048 {
		return JoinToken{}, fmt.Errorf("%w: not a join token (it starts with %s)", ErrBadJoin, JoinTokenPrefix)
	}
	b, err := base64.RawURLEncoding.DecodeString(body)
	if err != nil {
		return JoinToken{}, fmt.Errorf("%w: join token is not base64url", ErrBadJoin)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var t JoinToken
	if err := dec.Decode(&t); err != nil {
		return JoinToken{}, fmt.Errorf("%w: join token does not decode", ErrBadJoin)
	}
	sec, err := base64.RawURLEncoding.DecodeString(t.Secret)
	u, uerr := url.Parse(t.Hub)
	switch {
	case !joinIDRE.MatchString(t.ID):
		return JoinToken{}, fmt.Errorf("%w: join token has a bad ID", ErrBadJoin)
	case err != nil || len(sec) != 32:
		return JoinToken{}, fmt.Errorf("%w: join token has a bad secret", ErrBadJoin)
	case uerr != nil || u.Scheme != "https" || u.Host == "":
		return JoinToken{}, fmt.Errorf("%w: join token has a bad hub URL", ErrBadJoin)
	case !keyIDRE.MatchString(t.HubKey):
		return JoinToken{}, fmt.Errorf("%w: join token has a bad hub key ID", ErrBadJoin)
	}
	return t, nil
}

// JoinMACKey is the key of the join's HMACs: hex SHA-256 of the secret
// (base64url, as in the token). The hub stores it instead of the secret.
func JoinMACKey(secret string) string {
	sum := sha256.Sum256([]byte("patchmesh join v1\n" + secret))
	return hex.EncodeToString(sum[:])
}

// Join roles: who computes a MAC. Distinct, so neither side's MAC can be
// reflected back as the other's.
const (
	JoinRoleHub  = "hub"
	JoinRoleNode = "node"
)

// JoinMAC computes role's MAC over the exchange: the token ID, both
// nonces and both node key IDs.
func JoinMAC(macKey, role, tokenID, nodeNonce, hubNonce, nodeKey, hubKey string) []byte {
	m := hmac.New(sha256.New, []byte(macKey))
	fmt.Fprintf(m, "patchmesh join v1\n%s\n%s\n%s\n%s\n%s\n%s", role, tokenID, nodeNonce, hubNonce, nodeKey, hubKey)
	return m.Sum(nil)
}

// JoinStart is the node's first message (POST /v1/join/start).
type JoinStart struct {
	Token string `json:"token"`
	Nonce string `json:"nonce"`
}

// JoinChallenge is the hub's answer: its nonce and its MAC.
type JoinChallenge struct {
	Session string `json:"session"`
	Nonce   string `json:"nonce"`
	MAC     []byte `json:"mac"`
}

// JoinFinish is the node's second message (POST /v1/join/finish): its MAC
// and the URLs it will be admitted at.
type JoinFinish struct {
	Session string `json:"session"`
	MAC     []byte `json:"mac"`
	URL     string `json:"url"`
	PeerURL string `json:"peer_url,omitempty"`
}

// JoinResult is the hub's answer to a finished join.
type JoinResult struct {
	// Name is the name the node was admitted under, on Tiers.
	Name  string   `json:"name"`
	Tiers []string `json:"tiers"`
	// Hub is the hub's name, HubKey its node public key.
	Hub    string `json:"hub"`
	HubKey string `json:"hub_key"`
	// SigningKey is the hub's record-signing public key (sync.trust).
	SigningKey string `json:"signing_key"`
	// Pins are the node keys holding a live admission at the hub now.
	Pins []string `json:"pins"`
}

// JoinRequest is what a node joins with.
type JoinRequest struct {
	Token JoinToken
	// Cert is the node's certificate (NodeCertificate), Key its node key.
	Cert tls.Certificate
	Key  ed25519.PrivateKey
	// URL and PeerURL are the node's API and peer listener URLs.
	URL, PeerURL string
	// Timeout bounds the whole exchange; 0 means 30s.
	Timeout time.Duration
}

// Join runs the exchange with the hub the token names and returns what
// the hub answered. The error wraps ErrBadJoin when the hub refused or
// could not prove it holds the token.
func Join(ctx context.Context, r JoinRequest) (JoinResult, error) {
	if r.Timeout <= 0 {
		r.Timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, r.Timeout)
	defer cancel()
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: PeerClientTLS(r.Cert, nil, r.Token.HubKey)}}
	defer client.CloseIdleConnections()
	nonce := make([]byte, 32)
	if _, err := rand.Read(nonce); err != nil {
		return JoinResult{}, err
	}
	nodeNonce := base64.RawURLEncoding.EncodeToString(nonce)
	var ch JoinChallenge
	if err := postJSON(ctx, client, r.Token.Hub+"/v1/join/start", JoinStart{Token: r.Token.ID, Nonce: nodeNonce}, &ch); err != nil {
		return JoinResult{}, err
	}
	macKey := JoinMACKey(r.Token.Secret)
	nodeKey := KeyID(r.Key.Public().(ed25519.PublicKey))
	if err := checkChallenge(ch, macKey, r.Token.ID, nodeNonce, nodeKey, r.Token.HubKey); err != nil {
		return JoinResult{}, err
	}
	fin := JoinFinish{Session: ch.Session, URL: r.URL, PeerURL: r.PeerURL,
		MAC: JoinMAC(macKey, JoinRoleNode, r.Token.ID, nodeNonce, ch.Nonce, nodeKey, r.Token.HubKey)}
	var res JoinResult
	if err := postJSON(ctx, client, r.Token.Hub+"/v1/join/finish", fin, &res); err != nil {
		return JoinResult{}, err
	}
	if err := checkJoinResult(res, r.Token.HubKey); err != nil {
		return JoinResult{}, err
	}
	return res, nil
}

// checkChallenge checks the hub's challenge before the node answers it:
// a well-formed nonce (it goes into both MACs, whose fields end at
// newlines) and the hub's MAC over the exchange, which proves the hub
// holds the token.
func checkChallenge(ch JoinChallenge, macKey, tokenID, nodeNonce, nodeKey, hubKey string) error {
	if ValidNonce(ch.Nonce) != nil {
		return fmt.Errorf("%w: the hub's answer carries a malformed nonce", ErrBadJoin)
	}
	if !hmac.Equal(JoinMAC(macKey, JoinRoleHub, tokenID, nodeNonce, ch.Nonce, nodeKey, hubKey), ch.MAC) {
		return fmt.Errorf("%w: the hub's answer does not prove it holds the token", ErrBadJoin)
	}
	return nil
}

// checkJoinResult checks what the hub says the join made, before the node
// keeps it (node.JoinRecord) and pins its keys: names and tiers as the
// catalog allows them, the hub's key the one the token pinned (hubKey, a
// key ID), and keys that parse, so that a node never starts from a join
// file it cannot read.
func checkJoinResult(res JoinResult, hubKey string) error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: the hub's answer %s", ErrBadJoin, fmt.Sprintf(format, a...))
	}
	if catalog.ValidNodeName("name", res.Name) != nil {
		return bad("names no valid node name")
	}
	if catalog.ValidNodeName("hub", res.Hub) != nil {
		return bad("names no valid hub name")
	}
	for _, t := range res.Tiers {
		if catalog.ValidName("tier", t) != nil {
			return bad("names an invalid tier")
		}
	}
	if pub, err := ParsePublicKey(res.HubKey); err != nil || KeyID(pub) != hubKey {
		return bad("names a hub key other than the token's %s", hubKey)
	}
	if res.SigningKey != "" {
		if _, err := ParsePublicKey(res.SigningKey); err != nil {
			return bad("carries a malformed signing key")
		}
	}
	for _, k := range res.Pins {
		if _, err := ParsePublicKey(k); err != nil {
			return bad("carries a malformed node key")
		}
	}
	return nil
}

// postJSON posts in and decodes the answer into out (readJoinAnswer).
func postJSON(ctx context.Context, c *http.Client, u string, in, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("join: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("join: %w", err)
	}
	return readJoinAnswer(resp.StatusCode, body, out)
}

// readJoinAnswer reads the hub's answer, of status with body, into out. A
// refusal is an error wrapping ErrBadJoin that carries the hub's error
// code and message, bounded and cleaned of control characters
// (errorBody): they reach the operator's terminal.
func readJoinAnswer(status int, body []byte, out any) error {
	if status != http.StatusOK {
		return fmt.Errorf("%w: the hub answered %d%s", ErrBadJoin, status, errorBody(bytes.NewReader(body), ""))
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("join: the hub's answer does not decode: %w", err)
	}
	return nil
}
