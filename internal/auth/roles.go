package auth

import (
	"errors"
	"fmt"
	"strings"
)

// Role is a privilege beyond an employee's own account. Roles live in the database and are
// given only by operators; a token may name its bearer's roles, but only as a hint.
type Role string

// The roles.
const (
	// RoleAdmin grants coins and operates the projections; it may also read what auditors read.
	RoleAdmin Role = "admin"
	// RoleAuditor reads: every account's events, the global log and the record of role changes.
	RoleAuditor Role = "auditor"
)

// allRoles are the roles in the order of their bits in Roles.
var allRoles = [...]Role{RoleAdmin, RoleAuditor}

// ErrUnknownRole is a role name that is not one of the roles.
var ErrUnknownRole = errors.New("unknown role")

// ParseRole returns the role named s.
func ParseRole(s string) (Role, error) {
	for _, r := range allRoles {
		if string(r) == s {
			return r, nil
		}
	}
	return "", fmt.Errorf("%w %q: want %s", ErrUnknownRole, s, RoleNames())
}

// RoleNames lists the roles for messages: "admin or auditor".
func RoleNames() string {
	names := make([]string, len(allRoles))
	for i, r := range allRoles {
		names[i] = string(r)
	}
	return strings.Join(names, " or ")
}

// Roles is a set of roles. It is comparable, so claims holding it are too.
type Roles uint8

// RolesOf returns the set of the given roles; unknown ones are left out.
func RolesOf(roles ...Role) Roles {
	var rs Roles
	for _, r := range roles {
		for i, known := range allRoles {
			if r == known {
				rs |= 1 << i
			}
		}
	}
	return rs
}

// Has reports whether the set holds r.
func (rs Roles) Has(r Role) bool { return rs&RolesOf(r) != 0 }

// HasAny reports whether the set holds one of roles.
func (rs Roles) HasAny(roles ...Role) bool { return rs&RolesOf(roles...) != 0 }

// List returns the roles of the set in a fixed order.
func (rs Roles) List() []Role {
	var out []Role
	for i, r := range allRoles {
		if rs&(1<<i) != 0 {
			out = append(out, r)
		}
	}
	return out
}

// String lists the roles, comma-separated; "none" for the empty set.
func (rs Roles) String() string {
	if rs == 0 {
		return "none"
	}
	names := make([]string, 0, len(allRoles))
	for _, r := range rs.List() {
		names = append(names, string(r))
	}
	return strings.Join(names, ",")
}
