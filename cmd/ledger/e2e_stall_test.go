package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/ledger/ledger/internal/pgtest"
)

// stallProxy forwards TCP connections to a PostgreSQL server and, on demand, stops forwarding
// in both directions without closing anything: to its clients the server looks frozen, as
// under SIGSTOP, a full disk or a lost network path, and not down.
type stallProxy struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	thawed chan struct{} // closed while bytes flow; an open one while stalled
	conns  []net.Conn
}

// stallableDatabase creates a database of the test's own behind a stall proxy: it returns the
// database (for checks that bypass the proxy), the proxy, and the URL that reaches the database
// through it.
func stallableDatabase(t *testing.T, prefix string) (*pgtest.Database, *stallProxy, string) {
	t.Helper()
	own := pgtest.New(t, prefix)
	u, err := url.Parse(own.URL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := startStallProxy(t, u.Host)
	u.Host = proxy.ln.Addr().String()
	return own, proxy, u.String()
}

func startStallProxy(t *testing.T, target string) *stallProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &stallProxy{ln: ln, target: target, thawed: make(chan struct{})}
	close(p.thawed)
	go p.accept()
	t.Cleanup(func() {
		ln.Close()
		p.resume()
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, c := range p.conns {
			c.Close()
		}
	})
	return p
}

func (p *stallProxy) accept() {
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			client.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, client, server)
		p.mu.Unlock()
		go p.pipe(server, client)
		go p.pipe(client, server)
	}
}

// pipe copies src to dst, holding each chunk while the proxy is stalled.
func (p *stallProxy) pipe(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			<-p.gate()
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *stallProxy) gate() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.thawed
}

func (p *stallProxy) stall() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.thawed:
		p.thawed = make(chan struct{})
	default:
	}
}

func (p *stallProxy) resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.thawed:
	default:
		close(p.thawed)
	}
}

// TestE2EStalledDatabase: with PostgreSQL frozen (not down), every endpoint answers 503 with
// Retry-After within the request timeout, whichever wait it is stuck in (the catalog, the
// idempotency lookup, the user lookup, the pool, group commit, grouped reads), and readiness
// answers within a second. Once the database moves again nothing is left half done: the
// bank's sums hold, a sign-up is all there or not at all, and keyed commands retried under
// their keys take effect exactly once.
func TestE2EStalledDatabase(t *testing.T) {
	ctx := context.Background()
	own, proxy, dbURL := stallableDatabase(t, "cmd_stall")
	const timeout = 1500 * time.Millisecond
	ts := startTestService(t, func(c *serveConfig) {
		c.DatabaseURL, c.DBMaxConns, c.RequestTimeout = dbURL, 8, timeout
	})
	api := ts.api
	alice, bob, carol := uniq("stall-alice"), uniq("stall-bob"), uniq("stall-carol")
	aliceTok, bobTok := api.login(t, alice), api.login(t, bob)
	waitAllProjected(t, own)

	type call struct {
		name, method, path, token, key string
		body                           any
	}
	calls := []call{
		{name: "info", method: http.MethodGet, path: "/api/info", token: aliceTok},
		{name: "buy", method: http.MethodGet, path: "/api/buy/pen", token: aliceTok},
		{name: "keyed buy", method: http.MethodGet, path: "/api/buy/cup", token: bobTok, key: uniq("stall-buy")},
		{name: "sendCoin", method: http.MethodPost, path: "/api/sendCoin", token: aliceTok, body: map[string]any{"toUser": bob, "amount": 7}},
		{name: "keyed sendCoin", method: http.MethodPost, path: "/api/sendCoin", token: aliceTok, key: uniq("stall-send"), body: map[string]any{"toUser": bob, "amount": 5}},
		{name: "login", method: http.MethodPost, path: "/api/auth", body: map[string]string{"username": alice, "password": testPassword}},
		{name: "sign-up", method: http.MethodPost, path: "/api/auth", body: map[string]string{"username": carol, "password": testPassword}},
		{name: "ready", method: http.MethodGet, path: "/api/ready"},
	}
	hc := &http.Client{Timeout: 10 * time.Second} // a guard against a hang, not an expectation
	send := func(c call) (response, time.Duration, error) {
		req := api.newRequest(t, c.method, c.path, c.token, c.body)
		if c.key != "" {
			req.Header.Set("Idempotency-Key", c.key)
		}
		began := time.Now()
		resp, err := hc.Do(req)
		if err != nil {
			return response{}, time.Since(began), err
		}
		defer resp.Body.Close()
		r := response{Method: c.method, Path: c.path, Status: resp.StatusCode, Header: resp.Header}
		r.Body, err = io.ReadAll(resp.Body)
		return r, time.Since(began), err
	}

	proxy.stall()
	defer proxy.resume() // before the service's cleanup, should the test stop early
	var wg sync.WaitGroup
	for _, c := range calls {
		wg.Go(func() {
			r, took, err := send(c)
			if err != nil {
				t.Errorf("%s while the database is stalled: no answer after %v: %v", c.name, took, err)
				return
			}
			limit := timeout + 500*time.Millisecond
			if c.name == "ready" {
				limit = time.Second
			}
			if took > limit {
				t.Errorf("%s while the database is stalled: answered after %v, want within %v", c.name, took, limit)
			}
			if r.Status != http.StatusServiceUnavailable {
				t.Errorf("%s while the database is stalled: %s, want 503", c.name, r)
				return
			}
			if c.name == "ready" {
				var st struct{ Status string }
				if json.Unmarshal(r.Body, &st) != nil || st.Status != "unavailable" {
					t.Errorf("ready while the database is stalled: %s", r)
				}
				return
			}
			if r.Header.Get("Retry-After") == "" {
				t.Errorf("%s while the database is stalled: 503 without Retry-After", c.name)
			}
			api.checkErrorBody(t, r)
		})
	}
	wg.Wait()
	proxy.resume()
	api.waitReady(t)

	// Keyed commands retried under their keys take effect exactly once.
	for _, c := range calls {
		if c.key == "" {
			continue
		}
		r, _, err := send(c)
		if err != nil || r.Status != http.StatusOK {
			t.Errorf("%s retried under its key after the stall: %s %v", c.name, r, err)
		}
		var n int
		if err := own.Pool.QueryRow(ctx, `SELECT count(*) FROM events WHERE convert_from(metadata_bytes, 'UTF8')::jsonb->>'idempotencyKey' = $1`, c.key).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if want := map[string]int{"keyed buy": 1, "keyed sendCoin": 2}[c.name]; n != want {
			t.Errorf("%s: %d events under its key after the retry, want %d", c.name, n, want)
		}
	}
	// The sign-up is all there or not at all; signing up again completes it.
	var users, streams int
	if err := own.Pool.QueryRow(ctx, `
		SELECT (SELECT count(*) FROM users WHERE username = $1),
		       (SELECT count(*) FROM streams s JOIN users u ON s.stream_id = 'account-' || u.account_id WHERE u.username = $1)`,
		carol).Scan(&users, &streams); err != nil {
		t.Fatal(err)
	}
	if users != streams {
		t.Errorf("sign-up cut by the stall: %d identity rows, %d account streams", users, streams)
	}
	carolTok := api.login(t, carol)
	waitAllProjected(t, own)
	if in := api.info(t, carolTok); in.Coins != 1000 {
		t.Errorf("%s after signing up again: %d coins, want 1000", carol, in.Coins)
	}
	bankInvariants(t, own.URL)
}
