package audit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ledger/ledger/domain"
	"github.com/ledger/ledger/eventstore"
)

// VerifyOptions tune Verify; zero values take the defaults.
type VerifyOptions struct {
	// PageSize is how many events one read of the log returns (default 20,000).
	PageSize int
	// Workers is how many goroutines recompute hashes and decode events (default GOMAXPROCS).
	Workers int
	// Progress, when set, is told after each page how many events are replayed of how many.
	Progress func(done, total int64)
}

// Report is what Verify found.
type Report struct {
	// Events and Streams replayed, up to and including Until.
	Events  int64
	Streams int
	Until   eventstore.Checkpoint
	// Accounts folded and compared with the read models.
	Accounts int
	// Comparisons made: one per account and read model whose projector has applied a version
	// the replay reached.
	Comparisons int64
	// Snapshots compared: the aggregate states on stream head rows whose version the replay
	// reached.
	Snapshots int64
	// ReadModels are the read models compared: the active version of each projection.
	ReadModels []string
	Elapsed    time.Duration
	Mismatches []Mismatch
}

// OK reports whether nothing was found.
func (r *Report) OK() bool { return len(r.Mismatches) == 0 }

// EventsPerSecond is the replay's throughput.
func (r *Report) EventsPerSecond() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Events) / r.Elapsed.Seconds()
}

// WriteTo prints the report for people.
func (r *Report) WriteTo(w io.Writer) (int64, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "replayed %d events of %d streams, up to checkpoint %s, in %s: %.0f events/s\n",
		r.Events, r.Streams, r.Until, r.Elapsed.Round(time.Millisecond), r.EventsPerSecond())
	fmt.Fprintf(&b, "folded %d accounts; %d comparisons with %s at the versions their projectors have applied; %d snapshots compared\n",
		r.Accounts, r.Comparisons, strings.Join(r.ReadModels, ", "), r.Snapshots)
	if r.OK() {
		b.WriteString("no mismatch: every hash chain holds, and every read model and snapshot agrees with the log\n")
	} else {
		fmt.Fprintf(&b, "%d mismatches:\n", len(r.Mismatches))
		for _, m := range r.Mismatches {
			fmt.Fprintf(&b, "  %s\n", m)
		}
	}
	n, err := io.WriteString(w, b.String())
	return int64(n), err
}

// Mismatch is one thing the log and what is derived from it disagree on. An event's mismatch
// names its stream and version (and the event, when it exists); an account's names the account
// and the read model, or streams.snapshot for the aggregate state on the stream's head row.
type Mismatch struct {
	StreamID string
	Version  int64
	EventID  uuid.UUID

	AccountID uuid.UUID
	Username  string
	ReadModel string

	Problem string
}

// String renders the mismatch on one line.
func (m Mismatch) String() string {
	if m.StreamID != "" && m.EventID == uuid.Nil {
		return fmt.Sprintf("event %s version %d: %s", m.StreamID, m.Version, m.Problem)
	}
	if m.StreamID != "" {
		return fmt.Sprintf("event %s version %d (id %s): %s", m.StreamID, m.Version, m.EventID, m.Problem)
	}
	who := m.AccountID.String()
	if m.Username != "" {
		who = fmt.Sprintf("%q (%s)", m.Username, m.AccountID)
	}
	return fmt.Sprintf("account %s, %s: %s", who, m.ReadModel, m.Problem)
}

// The read models compared, each also the name of its projector's consumer group.
const (
	balance = iota
	inventory
	history
)

// modelNames are the read models compared, by kind: the active version of each projection,
// each also the name of its projector's consumer group (balance_v2, say).
type modelNames [3]string

// Verify replays the global log from its start to its end when called, in pages read through
// eventstore.ReadLog. It checks every stream's versions
// and hash chain and its head row (last hash, and the snapshot commands start from), folds every
// account with the domain's own rules, and compares each read model with the fold at the
// version that read model's projector has applied for the account. Head rows and read models
// are read first, in one snapshot; the replay then reads the log up to its end once every
// transaction that was running at that snapshot has ended, so every event a projector had
// applied by then is in the replayed part, and projectors that run meanwhile or lag behind are
// no mismatch.
func Verify(ctx context.Context, store *eventstore.Store, opts VerifyOptions) (*Report, error) {
	if opts.PageSize <= 0 {
		opts.PageSize = 20_000
	}
	if opts.Workers <= 0 {
		opts.Workers = runtime.GOMAXPROCS(0)
	}
	began := time.Now()
	snap, err := readSnapshot(ctx, store.Pool())
	if err != nil {
		return nil, err
	}
	// The snapshot's stream heads can show an event the log's readers cannot read yet: one
	// committed after an older transaction that was still running. Wait until they can.
	if err := store.WaitSettled(ctx, snap.committedBelow); err != nil {
		return nil, err
	}
	until, err := store.LogHead(ctx)
	if err != nil {
		return nil, err
	}
	progress, err := ProgressHook(ctx, store, eventstore.Checkpoint{}, until, opts.Progress)
	if err != nil {
		return nil, err
	}
	r := &replay{names: snap.names, workers: opts.Workers, rms: snap.readModels, heads: snap.heads,
		streams: make(map[string]*streamState), report: &Report{Until: until, ReadModels: snap.names[:]}}

	last, err := store.WalkLog(ctx, eventstore.LogRange{Until: until}, opts.PageSize, func(page []eventstore.RecordedEvent) error {
		r.page(page)
		progress(r.report.Events)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if last.Before(until) {
		// Everything up to until was below the oldest running transaction when until was read,
		// so it stays readable: a walk that ends before it is an error, not the end.
		return nil, fmt.Errorf("the log ended at %s, before %s", last, until)
	}
	if err := r.finish(ctx, store.Pool()); err != nil {
		return nil, err
	}
	r.report.Elapsed = time.Since(began)
	return r.report, nil
}

// replay is the verifier's state while it walks the log.
type replay struct {
	names   modelNames
	workers int
	rms     map[uuid.UUID]*readModel
	heads   map[string]*streamHead
	streams map[string]*streamState
	report  *Report
	checks  []check // reused between pages
}

// streamState is where one stream's chain and (for an account) fold stand.
type streamState struct {
	version  int64
	lastHash []byte
	head     *streamHead   // nil: the stream had no head row when the replay began
	account  *accountState // nil: not an account stream
}

// accountState is an account folded so far, with its coin history as a digest.
type accountState struct {
	acc     domain.Account
	hist    digest
	rm      *readModel // nil: no read model has anything of the account
	checked [len(modelNames{})]bool
	// broken stops the fold at a mismatch that makes the rest of it meaningless.
	broken bool
}

// check is one event's share of a page: where its stream stood before it, and what the
// parallel part found.
type check struct {
	stream  *streamState
	prev    []byte
	after   int64 // the stream's version before the event
	gap     bool
	link    *eventstore.ChainBreak
	event   domain.Event
	decoded error
}

// page checks one page: first, in log order, each event's place in its stream; then, in
// parallel, the hash links and the decoding; then, in order again, the folds.
func (r *replay) page(events []eventstore.RecordedEvent) {
	checks := slices.Grow(r.checks[:0], len(events))[:len(events)]
	r.checks = checks
	for i := range events {
		e := &events[i]
		st := r.stream(e)
		checks[i] = check{stream: st, prev: st.lastHash, after: st.version, gap: e.Version != st.version+1}
		// A copy: the page's bytes share large blocks, which one hash kept per stream would
		// keep alive, and with them the whole log.
		st.version, st.lastHash = e.Version, bytes.Clone(e.Hash)
	}
	parallel(r.workers, len(events), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			e, c := &events[i], &checks[i]
			c.link = eventstore.VerifyLink(c.prev, *e)
			if c.stream.account != nil {
				c.event, c.decoded = e.Decode()
			}
		}
	})
	for i := range events {
		r.fold(&events[i], &checks[i])
	}
	r.report.Events += int64(len(events))
}

func (r *replay) stream(e *eventstore.RecordedEvent) *streamState {
	if st, ok := r.streams[e.StreamID]; ok {
		return st
	}
	st := &streamState{head: r.heads[e.StreamID]}
	r.streams[e.StreamID] = st
	r.report.Streams++
	if rest, ok := strings.CutPrefix(e.StreamID, domain.StreamPrefix); ok {
		id, err := uuid.Parse(rest)
		if err != nil {
			r.eventMismatch(e, "an account stream whose id is not account-<uuid>")
			return st
		}
		st.account = &accountState{rm: r.rms[id]}
		st.account.acc.ID = id
		if st.account.rm != nil {
			st.account.rm.seen = true
		}
		r.report.Accounts++
	}
	return st
}

func (r *replay) eventMismatch(e *eventstore.RecordedEvent, format string, args ...any) {
	r.report.Mismatches = append(r.report.Mismatches, Mismatch{StreamID: e.StreamID, Version: e.Version,
		EventID: e.ID, Problem: fmt.Sprintf(format, args...)})
}

func (r *replay) accountMismatch(a *accountState, readModel, format string, args ...any) {
	name := a.acc.Username
	if name == "" && a.rm != nil {
		name = a.rm.username
	}
	r.report.Mismatches = append(r.report.Mismatches, Mismatch{AccountID: a.acc.ID, Username: name,
		ReadModel: readModel, Problem: fmt.Sprintf(format, args...)})
}

func (r *replay) fold(e *eventstore.RecordedEvent, c *check) {
	if c.gap {
		r.eventMismatch(e, "version %d follows version %d", e.Version, c.after)
	}
	if c.link != nil {
		r.eventMismatch(e, "%s", c.link.Reason)
	}
	if h := c.stream.head; h != nil && h.version == e.Version && !bytes.Equal(h.lastHash, e.Hash) {
		r.eventMismatch(e, "the stream's head row holds another last hash, %x, than this last event", h.lastHash)
	}
	a := c.stream.account
	if a == nil || a.broken {
		return
	}
	if a.acc.Version == 0 {
		r.compareAt(a) // what a read model holds before its first event: nothing
	}
	switch {
	case c.gap:
		a.broken = true // reported above
		return
	case c.decoded != nil:
		a.broken = true
		r.eventMismatch(e, "cannot be decoded: %v", c.decoded)
		return
	}
	if err := a.acc.Apply(c.event); err != nil {
		a.broken = true
		r.eventMismatch(e, "the account's fold refuses it: %v", err)
		return
	}
	switch ev := c.event.(type) {
	case domain.CoinsSent:
		a.hist.add(true, e.Version, ev.TransferID, ev.To.Username, int64(ev.Amount), e.RecordedAt)
	case domain.CoinsReceived:
		a.hist.add(false, e.Version, ev.TransferID, ev.From.Username, int64(ev.Amount), e.RecordedAt)
	}
	r.compareAt(a)
	if h := c.stream.head; h != nil && h.snapshot != nil && h.snapshotVersion == a.acc.Version {
		r.compareSnapshot(a, h)
	}
}

// compareSnapshot compares the aggregate state that commands start from (the head row's
// snapshot) with the fold at the snapshot's version.
func (r *replay) compareSnapshot(a *accountState, h *streamHead) {
	r.report.Snapshots++
	var snap domain.Account
	if err := json.Unmarshal(h.snapshot, &snap); err != nil {
		r.accountMismatch(a, snapshotName, "at version %d does not decode: %v", h.snapshotVersion, err)
		return
	}
	f := a.acc
	var diffs []string
	diff := func(what string, got, want any) {
		if got != want {
			diffs = append(diffs, fmt.Sprintf("%s %v, the log folds to %v", what, got, want))
		}
	}
	diff("id", snap.ID, f.ID)
	diff("username", snap.Username, f.Username)
	diff("version", snap.Version, f.Version)
	diff("balance", snap.Balance, f.Balance)
	diff("granted", snap.Granted, f.Granted)
	diff("received", snap.Received, f.Received)
	diff("sent", snap.Sent, f.Sent)
	diff("spent", snap.Spent, f.Spent)
	if !maps.Equal(snap.Items, f.Items) {
		diffs = append(diffs, fmt.Sprintf("items %v, the log folds to %v", snap.Items, f.Items))
	}
	if len(diffs) > 0 {
		r.accountMismatch(a, snapshotName, "at version %d: %s", h.snapshotVersion, strings.Join(diffs, "; "))
	}
}

// snapshotName names the aggregate snapshot on a stream's head row in mismatches.
const snapshotName = "streams.snapshot"

// compareAt compares every read model whose projector has applied exactly the account's
// folded version.
func (r *replay) compareAt(a *accountState) {
	rm := a.rm
	if rm == nil {
		return
	}
	v := a.acc.Version
	for g := range r.names {
		if rm.heads[g] != v || a.checked[g] {
			continue
		}
		a.checked[g] = true
		r.report.Comparisons++
		switch g {
		case balance:
			r.compareBalance(a, v)
		case inventory:
			r.compareInventory(a, v)
		case history:
			r.compareHistory(a, v)
		}
	}
}

func (r *replay) compareBalance(a *accountState, v int64) {
	rm, name := a.rm, r.names[balance]
	switch {
	case v == 0 && rm.hasBalance:
		r.accountMismatch(a, name, "a row (coins %d) although no event of the account is applied", rm.coins)
	case v == 0:
	case !rm.hasBalance:
		r.accountMismatch(a, name, "no row at applied version %d", v)
	default:
		if rm.coins != int64(a.acc.Balance) {
			r.accountMismatch(a, name, "coins %d at applied version %d, the log folds to %d", rm.coins, v, a.acc.Balance)
		}
		if rm.username != a.acc.Username {
			r.accountMismatch(a, name, "username %q at applied version %d, the log says %q", rm.username, v, a.acc.Username)
		}
	}
}

func (r *replay) compareInventory(a *accountState, v int64) {
	var diffs []string
	items := slices.Sorted(maps.Keys(a.acc.Items))
	for item := range a.rm.items {
		if _, ok := a.acc.Items[item]; !ok {
			items = append(items, item)
		}
	}
	slices.Sort(items)
	for _, item := range items {
		if got, want := a.rm.items[item], a.acc.Items[item]; got != want {
			diffs = append(diffs, fmt.Sprintf("%q %d, the log folds to %d", item, got, want))
		}
	}
	if len(diffs) > 0 {
		r.accountMismatch(a, r.names[inventory], "at applied version %d: %s", v, strings.Join(diffs, "; "))
	}
}

func (r *replay) compareHistory(a *accountState, v int64) {
	got, want := a.rm.hist, a.hist
	switch {
	case got.n != want.n:
		r.accountMismatch(a, r.names[history], "%d transfers at applied version %d, the log holds %d", got.n, v, want.n)
	case got.sum != want.sum:
		r.accountMismatch(a, r.names[history], "at applied version %d its %d transfers differ from the log's (parties, amounts, times or versions)", v, got.n)
	}
}

// finish reports what the replay could not reach: read models ahead of the log, read-model
// rows of accounts that have no stream, and stream head rows beyond the replayed events.
func (r *replay) finish(ctx context.Context, pool *pgxpool.Pool) error {
	ids := slices.Sorted(maps.Keys(r.streams))
	for _, id := range ids {
		a := r.streams[id].account
		if a == nil || a.rm == nil || a.broken {
			continue
		}
		for g, name := range r.names {
			if !a.checked[g] && a.rm.heads[g] > a.acc.Version {
				r.accountMismatch(a, name, "applied version %d, but the stream holds %d events", a.rm.heads[g], a.acc.Version)
			}
		}
	}
	accounts := slices.SortedFunc(maps.Keys(r.rms), func(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) })
	for _, id := range accounts {
		if rm := r.rms[id]; !rm.seen {
			a := &accountState{rm: rm}
			a.acc.ID = id
			r.accountMismatch(a, rm.firstModel(r.names), "holds an account that has no stream in the log")
		}
	}
	return r.checkUnreachedHeads(ctx, pool)
}

// checkUnreachedHeads looks at the head rows that claim more events than the replay met. An
// append that committed before the replay began can still lie beyond the readable log (behind
// an older transaction that was running); then its events are there, and only unread. Events
// missing from the log are a mismatch: a deleted last event leaves no link to break.
func (r *replay) checkUnreachedHeads(ctx context.Context, pool *pgxpool.Pool) error {
	var ids []string
	var versions []int64
	for _, id := range slices.Sorted(maps.Keys(r.heads)) {
		h := r.heads[id]
		if st := r.streams[id]; st == nil || st.version < h.version {
			ids, versions = append(ids, id), append(versions, h.version)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	rows, _ := pool.Query(ctx, `SELECT t.id, t.v, (SELECT count(*) FROM events e WHERE e.stream_id = t.id AND e.stream_version <= t.v)
		FROM unnest($1::text[], $2::bigint[]) AS t(id, v)`, ids, versions)
	var (
		id      string
		version int64
		n       int64
	)
	_, err := pgx.ForEachRow(rows, []any{&id, &version, &n}, func() error {
		if n != version {
			r.report.Mismatches = append(r.report.Mismatches, Mismatch{StreamID: id, Version: version,
				Problem: fmt.Sprintf("the stream's head row says it is the last of %d events, the log holds %d of them", version, n)})
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("check stream heads: %w", err)
	}
	return nil
}

// parallel runs fn over [0, n) split into one range per worker.
func parallel(workers, n int, fn func(lo, hi int)) {
	const minChunk = 256
	if workers <= 1 || n < 2*minChunk {
		fn(0, n)
		return
	}
	chunk := max(minChunk, (n+workers-1)/workers)
	var wg sync.WaitGroup
	for lo := 0; lo < n; lo += chunk {
		wg.Go(func() { fn(lo, min(lo+chunk, n)) })
	}
	wg.Wait()
}

// digest sums SHA-256 hashes of an account's transfer entries (side, version, transfer,
// amount, time, counterpart): equal digests mean equal sets of entries, and because an entry
// holds its stream version, the order is covered too. It lets the replay compare coin history
// without keeping every transfer in memory.
type digest struct {
	n   int64
	sum [4]uint64
}

func (d *digest) add(sent bool, version int64, transfer uuid.UUID, counterpart string, amount int64, at time.Time) {
	var buf [128]byte
	b := buf[:0]
	if sent {
		b = append(b, 's')
	} else {
		b = append(b, 'r')
	}
	b = binary.BigEndian.AppendUint64(b, uint64(version))
	b = append(b, transfer[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(amount))
	b = binary.BigEndian.AppendUint64(b, uint64(at.UnixMicro()))
	b = append(b, counterpart...) // last: the fixed-size fields before it keep entries apart
	h := sha256.Sum256(b)
	for k := range d.sum {
		d.sum[k] += binary.BigEndian.Uint64(h[8*k:])
	}
	d.n++
}
