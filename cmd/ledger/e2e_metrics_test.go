package main

import (
	"flag"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// get fetches url with a plain client: /metrics and pprof are not operations of the API
// document.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	hc := &http.Client{Timeout: 2 * time.Minute} // a guard against a hung server
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read body: %v", url, err)
	}
	return resp.StatusCode, string(body)
}

// scrape is one parsed /metrics answer.
type scrape map[string]*dto.MetricFamily

func scrapeMetrics(t *testing.T, url string) scrape {
	t.Helper()
	code, body := get(t, url)
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, code, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("GET %s: not the Prometheus text format: %v", url, err)
	}
	return families
}

// sum adds up the series of name whose labels include labels: counters and gauges by value,
// histograms by their count. n is how many series matched.
func (s scrape) sum(name string, labels map[string]string) (total float64, n int) {
	f := s[name]
	if f == nil {
		return 0, 0
	}
series:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range labels {
			if have[k] != v {
				continue series
			}
		}
		n++
		switch {
		case m.Counter != nil:
			total += m.GetCounter().GetValue()
		case m.Gauge != nil:
			total += m.GetGauge().GetValue()
		case m.Histogram != nil:
			total += float64(m.GetHistogram().GetSampleCount())
		case m.Untyped != nil:
			total += m.GetUntyped().GetValue()
		}
	}
	return total, n
}

// want asserts that name{labels} has series and that their sum is want.
func (s scrape) want(t *testing.T, name string, labels map[string]string, want float64) {
	t.Helper()
	got, n := s.sum(name, labels)
	if n == 0 {
		t.Errorf("no series %s%v", name, labels)
	} else if got != want {
		t.Errorf("%s%v = %g, want %g", name, labels, got, want)
	}
}

// atLeast asserts that name{labels} has series and that their sum is at least min.
func (s scrape) atLeast(t *testing.T, name string, labels map[string]string, min float64) float64 {
	t.Helper()
	got, n := s.sum(name, labels)
	if n == 0 {
		t.Errorf("no series %s%v", name, labels)
	} else if got < min {
		t.Errorf("%s%v = %g, want at least %g", name, labels, got, min)
	}
	return got
}

var projectionNames = []string{"balance", "history", "inventory"}

// TestE2EMetrics drives known traffic through the real service and reads it back from
// /metrics: requests by route pattern and status, command outcomes, read-your-writes paths,
// projections, the pool, the runtime. The admin listener serves the same registry and pprof;
// the API's port serves no pprof.
func TestE2EMetrics(t *testing.T) {
	ts := startTestService(t, func(c *serveConfig) {
		c.PublicMetrics = true
		c.AdminAddr = "127.0.0.1:0"
	})
	api := ts.api
	public := "http://" + ts.svc.addr
	if ts.svc.adminAddr == "" || ts.svc.adminAddr == ts.svc.addr || strings.HasSuffix(ts.svc.adminAddr, ":0") {
		t.Fatalf("admin listener on %q beside the API on %q", ts.svc.adminAddr, ts.svc.addr)
	}
	admin := "http://" + ts.svc.adminAddr

	alice, bob := uniq("metrics-alice"), uniq("metrics-bob")
	tok := api.login(t, alice)
	api.login(t, bob)
	for range 3 {
		wantOK(t, api.buy(t, tok, "cup"))
	}
	wantOK(t, api.sendCoin(t, tok, bob, 10))
	wantStatus(t, api.sendCoin(t, tok, bob, 100_000), http.StatusBadRequest, "not enough coin")
	for range 2 {
		api.info(t, tok)
	}
	wantStatus(t, api.sendUnrouted(t, api.newRequest(t, http.MethodGet, "/api/no-such-path", "", nil)), http.StatusNotFound)

	m := scrapeMetrics(t, public+"/metrics")

	const httpReqs = "ledger_http_request_duration_seconds"
	t.Run("http requests by route pattern and status", func(t *testing.T) {
		m.want(t, httpReqs, map[string]string{"method": "POST", "route": "/api/auth", "code": "200"}, 2)
		m.want(t, httpReqs, map[string]string{"method": "GET", "route": "/api/buy/{item}", "code": "200"}, 3)
		m.want(t, httpReqs, map[string]string{"method": "POST", "route": "/api/sendCoin", "code": "200"}, 1)
		m.want(t, httpReqs, map[string]string{"method": "POST", "route": "/api/sendCoin", "code": "400"}, 1)
		m.want(t, httpReqs, map[string]string{"method": "GET", "route": "/api/info", "code": "200"}, 2)
		m.want(t, httpReqs, map[string]string{"method": "GET", "route": "unmatched", "code": "404"}, 1)
		m.atLeast(t, httpReqs, map[string]string{"route": "/api/ready", "code": "200"}, 1)
		for _, s := range m[httpReqs].GetMetric() {
			for _, l := range s.GetLabel() {
				if l.GetName() == "route" && (strings.Contains(l.GetValue(), "cup") || strings.Contains(l.GetValue(), "no-such-path")) {
					t.Errorf("a raw path as route label: %q", l.GetValue())
				}
			}
			if h := s.GetHistogram(); len(h.GetBucket()) == 0 {
				t.Errorf("%s without buckets", httpReqs)
			}
		}
	})

	t.Run("command outcomes", func(t *testing.T) {
		m.want(t, "ledger_commands_total", map[string]string{"command": "open_account", "outcome": "ok"}, 2)
		m.want(t, "ledger_commands_total", map[string]string{"command": "buy", "outcome": "ok"}, 3)
		m.want(t, "ledger_commands_total", map[string]string{"command": "transfer", "outcome": "ok"}, 1)
		m.want(t, "ledger_commands_total", map[string]string{"command": "transfer", "outcome": "refused", "reason": "insufficient_funds"}, 1)
		m.want(t, "ledger_commands_total", map[string]string{"outcome": "busy"}, 0)
		m.want(t, "ledger_commands_total", map[string]string{"outcome": "error"}, 0)
		m.want(t, "ledger_command_duration_seconds", map[string]string{"command": "buy", "outcome": "ok"}, 3)
		m.atLeast(t, "ledger_command_conflicts_total", nil, 0)
		m.atLeast(t, "ledger_command_retries_total", nil, 0)
	})

	t.Run("reads by read-your-writes path", func(t *testing.T) {
		// Every successful /api/info is served by exactly one of the paths.
		m.want(t, "ledger_info_reads_total", nil, 2)
		for _, path := range []string{"fresh", "after_wait", "folded"} {
			m.atLeast(t, "ledger_info_reads_total", map[string]string{"path": path}, 0)
		}
	})

	t.Run("event store", func(t *testing.T) {
		groups := m.atLeast(t, "ledger_eventstore_group_commits_total", nil, 0)
		m.atLeast(t, "ledger_eventstore_grouped_appends_total", nil, groups)
		m.atLeast(t, "ledger_eventstore_conflicts_total", nil, 0)
		m.want(t, "ledger_eventstore_tx_retries_total", nil, 0)
		// Every transaction of appends is timed: the groups and the appends written alone
		// (account openings), so at least one per group.
		writes := m.atLeast(t, "ledger_eventstore_write_duration_seconds", map[string]string{"outcome": "ok"}, max(1, groups))
		m.atLeast(t, "ledger_eventstore_write_appends", nil, writes)
	})

	t.Run("database pool", func(t *testing.T) {
		m.want(t, "ledger_db_pool_max_conns", nil, float64(ts.cfg.DBMaxConns))
		m.atLeast(t, "ledger_db_pool_total_conns", nil, 1)
		m.atLeast(t, "ledger_db_pool_acquires_total", nil, 1)
		m.atLeast(t, "ledger_db_pool_acquired_conns", nil, 0)
		m.atLeast(t, "ledger_db_pool_idle_conns", nil, 0)
	})

	t.Run("runtime and process", func(t *testing.T) {
		m.atLeast(t, "go_goroutines", nil, 1)
		m.atLeast(t, "go_memstats_heap_alloc_bytes", nil, 1)
		if runtime.GOOS == "linux" {
			m.atLeast(t, "process_resident_memory_bytes", nil, 1)
		}
	})

	t.Run("projections", func(t *testing.T) {
		// The projectors catch up with the traffic; the status the scrape reads follows them.
		deadline := time.Now().Add(2 * time.Minute) // a guard against a hang, not an expectation
		for {
			behind, n := m.sum("ledger_projection_events_behind", nil)
			if n >= len(projectionNames) && behind == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("projections never caught up: %g events behind over %d series", behind, n)
			}
			time.Sleep(100 * time.Millisecond)
			m = scrapeMetrics(t, public+"/metrics")
		}
		m.want(t, "ledger_projection_status_up", nil, 1)
		for _, p := range projectionNames {
			name := map[string]string{"projection": p}
			m.atLeast(t, "ledger_projection_checkpoint_position", name, 1)
			m.atLeast(t, "ledger_projection_checkpoint_transaction_id", name, 1)
			m.want(t, "ledger_projection_lag_seconds", name, 0)
			m.want(t, "ledger_projection_state", map[string]string{"projection": p, "state": "live"}, 1)
			m.want(t, "ledger_projection_state", map[string]string{"projection": p, "state": "failed"}, 0)
			// This process runs each projection's active version (or stands by for it).
			running, _ := m.sum("ledger_projector_state", map[string]string{"projection": p, "state": "running"})
			standby, _ := m.sum("ledger_projector_state", map[string]string{"projection": p, "state": "standby"})
			if running+standby != 1 {
				t.Errorf("projection %s: %g versions running and %g standing by here, want one in all", p, running, standby)
			}
			m.want(t, "ledger_projector_state", map[string]string{"projection": p, "state": "failed"}, 0)
			if running == 1 {
				m.atLeast(t, "ledger_projector_events_applied_total", name, 1)
			}
			m.atLeast(t, "ledger_projector_events_redelivered_total", name, 0)
			m.want(t, "ledger_projector_failures_total", name, 0)
		}
	})

	t.Run("admin listener", func(t *testing.T) {
		am := scrapeMetrics(t, admin+"/metrics")
		am.want(t, "ledger_commands_total", map[string]string{"command": "buy", "outcome": "ok"}, 3)
		am.want(t, "ledger_db_pool_max_conns", nil, float64(ts.cfg.DBMaxConns))
		code, body := get(t, admin+"/debug/pprof/")
		if code != http.StatusOK || !strings.Contains(body, "goroutine") {
			t.Errorf("admin pprof index: %d %.200s", code, body)
		}
		if code, body := get(t, admin+"/debug/pprof/goroutine?debug=1"); code != http.StatusOK || !strings.Contains(body, "goroutine profile") {
			t.Errorf("admin goroutine profile: %d %.200s", code, body)
		}
		if code, body := get(t, admin+"/debug/pprof/cmdline"); code != http.StatusOK || body == "" {
			t.Errorf("admin pprof cmdline: %d %.200s", code, body)
		}
	})

	t.Run("no pprof on the API's port", func(t *testing.T) {
		for _, path := range []string{"/debug/pprof/", "/debug/pprof/heap", "/debug/pprof/cmdline"} {
			wantStatus(t, api.sendUnrouted(t, api.newRequest(t, http.MethodGet, path, "", nil)), http.StatusNotFound)
		}
	})
}

// TestE2EMetricsOnlyOnTheAdminListener: with --public-metrics=false the API's port routes no
// /metrics, and the admin listener still serves it.
func TestE2EMetricsOnlyOnTheAdminListener(t *testing.T) {
	ts := startTestService(t, func(c *serveConfig) {
		c.PublicMetrics = false
		c.AdminAddr = "127.0.0.1:0"
	})
	wantStatus(t, ts.api.sendUnrouted(t, ts.api.newRequest(t, http.MethodGet, "/metrics", "", nil)), http.StatusNotFound)
	m := scrapeMetrics(t, "http://"+ts.svc.adminAddr+"/metrics")
	m.atLeast(t, "ledger_http_request_duration_seconds", map[string]string{"route": "/api/ready", "code": "200"}, 1)
	m.want(t, "ledger_http_request_duration_seconds", map[string]string{"route": "unmatched", "code": "404"}, 1)
}

// TestMetricsConfig: by default /metrics is on the admin listener, on loopback, and not on the
// API's port; the environment and flags change that, and bad values stop the start with their
// names.
func TestMetricsConfig(t *testing.T) {
	t.Run("defaults", func(t *testing.T) {
		t.Setenv("APP_ADMIN_ADDR", "")
		t.Setenv("APP_PUBLIC_METRICS", "")
		cfg, err := parseServeConfig(t)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.adminListener() != "127.0.0.1:6060" || cfg.PublicMetrics {
			t.Errorf("defaults: admin address %q, public metrics %v; want 127.0.0.1:6060 and false", cfg.AdminAddr, cfg.PublicMetrics)
		}
		if cfg, err = parseServeConfig(t, "--admin-addr", "off", "--public-metrics"); err != nil || cfg.adminListener() != "" || !cfg.PublicMetrics {
			t.Errorf("admin listener off, metrics public: admin address %q, public metrics %v, %v", cfg.AdminAddr, cfg.PublicMetrics, err)
		}
	})
	t.Run("environment", func(t *testing.T) {
		t.Setenv("APP_ADMIN_ADDR", "127.0.0.1:6061")
		t.Setenv("APP_PUBLIC_METRICS", "false")
		cfg, err := parseServeConfig(t)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.AdminAddr != "127.0.0.1:6061" || cfg.PublicMetrics {
			t.Errorf("from the environment: admin address %q, public metrics %v", cfg.AdminAddr, cfg.PublicMetrics)
		}
		if cfg, err = parseServeConfig(t, "--admin-addr", ":7070", "--public-metrics=true"); err != nil || cfg.AdminAddr != ":7070" || !cfg.PublicMetrics {
			t.Errorf("flags over the environment: admin address %q, public metrics %v, %v", cfg.AdminAddr, cfg.PublicMetrics, err)
		}
	})
	for _, tc := range []struct {
		name, addr, public, want string
	}{
		{"address without a port", "localhost", "", "APP_ADMIN_ADDR"},
		{"off, misspelt", "of", "", "APP_ADMIN_ADDR"},
		{"port out of range", "127.0.0.1:70000", "", "port must be 0..65535"},
		{"public metrics not a boolean", "", "maybe", "APP_PUBLIC_METRICS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("APP_ADMIN_ADDR", tc.addr)
			t.Setenv("APP_PUBLIC_METRICS", tc.public)
			_, err := parseServeConfig(t)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error naming %q", err, tc.want)
			}
		})
	}
}

// parseServeConfig binds serve's flags, parses args after a database URL, and validates: what
// `ledger serve` makes of its command line and environment.
func parseServeConfig(t *testing.T, args ...string) (serveConfig, error) {
	t.Helper()
	var cfg serveConfig
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfg.bind(fs)
	if err := fs.Parse(append([]string{"--database-url", "postgres://localhost/ledger"}, args...)); err != nil {
		t.Fatalf("parse %v: %v", args, err)
	}
	return cfg, cfg.validate()
}
