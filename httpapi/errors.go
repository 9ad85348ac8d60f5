package httpapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

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
		errors.Is(err, domain.ErrInvalidReason),
		errors.Is(err, app.ErrInvalidIdempotencyKey):
		return http.StatusBadRequest, err.Error()
	case errors.Is(err, errUnauthorized), errors.Is(err, auth.ErrInvalidToken):
		return http.StatusUnauthorized, err.Error()
	case errors.Is(err, errForbidden):
		return http.StatusForbidden, err.Error()
	case errors.Is(err, app.ErrNotOpenedYet):
		return http.StatusNotFound, app.ErrNotOpenedYet.Error()
	case errors.Is(err, errNotFound):
		return http.StatusNotFound, err.Error()
	case errors.Is(err, app.ErrIdempotencyKeyReused):
		return http.StatusUnprocessableEntity, err.Error()
	case errors.Is(err, errTooManyRequests):
		return http.StatusTooManyRequests, err.Error()
	case errors.Is(err, context.Canceled):
		return statusClientClosedRequest, "the client closed the request"
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable, "the ledger could not answer in time; try again"
	case errors.Is(err, app.ErrBusy):
		return http.StatusInternalServerError, app.ErrBusy.Error()
	case unavailable(err):
		return http.StatusServiceUnavailable, "the ledger's database is unavailable; try again"
	default:
		return http.StatusInternalServerError, "internal error"
	}
}

// Status returns the HTTP status of err and the message its client may see: the one table,
// for other front ends on the same server (the console) as for the API.
func Status(err error) (int, string) { return status(err) }

// IsTooManyAttempts reports whether err is a refusal by the login limits, and when to retry.
func IsTooManyAttempts(err error) (time.Duration, bool) {
	var tooMany *tooManyAttempts
	if errors.As(err, &tooMany) {
		return time.Duration(tooMany.retryAfterSeconds()) * time.Second, true
	}
	return 0, false
}

// writeError answers with the contract's error body; internal errors are logged once, here,
// with the request id.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	code, msg := status(err)
	if end := r.Context().Err(); end != nil && code >= 500 && !errors.Is(err, end) {
		// What failed once the request's deadline passed or its client left, failed for that
		// reason (a connection closed under a statement, say).
		err = fmt.Errorf("%w: %w", end, err)
		code, msg = status(err)
	}
	if code == statusClientClosedRequest {
		s.log.DebugContext(r.Context(), "client went away", "err", err, "method", r.Method, "path", r.URL.Path)
	}
	var tooMany *tooManyAttempts
	if errors.As(err, &tooMany) {
		w.Header().Set("Retry-After", strconv.Itoa(tooMany.retryAfterSeconds()))
	}
	if code == http.StatusServiceUnavailable {
		s.log.WarnContext(r.Context(), "database unavailable", "err", err, "method", r.Method, "path", r.URL.Path)
		w.Header().Set("Retry-After", strconv.Itoa(1))
	}
	if code == http.StatusInternalServerError {
		s.log.ErrorContext(r.Context(), "request failed", "err", err, "method", r.Method, "path", r.URL.Path)
		if errors.Is(err, app.ErrBusy) {
			w.Header().Set("Retry-After", strconv.Itoa(1))
		}
	}
	writeJSON(w, code, errorBody{Errors: msg})
}

// unavailable reports whether err says the database cannot be reached or is shutting down,
// rather than that the request failed: the client may simply try again.
func unavailable(err error) bool {
	var connect *pgconn.ConnectError
	var pg *pgconn.PgError
	var netErr net.Error
	switch {
	case errors.As(err, &connect):
		return true
	case errors.As(err, &pg):
		// Class 08: connection exceptions; 57P01..57P03: the server is shutting down or starting.
		return strings.HasPrefix(pg.Code, "08") || pg.Code == "57P01" || pg.Code == "57P02" || pg.Code == "57P03"
	case errors.As(err, &netErr), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNREFUSED),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, net.ErrClosed):
		return true
	}
	return pgconn.SafeToRetry(err)
}

type errorBody struct {
	Errors string `json:"errors"`
}
