package api

import (
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/gorilla/mux"

	"github.com/patchmesh/patchmesh/auth"
	"github.com/patchmesh/patchmesh/store"
	"github.com/patchmesh/patchmesh/webhook"
)

// Webhooks is the node's webhook dispatcher as the admin API sees it.
type Webhooks interface {
	// AllowHTTP says whether plain http receivers are allowed.
	AllowHTTP() bool
	// Wake makes the dispatcher notice a new hook or message now.
	Wake()
}

// Bounds on a hook's secret.
const (
	minWebhookSecret = 16
	maxWebhookSecret = 1024
)

func (s *server) webhookRoutes(a *mux.Router) {
	a.Handle("/webhooks", methods{http.MethodGet: s.asAdmin(s.listWebhooks), http.MethodPost: s.asAdmin(s.addWebhook)})
	a.Handle("/webhooks/{id}", methods{http.MethodDelete: s.asAdmin(s.removeWebhook)})
	a.Handle("/webhooks/{id}/test", methods{http.MethodPost: s.asAdmin(s.testWebhook)})
	a.Handle("/webhooks/{id}/deliveries", methods{http.MethodGet: s.asAdmin(s.listDeliveries)})
	a.Handle("/audit", methods{http.MethodGet: s.asAdmin(s.listAudit)})
}

func (s *server) allowHTTPHooks() bool { return s.webhooks != nil && s.webhooks.AllowHTTP() }

func (s *server) wakeWebhooks() {
	if s.webhooks != nil {
		s.webhooks.Wake()
	}
}

func validWebhookID(id string) error {
	if !isHex16(id) {
		return invalid("id", "must be 16 lowercase hex digits")
	}
	return nil
}

func (s *server) listWebhooks(w http.ResponseWriter, r *http.Request, _ string) error {
	hooks, err := s.store.Webhooks(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, struct {
		Webhooks []store.Webhook `json:"webhooks"`
	}{nonNil(hooks)}) // store.Webhook never encodes its secret
	return nil
}

func (s *server) addWebhook(w http.ResponseWriter, r *http.Request, user string) error {
	var req struct {
		URL    string   `json:"url"`
		Events []string `json:"events"`
		Secret string   `json:"secret"`
	}
	if err := s.decode(w, r, &req); err != nil {
		return err
	}
	if err := webhook.CheckURL(req.URL, s.allowHTTPHooks()); err != nil {
		return invalid("url", "%v", err)
	}
	if len(req.Events) == 0 {
		return invalid("events", "must name at least one of %v", webhook.Events)
	}
	for _, e := range req.Events {
		if !webhook.ValidEvent(e) {
			return invalid("events", "unknown event %q; one of %v", e, webhook.Events)
		}
	}
	slices.Sort(req.Events)
	req.Events = slices.Compact(req.Events)
	if n := len(req.Secret); n < minWebhookSecret || n > maxWebhookSecret {
		return invalid("secret", "must be %d to %d bytes", minWebhookSecret, maxWebhookSecret)
	}
	var id [8]byte
	_, _ = rand.Read(id[:]) // crypto/rand.Read does not fail on supported platforms
	h := store.Webhook{ID: hex.EncodeToString(id[:]), URL: req.URL, Events: req.Events,
		Secret: []byte(req.Secret), Created: s.now().UTC().Truncate(time.Microsecond)}
	if err := s.store.AddWebhook(r.Context(), h); err != nil {
		return err
	}
	// The URL's host only: its path or query may carry the receiver's
	// own token.
	s.securityEvent(r, auth.EventWebhookAdded, slog.String("webhook_id", h.ID), slog.String("host", hostOf(h.URL)),
		slog.Any("events", h.Events), slog.String("user", user))
	s.wakeWebhooks()
	writeJSON(w, http.StatusCreated, h)
	return nil
}

func (s *server) removeWebhook(w http.ResponseWriter, r *http.Request, user string) error {
	id, err := pathVar(r, "id", validWebhookID)
	if err != nil {
		return err
	}
	if err := s.store.RemoveWebhook(r.Context(), id); err != nil {
		return err
	}
	s.securityEvent(r, auth.EventWebhookRemoved, slog.String("webhook_id", id), slog.String("user", user))
	s.wakeWebhooks()
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// testWebhook queues a ping for one hook, delivered like any event.
func (s *server) testWebhook(w http.ResponseWriter, r *http.Request, user string) error {
	id, err := pathVar(r, "id", validWebhookID)
	if err != nil {
		return err
	}
	if _, err := s.store.Webhook(r.Context(), id); err != nil {
		return err
	}
	m, err := webhook.NewMessage(webhook.Ping, s.info.Node, struct {
		Webhook string `json:"webhook"`
		User    string `json:"user"`
	}{id, user}, s.now())
	if err != nil {
		return err
	}
	m.Hook = id
	if err := s.store.Enqueue(r.Context(), []store.OutboxMessage{m}, store.NoCursor); err != nil {
		return err
	}
	s.wakeWebhooks()
	writeJSON(w, http.StatusAccepted, struct {
		EventID string `json:"event_id"`
	}{m.ID})
	return nil
}

func (s *server) listDeliveries(w http.ResponseWriter, r *http.Request, _ string) error {
	id, err := pathVar(r, "id", validWebhookID)
	if err != nil {
		return err
	}
	q := newQuery(r)
	limit := q.limit()
	if q.err != nil {
		return q.err
	}
	if _, err := s.store.Webhook(r.Context(), id); err != nil {
		return err
	}
	ds, err := s.store.Deliveries(r.Context(), id, limit)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, struct {
		Deliveries []store.Delivery `json:"deliveries"`
	}{nonNil(ds)})
	return nil
}

// listAudit pages through the audit trail, newest first, as listings
// page: at most limit entries, and next, when more follow, to pass back
// as after. The cursor is the last entry's ID.
func (s *server) listAudit(w http.ResponseWriter, r *http.Request, _ string) error {
	q := newQuery(r)
	var f store.AuditFilter
	q.get("since", func(v string) error {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return invalid("since", "must be an RFC 3339 time, e.g. 2026-01-02T15:04:05Z")
		}
		f.Since = t
		return nil
	})
	q.get("after", func(v string) error {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 {
			return invalid("after", "is not a cursor of this listing: pass the \"next\" of the previous page as it came")
		}
		f.Before = n
		return nil
	})
	size := q.limit()
	if q.err != nil {
		return q.err
	}
	if size == 0 {
		size = defaultAuditPage
	}
	f.Limit = size + 1 // one more says whether another page follows
	es, err := s.store.Audit(r.Context(), f)
	if err != nil {
		return err
	}
	out := struct {
		Entries []store.AuditEntry `json:"entries"`
		Next    string             `json:"next,omitempty"`
	}{Entries: nonNil(es)}
	if len(es) > size {
		out.Entries = es[:size]
		out.Next = strconv.FormatInt(es[size-1].ID, 10)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// defaultAuditPage is one page of the audit trail when none is asked.
const defaultAuditPage = 100

// hostOf returns a URL's host, for logs.
func hostOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return u.Host
}
