package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestAdminWebhooksAndAudit(t *testing.T) {
	n := newTestNode(t)
	n.login()
	secretFile := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secretFile, []byte("cli-test-secret-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := n.admin("", "webhooks", "add", "https://hooks.example/pm", "--events", "node.down"); r.code != exitUsage {
		t.Errorf("webhooks add without --secret-file: exit %d, want %d", r.code, exitUsage)
	}
	if r := n.admin("", "webhooks", "add", "http://hooks.example/pm", "--events", "node.down", "--secret-file", secretFile); r.code != exitInvalid {
		t.Errorf("webhooks add with an http URL: exit %d (%s), want %d", r.code, r.stderr, exitInvalid)
	}
	r := n.mustAdmin("webhooks", "add", "https://hooks.example/pm", "--events", "node.down, sync.failing", "--secret-file", secretFile, "--output", "json")
	var h struct{ ID string }
	if err := json.Unmarshal([]byte(r.stdout), &h); err != nil || len(h.ID) != 16 {
		t.Fatalf("webhooks add --output json = %s (%v)", r.stdout, err)
	}
	if r := n.mustAdmin("webhooks", "list"); !strings.Contains(r.stdout, h.ID) || !strings.Contains(r.stdout, "node.down,sync.failing") ||
		strings.Contains(r.stdout, "cli-test-secret") {
		t.Errorf("webhooks list = %q; want the hook and its events, not its secret", r.stdout)
	}
	if r := n.mustAdmin("webhooks", "test", h.ID); !strings.Contains(r.stdout, "Queued ping") {
		t.Errorf("webhooks test = %q", r.stdout)
	}
	if r := n.mustAdmin("webhooks", "deliveries", h.ID); !strings.Contains(r.stdout, "ping") || !strings.Contains(r.stdout, "pending") {
		t.Errorf("webhooks deliveries = %q; want the pending ping", r.stdout)
	}
	n.mustAdmin("webhooks", "remove", h.ID)
	if r := n.admin("", "webhooks", "remove", h.ID); r.code != exitNotFound {
		t.Errorf("removing a removed hook: exit %d, want %d", r.code, exitNotFound)
	}

	r = n.mustAdmin("audit", "--limit", "2", "--output", "json")
	var page struct {
		Entries []struct{ Action, User, Client, RequestID string }
		Next    string
	}
	if err := json.Unmarshal([]byte(r.stdout), &page); err != nil || len(page.Entries) != 2 || page.Next == "" {
		t.Fatalf("audit --limit 2 --output json = %s (%v); want 2 entries and a next page", r.stdout, err)
	}
	if page.Entries[0].Action != "DELETE /v1/admin/webhooks/{id}" {
		t.Errorf("newest audit entry: %+v; want the removal", page.Entries[0])
	}
	if r := n.mustAdmin("audit", "--since", "1h"); !strings.Contains(r.stdout, "POST /v1/admin/webhooks") {
		t.Errorf("audit --since 1h = %q; want the additions", r.stdout)
	}
	if r := n.admin("", "audit", "--since", "last week"); r.code != exitUsage {
		t.Errorf("audit --since 'last week': exit %d, want %d", r.code, exitUsage)
	}
}
