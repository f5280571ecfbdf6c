package store

import (
	"sync"
	"sync/atomic"
)

// Changes tells waiters that the change log grew, and tells caches that
// the store was written. A Store given one calls Notify after every
// committed change that appended to the log (a long-polling feed request
// waits on it instead of polling the database) and Invalidate after every
// committed write a cache may depend on: catalog, tokens, machines'
// registrations and tokens, rollouts, anything written in a transaction.
// The zero value is ready to use.
type Changes struct {
	mu sync.Mutex
	ch chan struct{}
	// gen counts Invalidate calls; see Generation.
	gen atomic.Uint64
}

// Wait returns a channel closed at the next Notify. Take it before reading
// the log, so that a change committed between the read and the wait is not
// missed.
func (c *Changes) Wait() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ch == nil {
		c.ch = make(chan struct{})
	}
	return c.ch
}

// Notify wakes every current waiter. A change that grew the log also
// changed what caches hold, so Notify invalidates them too.
func (c *Changes) Notify() {
	c.Invalidate()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ch != nil {
		close(c.ch)
		c.ch = nil
	}
}

// Invalidate marks every value read from the store before it as possibly
// stale: it bumps the generation. The store calls it after the commit,
// never before, so that a reader who sees the new generation reads the
// committed data.
//
// Anything that revokes or deletes a credential (token, machine, root key)
// outside a store transaction must call it once the write is durable, or
// caches on this node keep honouring the old credential.
func (c *Changes) Invalidate() { c.gen.Add(1) }

// Generation is the number of invalidations so far. A cache reads it
// before it reads the store, tags what it read with it, and serves that
// entry only while Generation still returns the same number: a write that
// commits after the read bumps it, so the entry is never served after the
// write has returned.
func (c *Changes) Generation() uint64 { return c.gen.Load() }
