package main

import (
	"net/http"
	"testing"
)

// TestE2EBytesPostgreSQLCannotStore: text that PostgreSQL cannot store (a NUL character, bytes
// that are not UTF-8) in any input that reaches a query is a 400 that names the input, never a
// server error from the database.
func TestE2EBytesPostgreSQLCannotStore(t *testing.T) {
	ts := startTestService(t)
	api := ts.api
	name := uniq("bytes")
	tok := api.login(t, name)
	admin := api.login(t, "admin")
	before := api.info(t, tok)

	for _, tc := range []struct {
		what, method, path, token string
		body                      string
		want                      string // substring of the message
	}{
		{"NUL in grant's toUser", http.MethodPost, "/api/admin/grant", admin, `{"toUser":"` + name + `\u0000","amount":5,"reason":"r"}`, "toUser"},
		{"NUL alone in grant's toUser", http.MethodPost, "/api/admin/grant", admin, `{"toUser":"\u0000","amount":5,"reason":"r"}`, "toUser"},
		{"NUL in sendCoin's toUser", http.MethodPost, "/api/sendCoin", tok, `{"toUser":"` + name + `\u0000","amount":5}`, "toUser"},
		{"%00 in an audited name", http.MethodGet, "/api/audit/accounts/%00/events", admin, "", "username"},
		{"%ff in an audited name", http.MethodGet, "/api/audit/accounts/%ff/events", admin, "", "username"},
		{"%C3%28 in an audited name", http.MethodGet, "/api/audit/accounts/a%C3%28/events", admin, "", "username"},
		{"%00 after a name", http.MethodGet, "/api/audit/accounts/" + name + "%00/events", admin, "", "username"},
		{"%00 in after", http.MethodGet, "/api/audit/accounts/" + name + "/events?after=%00", tok, "", "after"},
		{"%ff in limit", http.MethodGet, "/api/audit/accounts/" + name + "/events?limit=%ff", tok, "", "limit"},
		{"%C3%28 in the log's after", http.MethodGet, "/api/audit/log?after=%C3%28", admin, "", "after"},
		{"%00 in asOf", http.MethodGet, "/api/info?asOf=%00", tok, "", "asOf"},
		{"%ff in asOf", http.MethodGet, "/api/info?asOf=%ff", tok, "", "asOf"},
		{"%00 in an item", http.MethodGet, "/api/buy/cup%00", tok, "", "item"},
		{"%C3%28 in an item", http.MethodGet, "/api/buy/%C3%28", tok, "", "item"},
	} {
		t.Run(tc.what, func(t *testing.T) {
			var body any
			if tc.body != "" {
				body = tc.body
			}
			wantStatus(t, api.do(t, tc.method, tc.path, tc.token, body), http.StatusBadRequest, tc.want)
		})
	}
	wantSameInfo(t, name, before, api.info(t, tok))
}
