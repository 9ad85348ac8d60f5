package httpapi

import (
	"context"
	"net/http"
	"strings"

	"github.com/ledger/ledger/domain"
	"github.com/ledger/ledger/internal/app"
	"github.com/ledger/ledger/internal/auth"
)

// Roles is what the server needs to know of roles: an employee's current roles, read from the
// database (briefly cached at most), and the append-only record of role changes.
type Roles interface {
	Roles(ctx context.Context, username string) (auth.Roles, error)
	RoleChanges(ctx context.Context, username string, after int64, limit int) ([]app.RoleChange, error)
}

var _ Roles = (*app.App)(nil)

// Limits of GET /api/audit/roles' pages.
const (
	defaultRoleChanges = 100
	maxRoleChanges     = 1_000
)

// requireRole refuses the request unless its caller has one of roles now. The roles a token
// names are not consulted: they were true when it was minted, and a role revoked since must
// stop working at once, not when the token expires.
func (s *Server) requireRole(r *http.Request, what string, roles ...auth.Role) error {
	if s.Deps.Roles != nil {
		has, err := s.Deps.Roles.Roles(r.Context(), claimsOf(r).Username)
		if err != nil {
			return err
		}
		if has.HasAny(roles...) {
			return nil
		}
	}
	names := make([]string, len(roles))
	for i, role := range roles {
		names[i] = string(role)
	}
	return errorf(errForbidden, "%s needs the %s role", what, strings.Join(names, " or "))
}

type roleChangesResponse struct {
	Changes []app.RoleChange `json:"changes"`
	// Next is the after of the next page, nil on the last one.
	Next *int64 `json:"next"`
}

// handleRoleChanges pages through the record of role changes, oldest first, for auditors and
// admins.
func (s *Server) handleRoleChanges(w http.ResponseWriter, r *http.Request) error {
	if err := s.requireRole(r, "reading the record of role changes", auth.RoleAuditor, auth.RoleAdmin); err != nil {
		return err
	}
	q, err := query(r, "after", "limit", "username")
	if err != nil {
		return err
	}
	after, err := intParam(q, "after", 0, 0, 1<<62, "an entry id")
	if err != nil {
		return err
	}
	limit, err := intParam(q, "limit", defaultRoleChanges, 1, maxRoleChanges, "a page size")
	if err != nil {
		return err
	}
	username := q.Get("username")
	if q.Has("username") {
		if err := domain.ValidateUsername(username); err != nil {
			return err
		}
	}
	// One entry more than asked tells whether there is a next page.
	changes, err := s.Deps.Roles.RoleChanges(r.Context(), username, after, int(limit)+1)
	if err != nil {
		return err
	}
	resp := roleChangesResponse{Changes: changes}
	if len(changes) > int(limit) {
		resp.Changes = changes[:limit]
		next := resp.Changes[len(resp.Changes)-1].ID
		resp.Next = &next
	}
	if resp.Changes == nil {
		resp.Changes = []app.RoleChange{}
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}
