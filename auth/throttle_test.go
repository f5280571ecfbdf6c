package auth

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"
)

var testLimits = LoginLimits{FreeFailures: 2, Delay: time.Second, MaxDelay: 4 * time.Second, LockoutAfter: 5, LockoutWindow: 10 * time.Minute}

// TestLoginDelaysThenLocksOut walks one client through the whole ladder:
// free failures, doubling delays refused unchecked (even with the right
// password), a lockout, and its end.
func TestLoginDelaysThenLocksOut(t *testing.T) {
	aHash, _ := testHashes(t)
	f := newFixture(t, Config{Admins: []Admin{{Name: "alice", PasswordHash: aHash}}, Login: testLimits})
	ctx := WithClient(context.Background(), "192.0.2.7")
	steps := []struct {
		name     string
		advance  time.Duration
		password string
		want     error
		reason   string
		retry    time.Duration // for ErrThrottled
		event    string
	}{
		{"free failure 1", 0, "wrong password 1", ErrUnauthenticated, reasonBadPassword, 0, EventLoginFail},
		{"free failure 2", 0, "wrong password 2", ErrUnauthenticated, reasonBadPassword, 0, EventLoginFail},
		{"third failure sets a delay", 0, "wrong password 3", ErrUnauthenticated, reasonBadPassword, 0, EventLoginFail},
		{"right password during the delay is refused", 0, alicePassword, ErrThrottled, reasonDelayed, time.Second, EventLoginFail},
		{"after the delay, a failure doubles it", time.Second, "wrong password 4", ErrUnauthenticated, reasonBadPassword, 0, EventLoginFail},
		{"still delayed", time.Second, "wrong password", ErrThrottled, reasonDelayed, time.Second, EventLoginFail},
		{"fifth failure locks out", time.Second, "wrong password 5", ErrUnauthenticated, reasonBadPassword, 0, EventLoginFail},
		{"locked out", time.Minute, alicePassword, ErrThrottled, reasonLockedOut, 9 * time.Minute, EventLoginFail},
		{"lockout over", 9 * time.Minute, alicePassword, nil, "", 0, EventLoginSuccess},
	}
	for _, s := range steps {
		f.clock.Advance(s.advance)
		_, _, err := f.a.Login(ctx, "alice", s.password)
		if !errors.Is(err, s.want) || (s.want == nil) != (err == nil) {
			t.Fatalf("%s: want %v, got %v", s.name, s.want, err)
		}
		if s.retry != 0 {
			var te *ThrottledError
			if !errors.As(err, &te) || te.RetryAfter != s.retry {
				t.Fatalf("%s: want retry after %v, got %v", s.name, s.retry, err)
			}
		}
		f.wantEvent(t, s.event, s.reason)
		if ev := f.lastEvent(t); ev["client"] != "192.0.2.7" {
			t.Errorf("%s: event client: want 192.0.2.7, got %v", s.name, ev["client"])
		}
	}
	var lockouts int
	for _, ev := range f.logs.events(t) {
		if ev["event"] == EventLoginLockout {
			lockouts++
		}
	}
	if lockouts != 2 { // the name and the address
		t.Errorf("lockout events: want 2 (user and client), got %d", lockouts)
	}
}

// TestLoginLimitsPerNameAndPerAddress: failures from one address throttle
// every name tried from it, and failures for one name throttle it from
// every address; other names from other addresses are unaffected.
func TestLoginLimitsPerNameAndPerAddress(t *testing.T) {
	aHash, bHash := testHashes(t)
	lim := testLimits
	lim.FreeFailures, lim.LockoutAfter = 1, 2
	f := newFixture(t, Config{Admins: []Admin{{Name: "alice", PasswordHash: aHash}, {Name: "bob", PasswordHash: bHash}}, Login: lim})
	attacker := WithClient(context.Background(), "198.51.100.1")
	for i := range 2 {
		if _, _, err := f.a.Login(attacker, "alice", "wrong password"); !errors.Is(err, ErrUnauthenticated) {
			t.Fatalf("failure %d: want ErrUnauthenticated, got %v", i, err)
		}
	}
	cases := []struct {
		name, client, user, password string
		want                         error
	}{
		{"another name from the locked address", "198.51.100.1", "bob", bobPassword, ErrThrottled},
		{"the locked name from another address", "203.0.113.9", "alice", alicePassword, ErrThrottled},
		{"another name from another address", "203.0.113.9", "bob", bobPassword, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := f.a.Login(WithClient(context.Background(), c.client), c.user, c.password)
			if !errors.Is(err, c.want) || (c.want == nil) != (err == nil) {
				t.Fatalf("want %v, got %v", c.want, err)
			}
		})
	}
}

// TestLoginNeverLogsAnUnknownName: a name that matches no admin may be a
// password typed into the wrong field; only its hash is logged.
func TestLoginNeverLogsAnUnknownName(t *testing.T) {
	aHash, _ := testHashes(t)
	f := newFixture(t, Config{Admins: []Admin{{Name: "alice", PasswordHash: aHash}}, Login: testLimits})
	typed := "Tr0ub4dor-and-3"
	for _, lim := range []int{1, 2, 3, 4, 5} { // through delay and lockout events too
		f.clock.Advance(time.Hour)
		_, _, _ = f.a.Login(context.Background(), typed, "x"+string(rune('0'+lim)))
	}
	f.logs.assertNoSecret(t, typed)
	ev := f.logs.events(t)
	if len(ev) == 0 || ev[0]["user_hash"] != UserHash(typed) || ev[0]["user"] != nil {
		t.Fatalf("want the first event to carry user_hash %s and no user, got %v", UserHash(typed), ev)
	}
}

// TestLoginBusyWhenBcryptPoolIsFull: with every bcrypt slot taken, a login
// is refused with ErrBusy after BcryptWait instead of queueing.
func TestLoginBusyWhenBcryptPoolIsFull(t *testing.T) {
	aHash, _ := testHashes(t)
	lim := testLimits
	lim.BcryptConcurrency, lim.BcryptWait = 1, time.Millisecond
	f := newFixture(t, Config{Admins: []Admin{{Name: "alice", PasswordHash: aHash}}, Login: lim})
	ctx := context.Background()
	if err := f.a.bcrypt.acquire(ctx); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.a.Login(ctx, "alice", alicePassword); !errors.Is(err, ErrBusy) {
		t.Fatalf("full pool: want ErrBusy, got %v", err)
	}
	f.wantEvent(t, EventLoginFail, reasonBusy)
	f.a.bcrypt.release()
	if _, _, err := f.a.Login(ctx, "alice", alicePassword); err != nil {
		t.Fatalf("free pool: want a login, got %v", err)
	}
}

func TestLoginLimitsValidate(t *testing.T) {
	cases := []struct {
		name string
		l    LoginLimits
		ok   bool
	}{
		{"zero takes defaults", LoginLimits{}, true},
		{"test limits", testLimits, true},
		{"negative delay", LoginLimits{Delay: -time.Second}, false},
		{"negative pool", LoginLimits{BcryptConcurrency: -1}, false},
		{"lockout not after free failures", LoginLimits{FreeFailures: 5, LockoutAfter: 5}, false},
		{"max delay under delay", LoginLimits{Delay: time.Minute, MaxDelay: time.Second}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := c.l.Validate(); (err == nil) != c.ok {
				t.Fatalf("want ok=%v, got %v", c.ok, err)
			}
		})
	}
}

// TestThrottleTableIsBounded: cycling keys cannot grow the table past its
// cap.
func TestThrottleTableIsBounded(t *testing.T) {
	th := newThrottle(LoginLimits{})
	now := t0
	for i := range maxThrottleEntries + 100 {
		th.fail(now, "addr:"+strconv.Itoa(i))
	}
	if n := len(th.m); n > maxThrottleEntries {
		t.Fatalf("want at most %d entries, got %d", maxThrottleEntries, n)
	}
}
