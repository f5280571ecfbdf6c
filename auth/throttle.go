package auth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"
)

// LoginLimits bound what failed admin logins cost a node. Every failed
// login counts against the user name and against the client address; past
// FreeFailures each further attempt must wait a delay that doubles from
// Delay up to MaxDelay, and LockoutAfter failures lock the name or address
// out for LockoutWindow. A refused attempt is answered at once, before any
// bcrypt work, so a flood of guesses costs the node almost nothing.
// bcrypt itself runs in a pool of BcryptConcurrency, so that the logins that
// do get through cannot take every core from other requests.
type LoginLimits struct {
	// FreeFailures are the failures allowed before delays begin. 0 means 3.
	FreeFailures int
	// Delay is the wait after the first failure past FreeFailures; each
	// further failure doubles it. 0 means 1s.
	Delay time.Duration
	// MaxDelay caps the doubling. 0 means 1m.
	MaxDelay time.Duration
	// LockoutAfter failures lock the name or address out. 0 means 10.
	LockoutAfter int
	// LockoutWindow is how long a lockout lasts, and how long a name or
	// address must go without failing to start afresh. 0 means 15m.
	LockoutWindow time.Duration
	// BcryptConcurrency caps password checks running at once. 0 means 1:
	// admin logins are rare, and each check at cost 12 takes a core for
	// a quarter of a second.
	BcryptConcurrency int
	// BcryptWait is the longest a login waits for a bcrypt slot before it
	// is refused with ErrBusy. 0 means 500ms.
	BcryptWait time.Duration
}

// Login limit defaults.
const (
	DefaultFreeFailures      = 3
	DefaultLoginDelay        = time.Second
	DefaultMaxLoginDelay     = time.Minute
	DefaultLockoutAfter      = 10
	DefaultLockoutWindow     = 15 * time.Minute
	DefaultBcryptConcurrency = 1
	DefaultBcryptWait        = 500 * time.Millisecond
)

func (l LoginLimits) withDefaults() LoginLimits {
	if l.FreeFailures <= 0 {
		l.FreeFailures = DefaultFreeFailures
	}
	if l.Delay <= 0 {
		l.Delay = DefaultLoginDelay
	}
	if l.MaxDelay <= 0 {
		l.MaxDelay = DefaultMaxLoginDelay
	}
	if l.LockoutAfter <= 0 {
		l.LockoutAfter = DefaultLockoutAfter
	}
	if l.LockoutWindow <= 0 {
		l.LockoutWindow = DefaultLockoutWindow
	}
	if l.BcryptConcurrency <= 0 {
		l.BcryptConcurrency = DefaultBcryptConcurrency
	}
	if l.BcryptWait <= 0 {
		l.BcryptWait = DefaultBcryptWait
	}
	return l
}

// Validate checks limits an operator wrote; zero fields take defaults.
// Errors name the fields as the node's config file does (auth.login_…).
func (l LoginLimits) Validate() error {
	switch {
	case l.FreeFailures < 0:
		return errors.New("login_free_failures: must not be negative")
	case l.Delay < 0, l.MaxDelay < 0, l.LockoutWindow < 0, l.BcryptWait < 0:
		return errors.New("login delays, lockout window and bcrypt_wait must not be negative")
	case l.LockoutAfter < 0:
		return errors.New("login_lockout_after: must not be negative")
	case l.BcryptConcurrency < 0:
		return errors.New("bcrypt_concurrency: must not be negative")
	}
	d := l.withDefaults()
	if d.LockoutAfter <= d.FreeFailures {
		return fmt.Errorf("login_lockout_after (%d) must be more than login_free_failures (%d)", d.LockoutAfter, d.FreeFailures)
	}
	if d.MaxDelay < d.Delay {
		return errors.New("login_max_delay must not be shorter than login_delay")
	}
	return nil
}

// ErrThrottled means a login was refused unchecked because its name or
// address failed too often lately (429). errors.As with *ThrottledError
// gives the wait.
var ErrThrottled = errors.New("too many failed logins")

// ErrBusy means no bcrypt slot came free in time (503): the node is
// checking as many passwords as it will at once.
var ErrBusy = errors.New("too many logins at once")

// ThrottledError is ErrThrottled with how long to wait.
type ThrottledError struct {
	RetryAfter time.Duration
	// Locked is true during a lockout, false during a delay.
	Locked bool
}

func (e *ThrottledError) Error() string {
	if e.Locked {
		return fmt.Sprintf("%v: locked out for %v", ErrThrottled, e.RetryAfter)
	}
	return fmt.Sprintf("%v: retry in %v", ErrThrottled, e.RetryAfter)
}

func (e *ThrottledError) Is(target error) bool { return target == ErrThrottled }

// maxThrottleEntries bounds the failure table, so that an attacker cycling
// names or addresses cannot grow it without end.
const maxThrottleEntries = 1 << 16

type failures struct {
	count int
	last  time.Time // last failure
	next  time.Time // no attempt before this
}

// throttle counts failed logins per key ("user:…", "addr:…").
type throttle struct {
	lim LoginLimits
	mu  sync.Mutex
	m   map[string]*failures
}

func newThrottle(l LoginLimits) *throttle {
	return &throttle{lim: l.withDefaults(), m: make(map[string]*failures)}
}

// check returns a *ThrottledError when any key must wait.
func (t *throttle) check(now time.Time, keys ...string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	var worst *ThrottledError
	for _, k := range keys {
		f := t.m[k]
		if f == nil || !now.Before(f.next) {
			continue
		}
		e := &ThrottledError{RetryAfter: f.next.Sub(now), Locked: f.count >= t.lim.LockoutAfter}
		if worst == nil || e.RetryAfter > worst.RetryAfter {
			worst = e
		}
	}
	if worst == nil {
		return nil
	}
	return worst
}

// fail counts one failure against each key and returns the keys it has
// just locked out.
func (t *throttle) fail(now time.Time, keys ...string) (locked []string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, k := range keys {
		f := t.m[k]
		if f != nil && now.Sub(f.last) >= t.lim.LockoutWindow && !now.Before(f.next) {
			f = nil // quiet for a whole window: start afresh
		}
		if f == nil {
			t.makeRoom(now)
			f = &failures{}
			t.m[k] = f
		}
		f.count++
		f.last = now
		switch {
		case f.count >= t.lim.LockoutAfter:
			if f.count == t.lim.LockoutAfter {
				locked = append(locked, k)
			}
			f.next = now.Add(t.lim.LockoutWindow)
		case f.count > t.lim.FreeFailures:
			f.next = now.Add(t.delay(f.count - t.lim.FreeFailures))
		}
	}
	return locked
}

// delay is the wait after the n-th failure past the free ones.
func (t *throttle) delay(n int) time.Duration {
	d := t.lim.Delay
	for i := 1; i < n && d < t.lim.MaxDelay; i++ {
		d *= 2
	}
	return min(d, t.lim.MaxDelay)
}

// succeed forgets key's failures.
func (t *throttle) succeed(key string) {
	t.mu.Lock()
	delete(t.m, key)
	t.mu.Unlock()
}

// makeRoom drops entries whose window has passed, and when that is not
// enough, arbitrary ones: a full table must not refuse new keys. Called
// with mu held.
func (t *throttle) makeRoom(now time.Time) {
	if len(t.m) < maxThrottleEntries {
		return
	}
	for k, f := range t.m {
		if now.Sub(f.last) >= t.lim.LockoutWindow && !now.Before(f.next) {
			delete(t.m, k)
		}
	}
	for k := range t.m {
		if len(t.m) < maxThrottleEntries {
			break
		}
		delete(t.m, k)
	}
}

// bcryptPool bounds concurrent password checks.
type bcryptPool struct {
	slots chan struct{}
	wait  time.Duration
}

func (p *bcryptPool) acquire(ctx context.Context) error {
	select {
	case p.slots <- struct{}{}:
		return nil
	default:
	}
	t := time.NewTimer(p.wait)
	defer t.Stop()
	select {
	case p.slots <- struct{}{}:
		return nil
	case <-t.C:
		return ErrBusy
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

func (p *bcryptPool) release() { <-p.slots }

type clientKey struct{}

// WithClient returns ctx carrying the client's address, as the HTTP layer
// determined it (honouring only trusted proxies). Logins count failures
// against it.
func WithClient(ctx context.Context, addr string) context.Context {
	return context.WithValue(ctx, clientKey{}, addr)
}

// Client returns the client address WithClient put in ctx, or "".
func Client(ctx context.Context) string {
	s, _ := ctx.Value(clientKey{}).(string)
	return s
}

// UserHash names a typed user name that matched no admin, for logs: the
// text could be a password typed into the wrong field, so it is never
// logged, only the first 16 hex digits of its SHA-256 (enough to see the
// same wrong name come back).
func UserHash(name string) string {
	sum := sha256.Sum256([]byte(name))
	return hex.EncodeToString(sum[:8])
}

// logUnknownUser is the attr for a name that matched no admin.
func logUnknownUser(name string) slog.Attr { return slog.String("user_hash", UserHash(name)) }

func retryAttr(d time.Duration) slog.Attr {
	return slog.String("retry_after", strconv.FormatFloat(d.Seconds(), 'f', 1, 64)+"s")
}
