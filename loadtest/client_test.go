package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// TestAPIRequests: each operation reaches its route with the employee's token (and sendCoin its
// JSON body); a 200 of any size is a success and leaves its connection for the next request;
// an error answer gives the contract's message. So through both clients.
func TestAPIRequests(t *testing.T) {
	for _, kind := range clientKinds {
		t.Run(kind, func(t *testing.T) { testAPIRequests(t, kind) })
	}
}

func testAPIRequests(t *testing.T, kind string) {
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

	a := newTestAPI(t, kind, srv.URL+"/", 4)
	ctx := context.Background()
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
		status, message, err := a.do(ctx, tc.q)
		if err != nil || status != tc.status || message != tc.message {
			t.Errorf("%v: %d %q %v, want %d %q", tc.q.op, status, message, err, tc.status, tc.message)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("five requests one after another opened %d connections, want 1", n)
	}
}

// TestAPITruncatedAnswer: a 200 whose body breaks off is not a success, through either client.
func TestAPITruncatedAnswer(t *testing.T) {
	for _, kind := range clientKinds {
		t.Run(kind, func(t *testing.T) { testAPITruncatedAnswer(t, kind) })
	}
}

func testAPITruncatedAnswer(t *testing.T, kind string) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000")
		io.WriteString(w, `{"coins":`)
		w.(http.Flusher).Flush()
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	}))
	defer srv.Close()
	a := newTestAPI(t, kind, srv.URL, 4)
	status, message, err := a.do(context.Background(), request{op: opInfo})
	if err == nil {
		t.Fatalf("a body cut short read as %d %q", status, message)
	}
	if o, key := classify(opInfo, status, message, err); o != outError || key.message != "connection closed" {
		t.Errorf("classified as %v %+v, want an error: connection closed", o, key)
	}
}
