// Package app is the ledger's application layer: one small file per command (open account,
// grant, transfer, buy) and query (info). Commands load the account aggregate from the event
// store (its snapshot plus the events after it), let the domain decide, and append with the
// version they decided on; a concurrency conflict is retried a bounded number of times with
// jitter. Queries read the projections' read models and never return anything older than the
// account's stream head; they run on the primary or, given a ReadRouter, on a hot standby
// that has replayed every command acknowledged before the query (readers.go).
package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/golang-lru/v2/expirable"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ledger/ledger/domain"
	"github.com/ledger/ledger/eventstore"
	"github.com/ledger/ledger/internal/auth"
)

// ErrBusy means a command kept losing the race for its account and gave up.
var ErrBusy = errors.New("the account is busy with other requests; try again")

// Waker tells readers that the read models may have moved.
type Waker interface {
	C() <-chan struct{}
}

// Config tunes the application layer; zero values take the defaults.
type Config struct {
	// MaxAttempts bounds how often a command runs when it meets concurrency conflicts (default 8).
	MaxAttempts int
	// ReadWait is how long a read waits for lagging projectors before folding the account's
	// newest events itself (default 5ms).
	ReadWait time.Duration
	// CatalogTTL is how long prices are cached (default 5s).
	CatalogTTL time.Duration
	// IdempotencyRetention is how long an idempotency key is remembered (default 24h).
	IdempotencyRetention time.Duration
	// ReadSlots bounds the statements reading read models at once (default 4); reads that
	// arrive while all are busy share the next one.
	ReadSlots int
	// RoleCacheTTL is how long an employee's roles, once read, are reused; 0 reads them afresh
	// every time. A revoked role keeps working for at most this long.
	RoleCacheTTL time.Duration
	// Reads, when set, chooses the database each read query runs on: the primary or a hot
	// standby that has every acknowledged command (ADR 11). Nil: every read on the primary.
	Reads ReadRouter
}

// App runs commands and queries.
type App struct {
	store EventStore
	pool  *pgxpool.Pool
	wake  Waker
	cfg   Config

	users   userCache
	catalog catalogCache
	locks   *accountLocks

	stats      counters
	reads      atomic.Pointer[readSet] // the active projection versions, for reads
	readGroups *readGroup
	states     stateCache
	roles      *expirable.LRU[string, auth.Roles] // nil: roles are not cached

	router  ReadRouter // nil: reads on the primary
	readers []reader   // the primary's, then each standby's
	totals  totalsFold
}

// New returns an App over the store; wake is the projections' signal.
func New(store *eventstore.Store, wake Waker, cfg Config) *App {
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 8
	}
	if cfg.ReadWait <= 0 {
		cfg.ReadWait = 5 * time.Millisecond
	}
	if cfg.CatalogTTL <= 0 {
		cfg.CatalogTTL = 5 * time.Second
	}
	if cfg.IdempotencyRetention <= 0 {
		cfg.IdempotencyRetention = DefaultIdempotencyRetention
	}
	if cfg.ReadSlots <= 0 {
		cfg.ReadSlots = defaultReadSlots
	}
	a := &App{store: store, pool: store.Pool(), wake: wake, cfg: cfg, locks: newAccountLocks(),
		router: cfg.Reads, readers: newReaders(store, cfg.Reads)}
	a.readGroups = newReadGroup(cfg.ReadSlots, defaultReadSize, a.readRows)
	a.users.m = make(map[string]uuid.UUID)
	a.catalog.lock = make(chan struct{}, 1)
	if cfg.RoleCacheTTL > 0 {
		a.roles = expirable.NewLRU[string, auth.Roles](roleCacheSize, nil, cfg.RoleCacheTTL)
	}
	return a
}

type counters struct {
	commands, conflicts, retries, exhausted atomic.Uint64
	readFresh, readAfterWait, readFolded    atomic.Uint64
}

// Stats are the application's counters since start.
type Stats struct {
	Commands uint64
	// Conflicts counts appends refused for a stale version; Retries the re-runs they caused;
	// Exhausted the commands that gave up with ErrBusy.
	Conflicts, Retries, Exhausted uint64
	// Reads by how read-your-writes was met: read models already current, current after
	// waiting for the projector, or the account's newest events folded in by the reader.
	ReadFresh, ReadAfterWait, ReadFolded uint64
	// ReadStatements counts the statements that read read models and ReadsGrouped the reads
	// they carried (several when reads arrived together).
	ReadStatements, ReadsGrouped uint64
}

// Stats returns the counters.
func (a *App) Stats() Stats {
	s := &a.stats
	statements, grouped := a.readGroups.batch.Stats()
	return Stats{Commands: s.commands.Load(), Conflicts: s.conflicts.Load(), Retries: s.retries.Load(),
		Exhausted: s.exhausted.Load(), ReadFresh: s.readFresh.Load(), ReadAfterWait: s.readAfterWait.Load(),
		ReadFolded: s.readFolded.Load(), ReadStatements: statements, ReadsGrouped: grouped}
}

// Result is what a reader needs to see a command's effect: the new versions of the streams it
// wrote and the place of its last event in the global log.
type Result struct {
	Versions   map[uuid.UUID]int64
	Checkpoint eventstore.Checkpoint
}

func resultOf(r eventstore.AppendResult, ids ...uuid.UUID) Result {
	res := Result{Versions: make(map[uuid.UUID]int64, len(ids)), Checkpoint: r.Checkpoint}
	for _, id := range ids {
		res.Versions[id] = r.Version(domain.StreamID(id))
	}
	return res
}

// loadAccount returns the account's state: as this process's last command left it (cached),
// or else as stored.
func (a *App) loadAccount(ctx context.Context, id uuid.UUID) (acc *domain.Account, cached bool, err error) {
	if acc, ok := a.states.get(id); ok {
		return acc, true, nil
	}
	acc, err = a.loadStored(ctx, id)
	return acc, false, err
}

// loadStored folds the account's snapshot and the events after it.
func (a *App) loadStored(ctx context.Context, id uuid.UUID) (*domain.Account, error) {
	st, err := a.store.LoadState(ctx, domain.StreamID(id))
	if err != nil {
		return nil, err
	}
	acc := &domain.Account{}
	if st.Snapshot != nil {
		if err := json.Unmarshal(st.Snapshot, acc); err != nil {
			return nil, fmt.Errorf("%w: snapshot of %s: %v", domain.ErrCorruptHistory, id, err)
		}
		if acc.Version != st.SnapshotVersion {
			return nil, fmt.Errorf("%w: snapshot of %s claims version %d, stored at %d", domain.ErrCorruptHistory, id, acc.Version, st.SnapshotVersion)
		}
	}
	for _, e := range st.Events {
		ev, err := e.Decode()
		if err != nil {
			return nil, fmt.Errorf("account %s version %d: %w", id, e.Version, err)
		}
		if err := acc.Apply(ev); err != nil {
			return nil, fmt.Errorf("account %s: %w", id, err)
		}
	}
	if acc.Version != st.Version {
		return nil, fmt.Errorf("%w: account %s folded to version %d, head is %d", domain.ErrCorruptHistory, id, acc.Version, st.Version)
	}
	return acc, nil
}

// retry runs attempt, holding the accounts' in-process locks, until it succeeds, fails with anything but a concurrency conflict, or has
// run MaxAttempts times; between attempts it sleeps a jittered, growing pause.
func (a *App) retry(ctx context.Context, accounts []uuid.UUID, attempt func() error) error {
	a.stats.commands.Add(1)
	unlock, err := a.locks.lock(ctx, accounts...)
	if err != nil {
		return err
	}
	defer unlock()
	for n := 1; ; n++ {
		err := attempt()
		var ce *eventstore.ConcurrencyError
		if !errors.As(err, &ce) {
			return err
		}
		a.stats.conflicts.Add(1)
		if n >= a.cfg.MaxAttempts {
			a.stats.exhausted.Add(1)
			return fmt.Errorf("%w (%d attempts): %v", ErrBusy, n, err)
		}
		a.stats.retries.Add(1)
		ceiling := min(time.Millisecond<<n, 50*time.Millisecond)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(rand.N(ceiling) + time.Millisecond/2):
		}
	}
}

// metadata is what every event of one command is recorded with.
func metadata(ctx context.Context, actor string) eventstore.Metadata {
	md := eventstore.Metadata{Actor: actor}
	if rc, ok := ctx.Value(requestKey{}).(RequestContext); ok {
		md.RequestID, md.ClientRequestID = rc.RequestID, rc.ClientRequestID
		md.CorrelationID = rc.CorrelationID
		md.IdempotencyKey = rc.IdempotencyKey
	}
	if md.CorrelationID == "" {
		md.CorrelationID = md.RequestID
	}
	return md
}

// RequestContext is what the edge knows about a request that events should record.
type RequestContext struct {
	// RequestID is the server's own id of the request.
	RequestID string
	// ClientRequestID is the id the client sent for its own tracing, if any: recorded apart
	// from RequestID, since the client chooses it.
	ClientRequestID string
	CorrelationID   string
	// IdempotencyKey makes the request's commands run at most once (see WithIdempotencyKey).
	IdempotencyKey string
	// Caller is the authenticated username that sent the request; idempotency keys are
	// scoped to it.
	Caller string
}

type requestKey struct{}

// WithRequest attaches rc to ctx for the metadata of events that ctx's commands append.
func WithRequest(ctx context.Context, rc RequestContext) context.Context {
	return context.WithValue(ctx, requestKey{}, rc)
}

// toEventData encodes domain events for the store.
func toEventData(md eventstore.Metadata, events ...domain.Event) []eventstore.EventData {
	out := make([]eventstore.EventData, len(events))
	for i, e := range events {
		out[i] = eventstore.EventData{Type: e.EventType(), SchemaVersion: domain.SchemaVersion, Payload: e, Metadata: md}
	}
	return out
}

// userCache maps usernames to account ids; both never change once created, so entries never go
// stale. It is bounded by clearing when full, which only costs lookups.
type userCache struct {
	mu sync.RWMutex
	m  map[string]uuid.UUID
}

const userCacheSize = 200_000

func (c *userCache) get(name string) (uuid.UUID, bool) {
	c.mu.RLock()
	id, ok := c.m[name]
	c.mu.RUnlock()
	return id, ok
}

func (c *userCache) put(name string, id uuid.UUID) {
	c.mu.Lock()
	if len(c.m) >= userCacheSize {
		clear(c.m)
	}
	c.m[name] = id
	c.mu.Unlock()
}
