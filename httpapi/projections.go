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
func (s *Server) handleProjections(w http.ResponseWriter, r *http.Request) {
	if err := s.requireRole(r, "projection status", auth.RoleAdmin); err != nil {
		s.writeError(w, r, err)
		return
	}
	if s.Projections == nil {
		s.writeError(w, r, errorf(errNotFound, "this server does not report projections"))
		return
	}
	st, err := s.Projections(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if st == nil {
		st = []projections.Status{}
	}
	writeJSON(w, http.StatusOK, projectionsBody{Projections: st})
}
