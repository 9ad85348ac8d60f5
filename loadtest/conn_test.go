package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// clientKinds name the two ways api sends requests: its own pool and net/http's Transport.
var clientKinds = []string{"pool", "net/http"}

// newTestAPI returns an api for base whose employees are alice (token t0) and bob (t1) and
// whose catalog is "tea cup", sending through the client kind names.
func newTestAPI(t testing.TB, kind, base string, maxConns int) *api {
	t.Helper()
	names, tokens, items := []string{"alice", "bob"}, []string{"t0", "t1"}, []string{"tea cup"}
	tr := newTransport(maxConns, 5*time.Second)
	t.Cleanup(tr.CloseIdleConnections)
	var a *api
	var err error
	switch kind {
	case "pool":
		a, err = newAPI(tr, maxConns, base, names, tokens, items)
		if err == nil && a.pool == nil {
			t.Fatalf("%s is sent through net/http, not the pool", base)
		}
	case "net/http":
		a, err = newTransportAPI(tr, base, names, tokens, items)
	default:
		t.Fatalf("no client %q", kind)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.close)
	return a
}

// hijack takes the connection over from the server, with what the handler wrote so far sent.
func hijack(t *testing.T, w http.ResponseWriter) net.Conn {
	t.Helper()
	conn, bw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		t.Errorf("hijack: %v", err)
		return nil
	}
	bw.Flush()
	return conn
}

// TestClientsClassifyAlike: for every kind of answer the pool and the Transport lead to the
// same status, message and classification: small and chunked bodies, contract and other error
// bodies, bodies over the limit, bodies cut short, no answer at all, and a timeout.
func TestClientsClassifyAlike(t *testing.T) {
	over := strings.Repeat("x", 2<<20)
	tenKiB := strings.Repeat("y", 10<<10)
	cases := []struct {
		name    string
		handler func(t *testing.T, w http.ResponseWriter, r *http.Request)
		chunked bool // the server sends the body chunked, which the test checks
		status  int
		message string
		out     outcome
		key     string // the error key's message
	}{
		{name: "small 200", handler: func(_ *testing.T, w http.ResponseWriter, _ *http.Request) {
			io.WriteString(w, `{"coins":1000}`)
		}, status: 200, out: outOK},
		{name: "10 KiB 200 chunked", chunked: true, handler: func(_ *testing.T, w http.ResponseWriter, _ *http.Request) {
			for range 10 {
				io.WriteString(w, tenKiB[:1<<10])
			}
		}, status: 200, out: outOK},
		{name: "10 KiB 400 chunked", chunked: true, handler: func(_ *testing.T, w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"errors":"not enough coin: balance 3, price 10","pad":"`+tenKiB+`"}`)
		}, status: 400, message: "not enough coin: balance 3, price 10", out: outNotEnoughCoin},
		{name: "401 contract error", handler: func(_ *testing.T, w http.ResponseWriter, _ *http.Request) {
			http.Error(w, `{"errors":"unauthorized"}`, http.StatusUnauthorized)
		}, status: 401, message: "unauthorized", out: outError, key: "unauthorized"},
		{name: "500 plain text", handler: func(_ *testing.T, w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "boom", http.StatusInternalServerError)
		}, status: 500, message: "(not a contract error) boom", out: outError, key: "(not a contract error) boom"},
		{name: "404 empty", handler: func(_ *testing.T, w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusNotFound)
		}, status: 404, message: "(empty body)", out: outError, key: "(empty body)"},
		{name: "204", handler: func(_ *testing.T, w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusNoContent)
		}, status: 204, message: "(empty body)", out: outError, key: "(empty body)"},
		{name: "interim 103, then 200", handler: func(_ *testing.T, w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Link", "</style.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			io.WriteString(w, `{}`)
		}, status: 200, out: outOK},
		{name: "200 over the limit, chunked", chunked: true, handler: func(_ *testing.T, w http.ResponseWriter, _ *http.Request) {
			io.WriteString(w, over)
		}, status: 200, out: outOK},
		{name: "500 over the limit, with length", handler: func(_ *testing.T, w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Length", fmt.Sprint(len(over)))
			w.WriteHeader(http.StatusInternalServerError)
			io.WriteString(w, over)
		}, status: 500, message: "(not a contract error) " + over[:80], out: outError, key: "(not a contract error) " + over[:80]},
		{name: "200 cut short, with length", handler: func(t *testing.T, w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Length", "1000")
			io.WriteString(w, `{"coins":`)
			if c := hijack(t, w); c != nil {
				c.Close()
			}
		}, status: 200, out: outError, key: "connection closed"},
		{name: "200 cut short, chunked", handler: func(t *testing.T, w http.ResponseWriter, _ *http.Request) {
			io.WriteString(w, tenKiB)
			w.(http.Flusher).Flush()
			if c := hijack(t, w); c != nil {
				c.Close()
			}
		}, status: 200, out: outError, key: "connection closed"},
		{name: "500 up to the end of the connection", handler: func(t *testing.T, w http.ResponseWriter, _ *http.Request) {
			if c := hijack(t, w); c != nil {
				io.WriteString(c, "HTTP/1.1 500 Internal Server Error\r\n\r\n"+`{"errors":"database down"}`)
				c.Close()
			}
		}, status: 500, message: "database down", out: outError, key: "database down"},
		{name: "closed without an answer", handler: func(t *testing.T, w http.ResponseWriter, _ *http.Request) {
			if c := hijack(t, w); c != nil {
				c.Close()
			}
		}, out: outError, key: "connection closed"},
		{name: "slower than the timeout", handler: func(_ *testing.T, w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		}, out: outError, key: "timeout"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				tc.handler(t, w, r)
			}))
			defer srv.Close()
			if tc.chunked {
				assertChunked(t, srv.URL)
			}
			type result struct {
				status  int
				message string
				out     outcome
				key     errKey
			}
			got := map[string][]result{}
			for _, kind := range clientKinds {
				a := newTestAPI(t, kind, srv.URL, 4)
				for _, q := range []request{{op: opInfo}, {op: opBuy, item: "tea cup"}, {op: opSend, to: 1, amount: 5}} {
					ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
					status, message, err := a.do(ctx, q)
					cancel()
					o, key := classify(q.op, status, message, err)
					got[kind] = append(got[kind], result{status, message, o, key})
					if err == nil && (status != tc.status || message != tc.message) {
						t.Errorf("%s, %v: %d %q, want %d %q", kind, q.op, status, message, tc.status, tc.message)
					}
					want, wantKey := tc.out, tc.key
					if want == outNotEnoughCoin && q.op == opInfo {
						// Not enough coin is no answer to an info.
						want, wantKey = outError, newErrKey(tc.status, tc.message).message
					}
					if o != want || key.message != wantKey {
						t.Errorf("%s, %v: classified %v %q (%v), want %v %q", kind, q.op, o, key.message, err, want, wantKey)
					}
				}
			}
			if fmt.Sprint(got["pool"]) != fmt.Sprint(got["net/http"]) {
				t.Errorf("the pool's results %v differ from net/http's %v", got["pool"], got["net/http"])
			}
		})
	}
}

// assertChunked fails the test unless url answers with a chunked body.
func assertChunked(t *testing.T, url string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if len(resp.TransferEncoding) != 1 || resp.TransferEncoding[0] != "chunked" {
		t.Fatalf("the answer came with transfer encoding %q, length %d: the case needs chunked", resp.TransferEncoding, resp.ContentLength)
	}
}

// countingServer is a test server of the ledger's routes that counts the requests and the
// connections it got, checks each request's token and body, and answers each route as given.
type countingServer struct {
	*httptest.Server
	info, buy, send atomic.Int64
	conns           atomic.Int64 // opened
	open, maxOpen   atomic.Int64
	mu              sync.Mutex
	sent            []int64 // the sendCoin amounts, in order of arrival
}

func newCountingServer(t *testing.T, configure func(*http.Server), answer func(w http.ResponseWriter)) *countingServer {
	s := &countingServer{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/info", func(w http.ResponseWriter, r *http.Request) {
		s.info.Add(1)
		answer(w)
		io.WriteString(w, `{"coins":1000,"inventory":[],"coinHistory":{"received":[],"sent":[]}}`)
	})
	mux.HandleFunc("GET /api/buy/{item}", func(w http.ResponseWriter, r *http.Request) {
		s.buy.Add(1)
		answer(w)
	})
	mux.HandleFunc("POST /api/sendCoin", func(w http.ResponseWriter, r *http.Request) {
		var b sendCoinBody
		dec := json.NewDecoder(r.Body)
		dec.DisallowUnknownFields()
		if err := dec.Decode(&b); err != nil || b.ToUser != "bob" || r.Header.Get("Authorization") != "Bearer t0" {
			t.Errorf("sendCoin %+v (%v) by %q", b, err, r.Header.Get("Authorization"))
		}
		s.send.Add(1)
		s.mu.Lock()
		s.sent = append(s.sent, b.Amount)
		s.mu.Unlock()
		answer(w)
	})
	s.Server = httptest.NewUnstartedServer(mux)
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		switch st {
		case http.StateNew:
			s.conns.Add(1)
			n := s.open.Add(1)
			for m := s.maxOpen.Load(); n > m && !s.maxOpen.CompareAndSwap(m, n); m = s.maxOpen.Load() {
			}
		case http.StateClosed, http.StateHijacked:
			s.open.Add(-1)
		}
	}
	if configure != nil {
		configure(s.Config)
	}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

// TestPoolServerCloses: whether the server says it closes each connection, closes idle
// connections on its idle timeout, or drops them all between requests, every request
// succeeds and reaches the server exactly once, sendCoin's body intact.
func TestPoolServerCloses(t *testing.T) {
	for _, tc := range []struct {
		name      string
		configure func(*http.Server)
		answer    func(http.ResponseWriter)
		between   func(*countingServer)
		oneConn   bool // every request opens a connection
	}{
		{name: "Connection: close", answer: func(w http.ResponseWriter) { w.Header().Set("Connection", "close") }, oneConn: true},
		{name: "idle timeout", configure: func(s *http.Server) { s.IdleTimeout = 5 * time.Millisecond },
			between: func(*countingServer) { time.Sleep(50 * time.Millisecond) }, oneConn: true},
		{name: "connections dropped", between: func(s *countingServer) { s.CloseClientConnections() }, oneConn: true},
		{name: "keep-alive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			answer := tc.answer
			if answer == nil {
				answer = func(http.ResponseWriter) {}
			}
			srv := newCountingServer(t, tc.configure, answer)
			a := newTestAPI(t, "pool", srv.URL, 4)
			const rounds = 5
			for i := range rounds {
				for _, q := range []request{{op: opInfo, user: 1}, {op: opBuy, item: "tea cup"}, {op: opSend, to: 1, amount: int64(i + 1)}} {
					if status, message, err := a.do(context.Background(), q); err != nil || status != http.StatusOK {
						t.Fatalf("round %d, %v: %d %q %v", i, q.op, status, message, err)
					}
					if tc.between != nil {
						tc.between(srv)
					}
				}
			}
			if srv.info.Load() != rounds || srv.buy.Load() != rounds || srv.send.Load() != rounds {
				t.Errorf("the server got %d info, %d buy, %d sendCoin, want %d of each", srv.info.Load(), srv.buy.Load(), srv.send.Load(), rounds)
			}
			srv.mu.Lock()
			if fmt.Sprint(srv.sent) != "[1 2 3 4 5]" {
				t.Errorf("sendCoin amounts %v, want 1..5 in order", srv.sent)
			}
			srv.mu.Unlock()
			want := int64(1)
			if tc.oneConn {
				want = 3 * rounds
			}
			if n := srv.conns.Load(); n != want {
				t.Errorf("%d connections for %d requests, want %d", n, 3*rounds, want)
			}
		})
	}
}

// scriptedServer speaks HTTP/1.1 over raw connections. To each request it writes what act
// returns for its connection and its number there (both from 0); for "" it closes the
// connection having read the request. It counts the requests by path.
type scriptedServer struct {
	ln    net.Listener
	act   func(conn, n int) (answer string)
	mu    sync.Mutex
	got   map[string]int
	conns int
	wg    sync.WaitGroup
}

// ok200 is an answer for scriptedServer.
const ok200 = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"

func newScriptedServer(t *testing.T, act func(conn, n int) string) *scriptedServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &scriptedServer{ln: ln, act: act, got: map[string]int{}}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			n := s.conns
			s.conns++
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				s.serve(c, n)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.wg.Wait()
	})
	return s
}

func (s *scriptedServer) serve(c net.Conn, conn int) {
	defer c.Close()
	br := bufio.NewReader(c)
	for n := 0; ; n++ {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		io.Copy(io.Discard, req.Body)
		s.mu.Lock()
		s.got[req.URL.Path]++
		s.mu.Unlock()
		answer := s.act(conn, n)
		if answer == "" {
			return
		}
		io.WriteString(c, answer)
	}
}

func (s *scriptedServer) count(path string) (requests, conns int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.got[path], s.conns
}

// TestPoolRetriesOnlyWhatIsSafe: when the server reads a request on a reused connection and
// closes it without answering, an info is sent again on a fresh connection and succeeds, while
// a buy or a sendCoin, which the server may have acted on, fails and is not sent again.
func TestPoolRetriesOnlyWhatIsSafe(t *testing.T) {
	for _, tc := range []struct {
		q       request
		path    string
		retried bool
	}{
		{request{op: opInfo}, "/api/info", true},
		{request{op: opBuy, item: "tea cup"}, "/api/buy/tea cup", false},
		{request{op: opSend, to: 1, amount: 3}, "/api/sendCoin", false},
	} {
		t.Run(tc.q.op.String(), func(t *testing.T) {
			// The first connection answers its first request and drops its second.
			srv := newScriptedServer(t, func(conn, n int) string {
				if conn > 0 || n == 0 {
					return ok200
				}
				return ""
			})
			a := newTestAPI(t, "pool", "http://"+srv.ln.Addr().String(), 4)
			if _, _, err := a.do(context.Background(), request{op: opInfo}); err != nil {
				t.Fatal(err)
			}
			status, _, err := a.do(context.Background(), tc.q)
			before := 0
			if tc.path == "/api/info" {
				before = 1
			}
			got, conns := srv.count(tc.path)
			got -= before
			if tc.retried {
				if err != nil || status != http.StatusOK || got != 2 || conns != 2 {
					t.Errorf("%d %v; the server got it %d times over %d connections, want a 200 on the second of 2", status, err, got, conns)
				}
				return
			}
			if o, key := classify(tc.q.op, status, "", err); o != outError || key.message != "connection closed" {
				t.Errorf("classified %v %q, want an error: connection closed", o, key.message)
			}
			if got != 1 || conns != 1 {
				t.Errorf("the server got it %d times over %d connections, want once: it may have been acted on", got, conns)
			}
		})
	}
}

// TestPoolDropsConnectionOutOfStep: a connection on which more came than the answer asked for
// is not reused, so that no request takes another's answer for its own.
func TestPoolDropsConnectionOutOfStep(t *testing.T) {
	srv := newScriptedServer(t, func(int, int) string { return ok200 + ok200 })
	a := newTestAPI(t, "pool", "http://"+srv.ln.Addr().String(), 4)
	for range 3 {
		if status, _, err := a.do(context.Background(), request{op: opInfo}); err != nil || status != http.StatusOK {
			t.Fatalf("%d %v", status, err)
		}
	}
	if got, conns := srv.count("/api/info"); got != 3 || conns != 3 {
		t.Errorf("%d requests over %d connections, want 3 over 3", got, conns)
	}
}

// TestRetryable: the rule by which a failed request is sent again.
func TestRetryable(t *testing.T) {
	info, send := &wireRequest{method: "GET", readOnly: true}, &wireRequest{method: "POST", body: []byte("{}")}
	reset := &net.OpError{Op: "write", Net: "tcp", Err: &net.OpError{Op: "write", Err: syscall.ECONNRESET}}
	timeout := &net.OpError{Op: "read", Net: "tcp", Err: errTimeoutForTest{}}
	for _, tc := range []struct {
		name   string
		r      *wireRequest
		reused bool
		f      failure
		want   bool
	}{
		{"a fresh connection: never", info, false, failure{err: reset, written: 0}, false},
		{"nothing written", send, true, failure{err: reset, written: 0}, true},
		{"sendCoin partly written", send, true, failure{err: reset, written: 10}, false},
		{"info partly written", info, true, failure{err: reset, written: 10}, true},
		{"info: no answer, EOF", info, true, failure{err: io.EOF, written: -1}, true},
		{"info: no answer, reset", info, true, failure{err: reset, written: -1}, true},
		{"sendCoin: no answer, EOF", send, true, failure{err: io.EOF, written: -1}, false},
		{"info: part of the answer", info, true, failure{err: io.ErrUnexpectedEOF, written: -1, answered: true}, false},
		{"info: timeout", info, true, failure{err: timeout, written: -1}, false},
		{"a timeout while writing", send, true, failure{err: timeout, written: 0}, false},
	} {
		if got := retryable(tc.r, tc.reused, tc.f); got != tc.want {
			t.Errorf("%s: retryable %v, want %v", tc.name, got, tc.want)
		}
	}
}

type errTimeoutForTest struct{}

func (errTimeoutForTest) Error() string   { return "i/o timeout" }
func (errTimeoutForTest) Timeout() bool   { return true }
func (errTimeoutForTest) Temporary() bool { return true }

// TestPoolTimeout: a request slower than its deadline fails as a timeout when the deadline
// comes, and its connection is closed, not reused; a cancelled request ends at once, as
// canceled.
func TestPoolTimeout(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	var closed atomic.Int64
	srv := newCountingServer(t, func(s *http.Server) {
		state := s.ConnState
		s.ConnState = func(c net.Conn, st http.ConnState) {
			state(c, st)
			if st == http.StateClosed {
				closed.Add(1)
			}
		}
		routes := s.Handler
		s.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/api/info" {
				routes.ServeHTTP(w, r)
				return
			}
			select { // an info that takes its time
			case <-release:
			case <-r.Context().Done():
			case <-time.After(3 * time.Second):
			}
		})
	}, func(http.ResponseWriter) {})
	a := newTestAPI(t, "pool", srv.URL, 4)

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	start := time.Now()
	status, message, err := a.do(ctx, request{op: opInfo})
	cancel()
	if o, key := classify(opInfo, status, message, err); o != outError || key.message != "timeout" {
		t.Errorf("classified %v %q (%v), want an error: timeout", o, key.message, err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("the timeout of 100 ms came after %s", d)
	}
	waitFor(t, "the timed-out connection closed", func() bool { return closed.Load() == 1 })

	ctx, cancel = context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	start = time.Now()
	status, message, err = a.do(ctx, request{op: opInfo})
	if o, key := classify(opInfo, status, message, err); o != outError || key.message != "canceled" {
		t.Errorf("classified %v %q (%v), want an error: canceled", o, key.message, err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("the cancellation after 50 ms ended the request after %s", d)
	}
	waitFor(t, "the cancelled connection closed", func() bool { return closed.Load() == 2 })

	if _, _, err := a.do(context.Background(), request{op: opBuy, item: "tea cup"}); err != nil {
		t.Fatal(err)
	}
	if n := srv.conns.Load(); n != 3 {
		t.Errorf("%d connections, want 3: one for each timed-out request and a new one after them", n)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("waited 5 s for %s", what)
		}
	}
}

// TestPoolBound: many goroutines share a pool of four connections; the server never sees more
// than four open at once, no request fails, and every sendCoin arrives once.
func TestPoolBound(t *testing.T) {
	srv := newCountingServer(t, nil, func(http.ResponseWriter) { time.Sleep(time.Millisecond) })
	const maxConns, goroutines, each = 4, 32, 25
	a := newTestAPI(t, "pool", srv.URL, maxConns)
	var wg sync.WaitGroup
	var failed atomic.Int64
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				q := []request{{op: opInfo, user: 1}, {op: opBuy, item: "tea cup"}, {op: opSend, to: 1, amount: 1}}[(g+i)%3]
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				if status, message, err := a.do(ctx, q); err != nil || status != http.StatusOK {
					failed.Add(1)
					t.Errorf("%v: %d %q %v", q.op, status, message, err)
				}
				cancel()
			}
		}()
	}
	wg.Wait()
	if n := srv.maxOpen.Load(); n > maxConns {
		t.Errorf("%d connections open at once, above the bound of %d", n, maxConns)
	}
	if n := srv.conns.Load(); n > maxConns {
		t.Errorf("%d connections opened, want at most %d: none was closed", n, maxConns)
	}
	total := srv.info.Load() + srv.buy.Load() + srv.send.Load()
	if total != goroutines*each || failed.Load() != 0 {
		t.Errorf("the server got %d requests, %d failed; want %d, none failed", total, failed.Load(), goroutines*each)
	}
}

// TestPoolWaitsForAConnection: with every connection busy a request waits, and its deadline
// ends the wait.
func TestPoolWaitsForAConnection(t *testing.T) {
	release := make(chan struct{})
	srv := newCountingServer(t, nil, func(http.ResponseWriter) { <-release })
	a := newTestAPI(t, "pool", srv.URL, 1)
	done := make(chan error)
	go func() {
		_, _, err := a.do(context.Background(), request{op: opBuy, item: "tea cup"})
		done <- err
	}()
	waitFor(t, "the first request to arrive", func() bool { return srv.buy.Load() == 1 })

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	status, message, err := a.do(ctx, request{op: opInfo})
	cancel()
	if o, key := classify(opInfo, status, message, err); o != outError || key.message != "timeout" {
		t.Errorf("classified %v %q (%v), want an error: timeout", o, key.message, err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Errorf("the request that held the connection: %v", err)
	}
	if _, _, err := a.do(context.Background(), request{op: opInfo}); err != nil {
		t.Fatal(err)
	}
	if n, info := srv.conns.Load(), srv.info.Load(); n != 1 || info != 1 {
		t.Errorf("%d connections, %d info requests arrived; want 1 and 1", n, info)
	}
}

// TestReadAnswer: answers as the wire carries them, read one after another from one stream,
// so that each must be read to its exact end.
func TestReadAnswer(t *testing.T) {
	var chunked bytes.Buffer
	cw := httputil.NewChunkedWriter(&chunked)
	for _, n := range []int{1, 15, 16, 4095, 4096, 4097, 10000} {
		cw.Write(bytes.Repeat([]byte("z"), n))
	}
	cw.Close()
	chunkedBody := strings.Replace(chunked.String(), "\r\n", ";ext=1\r\n", 1)
	wantChunked := strings.Repeat("z", 1+15+16+4095+4096+4097+10000)

	for _, tc := range []struct {
		name     string
		wire     string
		status   int
		body     string // kept for any status but 200
		reusable bool
		err      error
	}{
		{"length", "HTTP/1.1 400 Bad Request\r\ncontent-length: 5\r\n\r\nhello", 400, "hello", true, nil},
		{"200 body dropped", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 200, "", true, nil},
		{"chunked with extension and trailer", "HTTP/1.1 500 x\r\nTransfer-Encoding: Chunked\r\n\r\n" + chunkedBody + "X-Trailer: 1\r\n\r\n", 500, wantChunked, true, nil},
		{"chunked 200", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunkedBody + "\r\n", 200, "", true, nil},
		{"Connection: close among others", "HTTP/1.1 200 OK\r\nConnection: Keep-Alive, Close\r\nContent-Length: 0\r\n\r\n", 200, "", false, nil},
		{"HTTP/1.0", "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", 200, "", false, nil},
		{"HTTP/1.0 keep-alive", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", 200, "", true, nil},
		{"no reason phrase, bare line feeds", "HTTP/1.1 404\nContent-Length: 2\n\nno", 404, "no", true, nil},
		{"interim answers", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: <a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 200, "", true, nil},
		{"304 has no body", "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", 304, "", true, nil},
		{"conflicting lengths", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 0, "", false, errMalformed},
		{"gzip", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", 0, "", false, errEncoding},
		{"not HTTP", "SSH-2.0-OpenSSH\r\n\r\n", 0, "", false, errMalformed},
		{"bad chunk size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 200, "", false, errMalformed},
	} {
		// Each answer is followed by another: reading must stop exactly at its end.
		br := bufio.NewReaderSize(strings.NewReader(tc.wire+"HTTP/1.1 418 I'm a teapot\r\nContent-Length: 0\r\n\r\n"), 4096)
		a, err := readAnswer(br)
		if !errors.Is(err, tc.err) || a.status != tc.status || string(a.body) != tc.body || a.reusable != tc.reusable {
			t.Errorf("%s: %d, %d bytes, reusable %v, %v; want %d, %d bytes, reusable %v, %v",
				tc.name, a.status, len(a.body), a.reusable, err, tc.status, len(tc.body), tc.reusable, tc.err)
			continue
		}
		if err != nil {
			continue
		}
		if next, err := readAnswer(br); err != nil || next.status != http.StatusTeapot {
			t.Errorf("%s: the answer after it read as %d, %v", tc.name, next.status, err)
		}
	}
}

// TestReadAnswerLimit: of a body longer than the limit, the limit is read and the connection
// is not reused; a body cut short is an unexpected end.
func TestReadAnswerLimit(t *testing.T) {
	big := strings.Repeat("b", maxAnswer+10)
	for _, wire := range []string{
		fmt.Sprintf("HTTP/1.1 500 x\r\nContent-Length: %d\r\n\r\n%s", len(big), big),
		fmt.Sprintf("HTTP/1.1 500 x\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", len(big), big),
		"HTTP/1.1 500 x\r\n\r\n" + big,
	} {
		a, err := readAnswer(bufio.NewReader(strings.NewReader(wire)))
		if err != nil || len(a.body) != maxAnswer || a.reusable {
			t.Errorf("%.40q: %d bytes, reusable %v, %v; want %d bytes, not reusable", wire, len(a.body), a.reusable, err, maxAnswer)
		}
	}
	for _, wire := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
		"HTTP/1.1 500 x\r\nContent-Length: 10\r\n\r\nabc",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\nabc",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n",
	} {
		if _, err := readAnswer(bufio.NewReader(strings.NewReader(wire))); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("%q: %v, want an unexpected end", wire, err)
		}
	}
}

// BenchmarkClients: one info after another through each client, against an in-process server
// (whose cost is in the numbers too).
func BenchmarkClients(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, `{"coins":1000,"inventory":[],"coinHistory":{"received":[],"sent":[]}}`)
	}))
	defer srv.Close()
	for _, kind := range clientKinds {
		b.Run(kind, func(b *testing.B) {
			a := newTestAPI(b, kind, srv.URL, 4)
			b.ReportAllocs()
			for b.Loop() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				if _, _, err := a.do(ctx, request{op: opInfo}); err != nil {
					b.Fatal(err)
				}
				cancel()
			}
		})
	}
}
