package main

// Webhooks (`patchmesh admin webhooks …`) and the audit trail
// (`patchmesh admin audit`).

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/patchmesh/patchmesh/store"
)

func (a *admin) webhooksList(ctx context.Context, args []string) error {
	return showAll(ctx, a, "webhooks list", args, "/v1/admin/webhooks", "webhooks", []string{"ID", "URL", "EVENTS", "CREATED"},
		func(h store.Webhook) []string {
			return []string{h.ID, h.URL, strings.Join(h.Events, ","), fmtTime(h.Created)}
		})
}

// readSecretFile reads a webhook secret: the file's bytes without a
// trailing newline. The secret travels in the request body, never on the
// command line, where other users could read it.
func readSecretFile(path string) (string, error) {
	if path == "" {
		return "", usagef("webhooks add needs --secret-file F (a file holding the signing secret)")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", usagef("--secret-file: %v", err)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

func (a *admin) webhooksAdd(ctx context.Context, args []string) error {
	fs := a.flags("webhooks add")
	events := fs.String("events", "", "comma-separated events: patch.available, rollout.wave_opened, rollout.halted, node.down, sync.failing")
	secretFile := fs.String("secret-file", "", "a `file` holding the signing secret (16 to 1024 bytes)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if *events == "" {
		return usagef("webhooks add needs --events")
	}
	secret, err := readSecretFile(*secretFile)
	if err != nil {
		return err
	}
	api, pos, err := a.open("webhooks add", pos, "URL")
	if err != nil {
		return err
	}
	var list []string
	for e := range strings.SplitSeq(*events, ",") {
		if e = strings.TrimSpace(e); e != "" {
			list = append(list, e)
		}
	}
	raw, err := api.call(ctx, http.MethodPost, "/v1/admin/webhooks", nil,
		map[string]any{"url": pos[0], "events": list, "secret": secret})
	if err != nil {
		return err
	}
	return a.show(raw, nil, func() error {
		var h store.Webhook
		if err := decode(raw, &h); err != nil {
			return err
		}
		_, err := fmt.Fprintf(a.stdout, "Added webhook %s for %s to %s.\n", h.ID, strings.Join(h.Events, ", "), h.URL)
		return err
	})
}

func (a *admin) webhooksRemove(ctx context.Context, args []string) error {
	return deleteOne(ctx, a, "webhooks remove", args, "ID", "/v1/admin/webhooks", "removed",
		func(id string) string { return "Removed webhook " + id + " and its delivery records." })
}

func (a *admin) webhooksTest(ctx context.Context, args []string) error {
	api, pos, err := a.prepare(ctx, "webhooks test", args, "ID")
	if err != nil {
		return err
	}
	raw, err := api.call(ctx, http.MethodPost, "/v1/admin/webhooks/"+pathEscape(pos[0])+"/test", nil, nil)
	if err != nil {
		return err
	}
	return a.show(raw, nil, func() error {
		var out struct {
			EventID string `json:"event_id"`
		}
		if err := decode(raw, &out); err != nil {
			return err
		}
		_, err := fmt.Fprintf(a.stdout, "Queued ping %s; `patchmesh admin webhooks deliveries %s` shows how it went.\n", out.EventID, pos[0])
		return err
	})
}

func (a *admin) webhooksDeliveries(ctx context.Context, args []string) error {
	fs := a.flags("webhooks deliveries")
	limit := fs.Int("limit", 0, "at most N deliveries, newest first")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	api, pos, err := a.open("webhooks deliveries", pos, "ID")
	if err != nil {
		return err
	}
	q := url.Values{}
	if *limit != 0 {
		q.Set("limit", strconv.Itoa(*limit))
	}
	raw, err := api.call(ctx, http.MethodGet, "/v1/admin/webhooks/"+pathEscape(pos[0])+"/deliveries", q, nil)
	if err != nil {
		return err
	}
	return a.show(raw, nil, func() error {
		var out struct{ Deliveries []store.Delivery }
		if err := decode(raw, &out); err != nil {
			return err
		}
		rows := make([][]string, len(out.Deliveries))
		for i, d := range out.Deliveries {
			state := "pending"
			if !d.Delivered.IsZero() {
				state = "delivered " + fmtTime(d.Delivered)
			}
			status := "-"
			if d.LastStatus != 0 {
				status = strconv.Itoa(d.LastStatus)
			}
			rows[i] = []string{strconv.FormatInt(d.ID, 10), d.Event, d.EventID, strconv.Itoa(d.Attempts), status, state, orDash(d.LastError)}
		}
		return table(a.stdout, []string{"ID", "EVENT", "EVENT ID", "ATTEMPTS", "STATUS", "STATE", "LAST ERROR"}, rows)
	})
}

// parseSince reads --since: an RFC 3339 time, or a duration back from now
// (24h).
func parseSince(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, usagef("--since: %q is neither an RFC 3339 time nor a duration such as 24h", s)
}

func (a *admin) audit(ctx context.Context, args []string) error {
	fs := a.flags("audit")
	since := fs.String("since", "", "entries at or after T (RFC 3339, or a duration back from now: 24h)")
	limit := fs.Int("limit", 0, "at most N entries (default 100)")
	after := fs.String("after", "", "the page after CURSOR (the next of the previous page)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	q := url.Values{}
	if *since != "" {
		t, err := parseSince(*since, a.now())
		if err != nil {
			return err
		}
		q.Set("since", t.UTC().Format(time.RFC3339))
	}
	if *limit != 0 {
		q.Set("limit", strconv.Itoa(*limit))
	}
	if *after != "" {
		q.Set("after", *after)
	}
	api, _, err := a.open("audit", pos)
	if err != nil {
		return err
	}
	raw, err := api.call(ctx, http.MethodGet, "/v1/admin/audit", q, nil)
	if err != nil {
		return err
	}
	return a.show(raw, nil, func() error {
		var out struct {
			Entries []store.AuditEntry
			Next    string
		}
		if err := decode(raw, &out); err != nil {
			return err
		}
		rows := make([][]string, len(out.Entries))
		for i, e := range out.Entries {
			rows[i] = []string{strconv.FormatInt(e.ID, 10), fmtTime(e.At), e.User, e.Client, e.Action, e.Target, e.RequestID}
		}
		if err := table(a.stdout, []string{"ID", "TIME", "USER", "CLIENT", "ACTION", "TARGET", "REQUEST"}, rows); err != nil {
			return err
		}
		if out.Next != "" {
			_, err := fmt.Fprintf(a.stdout, "More: patchmesh admin audit --after %s\n", out.Next)
			return err
		}
		return nil
	})
}
