package httpapi

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/ledger/ledger/domain"
	"github.com/ledger/ledger/internal/app"
	"github.com/ledger/ledger/internal/auth"
)

// Errors of the HTTP edge itself; domain and application errors come from below.
var (
	errBadRequest   = errors.New("bad request")
	errUnauthorized = errors.New("not authenticated")
	errForbidden    = errors.New("forbidden")
	errNotFound     = errors.New("not found")
)

// status maps an error to the HTTP status and the message the client sees. It is the one place
// where errors become statuses; anything it does not know is an internal error whose details
// stay in the log.
func status(err error) (int, string) {
	switch {
	case errors.Is(err, errBadRequest),
		errors.Is(err, domain.ErrInsufficientFunds),
		errors.Is(err, domain.ErrUnknownItem),
		errors.Is(err, domain.ErrSelfTransfer),
		errors.Is(err, domain.ErrUnknownAccount),
		errors.Is(err, domain.ErrInvalidAmount),
		errors.Is(err, domain.ErrAmountOverflow),
		errors.Is(err, domain.ErrInvalidUsername),
		errors.Is(err, domain.ErrInvalidReason):
		return http.StatusBadRequest, err.Error()
	case errors.Is(err, errUnauthorized), errors.Is(err, auth.ErrInvalidToken):
		return http.StatusUnauthorized, err.Error()
	case errors.Is(err, errForbidden):
		return http.StatusForbidden, err.Error()
	case errors.Is(err, errNotFound):
		return http.StatusNotFound, err.Error()
	case errors.Is(err, app.ErrBusy):
		return http.StatusInternalServerError, app.ErrBusy.Error()
	default:
		return http.StatusInternalServerError, "internal error"
	}
}

// writeError answers with the contract's error body; internal errors are logged once, here,
// with the request id.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	code, msg := status(err)
	if code == http.StatusInternalServerError {
		s.log.ErrorContext(r.Context(), "request failed", "err", err, "method", r.Method, "path", r.URL.Path)
		if errors.Is(err, app.ErrBusy) {
			w.Header().Set("Retry-After", strconv.Itoa(1))
		}
	}
	writeJSON(w, code, errorBody{Errors: msg})
}

type errorBody struct {
	Errors string `json:"errors"`
}
