// Package notify carries the wake-ups that keep the ledger's readers from polling: a Signal
// within one process (after an append commits, after a projector's batch commits), and a
// Notifier between the processes that share one database (LISTEN/NOTIFY).
package notify

import "sync"

// Signal is a broadcast without lost wake-ups: a waiter takes the channel first, then checks
// its condition, then waits on the channel; a Notify in between closes the channel it holds.
type Signal struct {
	mu sync.Mutex
	ch chan struct{}
}

// NewSignal returns a Signal ready to use.
func NewSignal() *Signal { return &Signal{ch: make(chan struct{})} }

// C returns the channel that the next Notify closes.
func (s *Signal) C() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ch
}

// Notify wakes everyone holding the current channel.
func (s *Signal) Notify() {
	s.mu.Lock()
	close(s.ch)
	s.ch = make(chan struct{})
	s.mu.Unlock()
}
