package httpapi

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ledger/ledger/domain"
	"github.com/ledger/ledger/internal/app"
)

// walkLedger is fuzzLedger with the reads and the purchase the walk needs.
type walkLedger struct{ *fuzzLedger }

func (walkLedger) Info(context.Context, uuid.UUID) (app.Info, error) {
	return app.Info{Inventory: []app.Holding{}, Received: []app.Transfer{}, Sent: []app.Transfer{}}, nil
}

func (walkLedger) Buy(_ context.Context, _ uuid.UUID, item string) (app.Result, error) {
	if item != "cup" {
		return app.Result{}, fmt.Errorf("%w: %q", domain.ErrUnknownItem, item)
	}
	return app.Result{}, nil
}

// rawExchange sends one raw HTTP/1.1 request and reads the answer.
func rawExchange(t *testing.T, addr, raw string) (*http.Response, []byte) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	method, _, _ := strings.Cut(raw, " ")
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: method})
	if err != nil {
		t.Fatalf("%q: %v", raw, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%q: read body: %v", raw, err)
	}
	return resp, body
}

// TestEveryErrorIsJSON walks requests the application refuses, the odd ones included (unknown
// routes, wrong methods, malformed Idempotency-Key headers, escapes in the path), and requests
// Go's HTTP server refuses before the application sees them. Every answer of the application
// is the contract's {"errors": "..."} as application/json; the server's own answers are exactly
// the cases the README lists.
func TestEveryErrorIsJSON(t *testing.T) {
	fs := newFuzzServer()
	var reached atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		fs.handler.ServeHTTP(w, r)
	}))
	fs.handler = New(Deps{Ledger: walkLedger{fs.ledger}, Passwords: fuzzAuth{}, Issuer: fuzzAuth{}, Verifier: fuzzTokens{},
		Log: fs.handler.(*Server).log, Ready: func(context.Context) error { return nil }})
	srv.Config.MaxHeaderBytes = 4 << 10
	srv.Start()
	t.Cleanup(srv.Close)
	addr := srv.Listener.Addr().String()

	const auth = "Authorization: Bearer " + fuzzUserToken + "\r\n"
	req := func(method, target string, headers ...string) string {
		return method + " " + target + " HTTP/1.1\r\nHost: ledger\r\n" + strings.Join(headers, "") + "\r\n"
	}
	for _, tc := range []struct {
		name, raw string
		status    int
	}{
		{"unknown route", req("GET", "/api/nope"), 404},
		{"root", req("GET", "/"), 404},
		{"trailing slash", req("GET", "/api/info/", auth), 404},
		{"buy without an item", req("GET", "/api/buy/", auth), 404},
		{"buy, one segment too many", req("GET", "/api/buy/cup/extra", auth), 404},
		{"wrong method", req("DELETE", "/api/info", auth), 405},
		{"POST to buy", req("POST", "/api/buy/cup", auth, "Content-Length: 0\r\n"), 405},
		{"GET of sendCoin", req("GET", "/api/sendCoin", auth), 405},
		{"unknown method", req("BREW", "/api/info", auth), 405},
		{"no token", req("GET", "/api/info"), 401},
		{"not a bearer token", req("GET", "/api/info", "Authorization: Basic YTpi\r\n"), 401},
		{"forged token", req("GET", "/api/info", "Authorization: Bearer forged\r\n"), 401},
		{"escaped %zz as the item", req("GET", "/api/buy/%25zz", auth), 400},
		{"NUL as the item", req("GET", "/api/buy/%00", auth), 400},
		{"bytes that are not UTF-8 as the item", req("GET", "/api/buy/%C3%28", auth), 400},
		{"unknown item", req("GET", "/api/buy/spaceship", auth), 400},
		{"empty Idempotency-Key", req("GET", "/api/buy/cup", auth, "Idempotency-Key: \r\n"), 400},
		{"Idempotency-Key not ASCII", req("GET", "/api/buy/cup", auth, "Idempotency-Key: clé\r\n"), 400},
		{"Idempotency-Key too long", req("GET", "/api/buy/cup", auth, "Idempotency-Key: "+strings.Repeat("k", 256)+"\r\n"), 400},
		{"two Idempotency-Keys", req("GET", "/api/buy/cup", auth, "Idempotency-Key: a\r\nIdempotency-Key: b\r\n"), 400},
		{"malformed query", req("GET", "/api/info?asOf=%zz", auth), 400},
		{"malformed JSON", req("POST", "/api/sendCoin", auth, "Content-Length: 1\r\n") + "{", 400},
		{"body too large", req("POST", "/api/sendCoin", auth, fmt.Sprintf("Content-Length: %d\r\n", maxBody+1)) + strings.Repeat(" ", maxBody+1), 400},
		{"body shorter than its length", req("POST", "/api/sendCoin", auth, "Content-Length: 100\r\nConnection: close\r\n") + `{"toUser":"bob"}`, 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := reached.Load()
			if tc.name == "body shorter than its length" {
				// The server waits for the rest; close the writing side so it reads EOF.
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				_, _ = io.WriteString(c, tc.raw)
				_ = c.(*net.TCPConn).CloseWrite()
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				checkErrorBody(t, resp, body, tc.status)
				return
			}
			resp, body := rawExchange(t, addr, tc.raw)
			if reached.Load() == before {
				t.Fatalf("the application never saw the request: %d %q", resp.StatusCode, body)
			}
			checkErrorBody(t, resp, body, tc.status)
		})
	}

	// What Go's HTTP server answers itself, before any handler runs: the README lists these.
	for _, tc := range []struct {
		name, raw string
		status    int
	}{
		{"malformed request line", "GET /api/info\r\nHost: ledger\r\n\r\n", 400},
		{"malformed escape in the path", req("GET", "/api/buy/%zz", auth), 400},
		{"control character in a header value", req("GET", "/api/buy/cup", auth, "Idempotency-Key: a\x01b\r\n"), 400},
		{"malformed header name", req("GET", "/api/info", auth, "Bad Header: x\r\n"), 400},
		{"missing Host", "GET /api/info HTTP/1.1\r\n" + auth + "\r\n", 400},
		{"malformed Host", "GET /api/info HTTP/1.1\r\nHost: a b\r\n\r\n", 400},
		{"two Content-Lengths", req("POST", "/api/sendCoin", auth, "Content-Length: 1\r\nContent-Length: 2\r\n") + "{}", 400},
		{"unsupported Transfer-Encoding", req("POST", "/api/sendCoin", auth, "Transfer-Encoding: gzip\r\n"), 501},
		{"unsupported HTTP version", "GET /api/info HTTP/3.0\r\nHost: ledger\r\n\r\n", 505},
		{"headers too large", req("GET", "/api/info", auth, "X-Pad: "+strings.Repeat("p", 8<<10)+"\r\n"), 431},
		{"unknown Expect", req("GET", "/api/info", auth, "Expect: tea\r\n"), 417},
		{"OPTIONS *", req("OPTIONS", "*"), 200},
	} {
		t.Run("server/"+tc.name, func(t *testing.T) {
			before := reached.Load()
			resp, body := rawExchange(t, addr, tc.raw)
			if resp.StatusCode != tc.status || reached.Load() != before {
				t.Fatalf("%d %q, reached the application: %v; want %d from Go's server", resp.StatusCode, body, reached.Load() != before, tc.status)
			}
		})
	}
}

func checkErrorBody(t *testing.T, resp *http.Response, body []byte, status int) {
	t.Helper()
	var e map[string]any
	if err := json.Unmarshal(body, &e); resp.StatusCode != status || resp.Header.Get("Content-Type") != "application/json" ||
		err != nil || len(e) != 1 || e["errors"] == nil || e["errors"] == "" {
		t.Fatalf("%d (Content-Type %q) %q; want %d with a JSON {\"errors\": \"...\"}", resp.StatusCode, resp.Header.Get("Content-Type"), body, status)
	}
}
