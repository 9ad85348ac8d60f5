package main

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// TestE2EBadInput: malformed, oversized and hostile input gets a clear 4xx, never a 5xx, and
// changes nothing.
func TestE2EBadInput(t *testing.T) {
	ts := startTestService(t)
	api := ts.api
	sender, recipient := uniq("sender"), uniq("recipient")
	st, rt := api.login(t, sender), api.login(t, recipient)

	big := `{"toUser":"` + recipient + `","amount":5,"pad":"` + strings.Repeat("x", 2<<20) + `"}`
	sendCases := []struct {
		name string
		body string
		want []string // substrings of the message
	}{
		{"malformed JSON", `{"toUser": "` + recipient + `", "amount": 5`, nil},
		{"unquoted keys", `{toUser: "` + recipient + `", amount: 5}`, nil},
		{"single quotes", `{'toUser': '` + recipient + `', 'amount': 5}`, nil},
		{"trailing comma", `{"toUser":"` + recipient + `","amount":5,}`, nil},
		{"JSON array", `[{"toUser":"` + recipient + `","amount":5}]`, []string{"object"}},
		{"empty array", `[]`, []string{"object"}},
		{"null", `null`, []string{"object"}},
		{"number", `5`, []string{"object"}},
		{"string", `"` + recipient + `"`, []string{"object"}},
		{"boolean", `true`, []string{"object"}},
		{"empty body", ``, []string{"empty"}},
		{"blank body", " \n\t ", []string{"empty"}},
		{"two objects", `{"toUser":"` + recipient + `","amount":5}{"toUser":"` + recipient + `","amount":5}`, nil},
		{"empty object", `{}`, nil},
		{"toUser a number", `{"toUser":5,"amount":5}`, []string{"toUser"}},
		{"toUser an array", `{"toUser":["` + recipient + `"],"amount":5}`, []string{"toUser"}},
		{"toUser an object", `{"toUser":{"name":"` + recipient + `"},"amount":5}`, []string{"toUser"}},
		{"toUser a boolean", `{"toUser":true,"amount":5}`, []string{"toUser"}},
		{"toUser null", `{"toUser":null,"amount":5}`, []string{"toUser"}},
		{"amount a string", `{"toUser":"` + recipient + `","amount":"5"}`, []string{"amount"}},
		{"amount a word", `{"toUser":"` + recipient + `","amount":"five"}`, []string{"amount"}},
		{"amount a boolean", `{"toUser":"` + recipient + `","amount":true}`, []string{"amount"}},
		{"amount an array", `{"toUser":"` + recipient + `","amount":[5]}`, []string{"amount"}},
		{"amount an object", `{"toUser":"` + recipient + `","amount":{"value":5}}`, []string{"amount"}},
		{"amount 1.5", `{"toUser":"` + recipient + `","amount":1.5}`, []string{"amount"}},
		{"amount 0.0001", `{"toUser":"` + recipient + `","amount":0.0001}`, []string{"amount"}},
		{"amount 2^63", `{"toUser":"` + recipient + `","amount":9223372036854775808}`, []string{"amount"}},
		{"amount 2^64", `{"toUser":"` + recipient + `","amount":18446744073709551616}`, []string{"amount"}},
		{"amount -2^63-1", `{"toUser":"` + recipient + `","amount":-9223372036854775809}`, []string{"amount"}},
		{"amount with 40 digits", `{"toUser":"` + recipient + `","amount":1234567890123456789012345678901234567890}`, []string{"amount"}},
		{"amount 1e400", `{"toUser":"` + recipient + `","amount":1e400}`, []string{"amount"}},
		{"amount -0", `{"toUser":"` + recipient + `","amount":-0}`, []string{"amount"}},
		{"amount above the maximum balance", `{"toUser":"` + recipient + `","amount":1000000000001}`, []string{"amount"}},
		{"invalid UTF-8 in toUser", `{"toUser":"` + recipient + "\xff\xfe" + `","amount":5}`, []string{"UTF-8"}},
		{"invalid UTF-8 outside strings", "{\"toUser\":\"" + recipient + "\",\"amount\":5}\xff", nil},
		{"control character in toUser", `{"toUser":"` + recipient + `\u0000","amount":5}`, nil},
		{"newline in toUser", `{"toUser":"` + recipient + `\n","amount":5}`, nil},
		{"leading blank in toUser", `{"toUser":" ` + recipient + `","amount":5}`, nil},
		{"10,000-character toUser", `{"toUser":"` + strings.Repeat("a", 10_000) + `","amount":5}`, nil},
		{"2 MiB body", big, nil},
	}

	beforeS, beforeR := api.info(t, st), api.info(t, rt)
	for _, tc := range sendCases {
		t.Run("sendCoin/"+tc.name, func(t *testing.T) {
			r := api.do(t, http.MethodPost, "/api/sendCoin", st, []byte(tc.body))
			if tc.name == "2 MiB body" && r.Status == http.StatusRequestEntityTooLarge {
				// Acceptable only if documented; the validator has already judged that.
				return
			}
			wantStatus(t, r, http.StatusBadRequest, tc.want...)
			wantSameInfo(t, "sender", beforeS, api.info(t, st))
		})
	}
	wantSameInfo(t, "recipient", beforeR, api.info(t, rt))

	// The same hostile bodies at the other JSON endpoints.
	admin := api.login(t, "admin")
	for _, tc := range sendCases {
		t.Run("grant/"+tc.name, func(t *testing.T) {
			r := api.do(t, http.MethodPost, "/api/admin/grant", admin, []byte(tc.body))
			if r.Status != http.StatusBadRequest && r.Status != http.StatusRequestEntityTooLarge {
				t.Errorf("want 400, got %s", r)
			}
		})
	}
	wantSameInfo(t, "recipient", beforeR, api.info(t, rt))

	countUsers := func() int {
		var n int
		if err := db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM users`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	usersBefore := countUsers()
	authCases := []struct {
		name string
		body string
	}{
		{"malformed JSON", `{"username":"x","password":`},
		{"array", `[{"username":"x","password":"y"}]`},
		{"null", `null`},
		{"number", `42`},
		{"empty body", ``},
		{"username a number", `{"username":42,"password":"secret"}`},
		{"password a number", `{"username":"` + uniq("typed") + `","password":42}`},
		{"username an object", `{"username":{"n":"x"},"password":"secret"}`},
		{"10,000-character username", `{"username":"` + strings.Repeat("u", 10_000) + `","password":"secret"}`},
		{"65-character username", `{"username":"` + strings.Repeat("名", 65) + `","password":"secret"}`},
		{"NUL in username", `{"username":"bad\u0000name","password":"secret"}`},
		{"newline in username", `{"username":"bad\nname","password":"secret"}`},
		{"bell in username", `{"username":"bad\u0007name","password":"secret"}`},
		{"DEL in username", `{"username":"bad` + "\x7f" + `name","password":"secret"}`},
		{"C1 control in username", `{"username":"bad\u0085name","password":"secret"}`},
		{"leading blank in username", `{"username":" padded","password":"secret"}`},
		{"trailing blank in username", `{"username":"padded ","password":"secret"}`},
		{"blank username", `{"username":"   ","password":"secret"}`},
		{"invalid UTF-8 in username", "{\"username\":\"bad\xffname\",\"password\":\"secret\"}"},
		{"invalid UTF-8 in password", "{\"username\":\"" + uniq("utf") + "\",\"password\":\"se\xc3cret\"}"},
		{"password over 256 bytes", `{"username":"` + uniq("longpw") + `","password":"` + strings.Repeat("p", 257) + `"}`},
		{"2 MiB body", `{"username":"` + uniq("huge") + `","password":"` + strings.Repeat("p", 2<<20) + `"}`},
	}
	for _, tc := range authCases {
		t.Run("auth/"+tc.name, func(t *testing.T) {
			r := api.do(t, http.MethodPost, "/api/auth", "", []byte(tc.body))
			if tc.name == "2 MiB body" && r.Status == http.StatusRequestEntityTooLarge {
				return
			}
			wantStatus(t, r, http.StatusBadRequest)
		})
	}
	if n := countUsers(); n != usersBefore {
		t.Errorf("refused logins created %d employees", n-usersBefore)
	}

	// Fields the schema does not name are ignored (the contract): existing clients send them.
	t.Run("unknown fields are ignored", func(t *testing.T) {
		a, b := uniq("extra-a"), uniq("extra-b")
		ta, tb := api.login(t, a), api.login(t, b)
		r := api.do(t, http.MethodPost, "/api/sendCoin", ta, []byte(`{"toUser":"`+b+`","amount":5,"currency":"EUR","note":{"x":[1]}}`))
		wantOK(t, r)
		wantOK(t, api.grant(t, admin, json.RawMessage(`{"toUser":"`+b+`","amount":7,"reason":"r","by":"me"}`)))
		if ia, ib := api.info(t, ta), api.info(t, tb); ia.Coins != 995 || ib.Coins != 1012 {
			t.Fatalf("sender %s, recipient %s", ia, ib)
		}
		wantStatus(t, api.do(t, http.MethodPost, "/api/auth", "", []byte(`{"username":"`+a+`","password":"`+testPassword+`","device":"phone"}`)), http.StatusOK)
	})

	// A field given twice is ambiguous (readers disagree on which counts): refused, naming it.
	t.Run("duplicate fields are refused", func(t *testing.T) {
		a, b, c := uniq("dup-a"), uniq("dup-b"), uniq("dup-c")
		ta, tb, tc := api.login(t, a), api.login(t, b), api.login(t, c)
		for path, body := range map[string]string{
			"/api/sendCoin":    `{"toUser":"` + b + `","toUser":"` + c + `","amount":5}`,
			"/api/admin/grant": `{"toUser":"` + b + `","amount":5,"reason":"r","amount":500}`,
		} {
			tok := ta
			if path == "/api/admin/grant" {
				tok = admin
			}
			wantStatus(t, api.do(t, http.MethodPost, path, tok, []byte(body)), http.StatusBadRequest, "more than once")
		}
		wantStatus(t, api.do(t, http.MethodPost, "/api/auth", "", []byte(`{"username":"`+a+`","password":"x","password":"secret"}`)),
			http.StatusBadRequest, `"password" more than once`)
		for who, tok := range map[string]string{a: ta, b: tb, c: tc} {
			if in := api.info(t, tok); in.Coins != 1000 {
				t.Errorf("%s: %s", who, in)
			}
		}
	})

	t.Run("unicode usernames", func(t *testing.T) {
		zoe := "Zoë 名前 " + uniq("fox")
		longest := strings.Repeat("名", 64-9) + uniq("")[0:9]
		for _, name := range []string{zoe, longest} {
			api.login(t, name)        // the first login creates the employee
			tok := api.login(t, name) // a second login: the same employee, a fresh token
			wantStatus(t, api.auth(t, name, "not the password"), http.StatusUnauthorized)
			if in := api.info(t, tok); in.Coins != 1000 {
				t.Fatalf("%q: %s", name, in)
			}
		}
		zt := api.login(t, zoe)
		wantOK(t, api.sendCoin(t, st, zoe, 7))
		wantOK(t, api.sendCoin(t, zt, sender, 3))
		wantOK(t, api.sendCoin(t, zt, longest, 2))
		wantOK(t, api.buy(t, zt, "pen"))
		in := api.info(t, zt)
		want := `{"coins":992,"inventory":[{"type":"pen","quantity":1}],"coinHistory":{"received":[{"fromUser":"` + sender +
			`","amount":7}],"sent":[{"toUser":"` + sender + `","amount":3},{"toUser":"` + longest + `","amount":2}]}}`
		if in.String() != want {
			t.Errorf("unicode employee:\n got %s\nwant %s", in, want)
		}
		si := api.info(t, st)
		var sawSent, sawReceived bool
		for _, s := range si.CoinHistory.Sent {
			sawSent = sawSent || (s.ToUser == zoe && s.Amount == 7)
		}
		for _, r := range si.CoinHistory.Received {
			sawReceived = sawReceived || (r.FromUser == zoe && r.Amount == 3)
		}
		if !sawSent || !sawReceived {
			t.Errorf("sender's history does not name %q exactly: %s", zoe, si)
		}
		// A name that differs only in case is someone else; one that differs only in
		// normalisation is the same employee (TestE2EUsernameLookalikes).
		wantStatus(t, api.sendCoin(t, st, strings.ToUpper(zoe), 1), http.StatusBadRequest)
	})
}
