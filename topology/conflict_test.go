package topology

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// lockedLog is a log sink safe for memberlist's goroutines.
type lockedLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func TestDuplicateNameIsRefused(t *testing.T) {
	k := [][]byte{key(t)}
	a := start(t, fast(t, "twin", k))
	var logB lockedLog
	cb := fast(t, "other", k, a.LocalAddr())
	cb.Log = slog.New(slog.NewJSONHandler(&logB, nil))
	b := start(t, cb)
	waitFor(t, 5*time.Second, "twin, other alive", func() (bool, string) { return seesAlive(b, "other", "twin") })

	var logDup lockedLog
	cd := fast(t, "twin", k, b.LocalAddr())
	cd.Log = slog.New(slog.NewJSONHandler(&logDup, nil))
	dup, err := Start(context.Background(), cd)
	if err == nil {
		dup.Close()
	}
	if !errors.Is(err, ErrNameConflict) || dup != nil {
		t.Fatalf("a second member named twin: want nil and ErrNameConflict, got %v, %v", dup, err)
	}
	for _, want := range []string{`"twin"`, a.LocalAddr(), "node.name"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal %q: want it to name %s", err, want)
		}
	}
	if strings.Contains(logDup.String(), `"gossip_joined"`) {
		t.Errorf("the refused member logged gossip_joined:\n%s", logDup.String())
	}

	// The member it joined says so loudly, once, and keeps the first. It
	// merges the joiner's state after answering it, so the line may follow
	// Start's return.
	const conflict = `"level":"WARN","msg":"security event","component":"topology","event":"gossip_name_fail"`
	waitFor(t, 5*time.Second, "other to log the security event gossip_name_fail", func() (bool, string) {
		return strings.Contains(logB.String(), conflict), logB.String()
	})
	if n := strings.Count(logB.String(), conflict); n != 1 {
		t.Errorf("other logged gossip_name_fail %d times, want once:\n%s", n, logB.String())
	}
	if got := b.Stats().Rejected[EventNameFail]; got < 1 {
		t.Errorf("other counted %d name conflicts, want at least 1", got)
	}
	if ok, got := seesAlive(b, "other", "twin"); !ok {
		t.Errorf("other: want twin and other alive, got %s", got)
	}
	if m, _ := b.Member("twin"); m.Addr != a.LocalAddr() {
		t.Errorf("other sees twin at %s, want the first one at %s", m.Addr, a.LocalAddr())
	}
}
