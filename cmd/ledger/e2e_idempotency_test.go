package main

// End-to-end tests of safe retries: the Idempotency-Key header on sendCoin, buy and grant, and
// the brute-force protection of /api/auth, over real HTTP against the real service.

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// keyedRequest sends a request with an Idempotency-Key header (several when keys has more than
// one) and validates the response like every other.
func (c *apiClient) keyedRequest(t testing.TB, method, path, token string, body any, keys ...string) response {
	t.Helper()
	req := c.newRequest(t, method, path, token, body)
	for _, k := range keys {
		req.Header.Add("Idempotency-Key", k)
	}
	return c.send(t, req)
}

// eventsUnderKey counts the events recorded under an idempotency key, by type.
func eventsUnderKey(t *testing.T, key string) map[string]int {
	t.Helper()
	rows, err := db.Pool.Query(context.Background(),
		`SELECT event_type, count(*) FROM events WHERE convert_from(metadata_bytes, 'UTF8')::jsonb->>'idempotencyKey' = $1 GROUP BY event_type`, key)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var typ string
		var n int
		if err := rows.Scan(&typ, &n); err != nil {
			t.Fatal(err)
		}
		out[typ] = n
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func wantEventsUnderKey(t *testing.T, key string, want map[string]int) {
	t.Helper()
	got := eventsUnderKey(t, key)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("events under key %q: %v, want %v", key, got, want)
	}
}

// TestE2EIdempotencySendCoin: a sendCoin retried under its key runs once, in whatever JSON form
// it is sent again; a different request under the key is a 422; keys are per caller.
func TestE2EIdempotencySendCoin(t *testing.T) {
	ts := startTestService(t)
	api := ts.api
	alice, bob := uniq("alice"), uniq("bob")
	ta, tb := api.login(t, alice), api.login(t, bob)
	key := uniq("send")

	wantOK(t, api.keyedRequest(t, http.MethodPost, "/api/sendCoin", ta, map[string]any{"toUser": bob, "amount": 25}, key))
	wantOK(t, api.keyedRequest(t, http.MethodPost, "/api/sendCoin", ta, map[string]any{"toUser": bob, "amount": 25}, key))
	// The same request spelled differently is the same request.
	wantOK(t, api.keyedRequest(t, http.MethodPost, "/api/sendCoin", ta, fmt.Sprintf(` { "amount" : 25.0 , "toUser":%q }`, bob), key))
	wantEventsUnderKey(t, key, map[string]int{"CoinsReceived": 1, "CoinsSent": 1})
	if in := api.info(t, ta); in.Coins != 975 || len(in.CoinHistory.Sent) != 1 {
		t.Errorf("alice after one send retried twice: %s", in)
	}

	for name, body := range map[string]any{
		"other amount":    map[string]any{"toUser": bob, "amount": 26},
		"other recipient": map[string]any{"toUser": uniq("carol"), "amount": 25},
	} {
		r := api.keyedRequest(t, http.MethodPost, "/api/sendCoin", ta, body, key)
		wantStatus(t, r, http.StatusUnprocessableEntity, "idempotency key", "different request", key)
		if t.Failed() {
			t.Fatalf("%s: %s", name, r)
		}
	}
	// A buy under a key of a sendCoin is a different request too.
	wantStatus(t, api.keyedRequest(t, http.MethodGet, "/api/buy/pen", ta, nil, key), http.StatusUnprocessableEntity, "sendCoin")

	// Bob's key of the same name is his own.
	wantOK(t, api.keyedRequest(t, http.MethodPost, "/api/sendCoin", tb, map[string]any{"toUser": alice, "amount": 5}, key))
	wantEventsUnderKey(t, key, map[string]int{"CoinsReceived": 2, "CoinsSent": 2})
	if in := api.info(t, ta); in.Coins != 980 || len(in.Inventory) != 0 {
		t.Errorf("alice at the end: %s", in)
	}
}

// TestE2EIdempotencyBuyAndGrant: buy and grant retried under their keys run once.
func TestE2EIdempotencyBuyAndGrant(t *testing.T) {
	ts := startTestService(t)
	api := ts.api
	alice := uniq("alice")
	ta := api.login(t, alice)
	admin := api.login(t, "admin")

	buyKey := uniq("buy")
	for range 3 {
		wantOK(t, api.keyedRequest(t, http.MethodGet, "/api/buy/cup", ta, nil, buyKey))
	}
	wantStatus(t, api.keyedRequest(t, http.MethodGet, "/api/buy/book", ta, nil, buyKey), http.StatusUnprocessableEntity, "buy", "other arguments")
	wantEventsUnderKey(t, buyKey, map[string]int{"ItemPurchased": 1})

	grantKey := uniq("grant")
	grant := map[string]any{"toUser": alice, "amount": 300, "reason": "on-call week"}
	for range 3 {
		wantOK(t, api.keyedRequest(t, http.MethodPost, "/api/admin/grant", admin, grant, grantKey))
	}
	wantStatus(t, api.keyedRequest(t, http.MethodPost, "/api/admin/grant", admin,
		map[string]any{"toUser": alice, "amount": 300, "reason": "another week"}, grantKey), http.StatusUnprocessableEntity, "grant")
	wantEventsUnderKey(t, grantKey, map[string]int{"CoinsGranted": 1})

	in := api.info(t, ta)
	if in.Coins != 1000-20+300 || in.items()["cup"] != 1 {
		t.Errorf("alice: %s, want 1280 coins and one cup", in)
	}
}

// TestE2EIdempotencyRefusalReplayed: a refusal under a key is given again, status and body,
// after the account could afford the request; the request never runs.
func TestE2EIdempotencyRefusalReplayed(t *testing.T) {
	ts := startTestService(t)
	api := ts.api
	alice, bob := uniq("alice"), uniq("bob")
	ta := api.login(t, alice)
	api.login(t, bob)
	admin := api.login(t, "admin")
	key := uniq("big")
	send := map[string]any{"toUser": bob, "amount": 5000}

	first := api.keyedRequest(t, http.MethodPost, "/api/sendCoin", ta, send, key)
	wantStatus(t, first, http.StatusBadRequest, "not enough coin")
	wantOK(t, api.grant(t, admin, map[string]any{"toUser": alice, "amount": 10000, "reason": "now she can"}))
	again := api.keyedRequest(t, http.MethodPost, "/api/sendCoin", ta, send, key)
	if again.Status != first.Status || string(again.Body) != string(first.Body) {
		t.Errorf("replay differs from the first answer:\nfirst %s\nagain %s", first, again)
	}
	wantEventsUnderKey(t, key, map[string]int{})
	if in := api.info(t, ta); in.Coins != 11000 || len(in.CoinHistory.Sent) != 0 {
		t.Errorf("alice: %s, want 11000 coins and nothing sent", in)
	}
	wantOK(t, api.keyedRequest(t, http.MethodPost, "/api/sendCoin", ta, send, uniq("big")))
}

// TestE2EIdempotencyConcurrent: 20 requests with one key at once run once, and all of them
// answer with that run's outcome.
func TestE2EIdempotencyConcurrent(t *testing.T) {
	ts := startTestService(t)
	api := ts.api
	alice, bob := uniq("alice"), uniq("bob")
	ta := api.login(t, alice)
	api.login(t, bob)

	for _, tc := range []struct {
		name, method, path string
		body               any
		want               map[string]int
	}{
		{"buy", http.MethodGet, "/api/buy/wallet", nil, map[string]int{"ItemPurchased": 1}},
		{"sendCoin", http.MethodPost, "/api/sendCoin", map[string]any{"toUser": bob, "amount": 9}, map[string]int{"CoinsReceived": 1, "CoinsSent": 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const n = 20
			key := uniq(tc.name)
			got := make([]response, n)
			gate := make(chan struct{})
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() {
					<-gate
					got[i] = api.keyedRequest(t, tc.method, tc.path, ta, tc.body, key)
				})
			}
			close(gate)
			wg.Wait()
			for i, r := range got {
				if r.Status != http.StatusOK || len(r.Body) != 0 {
					t.Errorf("request %d: %s", i, r)
				}
			}
			wantEventsUnderKey(t, key, tc.want)
		})
	}
	in := api.info(t, ta)
	if in.Coins != 1000-50-9 || in.items()["wallet"] != 1 || len(in.CoinHistory.Sent) != 1 {
		t.Errorf("alice: %s, want 941 coins, one wallet, one transfer", in)
	}
}

// TestE2EIdempotencyKeyFormat: a malformed key, or two keys, is a 400 and nothing runs.
func TestE2EIdempotencyKeyFormat(t *testing.T) {
	ts := startTestService(t)
	api := ts.api
	alice := uniq("alice")
	ta := api.login(t, alice)
	for name, keys := range map[string][]string{
		"empty":       {""},
		"too long":    {strings.Repeat("k", 256)},
		"tab inside":  {"a\tb"},
		"not ASCII":   {"schlüssel"},
		"two headers": {"one", "two"},
		"blank":       {"   "},
	} {
		r := api.keyedRequest(t, http.MethodGet, "/api/buy/pen", ta, nil, keys...)
		wantStatus(t, r, http.StatusBadRequest, "idempotency")
		if t.Failed() {
			t.Fatalf("%s: %s", name, r)
		}
	}
	wantOK(t, api.keyedRequest(t, http.MethodGet, "/api/buy/pen", ta, nil, strings.Repeat("k", 255)))
	if in := api.info(t, ta); in.Coins != 990 {
		t.Errorf("alice: %s, want one pen bought (990 coins)", in)
	}
}
