package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/ledger/ledger/httpapi"
)

// TestE2ERequestIDs: the events of a request carry the server's own request id, the one on the
// response's X-Request-ID, whatever the client sends; a client's X-Request-ID is kept apart as
// clientRequestId when it is sane and dropped when it is not.
func TestE2ERequestIDs(t *testing.T) {
	ts := startTestService(t)
	api := ts.api
	from, to := uniq("rid-from"), uniq("rid-to")
	tok := api.login(t, from)
	api.login(t, to)

	for _, tc := range []struct {
		name, sent, wantClient string
	}{
		{"none", "", ""},
		{"a sane one", "client-7f3a:trace/1", "client-7f3a:trace/1"},
		{"128 characters", strings.Repeat("r", 128), strings.Repeat("r", 128)},
		{"one looking like ours", "0190a3c4-5b6d-7e8f-9a0b-1c2d3e4f5a6b", "0190a3c4-5b6d-7e8f-9a0b-1c2d3e4f5a6b"},
		{"too long", strings.Repeat("r", 129), ""},
		{"with a space", "two words", ""},
		{"not ASCII", "idé", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := api.newRequest(t, http.MethodPost, "/api/sendCoin", tok, map[string]any{"toUser": to, "amount": 1})
			if tc.sent != "" {
				req.Header.Set("X-Request-ID", tc.sent)
			}
			r := api.send(t, req)
			wantOK(t, r)
			ours := r.Header.Get("X-Request-ID")
			if _, err := uuid.Parse(ours); err != nil || ours == tc.sent {
				t.Fatalf("response X-Request-ID %q is not an id of the server's", ours)
			}
			events := api.allAccountEvents(t, tok, from, 1000)
			var md struct {
				RequestID       string  `json:"requestId"`
				ClientRequestID *string `json:"clientRequestId"`
			}
			if err := json.Unmarshal(events[len(events)-1].Metadata, &md); err != nil {
				t.Fatal(err)
			}
			if md.RequestID != ours {
				t.Errorf("event's requestId %q, want the server's %q", md.RequestID, ours)
			}
			switch {
			case tc.wantClient == "" && md.ClientRequestID != nil:
				t.Errorf("clientRequestId %q kept, want it dropped", *md.ClientRequestID)
			case tc.wantClient != "" && (md.ClientRequestID == nil || *md.ClientRequestID != tc.wantClient):
				t.Errorf("clientRequestId %v, want %q", md.ClientRequestID, tc.wantClient)
			}
		})
	}
}

// TestLogLinesCarryBothRequestIDs: every log line of a request names the server's request id
// and, apart, the client's.
func TestLogLinesCarryBothRequestIDs(t *testing.T) {
	var buf bytes.Buffer
	log := newLogger(&buf, slog.LevelDebug)
	api := httpapi.New(httpapi.Deps{Ledger: nil, Log: log, Ready: func(context.Context) error { return nil }})
	req := httptest.NewRequest(http.MethodGet, "/api/health", nil)
	req.Header.Set("X-Request-ID", "client-42")
	rec := httptest.NewRecorder()
	api.ServeHTTP(rec, req)
	var line struct {
		RequestID       string `json:"request_id"`
		ClientRequestID string `json:"client_request_id"`
	}
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("%v: %s", err, buf.String())
	}
	if line.RequestID != rec.Header().Get("X-Request-ID") || line.RequestID == "client-42" || line.ClientRequestID != "client-42" {
		t.Fatalf("log line %s; response X-Request-ID %q", buf.String(), rec.Header().Get("X-Request-ID"))
	}
}
