package main

import (
	"net/http"
	"testing"
)

// A grant's reason is free text from the client, and JSON lets it hold a NUL character
// (\u0000), which PostgreSQL cannot store. It is bad input: a 400 that names the reason, with
// or without an idempotency key, and nothing changes; never a server error.
func TestE2EGrantReasonWithNULIsBadInput(t *testing.T) {
	ts := startTestService(t)
	api := ts.api
	name := uniq("nul")
	tok := api.login(t, name)
	admin := api.login(t, "admin")
	before := api.info(t, tok)
	cases := []struct {
		name, body string
		keys       []string
	}{
		{"inside the reason", `{"toUser":"` + name + `","amount":5,"reason":"bonus\u0000for you"}`, nil},
		{"the whole reason", `{"toUser":"` + name + `","amount":5,"reason":"\u0000"}`, nil},
		{"under an idempotency key", `{"toUser":"` + name + `","amount":5,"reason":"bonus\u0000"}`, []string{uniq("nul-key")}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := api.keyedRequest(t, http.MethodPost, "/api/admin/grant", admin, []byte(c.body), c.keys...)
			wantStatus(t, r, http.StatusBadRequest, "reason")
		})
	}
	wantSameInfo(t, name, before, api.info(t, tok))
}
