package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestE2EConnectionCap: past --max-connections a new connection waits to be accepted, and is
// served as soon as another closes; the server goes on serving.
func TestE2EConnectionCap(t *testing.T) {
	ts := startTestService(t, func(c *serveConfig) { c.MaxConnections = 2 })
	ts.api.hc.CloseIdleConnections() // the readiness polls' connection would take a place
	addr := ts.svc.addr
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "GET /api/health HTTP/1.1\r\nHost: ledger\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("health over a held connection: %v %v", resp, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		held = append(held, c) // kept alive, so it keeps its place
	}
	third := make(chan string, 1)
	go func() {
		hc := &http.Client{Timeout: time.Minute, Transport: &http.Transport{}}
		resp, err := hc.Get("http://" + addr + "/api/health")
		if err != nil {
			third <- err.Error()
			return
		}
		resp.Body.Close()
		third <- resp.Status
	}()
	select {
	case got := <-third:
		t.Fatalf("a third connection was answered (%s) while both places were held", got)
	case <-time.After(500 * time.Millisecond):
	}
	held[0].Close()
	select {
	case got := <-third:
		if got != "200 OK" {
			t.Errorf("the waiting connection, once a place was free: %s, want 200 OK", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the waiting connection was not served after a place came free")
	}
	held[1].Close()
	if r := ts.api.do(t, http.MethodGet, "/api/health", "", nil); r.Status != http.StatusOK {
		t.Errorf("after the cap was reached: %s", r)
	}
}

// TestE2EClientGoneIsNotAnError: a client that hangs up while its request waits on the
// database is recorded as 499 (the route's series with code="499"), its command as canceled,
// and neither as a 500 nor at ERROR in the log.
func TestE2EClientGoneIsNotAnError(t *testing.T) {
	ctx := context.Background()
	own, proxy, dbURL := stallableDatabase(t, "cmd_gone")
	ts := startTestService(t, func(c *serveConfig) {
		c.DatabaseURL, c.DBMaxConns, c.AdminAddr = dbURL, 8, "127.0.0.1:0"
	})
	api := ts.api
	alice, bob := uniq("gone-alice"), uniq("gone-bob")
	tok := api.login(t, alice)
	api.login(t, bob)
	waitAllProjected(t, own)

	type call struct {
		method, path, route string
		body                any
	}
	calls := []call{
		{http.MethodGet, "/api/info", "/api/info", nil},
		{http.MethodGet, "/api/buy/pen", "/api/buy/{item}", nil},
		{http.MethodPost, "/api/sendCoin", "/api/sendCoin", map[string]any{"toUser": bob, "amount": 3}},
	}
	proxy.stall()
	defer proxy.resume() // before the service's cleanup, should the test stop early
	var wg sync.WaitGroup
	for _, c := range calls {
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
			defer cancel()
			req := api.newRequest(t, c.method, c.path, tok, c.body).WithContext(cctx)
			if resp, err := (&http.Client{Transport: &http.Transport{}}).Do(req); err == nil {
				resp.Body.Close()
				t.Errorf("%s %s answered %s before the client hung up", c.method, c.path, resp.Status)
			}
		})
	}
	wg.Wait()
	admin := "http://" + ts.svc.adminAddr + "/metrics"
	const httpReqs = "ledger_http_request_duration_seconds"
	deadline := time.Now().Add(10 * time.Second)
	for {
		m := scrapeMetrics(t, admin)
		if n, _ := m.sum(httpReqs, map[string]string{"code": "499"}); n >= float64(len(calls)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the hung-up requests were never recorded as 499")
		}
		time.Sleep(50 * time.Millisecond)
	}
	proxy.resume()
	api.waitReady(t)
	m := scrapeMetrics(t, admin)
	for _, c := range calls {
		m.want(t, httpReqs, map[string]string{"method": c.method, "route": c.route, "code": "499"}, 1)
		for _, code := range []string{"500", "503"} {
			if n, _ := m.sum(httpReqs, map[string]string{"route": c.route, "code": code}); n != 0 {
				t.Errorf("%s %s: %g requests recorded as %s", c.method, c.route, n, code)
			}
		}
	}
	m.want(t, "ledger_commands_total", map[string]string{"command": "buy", "outcome": "canceled"}, 1)
	m.want(t, "ledger_commands_total", map[string]string{"command": "transfer", "outcome": "canceled"}, 1)
	m.want(t, "ledger_commands_total", map[string]string{"outcome": "error"}, 0)
	for _, line := range strings.Split(ts.logs.String(), "\n") {
		if strings.Contains(line, `"level":"ERROR"`) {
			t.Errorf("logged as an error: %s", line)
		}
	}
}

// TestRequestLimitsConfig: the request timeout and the connection cap have defaults, come from
// the environment or flags, and refuse values out of range by name.
func TestRequestLimitsConfig(t *testing.T) {
	t.Setenv("APP_REQUEST_TIMEOUT", "")
	t.Setenv("APP_MAX_CONNECTIONS", "")
	cfg, err := parseServeConfig(t)
	if err != nil || cfg.RequestTimeout != 3*time.Second || cfg.MaxConnections != defaultMaxConnections {
		t.Errorf("defaults: timeout %v, connections %d, %v; want 3s, %d", cfg.RequestTimeout, cfg.MaxConnections, err, defaultMaxConnections)
	}
	t.Setenv("APP_REQUEST_TIMEOUT", "1500ms")
	t.Setenv("APP_MAX_CONNECTIONS", "100")
	if cfg, err = parseServeConfig(t); err != nil || cfg.RequestTimeout != 1500*time.Millisecond || cfg.MaxConnections != 100 {
		t.Errorf("from the environment: timeout %v, connections %d, %v", cfg.RequestTimeout, cfg.MaxConnections, err)
	}
	if cfg, err = parseServeConfig(t, "--request-timeout", "2s", "--max-connections", "7"); err != nil || cfg.RequestTimeout != 2*time.Second || cfg.MaxConnections != 7 {
		t.Errorf("flags over the environment: timeout %v, connections %d, %v", cfg.RequestTimeout, cfg.MaxConnections, err)
	}
	for _, tc := range []struct{ timeout, conns, want string }{
		{"10ms", "", "APP_REQUEST_TIMEOUT"},
		{"1m", "", "APP_REQUEST_TIMEOUT"},
		{"soon", "", "APP_REQUEST_TIMEOUT"},
		{"", "0", "APP_MAX_CONNECTIONS"},
		{"", "many", "APP_MAX_CONNECTIONS"},
	} {
		t.Setenv("APP_REQUEST_TIMEOUT", tc.timeout)
		t.Setenv("APP_MAX_CONNECTIONS", tc.conns)
		if _, err := parseServeConfig(t); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("timeout %q, connections %q: %v, want an error naming %s", tc.timeout, tc.conns, err, tc.want)
		}
	}
}
