package store

import "sync"

// Changes tells waiters that the change log grew. A Store given one calls
// Notify after every committed change that appended to the log; a
// long-polling feed request waits on it instead of polling the database.
// The zero value is ready to use.
type Changes struct {
	mu sync.Mutex
	ch chan struct{}
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

// Notify wakes every current waiter.
func (c *Changes) Notify() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ch != nil {
		close(c.ch)
		c.ch = nil
	}
}
