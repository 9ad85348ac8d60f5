package httpapi

import (
	"net/http"

	"github.com/ledger/ledger/internal/auth"
	"github.com/ledger/ledger/projections"
)

// projectionsBody is GET /api/admin/projections' answer.
type projectionsBody struct {
	Projections []projections.Status `json:"projections"`
}

// handleProjections reports each projection to admins: active version, checkpoint, events
// behind, lag and state.
func (s *Server) handleProjections(w http.ResponseWriter, r *http.Request) error {
	if err := s.requireRole(r, "projection status", auth.RoleAdmin); err != nil {
		return err
	}
	if s.Projections == nil {
		return errorf(errNotFound, "this server does not report projections")
	}
	st, err := s.Projections(r.Context())
	if err != nil {
		return err
	}
	if st == nil {
		st = []projections.Status{}
	}
	writeJSON(w, http.StatusOK, projectionsBody{Projections: st})
	return nil
}
