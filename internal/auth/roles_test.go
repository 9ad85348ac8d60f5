package auth

import (
	"errors"
	"testing"
	"time"
)

func TestRoles(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    Role
		wantErr bool
	}{
		{"admin", RoleAdmin, false},
		{"auditor", RoleAuditor, false},
		{"Admin", "", true},
		{"root", "", true},
		{"", "", true},
		{"admin ", "", true},
	} {
		r, err := ParseRole(tc.in)
		if r != tc.want || (err != nil) != tc.wantErr || (err != nil && !errors.Is(err, ErrUnknownRole)) {
			t.Errorf("ParseRole(%q) = %q, %v", tc.in, r, err)
		}
	}
	both := RolesOf(RoleAuditor, RoleAdmin, RoleAdmin)
	if !both.Has(RoleAdmin) || !both.Has(RoleAuditor) || both.String() != "admin,auditor" || len(both.List()) != 2 {
		t.Errorf("RolesOf(auditor, admin, admin) = %s", both)
	}
	auditor := RolesOf(RoleAuditor)
	if auditor.Has(RoleAdmin) || !auditor.HasAny(RoleAdmin, RoleAuditor) || auditor.HasAny(RoleAdmin) {
		t.Errorf("auditor set %s answers wrongly", auditor)
	}
	if none := RolesOf(Role("root")); none != 0 || none.String() != "none" || none.HasAny(RoleAdmin, RoleAuditor) {
		t.Errorf("RolesOf(root) = %s, want none", none)
	}
}

// TestIssueNamesRoles: an issued token names exactly the roles it was issued with.
func TestIssueNamesRoles(t *testing.T) {
	pub, priv := genKey(t)
	iss := newIssuerAt(priv, testIss, testAud, time.Hour, t0)
	v := newVerifierAt(pub, 0, t0.Add(time.Minute))
	for _, roles := range [][]Role{nil, {RoleAuditor}, {RoleAdmin}, {RoleAuditor, RoleAdmin}} {
		tok, err := iss.Issue("carol", roles...)
		if err != nil {
			t.Fatal(err)
		}
		c, err := v.Verify(tok)
		if err != nil || c.Roles != RolesOf(roles...) {
			t.Errorf("Issue(carol, %v) verifies as %+v, %v", roles, c, err)
		}
	}
}
