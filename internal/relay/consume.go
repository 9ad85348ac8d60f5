package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ledger/ledger/eventstore"
	"github.com/ledger/ledger/internal/audit"
)

// ReadOptions say which messages Read delivers.
type ReadOptions struct {
	// Stream is the stream to read (default LEDGER).
	Stream string
	// Types, when given, are the only event types delivered.
	Types []string
	// New delivers only messages stored from now on; otherwise Read starts at the stream's
	// first message.
	New bool
	// UntilCaughtUp makes Read return once it has delivered every message stored when it
	// reached the end of the stream; otherwise it waits for more until ctx ends.
	UntilCaughtUp bool
}

// Message is one event as stored in the stream.
type Message struct {
	// Sequence is the message's place in the stream.
	Sequence uint64
	// ID is its Nats-Msg-Id: the event id.
	ID      string
	Subject string
	Header  nats.Header
	// Data is the event's record (audit.Record) as JSON.
	Data []byte
}

// Read delivers the stream's messages in stream order to fn, through an ordered consumer of
// its own (ephemeral: nothing stays on the server), until ctx ends, fn fails, or (with
// UntilCaughtUp) nothing is pending.
func Read(ctx context.Context, nc *nats.Conn, opts ReadOptions, fn func(Message) error) error {
	if opts.Stream == "" {
		opts.Stream = DefaultStream
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
	if opts.New {
		cfg.DeliverPolicy = jetstream.DeliverNewPolicy
	}
	var want []string
	for _, t := range opts.Types {
		s, err := Subject(t)
		if err != nil {
			return err
		}
		want = append(want, s)
	}
	if len(want) == 1 { // several are filtered here: older servers take one filter only
		cfg.FilterSubjects = want
	}
	cons, err := js.OrderedConsumer(ctx, opts.Stream, cfg)
	if err != nil {
		return fmt.Errorf("read JetStream stream %s: %w", opts.Stream, err)
	}
	if opts.UntilCaughtUp {
		info, err := cons.Info(ctx)
		if err != nil {
			return fmt.Errorf("read JetStream stream %s: %w", opts.Stream, err)
		}
		if info.NumPending == 0 {
			return nil
		}
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("read JetStream stream %s: %w", opts.Stream, err)
	}
	defer it.Stop()
	stopped := make(chan struct{})
	defer close(stopped)
	go func() {
		select {
		case <-ctx.Done():
			it.Stop()
		case <-stopped:
		}
	}()
	for {
		m, err := it.Next()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return ctx.Err()
			}
			return fmt.Errorf("read JetStream stream %s: %w", opts.Stream, err)
		}
		meta, err := m.Metadata()
		if err != nil {
			return err
		}
		if len(want) <= 1 || slices.Contains(want, m.Subject()) {
			if err := fn(Message{Sequence: meta.Sequence.Stream, ID: m.Headers().Get(nats.MsgIdHdr),
				Subject: m.Subject(), Header: m.Headers(), Data: m.Data()}); err != nil {
				return err
			}
		}
		if opts.UntilCaughtUp && meta.NumPending == 0 {
			return nil
		}
	}
}

// Republish publishes the log's events after from (zero: the start of the log) up to the
// log's end when it begins, as the relay publishes them, without moving the relay's
// checkpoint: for an operator who lost the stream or adds a consumer that needs history.
// JetStream drops the events it already holds within its duplicate window; beyond it,
// consumers dedup by (stream id, version). It returns how many events it published and the
// checkpoint of the last; after a failure, a republish resumes from there.
func Republish(ctx context.Context, store *eventstore.Store, cfg Config, from eventstore.Checkpoint,
	progress func(done, total int64)) (int64, eventstore.Checkpoint, error) {
	cfg.defaults()
	r := &Relay{store: store, cfg: cfg, log: slog.New(slog.DiscardHandler)}
	until, err := store.LogHead(ctx)
	if err != nil {
		return 0, from, err
	}
	report, err := audit.ProgressHook(ctx, store, from, until, progress)
	if err != nil {
		return 0, from, err
	}
	conn, _, err := r.connect()
	if err != nil {
		return 0, from, err
	}
	defer conn.close()
	var done int64
	at := from
	_, err = store.WalkLog(ctx, eventstore.LogRange{After: from, Until: until}, cfg.PageSize, func(page []eventstore.RecordedEvent) error {
		n, err := r.publish(conn, page)
		done += int64(n)
		if n > 0 {
			at = page[n-1].Checkpoint()
		}
		report(done)
		return err
	})
	return done, at, err
}
