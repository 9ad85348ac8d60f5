// Package metrics exposes the ledger to Prometheus: HTTP requests by route pattern and status,
// command outcomes and latencies, and, read on every scrape from the counters the event store,
// the application layer, the projectors and the connection pool already keep, conflicts,
// retries, group commits, read-your-writes paths, where reads ran (primary or standby) and
// the standbys' replay lag, projection checkpoints and lag, and pool usage; plus the Go runtime and process collectors. Each service has its own registry, so
// several services in one process (tests) never share series.
package metrics

import (
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ledger/ledger/eventstore"
	"github.com/ledger/ledger/httpapi"
	"github.com/ledger/ledger/internal/standby"
)

const namespace = "ledger"

// latencyBuckets suit a service whose p99 objective is 50 ms: fine steps up to and around
// the objective, a few coarse ones beyond it to show how bad a miss is.
var latencyBuckets = []float64{.001, .0025, .005, .01, .02, .03, .04, .05, .075, .1, .25, .5, 1, 2.5, 5}

// Metrics is one service's registry and the instruments the request path updates.
type Metrics struct {
	reg *prometheus.Registry
	log *slog.Logger

	requests        *prometheus.HistogramVec
	commands        *prometheus.CounterVec
	commandDuration *prometheus.HistogramVec
	writes          *prometheus.HistogramVec
	writeSize       prometheus.Histogram
	positionWait    *prometheus.HistogramVec
}

var _ httpapi.RequestObserver = (*Metrics)(nil)

// New returns the service's metrics, reading src on every scrape.
func New(src Sources) *Metrics {
	log := src.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		log: log,
		requests: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: "http", Name: "request_duration_seconds",
			Help:    "HTTP requests by method, route pattern and status code, and how long they took; _count is the request count.",
			Buckets: latencyBuckets,
		}, []string{"method", "route", "code"}),
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "commands_total",
			Help: "Commands by outcome: ok, refused (reason names the domain error), busy (gave up after repeated conflicts), timeout (the request's deadline passed), canceled (the client went away) or error.",
		}, []string{"command", "outcome", "reason"}),
		commandDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "command_duration_seconds",
			Help:    "How long commands took, conflict retries and the event store append included.",
			Buckets: latencyBuckets,
		}, []string{"command", "outcome"}),
		writes: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: "eventstore", Name: "write_duration_seconds",
			Help:    "Event store transactions (a group of appends, or one alone) by outcome, and how long they took: locks, writes and commit.",
			Buckets: latencyBuckets,
		}, []string{"outcome"}),
		writeSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: "eventstore", Name: "write_appends",
			Help:    "Appends per event store transaction (group commit).",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64},
		}),
		positionWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "read_position_wait_seconds",
			Help:    "How long a read (or a group of reads) waited for a database to read on: the primary's WAL position, and a standby replaying it; target is where the read then ran.",
			Buckets: []float64{.0001, .00025, .0005, .001, .002, .005, .01, .02, .05, .1, .25},
		}, []string{"target"}),
	}
	if src.App != nil {
		// Series that exist from the start make rates and alerts work before the first failure.
		for _, c := range commandNames {
			for _, o := range []string{outcomeOK, outcomeBusy, outcomeError} {
				m.commands.WithLabelValues(c, o, "")
			}
		}
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.requests, m.commands, m.commandDuration, m.writes, m.writeSize, m.positionWait,
		newCollector(src, log),
	)
	return m
}

// ObserveWrite records one event store transaction; pass it to eventstore.WithWriteObserver.
func (m *Metrics) ObserveWrite(w eventstore.Write) {
	outcome := outcomeOK
	if w.Err != nil {
		outcome = outcomeError
	}
	m.writes.WithLabelValues(outcome).Observe(w.Duration.Seconds())
	m.writeSize.Observe(float64(w.Appends))
}

// ObservePositionWait records how long a read waited for a database to read on; pass it as
// standby.Config.ObserveWait.
func (m *Metrics) ObservePositionWait(target standby.Target, d time.Duration) {
	m.positionWait.WithLabelValues(target.String()).Observe(d.Seconds())
}

// Registry returns the registry the metrics are in.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the metrics in the Prometheus text format. Scrapes are few and cheap; the
// bound on concurrent ones keeps a flood of them from piling status queries on the database.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorLog:            slog.NewLogLogger(m.log.Handler(), slog.LevelWarn),
		ErrorHandling:       promhttp.ContinueOnError,
		Registry:            m.reg,
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
	})
}

// ObserveRequest records one HTTP request. route must be the router's pattern, never the raw
// path, so that the number of series stays bounded; "" (no route matched) is recorded as
// "unmatched".
func (m *Metrics) ObserveRequest(method, route string, status int, elapsed time.Duration) {
	if route == "" {
		route = "unmatched"
	}
	m.requests.WithLabelValues(normalMethod(method), route, strconv.Itoa(status)).Observe(elapsed.Seconds())
}

// normalMethod bounds the method label: clients may send any token as a method.
func normalMethod(method string) string {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace:
		return method
	default:
		return "other"
	}
}
