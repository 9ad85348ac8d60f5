package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// recordingTB captures the errors the harness reports instead of failing the test.
type recordingTB struct {
	testing.TB
	mu   sync.Mutex
	errs []string
}

func (r *recordingTB) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func (r *recordingTB) Error(args ...any) { r.Errorf("%s", fmt.Sprint(args...)) }

// TestE2EHarnessValidates proves that the shared HTTP helper rejects what the OpenAPI
// document does not allow, against a fake server, so that the suite's passes mean something.
func TestE2EHarnessValidates(t *testing.T) {
	type reply struct {
		status int
		ctype  string
		body   string
	}
	var mu sync.Mutex
	var next reply
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		rp := next
		mu.Unlock()
		if rp.ctype != "" {
			w.Header().Set("Content-Type", rp.ctype)
		}
		w.WriteHeader(rp.status)
		_, _ = w.Write([]byte(rp.body))
	}))
	defer srv.Close()
	api := newAPIClient(t, srv.URL)

	const okInfo = `{"coins":5,"inventory":[],"coinHistory":{"received":[],"sent":[]}}`
	for _, tc := range []struct {
		name         string
		method, path string
		reply        reply
		want         string // substring of the reported problem; "" means none is reported
	}{
		{"valid info", "GET", "/api/info", reply{200, "application/json", okInfo}, ""},
		{"valid empty sendCoin", "POST", "/api/sendCoin", reply{200, "", ""}, ""},
		{"valid error", "GET", "/api/buy/cup", reply{400, "application/json", `{"errors":"not enough coin"}`}, ""},
		{"undocumented status", "GET", "/api/info", reply{418, "application/json", `{"errors":"teapot"}`}, "status is not supported"},
		{"413 on sendCoin", "POST", "/api/sendCoin", reply{413, "application/json", `{"errors":"too large"}`}, "status is not supported"},
		{"403 on info", "GET", "/api/info", reply{403, "application/json", `{"errors":"no"}`}, "status is not supported"},
		{"negative coins", "GET", "/api/info", reply{200, "application/json", strings.Replace(okInfo, `"coins":5`, `"coins":-1`, 1)}, "coins"},
		{"null inventory", "GET", "/api/info", reply{200, "application/json", strings.Replace(okInfo, `"inventory":[]`, `"inventory":null`, 1)}, "inventory"},
		{"null history", "GET", "/api/info", reply{200, "application/json", strings.Replace(okInfo, `"sent":[]`, `"sent":null`, 1)}, "sent"},
		{"missing coins", "GET", "/api/info", reply{200, "application/json", `{"inventory":[],"coinHistory":{"received":[],"sent":[]}}`}, "coins"},
		{"string coins", "GET", "/api/info", reply{200, "application/json", strings.Replace(okInfo, `"coins":5`, `"coins":"5"`, 1)}, "coins"},
		{"error without message", "GET", "/api/info", reply{401, "application/json", `{"error":"x"}`}, "errors"},
		{"error as text", "GET", "/api/info", reply{401, "text/plain", `unauthorized`}, "Content-Type"},
		{"empty error message", "GET", "/api/info", reply{400, "application/json", `{"errors":""}`}, "without a message"},
		{"server error", "GET", "/api/info", reply{500, "application/json", `{"errors":"internal error"}`}, "server error"},
		{"token missing", "POST", "/api/auth", reply{200, "application/json", `{}`}, "token"},
		{"path outside the document", "GET", "/api/nope", reply{404, "application/json", `{"errors":"not found"}`}, "not an operation"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mu.Lock()
			next = tc.reply
			mu.Unlock()
			rec := &recordingTB{TB: t}
			var body any
			if tc.method == "POST" {
				body = map[string]any{}
			}
			api.do(rec, tc.method, tc.path, "token", body)
			got := strings.Join(rec.errs, "\n")
			switch {
			case tc.want == "" && got != "":
				t.Errorf("a valid response was reported: %s", got)
			case tc.want != "" && !strings.Contains(got, tc.want):
				t.Errorf("want a report mentioning %q, got %q", tc.want, got)
			}
		})
	}
}
