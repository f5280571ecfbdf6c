package store

import (
	"context"
	"time"
)

// JoinToken is a one-time token for a new node to join the mesh at the
// hub that made it: the hub admits the node that proves it holds the
// token, under the key it proves in the same exchange.
type JoinToken struct {
	ID string `json:"id"`
	// Name is the node name the join admits.
	Name string `json:"name"`
	// MACKey is the key of the join's HMACs (hex SHA-256 of the secret);
	// never shown, never logged.
	MACKey string `json:"-"`
	// Tiers the join admits the node on; empty means every tier.
	Tiers     []string  `json:"tiers"`
	CreatedBy string    `json:"created_by"`
	Created   time.Time `json:"created"`
	Expires   time.Time `json:"expires"`
	// Failures counts wrong responses; a token with too many is dead.
	Failures int `json:"failures"`
	// Used, UsedKeyID and UsedFrom record the join: when, which node key,
	// from which address. Zero while unused.
	Used      time.Time `json:"used,omitzero"`
	UsedKeyID string    `json:"used_key_id,omitempty"`
	UsedFrom  string    `json:"used_from,omitempty"`
}

// JoinTokens keeps the hub's join tokens.
type JoinTokens interface {
	// AddJoinToken stores a new token; ErrConflict if its ID exists.
	AddJoinToken(ctx context.Context, t JoinToken) error
	// JoinToken reads one token; ErrNotFound if there is none.
	JoinToken(ctx context.Context, id string) (JoinToken, error)
	// JoinTokens lists every token, newest first.
	JoinTokens(ctx context.Context) ([]JoinToken, error)
	// FailJoinToken counts a wrong response and returns the count.
	FailJoinToken(ctx context.Context, id string) (int, error)
	// UseJoinToken marks the token used by keyID from addr at at, once,
	// while it is live: ErrConflict if it was used already, has
	// maxFailures failures or more, or has expired by at.
	UseJoinToken(ctx context.Context, id, keyID, addr string, at time.Time, maxFailures int) error
}
