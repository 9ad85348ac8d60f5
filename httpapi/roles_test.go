package httpapi

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestRolesComeFromTheRoleSource: a privileged request is allowed by the roles the role source
// (the database) holds now, never by the roles its token names.
func TestRolesComeFromTheRoleSource(t *testing.T) {
	srv := auditServer(t, newFakeLedger(3))
	grant := `{"toUser":"alice","amount":5,"reason":"r"}`
	for _, tc := range []struct {
		name, method, path, token string
		status                    int
		contains                  string
	}{
		{"token says admin, database says none: grant", "POST", "/api/admin/grant", "admin:mallory", 403, "admin role"},
		{"token says admin, database says auditor: grant", "POST", "/api/admin/grant", "admin:eve", 403, "admin role"},
		{"auditor: grant", "POST", "/api/admin/grant", "user:eve", 403, "admin role"},
		{"token says admin, database says none: projections", "GET", "/api/admin/projections", "admin:mallory", 403, "admin role"},
		{"auditor: projections", "GET", "/api/admin/projections", "auditor:eve", 403, "admin role"},
		// Past the role check, this server has no projections to report.
		{"token says nothing, database says admin: projections", "GET", "/api/admin/projections", "user:root", 404, "projections"},
		{"token says admin, database says none: log", "GET", "/api/audit/log", "admin:mallory", 403, "auditor or admin role"},
		{"auditor: log", "GET", "/api/audit/log", "user:eve", 200, ""},
		{"admin: log", "GET", "/api/audit/log", "user:root", 200, ""},
		{"auditor: another's events", "GET", "/api/audit/accounts/alice/events", "user:eve", 200, `"next":null`},
		{"token says auditor, database says none: another's events", "GET", "/api/audit/accounts/alice/events", "auditor:bob", 403, "auditor or admin role"},
		{"employee: role changes", "GET", "/api/audit/roles", "user:alice", 403, "auditor or admin role"},
		{"token says auditor, database says none: role changes", "GET", "/api/audit/roles", "auditor:alice", 403, "auditor or admin role"},
		{"auditor: role changes", "GET", "/api/audit/roles", "user:eve", 200, `{"changes":[],"next":null}`},
		{"admin: role changes of one employee", "GET", "/api/audit/roles?username=alice&after=3&limit=5", "user:root", 200, `"changes":[]`},
		{"role changes: a NUL in the name", "GET", "/api/audit/roles?username=a%00b", "user:root", 400, "username"},
		{"role changes: bad UTF-8 in the name", "GET", "/api/audit/roles?username=%ff", "user:root", 400, "username"},
		{"role changes: limit 0", "GET", "/api/audit/roles?limit=0", "user:root", 400, "limit"},
		{"role changes: after twice", "GET", "/api/audit/roles?after=1&after=2", "user:root", 400, "2 times"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var body io.Reader
			if tc.method == http.MethodPost {
				body = strings.NewReader(grant)
			}
			req, err := http.NewRequest(tc.method, srv.URL+tc.path, body)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer "+tc.token)
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			got := string(b)
			if resp.StatusCode != tc.status || !strings.Contains(got, tc.contains) {
				t.Errorf("%s %s as %s: %d %s; want %d containing %q", tc.method, tc.path, tc.token, resp.StatusCode, got, tc.status, tc.contains)
			}
		})
	}
}
