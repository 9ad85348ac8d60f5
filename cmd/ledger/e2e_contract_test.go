package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/ledger/ledger/httpapi"
)

// TestE2EContract walks the merch-shop contract: authentication, info, buy, sendCoin, the
// ledger's additions, and their errors.
func TestE2EContract(t *testing.T) {
	ts := startTestService(t)
	api := ts.api

	t.Run("auth creates the employee with 1000 coins, then logs in", func(t *testing.T) {
		name := uniq("alice")
		tok := api.login(t, name)
		raw := api.do(t, http.MethodGet, "/api/info", tok, nil)
		if raw.Status != http.StatusOK {
			t.Fatalf("info: %s", raw)
		}
		// Empty lists are [], never null.
		var shape map[string]json.RawMessage
		if err := json.Unmarshal(raw.Body, &shape); err != nil {
			t.Fatal(err)
		}
		if got := string(shape["inventory"]); got != "[]" {
			t.Errorf("fresh inventory: got %s, want []", got)
		}
		var hist map[string]json.RawMessage
		if err := json.Unmarshal(shape["coinHistory"], &hist); err != nil {
			t.Fatalf("coinHistory: %v in %s", err, raw)
		}
		for _, k := range []string{"received", "sent"} {
			if got := string(hist[k]); got != "[]" {
				t.Errorf("fresh coinHistory.%s: got %s, want []", k, got)
			}
		}
		if in := api.info(t, tok); in.Coins != 1000 {
			t.Errorf("welcome allowance: got %d coins, want 1000", in.Coins)
		}

		tok2 := api.login(t, name) // right password: a fresh token, same account
		if in := api.info(t, tok2); in.Coins != 1000 {
			t.Errorf("second login sees %d coins, want 1000", in.Coins)
		}
		wantStatus(t, api.auth(t, name, "wrong password"), http.StatusUnauthorized)
		wantStatus(t, api.auth(t, name, strings.ToUpper(testPassword)), http.StatusUnauthorized)
		if in := api.info(t, tok); in.Coins != 1000 {
			t.Errorf("after failed logins: %d coins, want 1000 (no second allowance)", in.Coins)
		}
	})

	t.Run("auth needs username and password", func(t *testing.T) {
		name := uniq("nopass")
		for _, tc := range []struct {
			name string
			body any
			want string
		}{
			{"no username", map[string]string{"password": testPassword}, "username"},
			{"no password", map[string]string{"username": name}, "password"},
			{"null username", map[string]any{"username": nil, "password": testPassword}, "username"},
			{"empty username", map[string]string{"username": "", "password": testPassword}, "username"},
			{"empty password", map[string]string{"username": name, "password": ""}, "password"},
			{"empty object", map[string]string{}, "username"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				wantStatus(t, api.do(t, http.MethodPost, "/api/auth", "", tc.body), http.StatusBadRequest, tc.want)
			})
		}
		// None of those created the employee: the first real login gets the allowance.
		if in := api.info(t, api.login(t, name)); in.Coins != 1000 {
			t.Errorf("got %d coins, want 1000", in.Coins)
		}
	})

	t.Run("concurrent first logins create one employee", func(t *testing.T) {
		name := uniq("racer")
		const n = 6
		results := make([]response, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				pw := testPassword
				if i%2 == 1 {
					pw = "another password"
				}
				results[i] = api.auth(t, name, pw)
			}()
		}
		wg.Wait()
		winners := map[bool]int{} // by "used the test password"
		for i, r := range results {
			switch r.Status {
			case http.StatusOK:
				winners[i%2 == 0]++
			case http.StatusUnauthorized:
			default:
				t.Errorf("concurrent first login: %s", r)
			}
		}
		if len(winners) != 1 {
			t.Fatalf("both passwords were accepted for one new employee: %v", results)
		}
		pw := testPassword
		if !(winners[true] > 0) {
			pw = "another password"
		}
		r := api.auth(t, name, pw)
		if r.Status != http.StatusOK {
			t.Fatalf("the winning password no longer works: %s", r)
		}
		if in := api.info(t, tokenOf(t, r)); in.Coins != 1000 {
			t.Errorf("one employee, one allowance: %s", in)
		}
	})

	t.Run("buy cheap items", func(t *testing.T) {
		tok := api.login(t, uniq("buyer"))
		want := map[string]int64{}
		coins := int64(1000)
		for _, item := range cheapItems {
			wantOK(t, api.buy(t, tok, item))
			want[item]++
			coins -= catalog[item]
			in := api.info(t, tok)
			if in.Coins != coins || fmt.Sprint(in.items()) != fmt.Sprint(want) {
				t.Fatalf("after buying %s: got %s, want %d coins and %v", item, in, coins, want)
			}
		}
		wantOK(t, api.buy(t, tok, "cup"))
		want["cup"]++
		coins -= catalog["cup"]
		in := api.info(t, tok)
		if in.Coins != coins || fmt.Sprint(in.items()) != fmt.Sprint(want) {
			t.Fatalf("after a second cup: got %s, want %d coins and %v", in, coins, want)
		}
		if len(in.Inventory) != len(want) {
			t.Errorf("inventory has %d entries for %d item types: %s", len(in.Inventory), len(want), in)
		}
		for _, h := range in.Inventory {
			if h.Quantity <= 0 {
				t.Errorf("inventory entry with quantity %d: %s", h.Quantity, in)
			}
		}
		if len(in.CoinHistory.Sent)+len(in.CoinHistory.Received) != 0 {
			t.Errorf("purchases showed up in the coin history: %s", in)
		}
	})

	t.Run("every catalog price", func(t *testing.T) {
		admin := api.login(t, "admin")
		name := uniq("rich")
		tok := api.login(t, name)
		wantOK(t, api.grant(t, admin, map[string]any{"toUser": name, "amount": 5000, "reason": "price check"}))
		coins := int64(6000)
		for item, price := range catalog {
			wantOK(t, api.buy(t, tok, item))
			coins -= price
			if in := api.info(t, tok); in.Coins != coins || in.items()[item] != 1 {
				t.Fatalf("after buying %s (price %d): got %s, want %d coins", item, price, in, coins)
			}
		}
	})

	t.Run("buy unknown item", func(t *testing.T) {
		tok := api.login(t, uniq("buyer"))
		before := api.info(t, tok)
		for _, item := range []string{"spaceship", "Cup", "cup ", " cup", "t_shirt", "\x00", "\xff", "..", strings.Repeat("x", 5000), "名前"} {
			wantStatus(t, api.buy(t, tok, item), http.StatusBadRequest)
		}
		wantSameInfo(t, "buyer", before, api.info(t, tok))
	})

	t.Run("not enough coin", func(t *testing.T) {
		name, other := uniq("spender"), uniq("other")
		tok := api.login(t, name)
		api.login(t, other)
		wantOK(t, api.buy(t, tok, "pink-hoody"))
		wantOK(t, api.buy(t, tok, "pink-hoody"))
		before := api.info(t, tok)
		if before.Coins != 0 {
			t.Fatalf("after two pink hoodies: %s, want 0 coins", before)
		}
		wantStatus(t, api.buy(t, tok, "pink-hoody"), http.StatusBadRequest, "not enough coin")
		wantStatus(t, api.buy(t, tok, "pen"), http.StatusBadRequest, "not enough coin")
		wantStatus(t, api.sendCoin(t, tok, other, 1), http.StatusBadRequest, "not enough coin")
		wantSameInfo(t, "spender", before, api.info(t, tok))

		rich := api.login(t, uniq("sender"))
		richBefore := api.info(t, rich)
		wantStatus(t, api.sendCoin(t, rich, name, 1001), http.StatusBadRequest, "not enough coin")
		wantSameInfo(t, "sender", richBefore, api.info(t, rich))
		wantSameInfo(t, "recipient", before, api.info(t, tok))
		// The whole balance can be sent.
		wantOK(t, api.sendCoin(t, rich, name, 1000))
		if in := api.info(t, rich); in.Coins != 0 {
			t.Errorf("after sending everything: %s", in)
		}
		if in := api.info(t, tok); in.Coins != 1000 {
			t.Errorf("after receiving 1000: %s", in)
		}
	})

	t.Run("sendCoin shows one history entry per transfer", func(t *testing.T) {
		a, b := uniq("anna"), uniq("bert")
		ta, tb := api.login(t, a), api.login(t, b)
		wantOK(t, api.sendCoin(t, ta, b, 5))
		wantOK(t, api.sendCoin(t, ta, b, 5))
		wantOK(t, api.sendCoin(t, tb, a, 7))
		ia, ib := api.info(t, ta), api.info(t, tb)
		wantA := `{"coins":997,"inventory":[],"coinHistory":{"received":[{"fromUser":"` + b + `","amount":7}],"sent":[{"toUser":"` + b + `","amount":5},{"toUser":"` + b + `","amount":5}]}}`
		wantB := `{"coins":1003,"inventory":[],"coinHistory":{"received":[{"fromUser":"` + a + `","amount":5},{"fromUser":"` + a + `","amount":5}],"sent":[{"toUser":"` + a + `","amount":7}]}}`
		if ia.String() != wantA {
			t.Errorf("sender:\n got %s\nwant %s", ia, wantA)
		}
		if ib.String() != wantB {
			t.Errorf("recipient:\n got %s\nwant %s", ib, wantB)
		}
	})

	t.Run("sendCoin refusals", func(t *testing.T) {
		a, b := uniq("anna"), uniq("bert")
		ta, tb := api.login(t, a), api.login(t, b)
		beforeA, beforeB := api.info(t, ta), api.info(t, tb)
		for _, tc := range []struct {
			name string
			body any
			want []string
		}{
			{"to self", map[string]any{"toUser": a, "amount": 10}, []string{"yourself"}},
			{"to unknown user", map[string]any{"toUser": uniq("nobody"), "amount": 10}, []string{"unknown"}},
			{"amount 0", map[string]any{"toUser": b, "amount": 0}, []string{"amount"}},
			{"negative amount", map[string]any{"toUser": b, "amount": -10}, []string{"amount"}},
			{"missing amount", map[string]any{"toUser": b}, []string{"amount"}},
			{"null amount", map[string]any{"toUser": b, "amount": nil}, []string{"amount"}},
			{"string amount", map[string]any{"toUser": b, "amount": "10"}, []string{"amount"}},
			{"float amount", json.RawMessage(`{"toUser":"` + b + `","amount":1.5}`), []string{"amount"}},
			{"amount beyond int64", json.RawMessage(`{"toUser":"` + b + `","amount":9223372036854775808}`), []string{"amount"}},
			{"amount far beyond int64", json.RawMessage(`{"toUser":"` + b + `","amount":123456789012345678901234567890}`), []string{"amount"}},
			{"amount below int64", json.RawMessage(`{"toUser":"` + b + `","amount":-9223372036854775809}`), []string{"amount"}},
			{"amount 1e30", json.RawMessage(`{"toUser":"` + b + `","amount":1e30}`), []string{"amount"}},
			{"missing toUser", map[string]any{"amount": 10}, []string{"toUser"}},
			{"empty toUser", map[string]any{"toUser": "", "amount": 10}, nil},
			{"insufficient", map[string]any{"toUser": b, "amount": 1001}, []string{"not enough coin"}},
			{"insufficient at int64 max", json.RawMessage(`{"toUser":"` + b + `","amount":9223372036854775807}`), nil},
		} {
			t.Run(tc.name, func(t *testing.T) {
				wantStatus(t, api.do(t, http.MethodPost, "/api/sendCoin", ta, tc.body), http.StatusBadRequest, tc.want...)
			})
		}
		wantSameInfo(t, "sender", beforeA, api.info(t, ta))
		wantSameInfo(t, "recipient", beforeB, api.info(t, tb))
	})

	t.Run("read your writes", func(t *testing.T) {
		a, b := uniq("ryw-a"), uniq("ryw-b")
		ta, tb := api.login(t, a), api.login(t, b)
		var wantA, wantB info
		wantA.Coins, wantB.Coins = 1000, 1000
		wantA.Inventory, wantB.Inventory = []holding{}, []holding{}
		wantA.CoinHistory.Sent, wantA.CoinHistory.Received = []sentEntry{}, []receivedEntry{}
		wantB.CoinHistory.Sent, wantB.CoinHistory.Received = []sentEntry{}, []receivedEntry{}
		addItem := func(in *info, item string) {
			for i := range in.Inventory {
				if in.Inventory[i].Type == item {
					in.Inventory[i].Quantity++
					return
				}
			}
			in.Inventory = append(in.Inventory, holding{Type: item, Quantity: 1})
		}
		for i := range 200 {
			switch i % 4 {
			case 0, 2: // a sends 3 to b
				wantOK(t, api.sendCoin(t, ta, b, 3))
				wantA.Coins -= 3
				wantB.Coins += 3
				wantA.CoinHistory.Sent = append(wantA.CoinHistory.Sent, sentEntry{ToUser: b, Amount: 3})
				wantB.CoinHistory.Received = append(wantB.CoinHistory.Received, receivedEntry{FromUser: a, Amount: 3})
			case 1: // a buys a pen
				wantOK(t, api.buy(t, ta, "pen"))
				wantA.Coins -= catalog["pen"]
				addItem(&wantA, "pen")
			case 3: // b buys socks, then pays a back 1
				wantOK(t, api.buy(t, tb, "socks"))
				wantB.Coins -= catalog["socks"]
				addItem(&wantB, "socks")
				wantOK(t, api.sendCoin(t, tb, a, 1))
				wantB.Coins--
				wantA.Coins++
				wantB.CoinHistory.Sent = append(wantB.CoinHistory.Sent, sentEntry{ToUser: a, Amount: 1})
				wantA.CoinHistory.Received = append(wantA.CoinHistory.Received, receivedEntry{FromUser: b, Amount: 1})
			}
			if got := api.info(t, ta); got.String() != wantA.String() {
				t.Fatalf("iteration %d: %s's info is behind its writes:\n got %s\nwant %s", i, a, got, wantA)
			}
			if got := api.info(t, tb); got.String() != wantB.String() {
				t.Fatalf("iteration %d: %s's info is behind its writes:\n got %s\nwant %s", i, b, got, wantB)
			}
		}
	})

	t.Run("admin grant", func(t *testing.T) {
		admin := api.login(t, "admin")
		name := uniq("grantee")
		tok := api.login(t, name)
		body := map[string]any{"toUser": name, "amount": 250, "reason": "employee of the month"}

		wantStatus(t, api.grant(t, "", body), http.StatusUnauthorized)
		wantStatus(t, api.grant(t, tok, body), http.StatusForbidden)
		if in := api.info(t, tok); in.Coins != 1000 {
			t.Fatalf("a refused grant changed the balance: %s", in)
		}
		wantOK(t, api.grant(t, admin, body))
		in := api.info(t, tok)
		if in.Coins != 1250 {
			t.Fatalf("after a grant of 250: %s", in)
		}

		for _, tc := range []struct {
			name string
			body any
			want string
		}{
			{"amount 0", map[string]any{"toUser": name, "amount": 0, "reason": "r"}, "amount"},
			{"negative amount", map[string]any{"toUser": name, "amount": -5, "reason": "r"}, "amount"},
			{"string amount", map[string]any{"toUser": name, "amount": "5", "reason": "r"}, "amount"},
			{"float amount", json.RawMessage(`{"toUser":"` + name + `","amount":2.5,"reason":"r"}`), "amount"},
			{"amount beyond int64", json.RawMessage(`{"toUser":"` + name + `","amount":9223372036854775808,"reason":"r"}`), "amount"},
			{"balance above the maximum", map[string]any{"toUser": name, "amount": 1_000_000_000_000, "reason": "r"}, ""},
			{"missing amount", map[string]any{"toUser": name, "reason": "r"}, "amount"},
			{"missing reason", map[string]any{"toUser": name, "amount": 5}, "reason"},
			{"empty reason", map[string]any{"toUser": name, "amount": 5, "reason": ""}, "reason"},
			{"blank reason", map[string]any{"toUser": name, "amount": 5, "reason": " \t "}, "reason"},
			{"reason too long", map[string]any{"toUser": name, "amount": 5, "reason": strings.Repeat("r", 201)}, "reason"},
			{"missing toUser", map[string]any{"amount": 5, "reason": "r"}, "toUser"},
			{"unknown user", map[string]any{"toUser": uniq("nobody"), "amount": 5, "reason": "r"}, "unknown"},
			{"not JSON", "grant please", ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				r := api.grant(t, admin, tc.body)
				if tc.want == "" {
					wantStatus(t, r, http.StatusBadRequest)
				} else {
					wantStatus(t, r, http.StatusBadRequest, tc.want)
				}
			})
		}
		wantSameInfo(t, "grantee", in, api.info(t, tok))
		// A reason of exactly 200 characters is fine.
		wantOK(t, api.grant(t, admin, map[string]any{"toUser": name, "amount": 1, "reason": strings.Repeat("ü", 200)}))
		if got := api.info(t, tok); got.Coins != 1251 {
			t.Errorf("after a grant of 1: %s", got)
		}
	})

	t.Run("health, readiness and the OpenAPI document", func(t *testing.T) {
		for _, p := range []string{"/api/health", "/api/ready"} {
			r := api.do(t, http.MethodGet, p, "", nil)
			if r.Status != http.StatusOK {
				t.Errorf("%s", r)
			}
		}
		r := api.do(t, http.MethodGet, "/api/openapi.yaml", "", nil)
		if r.Status != http.StatusOK {
			t.Fatalf("%s", r)
		}
		if !bytes.Equal(r.Body, httpapi.OpenAPI) {
			t.Errorf("/api/openapi.yaml is not the embedded document")
		}
	})

	t.Run("unknown path is 404 with a JSON body", func(t *testing.T) {
		tok := api.login(t, uniq("lost"))
		for _, tc := range []struct{ method, path string }{
			{http.MethodGet, "/api/nope"},
			{http.MethodGet, "/nope"},
			{http.MethodGet, "/"},
			{http.MethodPost, "/api/info/extra"},
			{http.MethodGet, "/api/buy/cup/extra"},
		} {
			r := api.sendUnrouted(t, api.newRequest(t, tc.method, tc.path, tok, nil))
			wantStatus(t, r, http.StatusNotFound)
		}
		// A known path with a method it does not have.
		r := api.sendUnrouted(t, api.newRequest(t, http.MethodDelete, "/api/info", tok, nil))
		wantStatus(t, r, http.StatusMethodNotAllowed)
	})
}
