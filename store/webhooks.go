package store

import (
	"context"
	"time"
)

// Webhook is a receiver the node posts events to.
type Webhook struct {
	ID     string   `json:"id"`
	URL    string   `json:"url"`
	Events []string `json:"events"`
	// Secret signs every delivery. It is stored as is (the node must sign
	// with it, so it cannot be hashed) and never encoded to JSON.
	Secret  []byte    `json:"-"`
	Created time.Time `json:"created"`
}

// OutboxMessage is one event to deliver.
type OutboxMessage struct {
	// Event is the event's name, ID its unique ID (the receiver's key for
	// spotting a repeat), Body the exact bytes to post.
	Event string
	ID    string
	Body  []byte
	// Hook, if set, sends the message to that hook alone, whatever it
	// subscribes to (a test delivery); else to every hook subscribed to
	// Event.
	Hook string
}

// NoCursor, as Enqueue's logCursor, leaves the webhook cursor alone.
const NoCursor = -1

// Delivery is one message to one hook, pending or delivered.
type Delivery struct {
	ID          int64     `json:"id"`
	Hook        string    `json:"hook"`
	Event       string    `json:"event"`
	EventID     string    `json:"event_id"`
	Body        []byte    `json:"-"`
	Created     time.Time `json:"created"`
	Attempts    int       `json:"attempts"`
	LastStatus  int       `json:"last_status"`
	LastError   string    `json:"last_error"`
	LastAttempt time.Time `json:"last_attempt,omitzero"`
	Delivered   time.Time `json:"delivered,omitzero"`
}

// Attempt is the outcome of one delivery attempt.
type Attempt struct {
	At        time.Time
	Status    int    // the receiver's HTTP status; 0 when none came
	Error     string // empty on success
	Delivered bool
}

// Webhooks keeps webhooks and their durable outbox. Messages are enqueued
// for every subscribed hook in one transaction and delivered per hook in
// the order they were enqueued; a delivery stays pending until an attempt
// succeeds, across restarts.
type Webhooks interface {
	// AddWebhook stores a hook. ErrConflict if its ID exists.
	AddWebhook(ctx context.Context, h Webhook) error
	// Webhook returns a hook by ID, secret included.
	Webhook(ctx context.Context, id string) (Webhook, error)
	// Webhooks lists hooks by creation, secrets included.
	Webhooks(ctx context.Context) ([]Webhook, error)
	// RemoveWebhook deletes a hook and its deliveries. ErrNotFound if
	// there is none.
	RemoveWebhook(ctx context.Context, id string) error

	// Enqueue adds msgs to the outbox of every hook they are for, in
	// order. With logCursor >= 0 (not NoCursor) it also moves the webhook
	// cursor over the change log (WebhookCursor) forward to logCursor, in
	// the same transaction, so that an event read from the log is
	// enqueued once; if the cursor is at logCursor or beyond already
	// (another node on the same database enqueued that stretch), it
	// enqueues nothing.
	Enqueue(ctx context.Context, msgs []OutboxMessage, logCursor int64) error
	// WebhookCursor is the change-log seq up to which events have been
	// enqueued; ok is false before the first Enqueue that set it.
	WebhookCursor(ctx context.Context) (seq int64, ok bool, err error)
	// NextDelivery returns the hook's oldest pending delivery;
	// ErrNotFound when none is pending.
	NextDelivery(ctx context.Context, hook string) (Delivery, error)
	// RecordAttempt notes an attempt on delivery id.
	RecordAttempt(ctx context.Context, id int64, a Attempt) error
	// Deliveries lists a hook's deliveries, newest first, at most limit
	// (0: the store's default of 1000).
	Deliveries(ctx context.Context, hook string, limit int) ([]Delivery, error)
	// PruneDeliveries deletes the records of deliveries delivered before
	// before, and returns how many. Pending ones are never pruned.
	PruneDeliveries(ctx context.Context, before time.Time) (int, error)
}
