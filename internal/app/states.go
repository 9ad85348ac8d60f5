package app

import (
	"sync"

	"github.com/google/uuid"

	"github.com/ledger/ledger/domain"
)

// maxCachedStates bounds the account states kept in memory (a few hundred bytes each).
const maxCachedStates = 100_000

// stateCache keeps each account's state as this process's last command on it left it, so the
// next command on the account decides without reading the store. It is only a guess: the
// append still expects the cached version exactly, so a state made stale by another process
// costs a concurrency conflict, after which the command drops the entry and reloads. Commands
// hold the account's lock while they read and update its entry.
type stateCache struct {
	mu sync.Mutex
	m  map[uuid.UUID]*domain.Account
}

// get returns a copy of the account's cached state.
func (c *stateCache) get(id uuid.UUID) (*domain.Account, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	acc, ok := c.m[id]
	if !ok {
		return nil, false
	}
	return acc.Clone(), true
}

// put caches acc, which the caller no longer changes.
func (c *stateCache) put(acc *domain.Account) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[uuid.UUID]*domain.Account)
	}
	if len(c.m) >= maxCachedStates {
		n := 0
		for id := range c.m { // map order is random: drop a tenth, whichever
			delete(c.m, id)
			if n++; n >= maxCachedStates/10 {
				break
			}
		}
	}
	c.m[acc.ID] = acc
}

func (c *stateCache) drop(ids ...uuid.UUID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range ids {
		delete(c.m, id)
	}
}
