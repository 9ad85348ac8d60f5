package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ledger/ledger/domain"
	"github.com/ledger/ledger/eventstore"
	"github.com/ledger/ledger/internal/app"
	"github.com/ledger/ledger/projections"
)

func TestOutcomeOf(t *testing.T) {
	for _, tc := range []struct {
		err             error
		outcome, reason string
	}{
		{nil, "ok", ""},
		{fmt.Errorf("buy: %w: balance 5, price 20", domain.ErrInsufficientFunds), "refused", "insufficient_funds"},
		{domain.ErrUnknownItem, "refused", "unknown_item"},
		{domain.ErrSelfTransfer, "refused", "self_transfer"},
		{domain.ErrUnknownAccount, "refused", "unknown_account"},
		{domain.ErrAccountExists, "refused", "account_exists"},
		{domain.ErrInvalidAmount, "refused", "invalid_amount"},
		{domain.ErrAmountOverflow, "refused", "amount_overflow"},
		{domain.ErrInvalidUsername, "refused", "invalid_username"},
		{domain.ErrInvalidReason, "refused", "invalid_reason"},
		{fmt.Errorf("%w (8 attempts): conflict", app.ErrBusy), "busy", ""},
		{fmt.Errorf("account: %w", domain.ErrCorruptHistory), "error", ""},
		{fmt.Errorf("read info: %w", context.Canceled), "canceled", ""},
		{fmt.Errorf("look up: timeout: %w", context.DeadlineExceeded), "timeout", ""},
		{errors.New("connection reset"), "error", ""},
	} {
		outcome, reason := outcomeOf(tc.err)
		if outcome != tc.outcome || reason != tc.reason {
			t.Errorf("outcomeOf(%v) = %q, %q; want %q, %q", tc.err, outcome, reason, tc.outcome, tc.reason)
		}
	}
}

type fakeApp app.Stats

func (f fakeApp) Stats() app.Stats { return app.Stats(f) }

type fakeStore eventstore.Stats

func (f fakeStore) Stats() eventstore.Stats { return eventstore.Stats(f) }

type fakeRunner map[string]projections.Counters

func (f fakeRunner) Counters(group string) projections.Counters { return f[group] }

// countingStatuses answers the status query with statuses (or err) and counts its calls.
type countingStatuses struct {
	calls    atomic.Int64
	statuses []projections.Status
	err      error
}

func (c *countingStatuses) query(ctx context.Context) ([]projections.Status, error) {
	c.calls.Add(1)
	if _, ok := ctx.Deadline(); !ok {
		return nil, errors.New("status query without a deadline")
	}
	return c.statuses, c.err
}

func TestCollectorReadsTheCounters(t *testing.T) {
	st := &countingStatuses{statuses: []projections.Status{
		{Name: "balance", ActiveVersion: 2, Checkpoint: "1203:1000000", EventsBehind: 0, LagMs: 0, State: "live"},
		{Name: "history", ActiveVersion: 1, Checkpoint: "1201:999000", EventsBehind: 1000, LagMs: 1500, State: "failed"},
		{Name: "inventory", ActiveVersion: 1, Checkpoint: "", EventsBehind: 7, LagMs: 250, State: "rebuilding"},
	}}
	balance1, _ := projections.Lookup("balance", 1)
	balance2, _ := projections.Lookup("balance", 2)
	c := newCollector(Sources{
		App:   fakeApp{Commands: 9, Conflicts: 3, Retries: 2, Exhausted: 1, ReadFresh: 10, ReadAfterWait: 4, ReadFolded: 1},
		Store: fakeStore{Conflicts: 3, TxRetries: 1, Groups: 5, GroupedAppends: 12},
		Projectors: fakeRunner{
			"balance_v1": {Applied: 100, Redelivered: 2, Failures: 1, Standby: true},
			"balance_v2": {Applied: 50, Running: true},
		},
		Versions:     []projections.Projection{balance1, balance2},
		Statuses:     st.query,
		StatusMaxAge: -1,
	}, testLogger(t))

	want := `
# HELP ledger_command_conflicts_total Command attempts whose append was refused for a stale stream version.
# TYPE ledger_command_conflicts_total counter
ledger_command_conflicts_total 3
# HELP ledger_command_retries_total Command attempts re-run after a concurrency conflict.
# TYPE ledger_command_retries_total counter
ledger_command_retries_total 2
# HELP ledger_info_reads_total Reads of /api/info by how read-your-writes was met: fresh (read models current), after_wait (current after waiting for the projector), folded (the reader folded the account's newest events).
# TYPE ledger_info_reads_total counter
ledger_info_reads_total{path="after_wait"} 4
ledger_info_reads_total{path="folded"} 1
ledger_info_reads_total{path="fresh"} 10
# HELP ledger_eventstore_group_commits_total Group-commit transactions written.
# TYPE ledger_eventstore_group_commits_total counter
ledger_eventstore_group_commits_total 5
# HELP ledger_eventstore_grouped_appends_total Appends carried by group-commit transactions; divided by ledger_eventstore_group_commits_total, the mean group size.
# TYPE ledger_eventstore_grouped_appends_total counter
ledger_eventstore_grouped_appends_total 12
# HELP ledger_eventstore_tx_retries_total Append transactions retried after a deadlock or serialization failure.
# TYPE ledger_eventstore_tx_retries_total counter
ledger_eventstore_tx_retries_total 1
# HELP ledger_projector_events_applied_total Events this process's projector applied to the read model.
# TYPE ledger_projector_events_applied_total counter
ledger_projector_events_applied_total{projection="balance",version="1"} 100
ledger_projector_events_applied_total{projection="balance",version="2"} 50
# HELP ledger_projector_events_redelivered_total Redelivered events this process's projector recognised as already applied.
# TYPE ledger_projector_events_redelivered_total counter
ledger_projector_events_redelivered_total{projection="balance",version="1"} 2
ledger_projector_events_redelivered_total{projection="balance",version="2"} 0
# HELP ledger_projector_failures_total Events this process's projector failed to apply (each is retried from the checkpoint).
# TYPE ledger_projector_failures_total counter
ledger_projector_failures_total{projection="balance",version="1"} 1
ledger_projector_failures_total{projection="balance",version="2"} 0
# HELP ledger_projector_state 1 when this process's projector is in the state: running (here), standby (another process holds it) or failed.
# TYPE ledger_projector_state gauge
ledger_projector_state{projection="balance",state="failed",version="1"} 0
ledger_projector_state{projection="balance",state="failed",version="2"} 0
ledger_projector_state{projection="balance",state="running",version="1"} 0
ledger_projector_state{projection="balance",state="running",version="2"} 1
ledger_projector_state{projection="balance",state="standby",version="1"} 1
ledger_projector_state{projection="balance",state="standby",version="2"} 0
# HELP ledger_projection_status_up 1 when the last projection status query succeeded; the projection_* series are missing otherwise.
# TYPE ledger_projection_status_up gauge
ledger_projection_status_up 1
# HELP ledger_projection_checkpoint_position Global log position of the active version's checkpoint.
# TYPE ledger_projection_checkpoint_position gauge
ledger_projection_checkpoint_position{projection="balance",version="2"} 1e+06
ledger_projection_checkpoint_position{projection="history",version="1"} 999000
# HELP ledger_projection_checkpoint_transaction_id Transaction id of the active version's checkpoint.
# TYPE ledger_projection_checkpoint_transaction_id gauge
ledger_projection_checkpoint_transaction_id{projection="balance",version="2"} 1203
ledger_projection_checkpoint_transaction_id{projection="history",version="1"} 1201
# HELP ledger_projection_events_behind Events in the log after the active version's checkpoint: not applied yet, or applied while an older transaction was still running.
# TYPE ledger_projection_events_behind gauge
ledger_projection_events_behind{projection="balance",version="2"} 0
ledger_projection_events_behind{projection="history",version="1"} 1000
ledger_projection_events_behind{projection="inventory",version="1"} 7
# HELP ledger_projection_lag_seconds How long ago the oldest event after the active version's checkpoint was recorded; 0 when caught up.
# TYPE ledger_projection_lag_seconds gauge
ledger_projection_lag_seconds{projection="balance",version="2"} 0
ledger_projection_lag_seconds{projection="history",version="1"} 1.5
ledger_projection_lag_seconds{projection="inventory",version="1"} 0.25
# HELP ledger_projection_state 1 for the active version's state across all processes: live, failed or rebuilding (a next version is being built).
# TYPE ledger_projection_state gauge
ledger_projection_state{projection="balance",state="failed",version="2"} 0
ledger_projection_state{projection="balance",state="live",version="2"} 1
ledger_projection_state{projection="balance",state="rebuilding",version="2"} 0
ledger_projection_state{projection="history",state="failed",version="1"} 1
ledger_projection_state{projection="history",state="live",version="1"} 0
ledger_projection_state{projection="history",state="rebuilding",version="1"} 0
ledger_projection_state{projection="inventory",state="failed",version="1"} 0
ledger_projection_state{projection="inventory",state="live",version="1"} 0
ledger_projection_state{projection="inventory",state="rebuilding",version="1"} 1
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want),
		"ledger_command_conflicts_total", "ledger_command_retries_total", "ledger_info_reads_total",
		"ledger_eventstore_group_commits_total", "ledger_eventstore_grouped_appends_total", "ledger_eventstore_tx_retries_total",
		"ledger_projector_events_applied_total", "ledger_projector_events_redelivered_total", "ledger_projector_failures_total",
		"ledger_projector_state", "ledger_projection_status_up", "ledger_projection_checkpoint_position",
		"ledger_projection_checkpoint_transaction_id", "ledger_projection_events_behind", "ledger_projection_lag_seconds",
		"ledger_projection_state",
	); err != nil {
		t.Error(err)
	}
	if n := st.calls.Load(); n != 1 {
		t.Errorf("one scrape ran the status query %d times, want 1", n)
	}
}

// TestCollectorLeavesOutMissingSources: a process without an API or projectors reports what it
// has, and nothing for what it lacks.
func TestCollectorLeavesOutMissingSources(t *testing.T) {
	c := newCollector(Sources{Store: fakeStore{Groups: 1, GroupedAppends: 1}}, testLogger(t))
	if n := testutil.CollectAndCount(c); n != 4 {
		t.Errorf("a collector with only the store reported %d series, want its 4", n)
	}
	if n := testutil.CollectAndCount(c, "ledger_command_conflicts_total", "ledger_projector_state", "ledger_projection_status_up"); n != 0 {
		t.Errorf("%d series of absent sources", n)
	}
}

func TestStatusQueryReusedWhileFresh(t *testing.T) {
	st := &countingStatuses{statuses: []projections.Status{{Name: "balance", ActiveVersion: 1, State: "live"}}}
	c := newCollector(Sources{Statuses: st.query, StatusMaxAge: time.Minute}, testLogger(t))
	now := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	c.statuses.now = func() time.Time { return now }
	for i := 0; i < 3; i++ {
		testutil.CollectAndCount(c)
	}
	if n := st.calls.Load(); n != 1 {
		t.Fatalf("three scrapes within the maximum age ran %d status queries, want 1", n)
	}
	now = now.Add(time.Minute)
	testutil.CollectAndCount(c)
	if n := st.calls.Load(); n != 2 {
		t.Fatalf("a scrape after the maximum age ran %d status queries in all, want 2", n)
	}
}

func TestStatusQueryFailureKeepsTheScrape(t *testing.T) {
	for _, tc := range []struct {
		name  string
		query func(ctx context.Context) ([]projections.Status, error)
	}{
		{"error", func(context.Context) ([]projections.Status, error) { return nil, errors.New("database unreachable") }},
		{"timeout", func(ctx context.Context) ([]projections.Status, error) { <-ctx.Done(); return nil, ctx.Err() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := New(Sources{
				Store:         fakeStore{Groups: 2},
				Statuses:      tc.query,
				StatusTimeout: 10 * time.Millisecond,
				Log:           testLogger(t),
			})
			rec := httptest.NewRecorder()
			m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
			if rec.Code != http.StatusOK {
				t.Fatalf("scrape answered %d: %s", rec.Code, rec.Body)
			}
			body := rec.Body.String()
			for _, line := range []string{"ledger_projection_status_up 0", "ledger_eventstore_group_commits_total 2"} {
				if !strings.Contains(body, line+"\n") {
					t.Errorf("scrape lacks %q", line)
				}
			}
			if strings.Contains(body, "ledger_projection_lag_seconds{") {
				t.Error("projection series reported without a status")
			}
		})
	}
}

func TestObserveRequest(t *testing.T) {
	m := New(Sources{})
	// Durations exact in binary, so that the sum compares exactly.
	m.ObserveRequest(http.MethodGet, "/api/buy/{item}", 200, time.Second/64)
	m.ObserveRequest(http.MethodGet, "/api/buy/{item}", 200, time.Second/16)
	m.ObserveRequest(http.MethodGet, "/api/buy/{item}", 400, time.Millisecond)
	m.ObserveRequest("BREW", "", 404, time.Millisecond)

	want := `
# HELP ledger_http_request_duration_seconds HTTP requests by method, route pattern and status code, and how long they took; _count is the request count.
# TYPE ledger_http_request_duration_seconds histogram
` + histogram(`code="200",method="GET",route="/api/buy/{item}"`, map[float64]int{.02: 1, .075: 2}, 2, 0.078125) +
		histogram(`code="400",method="GET",route="/api/buy/{item}"`, map[float64]int{.001: 1}, 1, 0.001) +
		histogram(`code="404",method="other",route="unmatched"`, map[float64]int{.001: 1}, 1, 0.001)
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), "ledger_http_request_duration_seconds"); err != nil {
		t.Error(err)
	}
}

// histogram renders a histogram's series in the text format; labels must be in name order, as
// the registry sorts them. first maps a bucket bound to the
// cumulative count from that bound on (bounds below the first are 0).
func histogram(labels string, first map[float64]int, count int, sum float64) string {
	var b strings.Builder
	n := 0
	for _, le := range latencyBuckets {
		if c, ok := first[le]; ok {
			n = c
		}
		fmt.Fprintf(&b, "ledger_http_request_duration_seconds_bucket{%s,le=\"%g\"} %d\n", labels, le, n)
	}
	fmt.Fprintf(&b, "ledger_http_request_duration_seconds_bucket{%s,le=\"+Inf\"} %d\n", labels, count)
	fmt.Fprintf(&b, "ledger_http_request_duration_seconds_sum{%s} %g\n", labels, sum)
	fmt.Fprintf(&b, "ledger_http_request_duration_seconds_count{%s} %d\n", labels, count)
	return b.String()
}

// TestMetricsFollowConventions runs Prometheus's own linter over every series the package
// defines (names, units, help texts, counter suffixes).
func TestMetricsFollowConventions(t *testing.T) {
	balance, _ := projections.Lookup("balance", 1)
	m := New(Sources{
		App:        fakeApp{},
		Store:      fakeStore{},
		Projectors: fakeRunner{},
		Versions:   []projections.Projection{balance},
		Statuses: func(context.Context) ([]projections.Status, error) {
			return []projections.Status{{Name: "balance", ActiveVersion: 1, Checkpoint: "1:1", State: "live"}}, nil
		},
		Log: testLogger(t),
	})
	m.ObserveRequest(http.MethodGet, "/api/info", 200, time.Millisecond)
	m.observeCommand(cmdBuy, time.Now(), domain.ErrInsufficientFunds)
	problems, err := testutil.GatherAndLint(m.Registry())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, namespace+"_") {
			t.Errorf("%s: %s", p.Metric, p.Text)
		}
	}
}

func testLogger(t testing.TB) *slog.Logger { return slog.New(slog.NewTextHandler(t.Output(), nil)) }
