// Package relay publishes the ledger's events to NATS JetStream: the event log is the outbox.
// A relay reads the fenced log through eventstore.ReadLog from its own checkpoint, as a
// projector does, publishes each event as a watermill message (message UUID = event id, so
// JetStream's Nats-Msg-Id de-duplication drops a republish) without waiting for each
// acknowledgement, one event in flight per stream (ADR 18), and moves its checkpoint only past
// events JetStream acknowledged. It runs under the projection runner's lease (one relay across
// all processes) and never makes a command or a read wait for NATS: an outage only shows as lag
// and as the relay's state (ADR 12).
package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	wnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"

	"github.com/ledger/ledger/eventstore"
	"github.com/ledger/ledger/internal/audit"
	"github.com/ledger/ledger/internal/notify"
	"github.com/ledger/ledger/projections"
)

// Group is the relay's consumer group: the name of its checkpoint, lease and status.
const Group = "relay_nats"

// The stream and its subjects, the contract with consumers (docs/events.md).
const (
	DefaultStream = "LEDGER"
	// SubjectPrefix starts every event's subject: ledger.events.<event type>.
	SubjectPrefix = "ledger.events."
	// MinDuplicateWindow is the least de-duplication window the relay accepts: a crash and
	// restart must republish within it for JetStream to recognise the repeats.
	MinDuplicateWindow = 2 * time.Minute
)

// The message headers besides Nats-Msg-Id (the event id).
const (
	HeaderStreamID   = "Ledger-Stream-Id"
	HeaderVersion    = "Ledger-Version"
	HeaderCheckpoint = "Ledger-Checkpoint"
	HeaderType       = "Ledger-Event-Type"
)

// Config configures a relay; zero values take the defaults.
type Config struct {
	// URL is the NATS server (nats://user:password@host:4222; several comma-separated).
	URL string
	// Stream is the JetStream stream, created when absent (default LEDGER).
	Stream string
	// DuplicateWindow is the stream's de-duplication window when the relay creates it
	// (default and least MinDuplicateWindow).
	DuplicateWindow time.Duration
	// Window is the most events published and not yet acknowledged at once (default 1024). At
	// most one of them is of any one stream, so each stream's versions are stored in order.
	Window int
	// PageSize is the most events one read of the log returns (default 1000).
	PageSize int
	// PollInterval is the fallback read of the log when no append wakes the relay (default 1s).
	PollInterval time.Duration
	// PollSpacing is the least time between two reads of the log (default 5ms): under load,
	// appends gather into fewer, larger pages.
	PollSpacing time.Duration
	// AckTimeout bounds the wait for one publish's acknowledgement (default 5s).
	AckTimeout time.Duration
	// RetryBackoff is the first pause after NATS failed; it doubles up to MaxRetryBackoff
	// (defaults 250ms and 5s).
	RetryBackoff, MaxRetryBackoff time.Duration
}

func (c *Config) defaults() {
	if c.Stream == "" {
		c.Stream = DefaultStream
	}
	if c.DuplicateWindow == 0 {
		c.DuplicateWindow = MinDuplicateWindow
	}
	if c.Window <= 0 {
		c.Window = 1024
	}
	if c.PageSize <= 0 {
		c.PageSize = 1000
	}
	if c.PollInterval <= 0 {
		c.PollInterval = time.Second
	}
	if c.PollSpacing == 0 {
		c.PollSpacing = 5 * time.Millisecond
	}
	if c.AckTimeout <= 0 {
		c.AckTimeout = 5 * time.Second
	}
	if c.RetryBackoff <= 0 {
		c.RetryBackoff = 250 * time.Millisecond
	}
	if c.MaxRetryBackoff <= 0 {
		c.MaxRetryBackoff = 5 * time.Second
	}
}

// Relay publishes the log to JetStream. Run it with (*projections.Runner).AddWorker(Group,
// r.Run); Stats tells how it does in this process, projections.Statuses across processes.
type Relay struct {
	store *eventstore.Store
	pool  *pgxpool.Pool
	wake  *notify.Signal
	log   *slog.Logger
	cfg   Config

	active, connected              atomic.Bool
	published, failures, recreated atomic.Uint64
	stateMu                        sync.Mutex
	stateKnown                     bool
	lastErr                        string
}

// New returns a relay of store's log; wake is the signal notified after each append.
func New(store *eventstore.Store, pool *pgxpool.Pool, wake *notify.Signal, log *slog.Logger, cfg Config) *Relay {
	cfg.defaults()
	return &Relay{store: store, pool: pool, wake: wake, log: log.With("relay", Group), cfg: cfg}
}

// Stats are a relay's counters in this process since start.
type Stats struct {
	// Active: this process holds the relay's lease and runs it.
	Active bool
	// Connected: the running relay is connected to NATS.
	Connected bool
	// Published counts events JetStream acknowledged (repeats it dropped included).
	Published uint64
	// Failures counts failed attempts: connecting, provisioning the stream, or publishing.
	Failures uint64
	// StreamRecreated counts the times the relay found the stream gone and created it again.
	StreamRecreated uint64
}

// Stats returns the relay's counters.
func (r *Relay) Stats() Stats {
	return Stats{Active: r.active.Load(), Connected: r.connected.Load(), Published: r.published.Load(),
		Failures: r.failures.Load(), StreamRecreated: r.recreated.Load()}
}

// Run publishes the log until ctx ends. NATS failures never end it: it reports them (log,
// status) and tries again with backoff, so that the runner's view of it, and /api/ready, do
// not depend on NATS. It returns an error only when the database fails it.
func (r *Relay) Run(ctx context.Context) error {
	r.active.Store(true)
	defer r.active.Store(false)
	r.stateMu.Lock()
	r.stateKnown = false // a new run records its state once, whatever the last one left
	r.stateMu.Unlock()
	at, err := projections.LoadCheckpoint(ctx, r.pool, Group)
	if err != nil {
		return err
	}
	r.log.Info("relay started", "checkpoint", at.String(), "stream", r.cfg.Stream)
	var conn *connection
	defer func() {
		if conn != nil {
			conn.close()
		}
		r.connected.Store(false)
	}()
	backoff := r.cfg.RetryBackoff
	fail := func(err error) error {
		r.failures.Add(1)
		if rerr := r.report(ctx, err); rerr != nil {
			return rerr
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, r.cfg.MaxRetryBackoff)
		return nil
	}
	var lastRead time.Time
	for ctx.Err() == nil {
		if conn != nil && conn.nc.IsClosed() { // NATS gave up on it (refused credentials, say)
			conn.close()
			conn = nil
		}
		if conn == nil {
			var created bool
			if conn, created, err = r.connect(); err != nil {
				if err := fail(err); err != nil {
					return err
				}
				continue
			}
			if created && at != (eventstore.Checkpoint{}) {
				at = r.restore(at)
			}
		}
		if wait := r.cfg.PollSpacing - time.Since(lastRead); wait > 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(wait):
			}
		}
		woken := r.wake.C() // taken before the read: an append after it wakes the wait below
		lastRead = time.Now()
		page, err := r.store.ReadLog(ctx, at, r.cfg.PageSize)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if len(page) == 0 {
			if !conn.nc.IsConnected() {
				if err := fail(conn.unreachable()); err != nil {
					return err
				}
				continue
			}
			if err := r.report(ctx, nil); err != nil {
				return err
			}
			select {
			case <-ctx.Done():
			case <-woken:
			case <-time.After(r.cfg.PollInterval):
			}
			continue
		}
		n, perr := r.publish(conn, page)
		if n > 0 {
			at = page[n-1].Checkpoint()
			r.published.Add(uint64(n))
			// Saved even as the lease goes: a checkpoint only moves forward, and every event
			// before it was acknowledged.
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			err := projections.SaveCheckpoint(sctx, r.pool, Group, at)
			cancel()
			if err != nil {
				return err
			}
		}
		if perr == nil {
			backoff = r.cfg.RetryBackoff
			if err := r.report(ctx, nil); err != nil {
				return err
			}
			continue
		}
		if errors.Is(perr, errStreamMissing) {
			if err := r.recreate(conn); err == nil {
				at = r.restore(at)
				continue
			} else {
				perr = err
			}
		}
		if err := fail(perr); err != nil {
			return err
		}
	}
	return nil
}

// report records a change of the relay's state, "live" (err nil) or "failed" with err, in the
// log and in projection_status; an unchanged state is not written again.
func (r *Relay) report(ctx context.Context, err error) error {
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	r.stateMu.Lock()
	changed := !r.stateKnown || msg != r.lastErr
	r.stateKnown, r.lastErr = true, msg
	r.stateMu.Unlock()
	if !changed {
		return nil
	}
	if err != nil {
		r.log.Error("events are not reaching NATS; commands and reads go on, the relay tries again", "err", err)
	} else {
		r.log.Info("relay publishing to NATS", "stream", r.cfg.Stream)
	}
	if rerr := projections.RecordReaderState(ctx, r.pool, Group, err); rerr != nil {
		r.stateMu.Lock()
		r.stateKnown = false
		r.stateMu.Unlock()
		if ctx.Err() != nil {
			return nil
		}
		return rerr
	}
	return nil
}

// connection is one NATS connection and its JetStream context.
type connection struct {
	nc  *nats.Conn
	js  nats.JetStreamContext
	url string
}

func (c *connection) close() { c.nc.Close() }

// unreachable describes a connection that is down, with the reason NATS gave when it has one.
func (c *connection) unreachable() error {
	if err := c.nc.LastError(); err != nil {
		return fmt.Errorf("NATS at %s unreachable: %w", redact(c.url), err)
	}
	return fmt.Errorf("NATS at %s unreachable (reconnecting)", redact(c.url))
}

// connect connects to NATS, makes sure the stream exists, and returns the publisher.
func (r *Relay) connect() (*connection, bool, error) {
	nc, err := nats.Connect(r.cfg.URL,
		nats.Name("ledger relay"),
		nats.Timeout(2*time.Second),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		// No buffering while reconnecting: a publish then fails at once and is retried from
		// the checkpoint, instead of leaving the wire at an unknown time.
		nats.ReconnectBufSize(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			r.connected.Store(false)
			if err != nil {
				r.log.Warn("NATS connection lost; reconnecting", "err", err)
			}
		}),
		nats.ReconnectHandler(func(*nats.Conn) {
			r.connected.Store(true)
			r.log.Info("NATS connection back")
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			r.log.Warn("NATS reports an error", "err", err)
		}),
	)
	if err != nil {
		return nil, false, fmt.Errorf("connect to NATS at %s: %w", redact(r.cfg.URL), err)
	}
	// Acknowledgements are awaited asynchronously (see publish); one that does not come within
	// AckTimeout fails its event.
	js, err := nc.JetStream(nats.MaxWait(r.cfg.AckTimeout), nats.PublishAsyncMaxPending(r.cfg.Window),
		nats.PublishAsyncTimeout(r.cfg.AckTimeout))
	if err != nil {
		nc.Close()
		return nil, false, fmt.Errorf("NATS JetStream at %s: %w", redact(r.cfg.URL), err)
	}
	c := &connection{nc: nc, js: js, url: r.cfg.URL}
	created, err := EnsureStream(js, r.cfg.Stream, r.cfg.DuplicateWindow)
	if err != nil {
		c.close()
		return nil, false, err
	}
	if created {
		r.log.Info("JetStream stream created", "stream", r.cfg.Stream, "subjects", SubjectPrefix+">",
			"duplicate_window", r.cfg.DuplicateWindow.String())
	}
	r.connected.Store(nc.IsConnected())
	return c, created, nil
}

// EnsureStream creates the stream when it does not exist: file storage, the subjects
// ledger.events.>, and the given duplicate window. It reports whether it created it.
func EnsureStream(js nats.JetStreamManager, stream string, window time.Duration) (bool, error) {
	info, err := js.StreamInfo(stream)
	if err == nil {
		if info.Config.Duplicates < window {
			return false, fmt.Errorf("JetStream stream %s keeps a duplicate window of %v, less than the %v a republish after a crash needs: raise it (nats stream edit %s --dupe-window %v)",
				stream, info.Config.Duplicates, window, stream, window)
		}
		return false, nil
	}
	if !errors.Is(err, nats.ErrStreamNotFound) {
		return false, fmt.Errorf("JetStream stream %s: %w", stream, err)
	}
	_, err = js.AddStream(&nats.StreamConfig{
		Name:        stream,
		Description: "The ledger's events, one message per event, published by the ledger's relay",
		Subjects:    []string{SubjectPrefix + ">"},
		Storage:     nats.FileStorage,
		Duplicates:  window,
	})
	if err != nil && !errors.Is(err, nats.ErrStreamNameAlreadyInUse) {
		return false, fmt.Errorf("create JetStream stream %s: %w", stream, err)
	}
	return err == nil, nil
}

// errStreamMissing is a publish that no stream took: the stream is gone.
var errStreamMissing = errors.New("no JetStream stream takes the subject")

// restore is where the relay goes on after it created the stream while its checkpoint was at
// at: the start of the log, so that the new stream holds the whole history, each stream's
// events in order, before anything newer. The saved checkpoint stays until the relay passes
// it (checkpoints only move forward).
func (r *Relay) restore(at eventstore.Checkpoint) eventstore.Checkpoint {
	r.recreated.Add(1)
	r.log.Warn("JetStream stream was missing and is created again; the relay publishes the log again from its start, so that the stream holds the whole history in order",
		"stream", r.cfg.Stream, "relay_checkpoint", at.String())
	return eventstore.Checkpoint{}
}

// recreate creates the stream again after a publish found it gone.
func (r *Relay) recreate(c *connection) error {
	created, err := EnsureStream(c.js, r.cfg.Stream, r.cfg.DuplicateWindow)
	if err != nil {
		return err
	}
	if !created {
		// The stream is there, yet took nothing: its subjects do not cover ours.
		return fmt.Errorf("JetStream stream %s exists but takes no subject %s<type>: its subjects must include %s>",
			r.cfg.Stream, SubjectPrefix, SubjectPrefix)
	}
	return nil
}

// publish publishes page and returns how many of its first events JetStream acknowledged,
// and the first error. Events leave asynchronously, at most Window unacknowledged at a time and
// at most one of each stream: a stream's next event leaves only once JetStream acknowledged its
// previous one. So whatever fails (a refused subject, a lost acknowledgement, a reconnect), no
// event of a stream is stored after an earlier one of the same stream that was not. After the
// first failure nothing more leaves; events past the acknowledged prefix are published again
// next time, and JetStream drops the repeats by their message id.
func (r *Relay) publish(c *connection, page []eventstore.RecordedEvent) (int, error) {
	if !c.nc.IsConnected() {
		return 0, c.unreachable()
	}
	// Each stream's events in log order, and the streams whose next event may leave.
	queued := make(map[string][]int)
	var ready []string
	for i, e := range page {
		if _, ok := queued[e.StreamID]; !ok {
			ready = append(ready, e.StreamID)
		}
		queued[e.StreamID] = append(queued[e.StreamID], i)
	}
	type flight struct {
		i   int
		ack nats.PubAckFuture
	}
	var inFlight []flight // in the order sent, which is the order JetStream answers in
	acked := make([]bool, len(page))
	var first error
	firstAt := len(page)
	failed := func(i int, err error) {
		if i < firstAt {
			first, firstAt = err, i
		}
	}
	for {
		for first == nil && len(ready) > 0 && len(inFlight) < r.cfg.Window {
			i := queued[ready[0]][0]
			ready = ready[1:]
			ack, err := r.send(c, page[i])
			if err != nil {
				failed(i, err)
				break
			}
			inFlight = append(inFlight, flight{i, ack})
		}
		if len(inFlight) == 0 {
			break
		}
		f := inFlight[0]
		inFlight = inFlight[1:]
		select {
		case <-f.ack.Ok():
			acked[f.i] = true
			stream := page[f.i].StreamID
			if rest := queued[stream][1:]; len(rest) > 0 {
				queued[stream] = rest
				ready = append(ready, stream)
			}
		case err := <-f.ack.Err():
			failed(f.i, r.publishError(c, f.ack.Msg().Subject, err))
		}
	}
	n := 0
	for n < len(acked) && acked[n] {
		n++
	}
	if n == len(page) {
		return n, nil
	}
	if first == nil {
		first = errors.New("publishing stopped") // not reached: a gap means an event failed
	}
	return n, first
}

// marshaler writes events as watermill's NATS publisher does: the message's metadata become
// headers, its UUID the header watermill reads back.
var marshaler wnats.NATSMarshaler

// send publishes one event without waiting for its acknowledgement.
func (r *Relay) send(c *connection, e eventstore.RecordedEvent) (nats.PubAckFuture, error) {
	subject, err := Subject(e.Type)
	if err != nil {
		return nil, fmt.Errorf("event %s at %s: %w", e.ID, e.Checkpoint(), err)
	}
	body, err := audit.RecordOf(e).AppendJSON(nil)
	if err != nil {
		return nil, err
	}
	msg := message.NewMessage(e.ID.String(), body)
	msg.Metadata.Set(HeaderStreamID, e.StreamID)
	msg.Metadata.Set(HeaderVersion, strconv.FormatInt(e.Version, 10))
	msg.Metadata.Set(HeaderCheckpoint, e.Checkpoint().String())
	msg.Metadata.Set(HeaderType, e.Type)
	nm, err := marshaler.Marshal(subject, msg)
	if err != nil {
		return nil, err
	}
	// The message id is the event id: JetStream drops a repeat within its duplicate window.
	ack, err := c.js.PublishMsgAsync(nm, nats.MsgId(msg.UUID), nats.RetryAttempts(0))
	if err != nil {
		return nil, r.publishError(c, subject, err)
	}
	return ack, nil
}

// publishError describes a failed publish to subject.
func (r *Relay) publishError(c *connection, subject string, err error) error {
	switch {
	case errors.Is(err, nats.ErrNoStreamResponse), errors.Is(err, nats.ErrNoResponders):
		return fmt.Errorf("publish to %s: %w", subject, errStreamMissing)
	case errors.Is(err, nats.ErrAsyncPublishTimeout), errors.Is(err, nats.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		// A refused publish (permissions) is never answered; NATS said why on the side.
		if last := c.nc.LastError(); last != nil && strings.Contains(last.Error(), subject) {
			return fmt.Errorf("publish to %s refused: %w", subject, last)
		}
		if !c.nc.IsConnected() {
			return c.unreachable()
		}
		return fmt.Errorf("publish to %s: no acknowledgement within %v: %w", subject, r.cfg.AckTimeout, err)
	case errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrReconnectBufExceeded),
		errors.Is(err, nats.ErrConnectionReconnecting), errors.Is(err, nats.ErrDisconnected):
		return c.unreachable()
	default:
		return fmt.Errorf("publish to %s: %w", subject, err)
	}
}

// Subject returns the subject of events of type eventType: ledger.events.<type>. A type that
// is not one subject token (empty, or with a dot, a wildcard or white space) has none.
func Subject(eventType string) (string, error) {
	if eventType == "" || strings.ContainsAny(eventType, ".*> \t\r\n") {
		return "", fmt.Errorf("event type %q cannot be a NATS subject token", eventType)
	}
	return SubjectPrefix + eventType, nil
}

// redact hides the password of a NATS URL (or of each of a comma-separated list) for logs and
// status.
func redact(urls string) string {
	out := strings.Split(urls, ",")
	for i, u := range out {
		if pu, err := url.Parse(strings.TrimSpace(u)); err == nil {
			out[i] = pu.Redacted()
		}
	}
	return strings.Join(out, ",")
}
