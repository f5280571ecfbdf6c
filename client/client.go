// Package client is the machine side of patchmesh: it registers a machine
// with a node, asks for the newest patch for the machine's kernel, downloads
// and verifies it, runs the operator's apply hook and reports back.
//
// A machine registers at one node (the first contact), learns from it the
// nodes serving its tier, ranks them by round-trip time and from then on
// talks to the nearest one that answers, registering at a further node
// with its machine credential the first time it fails over there.
//
// It trusts no node before the hub's signature vouches for it: the first
// contact and every node learned must show the hub's admission and sign a
// fresh nonce with the admitted key before the machine sends them a
// credential (checkFirstContact, admitted, hello); every patch answer's
// hub heartbeat must be fresh (Freshness); every offer must carry the hub's signed record,
// verified against the hub keys the machine pinned at registration (Pins,
// VerifyOffer), for the machine's hub tier, which is itself read from the
// hub's signed record of the enrollment token; an older patch than the one
// applied needs the hub's signed withdrawal.
//
// It owns the machine's state directory (state.json with the pinned hub
// keys and hub tier, what was applied, the machine's token at each node,
// its machine credential, the node ranking with admitted keys and the
// newest hub heartbeat, and the verified patch files under patches/) and
// the HTTP transport rules a
// machine needs (extra CAs, proxy, TLS 1.2 or better, refusing plain HTTP
// when asked). It does not own the command line (cmd/patchmesh), the server
// side (api) nor how nodes learn of each other (topology). APIError and
// ReadError are shared with the admin tool, which speaks the same error
// format.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
)

// Sentinel errors callers branch on.
var (
	// ErrNotRegistered means the state directory holds no registration.
	ErrNotRegistered = errors.New("machine is not registered")
	// ErrInsecureURL means a plain http:// URL was refused because TLS is required.
	ErrInsecureURL = errors.New("plain http refused: TLS is required")
	// ErrDigestMismatch means the downloaded bytes do not hash to the patch's
	// digest. The bytes were deleted and the machine reported check-failed.
	ErrDigestMismatch = errors.New("downloaded patch does not match its digest")
	// ErrApplyFailed means the apply hook exited non-zero or could not run.
	// The machine reported apply-failed.
	ErrApplyFailed = errors.New("apply hook failed")
)

// Config says how a Client reaches its nodes and where it keeps its state.
type Config struct {
	// Server is a node's base URL, e.g. https://patches.example.com.
	// Register needs it: it is the first contact, which the machine
	// registers with and learns the other nodes from. Later calls do not
	// use it: they go to the nearest ranked node that answers, and to the
	// first contact saved at registration as a last resort, so that a
	// client built once for registering and refreshing is not pinned to
	// one node.
	Server string
	// StateDir holds state.json and the verified patches. Required. It is
	// created with mode 0700.
	StateDir string
	// Transport holds the TLS and proxy settings.
	Transport Transport
	// ClientVersion is reported at registration and check-in.
	// Default: Version.
	ClientVersion string
	// APITimeout bounds each API call. A download has no overall bound (a
	// large patch on a slow link takes what it takes) but DownloadStall.
	// Default: 30s.
	APITimeout time.Duration
	// DownloadStall is how long a download may go without a byte
	// arriving before it is abandoned, its partial file deleted, and the
	// next node tried: a node that stops mid-body (hung, stopped, behind a
	// path that drops packets without a reset) would otherwise hold the
	// refresh for ever. Default: APITimeout.
	DownloadStall time.Duration
	// UptimeFile is read for the uptime reported at check-in; a missing
	// file reports 0. Default: /proc/uptime.
	UptimeFile string
	// Progress, when set, is called as a download advances with the bytes
	// received so far and the expected total.
	Progress func(done, total int64)
	// HookStdout and HookStderr receive the apply hook's output. Nil
	// discards it.
	HookStdout, HookStderr io.Writer
	// RerankEvery is how old the node ranking may grow before a call
	// learns the node list and measures round-trip times again; a failover
	// also makes the next call re-rank. Default: 10m.
	RerankEvery time.Duration
	// ProbeTimeout bounds each of the three round-trip probes of a node;
	// a node that does not answer two of them ranks last. Default: 1s.
	ProbeTimeout time.Duration
	// StaleAfter is how old the hub heartbeat a node hands over may be
	// before the machine counts that node stale and tries the next one;
	// when no node is fresh, a refresh reports ErrStale. Default:
	// DefaultStaleAfter.
	StaleAfter time.Duration
}

// Version is the client version reported when Config.ClientVersion is empty.
const Version = "0.1.0"

// Client talks to the nodes serving one machine's tier on its behalf. It is safe for
// sequential use; two concurrent Refresh calls on one state directory are
// not coordinated.
type Client struct {
	cfg  Config
	http *http.Client
}

// New checks cfg and builds the client's HTTP transport.
func New(cfg Config) (*Client, error) {
	if cfg.StateDir == "" {
		return nil, errors.New("client: state directory is required")
	}
	if cfg.ClientVersion == "" {
		cfg.ClientVersion = Version
	}
	if err := catalog.ValidClientVersion(cfg.ClientVersion); err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	if cfg.APITimeout <= 0 {
		cfg.APITimeout = 30 * time.Second
	}
	if cfg.DownloadStall <= 0 {
		cfg.DownloadStall = cfg.APITimeout
	}
	if cfg.UptimeFile == "" {
		cfg.UptimeFile = "/proc/uptime"
	}
	if cfg.RerankEvery <= 0 {
		cfg.RerankEvery = 10 * time.Minute
	}
	if cfg.ProbeTimeout <= 0 {
		cfg.ProbeTimeout = time.Second
	}
	if cfg.StaleAfter <= 0 {
		cfg.StaleAfter = DefaultStaleAfter
	}
	cfg.Server = strings.TrimRight(cfg.Server, "/")
	if cfg.Server != "" {
		if err := checkURL(cfg.Server, cfg.Transport.RequireTLS); err != nil {
			return nil, fmt.Errorf("client: server: %w", err)
		}
	}
	hc, err := NewHTTPClient(cfg.Transport)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	return &Client{cfg: cfg, http: hc}, nil
}

// APIError is an error answer from a patchmesh node, in the format of
// docs/api.md.
type APIError struct {
	// Status is the HTTP status code.
	Status int
	// Code is the error code, e.g. "not_found"; empty when the body was not
	// a patchmesh error (a proxy's page, say).
	Code string
	// Message is the server's explanation.
	Message string
	// Field names the offending input for invalid_input.
	Field string
	// RequestID is the server's X-Request-ID, to find the request in its log.
	RequestID string
}

func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "server answered %d", e.Status)
	if e.Code != "" {
		fmt.Fprintf(&b, " %s", e.Code)
	}
	if e.Message != "" {
		fmt.Fprintf(&b, ": %s", e.Message)
	}
	if e.RequestID != "" {
		fmt.Fprintf(&b, " (request ID %s)", e.RequestID)
	}
	return b.String()
}

// maxErrorBody bounds how much of an error answer is read.
const maxErrorBody = 64 << 10

// ReadError turns a non-2xx answer into an *APIError, reading (and
// bounding) the body. The caller still closes the body.
func ReadError(resp *http.Response) error {
	e := &APIError{Status: resp.StatusCode, RequestID: resp.Header.Get("X-Request-ID")}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	var env struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
			Field   string `json:"field"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &env) == nil && env.Error.Code != "" {
		e.Code, e.Message, e.Field = env.Error.Code, env.Error.Message, env.Error.Field
		return e
	}
	// Not our format: say what the status means and show a little of the
	// body, cleaned of control characters so it cannot upset a terminal.
	e.Message = http.StatusText(resp.StatusCode)
	snippet := strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, strings.TrimSpace(string(body)))
	if len(snippet) > 200 {
		snippet = snippet[:200] + "…"
	}
	if snippet != "" {
		e.Message += ": " + snippet
	}
	return e
}

// apiCall sends one JSON API request with the bearer token and decodes a
// 2xx answer into out (when out is not nil).
func (c *Client) apiCall(ctx context.Context, server, token, method, path string, query url.Values, in, out any) error {
	_, err := c.apiCallHeader(ctx, server, token, method, path, query, in, out)
	return err
}

// apiCallHeader is apiCall that also returns the answer's header, of an
// error answer too; nil when no answer came.
func (c *Client) apiCallHeader(ctx context.Context, server, token, method, path string, query url.Values, in, out any) (http.Header, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.APITimeout)
	defer cancel()
	u, err := endpoint(server, path, query, c.cfg.Transport.RequireTLS)
	if err != nil {
		return nil, err
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, fmt.Errorf("encode %s %s: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("User-Agent", "patchmesh-client/"+c.cfg.ClientVersion)
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, unreachable(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.Header, fmt.Errorf("%s %s: %w", method, path, ReadError(resp))
	}
	if out == nil {
		return resp.Header, nil
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(out); err != nil {
		// A cut-short or garbled answer is the node failing, not a refusal.
		return resp.Header, fmt.Errorf("%s %s: decode answer: %w", method, path, unreachable(err))
	}
	return resp.Header, nil
}

// endpoint joins a server base URL (which may carry a path prefix) and an
// API path, refusing plain http when TLS is required.
func endpoint(server, path string, query url.Values, requireTLS bool) (string, error) {
	if err := checkURL(server, requireTLS); err != nil {
		return "", err
	}
	u := strings.TrimRight(server, "/") + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	return u, nil
}

// checkURL accepts absolute http and https URLs, and only https when TLS is
// required.
func checkURL(raw string, requireTLS bool) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("bad URL %q: %w", raw, err)
	}
	switch u.Scheme {
	case "https":
	case "http":
		if requireTLS {
			return fmt.Errorf("%w: %s", ErrInsecureURL, u.Redacted())
		}
	default:
		return fmt.Errorf("bad URL %q: scheme must be http or https", raw)
	}
	if u.Host == "" {
		return fmt.Errorf("bad URL %q: no host", raw)
	}
	return nil
}
