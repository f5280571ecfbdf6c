package auth

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// logCapture collects a logger's JSON lines so tests can look for events
// and for secrets that must not be there.
type logCapture struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (c *logCapture) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.Write(p)
}

func newCapture() (*logCapture, *slog.Logger) {
	c := &logCapture{}
	return c, slog.New(slog.NewJSONHandler(c, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// lines returns every logged line, decoded.
func (c *logCapture) lines(t *testing.T) []map[string]any {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(c.buf.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line is not JSON: %q: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}

// events returns the security events logged, in order.
func (c *logCapture) events(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range c.lines(t) {
		if l["msg"] == "security event" {
			out = append(out, l)
		}
	}
	return out
}

// assertNoSecret fails if any logged line contains any of secrets.
func (c *logCapture) assertNoSecret(t *testing.T, secrets ...string) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, l := range strings.Split(c.buf.String(), "\n") {
		for _, s := range secrets {
			if s != "" && strings.Contains(l, s) {
				t.Errorf("log line %d contains a secret (%d chars): %s", i+1, len(s), l)
			}
		}
	}
}

func TestSecurityEventShapeAndLevel(t *testing.T) {
	c, log := newCapture()
	ctx := context.Background()
	SecurityEvent(ctx, log, EventTokenCreated, slog.String("token_id", "0011223344556677"), slog.String("tier", "edge"))
	SecurityEvent(ctx, log, EventAuthzFail, slog.String("reason", reasonWrongKind))
	got := c.events(t)
	if len(got) != 2 {
		t.Fatalf("want 2 events, got %d: %v", len(got), got)
	}
	want := []struct{ event, level string }{{EventTokenCreated, "INFO"}, {EventAuthzFail, "WARN"}}
	for i, w := range want {
		if got[i]["event"] != w.event || got[i]["level"] != w.level {
			t.Errorf("event %d: want event=%s level=%s, got event=%v level=%v", i, w.event, w.level, got[i]["event"], got[i]["level"])
		}
	}
	if got[0]["token_id"] != "0011223344556677" || got[0]["tier"] != "edge" {
		t.Errorf("event 0 attrs: want token_id and tier, got %v", got[0])
	}
}
