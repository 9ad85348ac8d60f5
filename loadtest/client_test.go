package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// newTestAPI returns an api for base whose employees are alice (token t0) and bob (t1) and
// whose catalog is "tea cup".
func newTestAPI(t testing.TB, base string, maxConns int) *api {
	t.Helper()
	a, err := newAPI(base, maxConns, []string{"alice", "bob"}, []string{"t0", "t1"}, []string{"tea cup"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.close)
	return a
}

// in is a deadline d from now.
func in(d time.Duration) time.Time { return time.Now().Add(d) }

// TestAPIRequests: each operation reaches its route with the employee's token (and sendCoin its
// JSON body); a 200 of any size is a success and leaves its connection for the next request;
// an error answer gives the contract's message.
func TestAPIRequests(t *testing.T) {
	big := strings.Repeat("x", 200_000) // an info with a long history
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/info", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer t1" {
			http.Error(w, `{"errors":"unauthorized"}`, http.StatusUnauthorized)
			return
		}
		io.WriteString(w, `{"coins":1000,"inventory":[],"coinHistory":{"received":[],"sent":[]},"pad":"`+big+`"}`)
	})
	mux.HandleFunc("GET /api/buy/{item}", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("item") != "tea cup" || r.Header.Get("Authorization") != "Bearer t0" {
			t.Errorf("buy of %q by %q", r.PathValue("item"), r.Header.Get("Authorization"))
		}
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"errors":"not enough coin: balance 3, price 10"}`)
	})
	mux.HandleFunc("POST /api/sendCoin", func(w http.ResponseWriter, r *http.Request) {
		var b sendCoinBody
		if err := json.NewDecoder(r.Body).Decode(&b); err != nil || r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("sendCoin body: %v, content type %q", err, r.Header.Get("Content-Type"))
		}
		if b.ToUser != "bob" || b.Amount != 7 || r.Header.Get("Authorization") != "Bearer t0" {
			t.Errorf("sendCoin %+v by %q", b, r.Header.Get("Authorization"))
		}
	})
	srv := httptest.NewUnstartedServer(mux)
	var conns atomic.Int32
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()

	a := newTestAPI(t, srv.URL+"/", 4)
	for _, tc := range []struct {
		q       request
		status  int
		message string
	}{
		{request{op: opInfo, user: 1}, http.StatusOK, ""},
		{request{op: opInfo, user: 0}, http.StatusUnauthorized, "unauthorized"},
		{request{op: opBuy, user: 0, item: "tea cup"}, http.StatusBadRequest, "not enough coin: balance 3, price 10"},
		{request{op: opSend, user: 0, to: 1, amount: 7}, http.StatusOK, ""},
		{request{op: opInfo, user: 1}, http.StatusOK, ""},
	} {
		status, message, err := a.do(in(5*time.Second), tc.q)
		if err != nil || status != tc.status || message != tc.message {
			t.Errorf("%v: %d %q %v, want %d %q", tc.q.op, status, message, err, tc.status, tc.message)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("five requests one after another opened %d connections, want 1", n)
	}
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

// TestAPIClassifiesAnswers: every kind of answer leads to the status, message and
// classification the report counts: small and chunked bodies, contract and other error bodies,
// bodies cut short, no answer at all, and a timeout.
func TestAPIClassifiesAnswers(t *testing.T) {
	tenKiB := strings.Repeat("y", 10<<10)
	cases := []struct {
		name    string
		handler func(t *testing.T, w http.ResponseWriter, r *http.Request)
		status  int
		message string
		out     outcome
		key     string // the error key's message
	}{
		{name: "small 200", handler: func(_ *testing.T, w http.ResponseWriter, _ *http.Request) {
			io.WriteString(w, `{"coins":1000}`)
		}, status: 200, out: outOK},
		{name: "10 KiB 200 chunked", handler: func(_ *testing.T, w http.ResponseWriter, _ *http.Request) {
			for range 10 {
				io.WriteString(w, tenKiB[:1<<10])
				w.(http.Flusher).Flush()
			}
		}, status: 200, out: outOK},
		{name: "10 KiB 400 chunked", handler: func(_ *testing.T, w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusBadRequest)
			w.(http.Flusher).Flush()
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
			a := newTestAPI(t, srv.URL, 4)
			for _, q := range []request{{op: opInfo}, {op: opBuy, item: "tea cup"}, {op: opSend, to: 1, amount: 5}} {
				status, message, err := a.do(in(300*time.Millisecond), q)
				if err == nil && (status != tc.status || message != tc.message) {
					t.Errorf("%v: %d %q, want %d %q", q.op, status, message, tc.status, tc.message)
				}
				want, wantKey := tc.out, tc.key
				if want == outNotEnoughCoin && q.op == opInfo {
					// Not enough coin is no answer to an info.
					want, wantKey = outError, newErrKey(tc.status, tc.message).message
				}
				if o, key := classify(q.op, status, message, err); o != want || key.message != wantKey {
					t.Errorf("%v: classified %v %q (%v), want %v %q", q.op, o, key.message, err, want, wantKey)
				}
			}
		})
	}
}

// countingServer is a test server of the ledger's routes that counts the requests and the
// connections it got, checks each sendCoin's token and body, and answers each route as given.
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

// TestAPIConnections: with keep-alive every request goes over one connection; when the server
// says it closes each, every request opens one; either way every request reaches the server
// exactly once, sendCoin's body intact.
func TestAPIConnections(t *testing.T) {
	for _, tc := range []struct {
		name    string
		answer  func(http.ResponseWriter)
		oneConn bool // every request opens a connection
	}{
		{name: "keep-alive", answer: func(http.ResponseWriter) {}},
		{name: "Connection: close", answer: func(w http.ResponseWriter) { w.Header().Set("Connection", "close") }, oneConn: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newCountingServer(t, nil, tc.answer)
			a := newTestAPI(t, srv.URL, 4)
			const rounds = 5
			for i := range rounds {
				for _, q := range []request{{op: opInfo, user: 1}, {op: opBuy, item: "tea cup"}, {op: opSend, to: 1, amount: int64(i + 1)}} {
					if status, message, err := a.do(in(5*time.Second), q); err != nil || status != http.StatusOK {
						t.Fatalf("round %d, %v: %d %q %v", i, q.op, status, message, err)
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

// TestAPIRetriesOnlyWhatIsSafe: when the server reads a request on a reused connection and
// closes it without answering (as a server does that closes an idle connection just as the
// request arrives), an info is sent again on a fresh connection and succeeds, while a buy or
// a sendCoin, which the server may have acted on, fails and is not sent again.
func TestAPIRetriesOnlyWhatIsSafe(t *testing.T) {
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
			a := newTestAPI(t, "http://"+srv.ln.Addr().String(), 4)
			if _, _, err := a.do(in(5*time.Second), request{op: opInfo}); err != nil {
				t.Fatal(err)
			}
			status, _, err := a.do(in(5*time.Second), tc.q)
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
				t.Errorf("classified %v %q (%v), want an error: connection closed", o, key.message, err)
			}
			if got != 1 || conns != 1 {
				t.Errorf("the server got it %d times over %d connections, want once: it may have been acted on", got, conns)
			}
		})
	}
}

// TestAPITimeout: a request slower than its deadline fails as a timeout when the deadline
// comes, and its connection is closed, not reused.
func TestAPITimeout(t *testing.T) {
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
	a := newTestAPI(t, srv.URL, 4)

	start := time.Now()
	status, message, err := a.do(in(100*time.Millisecond), request{op: opInfo})
	if o, key := classify(opInfo, status, message, err); o != outError || key.message != "timeout" {
		t.Errorf("classified %v %q (%v), want an error: timeout", o, key.message, err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("the timeout of 100 ms came after %s", d)
	}
	waitFor(t, "the timed-out connection closed", func() bool { return closed.Load() == 1 })

	if _, _, err := a.do(in(5*time.Second), request{op: opBuy, item: "tea cup"}); err != nil {
		t.Fatal(err)
	}
	if n := srv.conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2: one for the timed-out request and a new one after it", n)
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

// TestAPIBound: many goroutines share four connections; the server never sees more than four
// open at once, no request fails, and every sendCoin arrives once.
func TestAPIBound(t *testing.T) {
	srv := newCountingServer(t, nil, func(http.ResponseWriter) { time.Sleep(time.Millisecond) })
	const maxConns, goroutines, each = 4, 32, 25
	a := newTestAPI(t, srv.URL, maxConns)
	var wg sync.WaitGroup
	var failed atomic.Int64
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				q := []request{{op: opInfo, user: 1}, {op: opBuy, item: "tea cup"}, {op: opSend, to: 1, amount: 1}}[(g+i)%3]
				if status, message, err := a.do(in(10*time.Second), q); err != nil || status != http.StatusOK {
					failed.Add(1)
					t.Errorf("%v: %d %q %v", q.op, status, message, err)
				}
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

// TestAPIWaitsForAConnection: with every connection busy a request waits, and its deadline
// ends the wait.
func TestAPIWaitsForAConnection(t *testing.T) {
	release := make(chan struct{})
	srv := newCountingServer(t, nil, func(http.ResponseWriter) { <-release })
	a := newTestAPI(t, srv.URL, 1)
	done := make(chan error)
	go func() {
		_, _, err := a.do(in(10*time.Second), request{op: opBuy, item: "tea cup"})
		done <- err
	}()
	waitFor(t, "the first request to arrive", func() bool { return srv.buy.Load() == 1 })

	status, message, err := a.do(in(100*time.Millisecond), request{op: opInfo})
	if o, key := classify(opInfo, status, message, err); o != outError || key.message != "timeout" {
		t.Errorf("classified %v %q (%v), want an error: timeout", o, key.message, err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Errorf("the request that held the connection: %v", err)
	}
	if _, _, err := a.do(in(5*time.Second), request{op: opInfo}); err != nil {
		t.Fatal(err)
	}
	if n, info := srv.conns.Load(), srv.info.Load(); n != 1 || info != 1 {
		t.Errorf("%d connections, %d info requests arrived; want 1 and 1", n, info)
	}
}

// BenchmarkAPI: one info after another against an in-process server (whose cost is in the
// numbers too).
func BenchmarkAPI(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, `{"coins":1000,"inventory":[],"coinHistory":{"received":[],"sent":[]}}`)
	}))
	defer srv.Close()
	a := newTestAPI(b, srv.URL, 4)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := a.do(in(10*time.Second), request{op: opInfo}); err != nil {
			b.Fatal(err)
		}
	}
}
