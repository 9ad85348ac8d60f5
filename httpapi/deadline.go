package httpapi

import (
	"context"
	"net/http"
	"time"
)

// DefaultRequestTimeout is how long a request may wait on the database in all, unless
// Deps.RequestTimeout says otherwise.
const DefaultRequestTimeout = 3 * time.Second

// readyTimeout bounds the readiness check, so that a probe hears back within a second
// whatever the database does.
const readyTimeout = 750 * time.Millisecond

// statusClientClosedRequest is recorded (in the access log and the metrics) for a request
// whose client went away before it was answered; nobody receives it.
const statusClientClosedRequest = 499

type ctxKeyUnbounded struct{}

// deadline gives each request one deadline for all its database work: every wait under the
// request's context (the pool, statements, group commit, grouped reads, the password hasher)
// ends with it, and the request then answers 503 with Retry-After.
func (s *Server) deadline(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), s.timeout)
		defer cancel()
		ctx = context.WithValue(ctx, ctxKeyUnbounded{}, r.Context())
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// stepContext returns the context for one more step of a streamed answer: the request's, with
// a deadline of its own that starts now. A stream's database work is bounded step by step; the
// request's one deadline would cut a long stream short.
func (s *Server) stepContext(r *http.Request) (context.Context, context.CancelFunc) {
	base, ok := r.Context().Value(ctxKeyUnbounded{}).(context.Context)
	if !ok {
		base = r.Context()
	}
	return context.WithTimeout(base, s.timeout)
}
