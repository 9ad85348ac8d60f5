package console

import (
	"context"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"
	dto "github.com/prometheus/client_model/go"

	"github.com/ledger/ledger/domain"
	"github.com/ledger/ledger/eventstore"
	"github.com/ledger/ledger/httpapi"
	"github.com/ledger/ledger/internal/app"
	"github.com/ledger/ledger/internal/audit"
)

// Page sizes.
const (
	accountsPage    = 50
	eventsPage      = 50
	logPageSize     = 50
	tailPage        = 200
	maxPrefixLength = 64
	// totalsBudget bounds the events one overview request folds into the bank's totals; a
	// console that has just started catches up over a few refreshes.
	totalsBudget = 200_000
)

// overview is the overview page's numbers, also served as JSON to refresh it.
type overview struct {
	Totals           app.Totals `json:"-"`
	Holds            bool       `json:"holds"`
	CaughtUp         bool       `json:"caughtUp"`
	Accounts         int64      `json:"accounts"`
	Events           int64      `json:"events"`
	Granted          int64      `json:"granted"`
	Spent            int64      `json:"spent"`
	Circulating      int64      `json:"circulating"`
	Sum              int64      `json:"sum"`
	Until            string     `json:"until"`
	Commands         float64    `json:"commands"`
	CommandsPerSec   float64    `json:"commandsPerSecond"`
	ProjectionBehind int64      `json:"projectionEventsBehind"`
	ProjectionLagMs  int64      `json:"projectionLagMs"`
	At               string     `json:"at"`
}

func (c *Console) overview(ctx context.Context) (overview, error) {
	t, err := c.Ledger.BankTotals(ctx, totalsBudget)
	if err != nil {
		return overview{}, err
	}
	o := overview{Totals: t, Holds: t.Holds(), CaughtUp: t.CaughtUp, Accounts: t.Accounts, Events: t.Events,
		Granted: t.Granted, Spent: t.Spent, Circulating: t.Balances, Sum: t.Balances + t.Spent,
		Until: t.Until.String(), At: t.At.UTC().Format(time.RFC3339)}
	if c.Metrics != nil {
		families, err := c.Metrics.Gather()
		if err != nil {
			c.Log.WarnContext(ctx, "console: gather metrics", "err", err)
		}
		for _, f := range families {
			switch f.GetName() {
			case "ledger_commands_total":
				o.Commands = sum(f, (*dto.Metric).GetCounter)
			case "ledger_projection_events_behind":
				o.ProjectionBehind = int64(maxOf(f))
			case "ledger_projection_lag_seconds":
				o.ProjectionLagMs = int64(maxOf(f) * 1000)
			}
		}
		o.CommandsPerSec = c.rates.rate(o.Commands, time.Now())
	}
	return o, nil
}

func sum(f *dto.MetricFamily, counter func(*dto.Metric) *dto.Counter) float64 {
	var s float64
	for _, m := range f.GetMetric() {
		s += counter(m).GetValue()
	}
	return s
}

func maxOf(f *dto.MetricFamily) float64 {
	var v float64
	for _, m := range f.GetMetric() {
		v = max(v, m.GetGauge().GetValue())
	}
	return v
}

// commandRate turns the command counter into a rate over the time between two readings at
// least a second apart.
type commandRate struct {
	mu         sync.Mutex
	prev, last sample
}

type sample struct {
	n  float64
	at time.Time
}

func (r *commandRate) rate(n float64, now time.Time) float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.last.at.IsZero() || now.Sub(r.last.at) >= time.Second {
		r.prev, r.last = r.last, sample{n, now}
	}
	if r.prev.at.IsZero() {
		return 0
	}
	return (r.last.n - r.prev.n) / r.last.at.Sub(r.prev.at).Seconds()
}

func (c *Console) handleOverview(w http.ResponseWriter, r *http.Request) error {
	o, err := c.overview(r.Context())
	if err != nil {
		return err
	}
	c.render(w, r, http.StatusOK, "overview", o)
	return nil
}

func (c *Console) handleOverviewJSON(w http.ResponseWriter, r *http.Request) error {
	o, err := c.overview(r.Context())
	w.Header().Set("Content-Type", "application/json")
	if err != nil { // answered in JSON, as the script polling it reads it, not as a page
		code, msg := httpapi.Status(err)
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(map[string]string{"errors": msg})
		return nil
	}
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(o)
	return nil
}

type accountsList struct {
	Prefix   string
	Accounts []app.AccountSummary
	Next     string
}

func (c *Console) handleAccounts(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	prefix, after := q.Get("prefix"), q.Get("after")
	if len(prefix) > maxPrefixLength || len(after) > 4*maxPrefixLength {
		return errorf(http.StatusBadRequest, "a name prefix is at most %d bytes", maxPrefixLength)
	}
	if eventstore.CheckText(prefix) != nil || eventstore.CheckText(after) != nil {
		return errorf(http.StatusBadRequest, "a name prefix is text without NUL characters")
	}
	list, err := c.Ledger.Accounts(r.Context(), prefix, after, accountsPage+1)
	if err != nil {
		return err
	}
	page := accountsList{Prefix: prefix, Accounts: list}
	if len(list) > accountsPage {
		page.Accounts = list[:accountsPage]
		page.Next = page.Accounts[accountsPage-1].Username
	}
	c.render(w, r, http.StatusOK, "accounts", page)
	return nil
}

// accountName reads and checks the {name} of an account's path, and whether the viewer may
// see that account: their own, or any for auditors and admins (the same answer for accounts
// that exist and those that do not).
func (c *Console) accountName(r *http.Request) (string, uuid.UUID, error) {
	name := chi.URLParam(r, "name")
	if r.URL.RawPath != "" {
		d, err := url.PathUnescape(name)
		if err != nil {
			return "", uuid.Nil, errorf(http.StatusBadRequest, "the account's name is malformed in the address")
		}
		name = d
	}
	v, _ := viewerOf(r)
	if name != v.Username() && !v.Reader() {
		return "", uuid.Nil, errorf(http.StatusForbidden, "you may see only your own account; another's needs the auditor or admin role")
	}
	if domain.ValidateUsername(name) != nil {
		return "", uuid.Nil, errorf(http.StatusBadRequest, "%q is not an employee's name", name)
	}
	id, err := c.Ledger.AccountID(r.Context(), name)
	if errors.Is(err, domain.ErrUnknownAccount) {
		return "", uuid.Nil, errorf(http.StatusNotFound, "no employee is named %q", name)
	}
	return name, id, err
}

// allEvents reads the account's whole stream, in one read.
func (c *Console) allEvents(ctx context.Context, id uuid.UUID) ([]eventstore.RecordedEvent, error) {
	var out []eventstore.RecordedEvent
	err := c.Ledger.ReadAccountEvents(ctx, id, 0, 0, func(e *eventstore.RecordedEvent) { out = append(out, e.Clone()) })
	return out, err
}

// eventRow is one event as the account page and the log show it.
type eventRow struct {
	Position     int64
	Checkpoint   string
	Version      int64
	At           time.Time
	Type         string
	Change       int64
	Balance      int64
	Counterparty string
	Account      string // the stream's employee, in the log
	StreamID     string
	Hash         string
	Chain        bool
	ChainProblem string
	Detail       string
}

// describe fills what an event says: its change to the balance and the other party.
func describe(e eventstore.RecordedEvent) eventRow {
	row := eventRow{Position: e.Position, Checkpoint: e.Checkpoint().String(), Version: e.Version, At: e.RecordedAt,
		Type: e.Type, StreamID: e.StreamID, Hash: hex.EncodeToString(e.Hash)}
	if len(row.Hash) > 12 {
		row.Hash = row.Hash[:12]
	}
	ev, err := e.Decode()
	if err != nil {
		row.Detail = "undecodable: " + err.Error()
		return row
	}
	row.Change, row.Counterparty = effect(ev)
	switch ev := ev.(type) {
	case domain.ItemPurchased:
		row.Detail = fmt.Sprintf("%d × %s at %d", ev.Quantity, ev.Item, ev.Price)
	case domain.CoinsGranted:
		row.Detail = ev.Reason
		if ev.GrantedBy != "" {
			row.Detail += " (by " + ev.GrantedBy + ")"
		}
	case domain.AccountOpened:
		row.Detail = ev.Username
	}
	return row
}

// effect is an event's change to its account's balance, and the other party of a transfer.
func effect(ev domain.Event) (int64, string) {
	change := int64(domain.BalanceChange(ev))
	switch ev := ev.(type) {
	case domain.CoinsSent:
		return change, ev.To.Username
	case domain.CoinsReceived:
		return change, ev.From.Username
	}
	return change, ""
}

type accountPage struct {
	Name      string
	AccountID uuid.UUID
	Info      app.Info
	AsOf      string
	Chart     chart
	Rows      []eventRow // this page of the table, newest first
	Total     int
	Page      int
	Pages     int
	ChainOK   bool
	Breaks    int
	// Received and Sent are the newest transfers of each side (the events table has them all),
	// and their counts.
	Received, Sent   []app.Transfer
	ReceivedN, SentN int
}

// shownTransfers is how many transfers of each side the account page lists.
const shownTransfers = 20

// newest returns the last n of ts, newest first.
func newest(ts []app.Transfer, n int) []app.Transfer {
	out := make([]app.Transfer, 0, min(n, len(ts)))
	for i := len(ts) - 1; i >= 0 && len(out) < n; i-- {
		out = append(out, ts[i])
	}
	return out
}

func (c *Console) handleAccount(w http.ResponseWriter, r *http.Request) error {
	name, id, err := c.accountName(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	page := accountPage{Name: name, AccountID: id, AsOf: strings.TrimSpace(q.Get("asOf"))}
	ctx := r.Context()
	var info func() error
	if page.AsOf != "" {
		at, err := httpapi.ParseAsOf(page.AsOf)
		if err != nil {
			return err
		}
		info = func() (err error) { page.Info, err = c.Ledger.InfoAsOf(ctx, id, at); return err }
	} else {
		info = func() (err error) { page.Info, err = c.Ledger.Info(ctx, id); return err }
	}
	// The table and the chart show the account as the answer does: up to its version. The
	// answer of now and the stream are read side by side (the stream to its head, then on to
	// the answer's version if that is further); an answer of the past is read first, so the
	// stream is read only up to it.
	var h accountHistory
	if page.AsOf != "" {
		if err = info(); err == nil {
			err = h.read(ctx, c.Ledger, id, page.Info.Version)
		}
	} else {
		answered := make(chan error, 1)
		go func() { answered <- info() }()
		err = h.read(ctx, c.Ledger, id, 0)
		if infoErr := <-answered; infoErr != nil {
			err = infoErr
		} else if err == nil && h.last() < page.Info.Version {
			err = h.read(ctx, c.Ledger, id, page.Info.Version)
		}
	}
	if err != nil {
		return err
	}
	total := page.Info.Version
	h.upTo(total)
	page.ChainOK, page.Breaks = h.holds(total), len(h.problems)
	page.Total = int(total)
	page.Pages = max(1, (page.Total+eventsPage-1)/eventsPage)
	if p, err := strconv.Atoi(q.Get("page")); err == nil && p >= 1 {
		page.Page = min(p, page.Pages)
	} else if v, err := strconv.ParseInt(q.Get("v"), 10, 64); err == nil && v >= 1 && v <= total {
		page.Page = int((total-v)/eventsPage) + 1
	} else {
		page.Page = 1
	}
	// Newest first: page 1 ends with the newest event; this page shows versions (lo, hi].
	hi := total - int64(page.Page-1)*eventsPage
	lo := max(0, hi-eventsPage)
	if hi > lo {
		events, err := c.Ledger.AccountEvents(ctx, id, lo, int(hi-lo))
		if err != nil {
			return err
		}
		for i := len(events) - 1; i >= 0; i-- {
			row := describe(events[i])
			row.Balance, _ = h.balance(row.Version)
			row.Chain, row.ChainProblem = h.holds(row.Version), h.problems[row.Version]
			page.Rows = append(page.Rows, row)
		}
	}
	page.Chart = drawChart(h.changes)
	page.Received, page.ReceivedN = newest(page.Info.Received, shownTransfers), len(page.Info.Received)
	page.Sent, page.SentN = newest(page.Info.Sent, shownTransfers), len(page.Info.Sent)
	c.render(w, r, http.StatusOK, "account", page)
	return nil
}

type download struct {
	ext, contentType string
	write            func(w http.ResponseWriter, events []eventstore.RecordedEvent) error
}

var ndjsonDownload = download{"ndjson", "application/x-ndjson", func(w http.ResponseWriter, events []eventstore.RecordedEvent) error {
	lw := audit.NewLineWriter(w)
	for _, e := range events {
		if err := lw.Write(e); err != nil {
			return err
		}
	}
	return lw.Flush()
}}

var csvDownload = download{"csv", "text/csv; charset=utf-8", func(w http.ResponseWriter, events []eventstore.RecordedEvent) error {
	cw := csv.NewWriter(w)
	_ = cw.Write([]string{"checkpoint", "position", "streamId", "version", "eventId", "type", "schemaVersion", "recordedAt", "hash", "payload", "metadata"})
	for _, e := range events {
		rec := audit.RecordOf(e)
		if err := cw.Write([]string{rec.Checkpoint, strconv.FormatInt(rec.Position, 10), rec.StreamID,
			strconv.FormatInt(rec.Version, 10), rec.EventID.String(), rec.Type, strconv.Itoa(rec.SchemaVersion),
			rec.RecordedAt.Format(time.RFC3339Nano), rec.Hash, string(rec.Payload), string(rec.Metadata)}); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}}

// handleDownload serves the account's events, each as the audit endpoints and the export
// write them.
func (c *Console) handleDownload(d download) handler {
	return func(w http.ResponseWriter, r *http.Request) error {
		name, id, err := c.accountName(r)
		if err != nil {
			return err
		}
		events, err := c.allEvents(r.Context(), id)
		if err != nil {
			return err
		}
		w.Header().Set("Content-Type", d.contentType)
		w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="%s.%s"`, url.PathEscape(name), d.ext))
		if err := d.write(w, events); err != nil {
			c.Log.DebugContext(r.Context(), "console download cut short", "err", err)
		}
		return nil
	}
}

type logPage struct {
	Rows   []eventRow
	Next   string // before of the next (older) page
	Tail   string // after of the live tail; "" when this is not the newest page
	Before string
}

// logRows describes events of the log with the employee whose stream each is in.
func (c *Console) logRows(ctx context.Context, events []eventstore.RecordedEvent) ([]eventRow, error) {
	owners, err := streamOwners(ctx, c.Ledger, events, func(e eventstore.RecordedEvent) string { return e.StreamID })
	if err != nil {
		return nil, err
	}
	rows := make([]eventRow, len(events))
	for i, e := range events {
		rows[i] = describe(e)
		rows[i].Account = owners[e.StreamID]
	}
	return rows, nil
}

// streamOwners returns, by stream id, the name of the employee whose account stream each of
// items' streams is, in one lookup ("" for an account without one); a stream of no account has
// no entry.
func streamOwners[T any](ctx context.Context, l Ledger, items []T, stream func(T) string) (map[string]string, error) {
	accounts := make(map[string]uuid.UUID)
	ids := make([]uuid.UUID, 0, len(items))
	for _, it := range items {
		s := stream(it)
		if _, seen := accounts[s]; seen {
			continue
		}
		if id, ok := domain.AccountOf(s); ok {
			accounts[s] = id
			ids = append(ids, id)
		}
	}
	names, err := l.Usernames(ctx, ids)
	if err != nil {
		return nil, err
	}
	owners := make(map[string]string, len(accounts))
	for s, id := range accounts {
		owners[s] = names[id]
	}
	return owners, nil
}

func (c *Console) handleLog(w http.ResponseWriter, r *http.Request) error {
	var before eventstore.Checkpoint
	page := logPage{Before: r.URL.Query().Get("before")}
	if page.Before != "" {
		var err error
		if before, err = eventstore.ParseCheckpoint(page.Before); err != nil {
			return errorf(http.StatusBadRequest, "before %q: want a checkpoint transaction:position, as the log shows", page.Before)
		}
	}
	events, err := c.Ledger.AuditLogBefore(r.Context(), before, logPageSize)
	if err != nil {
		return err
	}
	if page.Rows, err = c.logRows(r.Context(), events); err != nil {
		return err
	}
	if len(events) == logPageSize {
		page.Next = events[len(events)-1].Checkpoint().String()
	}
	if page.Before == "" {
		var newest eventstore.Checkpoint
		if len(events) > 0 {
			newest = events[0].Checkpoint()
		}
		page.Tail = newest.String()
	}
	c.render(w, r, http.StatusOK, "log", page)
	return nil
}

// tailRow is one event of the live tail, as the page's script shows it.
type tailRow struct {
	Position     int64  `json:"position"`
	Checkpoint   string `json:"checkpoint"`
	At           string `json:"at"`
	Account      string `json:"account"`
	AccountURL   string `json:"accountUrl"`
	Version      int64  `json:"version"`
	Type         string `json:"type"`
	Change       int64  `json:"change"`
	Counterparty string `json:"counterparty"`
	Hash         string `json:"hash"`
	EventID      string `json:"eventId"`
}

// sse starts a Server-Sent Events answer.
func sse(w http.ResponseWriter) *http.ResponseController {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	_ = rc.Flush()
	return rc
}

// sendEvent writes one event and flushes it, extending the write deadline for it.
func sendEvent(w http.ResponseWriter, rc *http.ResponseController, event string, v any) error {
	_ = rc.SetWriteDeadline(time.Now().Add(30 * time.Second))
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, b); err != nil {
		return err
	}
	return rc.Flush()
}

// tailPoll bounds the wait for a wake-up: a change made by another process without NOTIFY
// still shows within it.
const tailPoll = 500 * time.Millisecond

// handleTail streams the events appended after the checkpoint, as the fenced reader reads
// them, woken by every append the service hears of.
func (c *Console) handleTail(w http.ResponseWriter, r *http.Request) error {
	after, err := eventstore.ParseCheckpoint(r.URL.Query().Get("after"))
	if err != nil {
		return errorf(http.StatusBadRequest, "after: want a checkpoint transaction:position")
	}
	ctx := httpapi.WithoutDeadline(r)
	rc := sse(w)
	if err := sendEvent(w, rc, "ready", map[string]string{"after": after.String()}); err != nil {
		return nil
	}
	keepalive := time.NewTicker(15 * time.Second)
	defer keepalive.Stop()
	for {
		// A quiet log must not run into the server's write timeout.
		_ = rc.SetWriteDeadline(time.Now().Add(30 * time.Second))
		var wake <-chan struct{}
		if c.Wake != nil {
			wake = c.Wake.C()
		}
		step, cancel := context.WithTimeout(ctx, 5*time.Second)
		events, err := c.Ledger.AuditLog(step, after, tailPage)
		var rows []eventRow
		if err == nil {
			rows, err = c.logRows(step, events)
		}
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				_, msg := httpapi.Status(err)
				_ = sendEvent(w, rc, "failure", map[string]string{"error": msg})
			}
			return nil
		}
		for i, row := range rows {
			t := tailRow{Position: row.Position, Checkpoint: row.Checkpoint, At: row.At.UTC().Format("2006-01-02 15:04:05.000Z"),
				Account: row.Account, Version: row.Version, Type: row.Type, Change: row.Change,
				Counterparty: row.Counterparty, Hash: row.Hash, EventID: events[i].ID.String()}
			if row.Account != "" {
				t.AccountURL = accountPath(row.Account)
			}
			if err := sendEvent(w, rc, "event", t); err != nil {
				return nil
			}
		}
		if len(events) > 0 {
			after = events[len(events)-1].Checkpoint()
		}
		if len(events) == tailPage {
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-c.ending:
			return nil
		case <-wake:
		case <-time.After(tailPoll):
		case <-keepalive.C:
			_ = rc.SetWriteDeadline(time.Now().Add(30 * time.Second))
			if _, err := fmt.Fprint(w, ": keepalive\n\n"); err != nil || rc.Flush() != nil {
				return nil
			}
		}
	}
}
