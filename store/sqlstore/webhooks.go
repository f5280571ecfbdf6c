package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/store"
)

// webhookCursor is the counters row holding the change-log seq up to which
// events have been put in the webhook outbox.
const webhookCursor = "webhook_log"

const webhookCols = `id, url, events, secret, created_us`

func scanWebhook(r scanner) (store.Webhook, error) {
	var (
		h       store.Webhook
		events  string
		created int64
	)
	if err := r.Scan(&h.ID, &h.URL, &events, &h.Secret, &created); err != nil {
		return h, err
	}
	if err := json.Unmarshal([]byte(events), &h.Events); err != nil {
		return h, fmt.Errorf("webhook %s: events: %w", h.ID, err)
	}
	h.Created = fromUS(created)
	return h, nil
}

// AddWebhook stores a hook. A zero Created means now.
func (s *Store) AddWebhook(ctx context.Context, h store.Webhook) (err error) {
	defer s.done("AddWebhook", time.Now(), &err)
	if h.ID == "" || h.URL == "" || len(h.Events) == 0 || len(h.Secret) == 0 {
		return fmt.Errorf("sqlstore: add webhook: %w",
			&catalog.InvalidError{Field: "webhook", Message: "needs an ID, a URL, events and a secret"})
	}
	events, err := json.Marshal(h.Events)
	if err != nil {
		return fmt.Errorf("sqlstore: add webhook: %w", err)
	}
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO webhooks (`+webhookCols+`) VALUES ($1, $2, $3, $4, $5)`,
			h.ID, h.URL, string(events), h.Secret, us(s.orNow(h.Created)))
		return err
	})
	return mapErr("add webhook "+h.ID, err)
}

// Webhook returns a hook by ID.
func (s *Store) Webhook(ctx context.Context, id string) (h store.Webhook, err error) {
	defer s.done("Webhook", time.Now(), &err)
	h, err = scanWebhook(s.db.QueryRowContext(ctx, `SELECT `+webhookCols+` FROM webhooks WHERE id = $1`, id))
	return h, mapErr("webhook "+id, err)
}

// Webhooks lists hooks by creation.
func (s *Store) Webhooks(ctx context.Context) (hs []store.Webhook, err error) {
	defer s.done("Webhooks", time.Now(), &err)
	hs, err = webhooks(ctx, s.db)
	return hs, mapErr("webhooks", err)
}

func webhooks(ctx context.Context, q querier) ([]store.Webhook, error) {
	return queryAll(ctx, q, `SELECT `+webhookCols+` FROM webhooks ORDER BY created_us, id`, nil, scanWebhook)
}

// RemoveWebhook deletes a hook; its deliveries go with it (ON DELETE
// CASCADE).
func (s *Store) RemoveWebhook(ctx context.Context, id string) (err error) {
	defer s.done("RemoveWebhook", time.Now(), &err)
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM webhooks WHERE id = $1`, id)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return catalog.ErrNotFound
		}
		return nil
	})
	return mapErr("remove webhook "+id, err)
}

// Enqueue puts msgs in the outbox of the hooks they are for and, with
// logCursor >= 0, moves the webhook cursor, all in one transaction.
//
// The cursor moves first, and only forward: its row stays locked to the
// commit, so when two nodes share the database and enqueue the same
// stretch of log, the second finds the cursor already there and enqueues
// nothing.
func (s *Store) Enqueue(ctx context.Context, msgs []store.OutboxMessage, logCursor int64) (err error) {
	defer s.done("Enqueue", time.Now(), &err)
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		if logCursor >= 0 {
			res, err := tx.ExecContext(ctx, `INSERT INTO counters (name, value) VALUES ($1, $2)
				ON CONFLICT (name) DO UPDATE SET value = excluded.value WHERE counters.value < excluded.value`,
				webhookCursor, logCursor)
			if err != nil {
				return err
			}
			if n, err := res.RowsAffected(); err != nil {
				return err
			} else if n == 0 {
				return nil // enqueued already
			}
		}
		hooks, err := webhooks(ctx, tx)
		if err != nil {
			return err
		}
		now := us(s.now())
		for _, m := range msgs {
			for _, h := range hooks {
				if m.Hook != "" && m.Hook != h.ID || m.Hook == "" && !slices.Contains(h.Events, m.Event) {
					continue
				}
				if _, err := tx.ExecContext(ctx, `INSERT INTO webhook_deliveries (hook, event, event_id, body, created_us)
					VALUES ($1, $2, $3, $4, $5)`, h.ID, m.Event, m.ID, m.Body, now); err != nil {
					return err
				}
			}
		}
		return nil
	})
	return mapErr("enqueue webhook deliveries", err)
}

// WebhookCursor returns the change-log seq enqueued up to.
func (s *Store) WebhookCursor(ctx context.Context) (seq int64, ok bool, err error) {
	defer s.done("WebhookCursor", time.Now(), &err)
	err = s.db.QueryRowContext(ctx, `SELECT value FROM counters WHERE name = $1`, webhookCursor).Scan(&seq)
	if err == sql.ErrNoRows {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, mapErr("webhook cursor", err)
	}
	return seq, true, nil
}

const deliveryCols = `id, hook, event, event_id, body, created_us, attempts, last_status, last_error, last_attempt_us, delivered_us`

func scanDelivery(r scanner) (store.Delivery, error) {
	var (
		d                  store.Delivery
		created            int64
		attempt, delivered sql.NullInt64
	)
	err := r.Scan(&d.ID, &d.Hook, &d.Event, &d.EventID, &d.Body, &created, &d.Attempts,
		&d.LastStatus, &d.LastError, &attempt, &delivered)
	d.Created, d.LastAttempt, d.Delivered = fromUS(created), fromNullUS(attempt), fromNullUS(delivered)
	return d, err
}

// NextDelivery returns the hook's oldest pending delivery.
func (s *Store) NextDelivery(ctx context.Context, hook string) (d store.Delivery, err error) {
	defer s.done("NextDelivery", time.Now(), &err)
	d, err = scanDelivery(s.db.QueryRowContext(ctx, `SELECT `+deliveryCols+` FROM webhook_deliveries
		WHERE hook = $1 AND delivered_us IS NULL ORDER BY id LIMIT 1`, hook))
	return d, mapErr("next delivery of webhook "+hook, err)
}

// RecordAttempt notes one attempt on a delivery.
func (s *Store) RecordAttempt(ctx context.Context, id int64, a store.Attempt) (err error) {
	defer s.done("RecordAttempt", time.Now(), &err)
	at := s.orNow(a.At)
	delivered := sql.NullInt64{}
	if a.Delivered {
		delivered = sql.NullInt64{Int64: us(at), Valid: true}
	}
	res, err := s.exec(ctx, `UPDATE webhook_deliveries SET attempts = attempts + 1,
		last_status = $1, last_error = $2, last_attempt_us = $3, delivered_us = $4 WHERE id = $5`,
		a.Status, a.Error, us(at), delivered, id)
	if err == nil {
		var n int64
		if n, err = res.RowsAffected(); err == nil && n == 0 {
			err = catalog.ErrNotFound
		}
	}
	return mapErr(fmt.Sprintf("record attempt on delivery %d", id), err)
}

// Deliveries lists a hook's deliveries, newest first.
func (s *Store) Deliveries(ctx context.Context, hook string, n int) (ds []store.Delivery, err error) {
	defer s.done("Deliveries", time.Now(), &err)
	ds, err = queryAll(ctx, s.db, `SELECT `+deliveryCols+` FROM webhook_deliveries WHERE hook = $1
		ORDER BY id DESC LIMIT `+fmt.Sprint(limit(n)), []any{hook}, scanDelivery)
	return ds, mapErr("deliveries of webhook "+hook, err)
}

// PruneDeliveries deletes delivered records older than before.
func (s *Store) PruneDeliveries(ctx context.Context, before time.Time) (n int, err error) {
	defer s.done("PruneDeliveries", time.Now(), &err)
	res, err := s.exec(ctx, `DELETE FROM webhook_deliveries
		WHERE delivered_us IS NOT NULL AND delivered_us < $1`, us(before))
	if err != nil {
		return 0, mapErr("prune deliveries", err)
	}
	m, err := res.RowsAffected()
	return int(m), mapErr("prune deliveries", err)
}
