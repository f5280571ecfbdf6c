package auth

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// Security event codes. Each decision logs exactly one of them.
const (
	EventLoginSuccess = "authn_login_success"
	EventLoginFail    = "authn_login_fail"
	// Failed logins locked a user name or client address out.
	EventLoginLockout      = "authn_login_lockout"
	EventTokenSuccess      = "authn_token_success"
	EventTokenFail         = "authn_token_fail"
	EventMacaroonFail      = "authn_macaroon_fail"
	EventAdminAuthorized   = "authz_admin"
	EventAuthzFail         = "authz_fail"
	EventTokenCreated      = "token_created"
	EventTokenRevoked      = "token_revoked"
	EventMachineRegistered = "machine_registered"
	EventAdminBootstrap    = "admin_bootstrap"
	// Pinning or unpinning a hub key changes which signed records a node
	// accepts.
	EventTrustKeyAdded   = "trust_key_added"
	EventTrustKeyRemoved = "trust_key_removed"
	// A machine credential issued by another node was accepted or
	// refused at registration.
	EventCredentialSuccess = "authn_credential_success"
	EventCredentialFail    = "authn_credential_fail"
	// The hub admitted a node or took its admission back; both change
	// which nodes machines of a tier may use.
	EventNodeAdmitted = "node_admitted"
	EventNodeRemoved  = "node_removed"
	// The hub moved a live admission to new URLs or a new key (or more
	// tiers): the next handshake under the old key is refused.
	EventNodeUpdated = "node_updated"
	// A gossip member claims an admitted node's name under another key
	// (or otherwise fails the node identity check).
	EventNodeIdentityFail = "node_identity_fail"
	// A webhook was added or removed: it decides who is told of the
	// node's events.
	EventWebhookAdded   = "webhook_added"
	EventWebhookRemoved = "webhook_removed"
)

// Reasons a credential is refused, logged as attr reason. They name what
// went wrong without echoing the credential.
const (
	reasonMalformed    = "malformed"
	reasonUnknown      = "unknown"
	reasonBadSecret    = "bad_secret"
	reasonExpired      = "expired"
	reasonRevoked      = "revoked"
	reasonWrongKind    = "wrong_kind"
	reasonBadPassword  = "bad_password"
	reasonUnknownUser  = "unknown_user"
	reasonUnknownKey   = "unknown_key"
	reasonBadSignature = "bad_signature"
	reasonBadCaveat    = "bad_caveat"
	reasonDelayed      = "delayed"
	reasonLockedOut    = "locked_out"
	reasonBusy         = "busy"
)

// SecurityEvent logs one security event: msg "security event", attr
// event=code, then attrs. Failures (codes ending in _fail) log at Warn,
// everything else at Info. Callers pass IDs, kinds, tiers, names and
// reasons, never a secret, password or macaroon. A nil log means
// slog.Default().
func SecurityEvent(ctx context.Context, log *slog.Logger, code string, attrs ...slog.Attr) {
	if log == nil {
		log = slog.Default()
	}
	level := slog.LevelInfo
	if isFailure(code) {
		level = slog.LevelWarn
	}
	all := make([]slog.Attr, 0, len(attrs)+1)
	all = append(all, slog.String("event", code))
	all = append(all, attrs...)
	if c := Client(ctx); c != "" && !hasKey(attrs, "client") {
		all = append(all, slog.String("client", c))
	}
	log.LogAttrs(ctx, level, "security event", all...)
}

func isFailure(code string) bool {
	return strings.HasSuffix(code, "_fail") || code == EventLoginLockout
}

func (a *Authenticator) event(ctx context.Context, code string, attrs ...slog.Attr) {
	SecurityEvent(ctx, a.log, code, attrs...)
}

func hasKey(attrs []slog.Attr, key string) bool {
	for _, a := range attrs {
		if a.Key == key {
			return true
		}
	}
	return false
}

// Sampler lets through at most PerSecond log lines of one kind of success
// in each second of the wall clock and drops the rest. It serves the lines
// a busy node would otherwise write for every request (a machine token
// accepted, a check-in answered): the metrics count every one of them,
// and the log keeps a sample to show what they look like. Failures and
// admin actions are never passed through a Sampler. A nil Sampler, or one
// with PerSecond 0, lets everything through.
type Sampler struct {
	PerSecond int
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	mu     sync.Mutex
	second int64 // the Unix second n counts in
	n      int
}

// Allow says whether a line may be written now.
func (s *Sampler) Allow() bool {
	if s == nil || s.PerSecond <= 0 {
		return true
	}
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	sec := now().Unix()
	s.mu.Lock()
	defer s.mu.Unlock()
	if sec != s.second {
		s.second, s.n = sec, 0
	}
	if s.n >= s.PerSecond {
		return false
	}
	s.n++
	return true
}
