package main

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"

	"github.com/ledger/ledger/domain"
	"github.com/ledger/ledger/internal/relay"
)

// The relay's lag is how long after a command's 200 its events can be read from JetStream,
// where the ledger's relay publishes them. A consumer of the stream keeps the highest version
// it has read of each account; the lag prober takes each sample's target from the stream heads,
// as it does for the read models, and the sample is done once the consumer has read that far.

// jetStreamHeads is a lagSource whose "applied" version of an account is the highest the
// consumer has read from JetStream.
type jetStreamHeads struct {
	streams *pgLagSource // with no groups: the stream heads alone

	mu   sync.Mutex
	read map[uuid.UUID]int64
	err  error // why the consumer stopped, if it did
}

var _ lagSource = (*jetStreamHeads)(nil)

// followJetStream reads the ledger's stream on the NATS server at url from its end onwards
// until ctx ends. The relay creates the stream when it first connects, so the consumer waits
// up to wait for it.
func followJetStream(ctx context.Context, url string, pool *pgxpool.Pool, wait time.Duration) (*jetStreamHeads, error) {
	nc, err := nats.Connect(url, nats.Name("ledger-loadtest"))
	if err != nil {
		return nil, fmt.Errorf("NATS at %s: %w", url, err)
	}
	h := &jetStreamHeads{streams: &pgLagSource{pool: pool}, read: make(map[uuid.UUID]int64)}
	js, err := nc.JetStream()
	if err != nil {
		nc.Close()
		return nil, err
	}
	for deadline := time.Now().Add(wait); ; {
		if _, err = js.StreamInfo(relay.DefaultStream, nats.Context(ctx)); err == nil {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			nc.Close()
			return nil, fmt.Errorf("JetStream stream %s at %s (is the ledger relaying there?): %w", relay.DefaultStream, url, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	go func() {
		defer nc.Close()
		err := relay.Read(ctx, nc, relay.ReadOptions{New: true}, h.add)
		if ctx.Err() == nil {
			h.mu.Lock()
			h.err = fmt.Errorf("JetStream consumer stopped: %v", err)
			h.mu.Unlock()
		}
	}()
	return h, nil
}

// add takes one message: its account and version come from the relay's headers.
func (h *jetStreamHeads) add(m relay.Message) error {
	id, ok := domain.AccountOf(m.Header.Get(relay.HeaderStreamID))
	if !ok {
		return nil
	}
	v, err := strconv.ParseInt(m.Header.Get(relay.HeaderVersion), 10, 64)
	if err != nil {
		return fmt.Errorf("message %s: version header: %w", m.ID, err)
	}
	h.mu.Lock()
	h.read[id] = max(h.read[id], v)
	h.mu.Unlock()
	return nil
}

func (h *jetStreamHeads) heads(ctx context.Context, accounts []uuid.UUID) ([]accountHeads, error) {
	out, err := h.streams.heads(ctx, accounts)
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.err != nil {
		return nil, h.err
	}
	for i, id := range accounts {
		out[i].applied = -1
		if v, ok := h.read[id]; ok {
			out[i].applied = v
		}
	}
	return out, nil
}
