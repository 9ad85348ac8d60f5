package metrics

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ledger/ledger/eventstore"
	"github.com/ledger/ledger/internal/app"
	"github.com/ledger/ledger/internal/relay"
	"github.com/ledger/ledger/internal/standby"
	"github.com/ledger/ledger/projections"
)

// AppStats is the application layer's counters.
type AppStats interface{ Stats() app.Stats }

// StoreStats is the event store's counters.
type StoreStats interface{ Stats() eventstore.Stats }

// ProjectorCounters is the projection runner's per-version counters.
type ProjectorCounters interface {
	Counters(group string) projections.Counters
}

// ReadStats is the read router's counters: reads per database and why, standbys' replay lag.
type ReadStats interface{ Stats() standby.Stats }

// RelayStats is the event relay's counters in this process.
type RelayStats interface{ Stats() relay.Stats }

// PoolStats is the connection pool's statistics.
type PoolStats interface{ Stat() *pgxpool.Stat }

var (
	_ AppStats          = (*app.App)(nil)
	_ StoreStats        = (*eventstore.Store)(nil)
	_ ProjectorCounters = (*projections.Runner)(nil)
	_ PoolStats         = (*pgxpool.Pool)(nil)
	_ ReadStats         = (*standby.Router)(nil)
	_ RelayStats        = (*relay.Relay)(nil)
)

// Sources are what a scrape reads. A nil source is left out: a process that serves no API has
// no App, one that runs no projectors no Projectors.
type Sources struct {
	App   AppStats
	Store StoreStats
	// Projectors are this process's projectors, reported for each of Versions.
	Projectors ProjectorCounters
	Versions   []projections.Projection
	// Statuses reads every projection's status from the database (the same in every
	// process). It runs at most once per scrape, under StatusTimeout, and is not repeated for
	// scrapes within StatusMaxAge of the last one.
	Statuses      func(ctx context.Context) ([]projections.Status, error)
	StatusTimeout time.Duration // default 2s
	StatusMaxAge  time.Duration // default 1s; negative: query on every scrape
	Pool          PoolStats
	// Reads is the router of reads to standbys, when there are standbys.
	Reads ReadStats
	// Relay is this process's event relay, when it has one.
	Relay RelayStats
	Log   *slog.Logger
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(namespace+"_"+name, help, labels, nil)
}

var (
	appConflicts = desc("command_conflicts_total", "Command attempts whose append was refused for a stale stream version.")
	appRetries   = desc("command_retries_total", "Command attempts re-run after a concurrency conflict.")
	infoReads    = desc("info_reads_total", "Reads of /api/info by how read-your-writes was met: fresh (read models current), after_wait (current after waiting for the projector), folded (the reader folded the account's newest events).", "path")

	storeConflicts     = desc("eventstore_conflicts_total", "Appends refused with a concurrency error.")
	storeTxRetries     = desc("eventstore_tx_retries_total", "Append transactions retried after a deadlock or serialization failure.")
	readStatements     = desc("info_read_statements_total", "Statements that read the read models for /api/info; concurrent reads share one.")
	readsGrouped       = desc("info_reads_grouped_total", "Reads carried by those statements; divided by ledger_info_read_statements_total, the mean group size.")
	storeGroups        = desc("eventstore_group_commits_total", "Group-commit transactions written.")
	storeGroupedAppend = desc("eventstore_grouped_appends_total", "Appends carried by group-commit transactions; divided by ledger_eventstore_group_commits_total, the mean group size.")

	projectorApplied     = desc("projector_events_applied_total", "Events this process's projector applied to the read model.", "projection", "version")
	projectorRedelivered = desc("projector_events_redelivered_total", "Redelivered events this process's projector recognised as already applied.", "projection", "version")
	projectorFailures    = desc("projector_failures_total", "Events this process's projector failed to apply (each is retried from the checkpoint).", "projection", "version")
	projectorState       = desc("projector_state", "1 when this process's projector is in the state: running (here), standby (another process holds it) or failed.", "projection", "version", "state")

	statusUp          = desc("projection_status_up", "1 when the last projection status query succeeded; the projection_* series are missing otherwise.")
	statusCheckpoint  = desc("projection_checkpoint_position", "Global log position of the active version's checkpoint.", "projection", "version")
	statusCheckpointX = desc("projection_checkpoint_transaction_id", "Transaction id of the active version's checkpoint.", "projection", "version")
	statusBehind      = desc("projection_events_behind", "Events in the log after the active version's checkpoint: not applied yet, or applied while an older transaction was still running.", "projection", "version")
	statusLag         = desc("projection_lag_seconds", "How long ago the oldest event after the active version's checkpoint was recorded; 0 when caught up.", "projection", "version")
	statusState       = desc("projection_state", "1 for the active version's state across all processes: live, failed or rebuilding (a next version is being built).", "projection", "version", "state")
	statusActive      = desc("projection_active", "1 when some process holds the reader's lease and runs it; 0 when none does.", "projection", "version")

	relayActive    = desc("relay_active", "1 when this process runs the event relay (holds its lease).")
	relayConnected = desc("relay_nats_connected", "1 when this process's running event relay is connected to NATS.")
	relayPublished = desc("relay_events_published_total", "Events this process's relay published and JetStream acknowledged (repeats it dropped included).")
	relayFailures  = desc("relay_failures_total", "Failed attempts of this process's relay to connect, provision the stream or publish; each is retried with backoff.")
	relayRecreated = desc("relay_stream_recreated_total", "Times this process's relay found the JetStream stream gone and created it again.")

	readsRouted    = desc("reads_total", "Read statements (concurrent /api/info reads share one) by the database they ran on (standby or primary) and why: replayed (the standby had the primary's position), after_wait (it replayed it while the read waited), wait_timeout (no standby did within the bound), unavailable (every standby skipped), position_unknown (the primary's position could not be read), standby_failed (the read failed on the standby and ran again on the primary).", "target", "reason")
	standbyLag     = desc("standby_replay_lag_seconds", "How long ago the primary committed the last transaction the standby has replayed; 0 when it has replayed all the primary had flushed at the last measure.", "standby")
	standbyUp      = desc("standby_up", "1 when the standby answered the last measure.", "standby")
	standbySkipped = desc("standby_skipped", "1 while reads pass the standby by: it failed, or a read waited past the bound for it.", "standby")

	poolAcquired       = desc("db_pool_acquired_conns", "Connections in use.")
	poolIdle           = desc("db_pool_idle_conns", "Idle connections.")
	poolConstructing   = desc("db_pool_constructing_conns", "Connections being opened.")
	poolTotal          = desc("db_pool_total_conns", "Connections open or being opened.")
	poolMax            = desc("db_pool_max_conns", "The pool's size limit.")
	poolAcquires       = desc("db_pool_acquires_total", "Successful connection acquisitions.")
	poolAcquireSeconds = desc("db_pool_acquire_seconds_total", "Time spent acquiring connections.")
	poolEmptyAcquires  = desc("db_pool_empty_acquires_total", "Acquisitions that had to wait for a connection.")
	poolEmptyWait      = desc("db_pool_empty_acquire_wait_seconds_total", "Time acquisitions spent waiting for a connection to free up.")
	poolCanceled       = desc("db_pool_canceled_acquires_total", "Acquisitions canceled by their context.")
	poolNewConns       = desc("db_pool_new_conns_total", "Connections opened.")
	poolLifetimeClosed = desc("db_pool_max_lifetime_destroys_total", "Connections closed for reaching their maximum lifetime.")
	poolIdleClosed     = desc("db_pool_max_idle_destroys_total", "Connections closed for idling too long.")
)

var projectionStates = []string{"live", "failed", "rebuilding"}

// collector reads the service's own counters on every scrape: nothing on the request path
// changes for metrics, and a value is never older than the scrape.
type collector struct {
	src      Sources
	log      *slog.Logger
	statuses *statusCache
}

var _ prometheus.Collector = (*collector)(nil)

func newCollector(src Sources, log *slog.Logger) *collector {
	c := &collector{src: src, log: log}
	if src.Statuses != nil {
		timeout, maxAge := src.StatusTimeout, src.StatusMaxAge
		if timeout <= 0 {
			timeout = 2 * time.Second
		}
		if maxAge == 0 {
			maxAge = time.Second
		}
		c.statuses = &statusCache{query: src.Statuses, timeout: timeout, maxAge: maxAge, now: time.Now}
	}
	return c
}

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		appConflicts, appRetries, infoReads, readStatements, readsGrouped,
		readsRouted, standbyLag, standbyUp, standbySkipped,
		storeConflicts, storeTxRetries, storeGroups, storeGroupedAppend,
		projectorApplied, projectorRedelivered, projectorFailures, projectorState,
		statusUp, statusCheckpoint, statusCheckpointX, statusBehind, statusLag, statusState, statusActive,
		relayActive, relayConnected, relayPublished, relayFailures, relayRecreated,
		poolAcquired, poolIdle, poolConstructing, poolTotal, poolMax, poolAcquires, poolAcquireSeconds,
		poolEmptyAcquires, poolEmptyWait, poolCanceled, poolNewConns, poolLifetimeClosed, poolIdleClosed,
	} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	boolean := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}

	if c.src.App != nil {
		s := c.src.App.Stats()
		counter(appConflicts, float64(s.Conflicts))
		counter(appRetries, float64(s.Retries))
		counter(infoReads, float64(s.ReadFresh), "fresh")
		counter(infoReads, float64(s.ReadAfterWait), "after_wait")
		counter(infoReads, float64(s.ReadFolded), "folded")
		counter(readStatements, float64(s.ReadStatements))
		counter(readsGrouped, float64(s.ReadsGrouped))
	}

	if c.src.Reads != nil {
		s := c.src.Reads.Stats()
		for _, r := range standby.Reasons() {
			counter(readsRouted, float64(s.Reads[r]), r.Target().String(), r.String())
		}
		for _, sb := range s.Standbys {
			gauge(standbyLag, sb.ReplayLag.Seconds(), sb.Name)
			gauge(standbyUp, boolean(sb.Up), sb.Name)
			gauge(standbySkipped, boolean(sb.Skipped), sb.Name)
		}
	}

	if c.src.Store != nil {
		s := c.src.Store.Stats()
		counter(storeConflicts, float64(s.Conflicts))
		counter(storeTxRetries, float64(s.TxRetries))
		counter(storeGroups, float64(s.Groups))
		counter(storeGroupedAppend, float64(s.GroupedAppends))
	}

	if c.src.Projectors != nil {
		for _, p := range c.src.Versions {
			n := c.src.Projectors.Counters(p.Group())
			v := strconv.Itoa(p.Version)
			counter(projectorApplied, float64(n.Applied), p.Name, v)
			counter(projectorRedelivered, float64(n.Redelivered), p.Name, v)
			counter(projectorFailures, float64(n.Failures), p.Name, v)
			for _, st := range []struct {
				name string
				on   bool
			}{{"running", n.Running}, {"standby", n.Standby}, {"failed", n.Failed}} {
				gauge(projectorState, boolean(st.on), p.Name, v, st.name)
			}
		}
	}

	if c.statuses != nil {
		statuses, err := c.statuses.get()
		if err != nil {
			c.log.Warn("metrics: projection status", "err", err)
		}
		gauge(statusUp, boolean(err == nil))
		for _, s := range statuses {
			v := strconv.Itoa(s.ActiveVersion)
			if tx, pos, ok := parseCheckpoint(s.Checkpoint); ok {
				gauge(statusCheckpoint, float64(pos), s.Name, v)
				gauge(statusCheckpointX, float64(tx), s.Name, v)
			}
			gauge(statusBehind, float64(s.EventsBehind), s.Name, v)
			gauge(statusLag, float64(s.LagMs)/1000, s.Name, v)
			for _, st := range projectionStates {
				gauge(statusState, boolean(s.State == st), s.Name, v, st)
			}
			gauge(statusActive, boolean(s.Active), s.Name, v)
		}
	}

	if c.src.Relay != nil {
		s := c.src.Relay.Stats()
		gauge(relayActive, boolean(s.Active))
		gauge(relayConnected, boolean(s.Active && s.Connected))
		counter(relayPublished, float64(s.Published))
		counter(relayFailures, float64(s.Failures))
		counter(relayRecreated, float64(s.StreamRecreated))
	}

	if c.src.Pool != nil {
		s := c.src.Pool.Stat()
		gauge(poolAcquired, float64(s.AcquiredConns()))
		gauge(poolIdle, float64(s.IdleConns()))
		gauge(poolConstructing, float64(s.ConstructingConns()))
		gauge(poolTotal, float64(s.TotalConns()))
		gauge(poolMax, float64(s.MaxConns()))
		counter(poolAcquires, float64(s.AcquireCount()))
		counter(poolAcquireSeconds, s.AcquireDuration().Seconds())
		counter(poolEmptyAcquires, float64(s.EmptyAcquireCount()))
		counter(poolEmptyWait, s.EmptyAcquireWaitTime().Seconds())
		counter(poolCanceled, float64(s.CanceledAcquireCount()))
		counter(poolNewConns, float64(s.NewConnsCount()))
		counter(poolLifetimeClosed, float64(s.MaxLifetimeDestroyCount()))
		counter(poolIdleClosed, float64(s.MaxIdleDestroyCount()))
	}
}

// parseCheckpoint splits a status checkpoint, "transaction:position"; ok is false when the
// projection has none yet.
func parseCheckpoint(s string) (tx, pos int64, ok bool) {
	a, b, found := strings.Cut(s, ":")
	if !found {
		return 0, 0, false
	}
	tx, err1 := strconv.ParseInt(a, 10, 64)
	pos, err2 := strconv.ParseInt(b, 10, 64)
	return tx, pos, err1 == nil && err2 == nil
}

// statusCache runs the projection status query for scrapes: one query at a time, under a
// timeout, and its answer reused while it is younger than maxAge, so that however often
// /metrics is asked, the database sees at most one status query per maxAge.
type statusCache struct {
	query   func(ctx context.Context) ([]projections.Status, error)
	timeout time.Duration
	maxAge  time.Duration
	now     func() time.Time

	mu       sync.Mutex
	at       time.Time
	statuses []projections.Status
	err      error
}

func (c *statusCache) get() ([]projections.Status, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.at.IsZero() && c.now().Sub(c.at) < c.maxAge {
		return c.statuses, c.err
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	c.statuses, c.err = c.query(ctx)
	c.at = c.now()
	return c.statuses, c.err
}
