package store

import (
	"context"
	"time"
)

// Actor is who asks for an admin change, as the API learned it. A Store
// given a context carrying an Actor (WithActor) records an AuditEntry in
// the same transaction as every change it commits under that context, so
// that a change is never without its audit row and a refused change (a
// rolled-back transaction) leaves none.
type Actor struct {
	// User is the admin's name.
	User string `json:"user"`
	// TokenID names the credential (never the credential itself).
	TokenID string `json:"token_id"`
	// RequestID is the API request's ID (X-Request-ID).
	RequestID string `json:"request_id"`
	// Client is the client's address as the server saw it.
	Client string `json:"client"`
	// Action is the request's method and route template, e.g.
	// "POST /v1/admin/tiers"; Target the path it named.
	Action string `json:"action"`
	Target string `json:"target"`
}

type actorKey struct{}

// WithActor returns ctx carrying a: changes made under it are audited.
func WithActor(ctx context.Context, a Actor) context.Context {
	return context.WithValue(ctx, actorKey{}, a)
}

// WithoutActor returns ctx carrying no Actor: what a node does on its own
// in the course of an admin request (a rollout's runner opening a wave,
// the webhook events a change sends, a hub admitting itself on a tier
// just added) is not the admin's change and is not audited again.
func WithoutActor(ctx context.Context) context.Context {
	return context.WithValue(ctx, actorKey{}, nil)
}

// ActorFrom returns the Actor ctx carries, if any.
func ActorFrom(ctx context.Context) (Actor, bool) {
	a, ok := ctx.Value(actorKey{}).(Actor)
	return a, ok
}

// AuditEntry is one audited admin change.
type AuditEntry struct {
	ID int64     `json:"id"`
	At time.Time `json:"at"`
	Actor
}

// AuditFilter pages through the audit trail, newest first.
type AuditFilter struct {
	// Since keeps entries at or after it; zero keeps all.
	Since time.Time
	// Before keeps entries with an ID below it (the next page); 0 starts
	// at the newest.
	Before int64
	// Limit caps the answer; 0 means the store's default (1000).
	Limit int
}

// Auditor reads the audit trail the store writes.
type Auditor interface {
	// Audit lists entries matching f, newest first.
	Audit(ctx context.Context, f AuditFilter) ([]AuditEntry, error)
}
