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

// passwordTimeout bounds a request's wait for the password hasher and its hash. That is CPU
// work, which a stalled database does not hold up and a burst of logins queues for: it is not
// under the database deadline (see offDeadline). A wait much longer could no longer be
// answered within the server's write timeout.
const passwordTimeout = 20 * time.Second

// statusClientClosedRequest is recorded (in the access log and the metrics) for a request
// whose client went away before it was answered; nobody receives it.
const statusClientClosedRequest = 499

type ctxKeyUnbounded struct{}

// deadline gives each request one deadline for all its database work: every wait under the
// request's context (the pool, statements, group commit, grouped reads) ends with it, and the
// request then answers 503 with Retry-After.
func (s *Server) deadline(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), s.timeout)
		defer cancel()
		ctx = context.WithValue(ctx, ctxKeyUnbounded{}, r.Context())
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// unbounded returns r's context without the request's database deadline.
func unbounded(r *http.Request) context.Context {
	if base, ok := r.Context().Value(ctxKeyUnbounded{}).(context.Context); ok {
		return base
	}
	return r.Context()
}

// WithoutDeadline returns r's context without the request's database deadline, for a handler
// mounted on the server that streams for longer (and bounds each step itself).
func WithoutDeadline(r *http.Request) context.Context { return unbounded(r) }

// offDeadline returns the context for CPU work of r (the password hasher): r's, without its
// database deadline, bounded by passwordTimeout instead.
func offDeadline(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(unbounded(r), passwordTimeout)
}

// resumeDeadline returns the context for r's database work after CPU work that began at
// began: its deadline moves on by the time that took, so that waiting for a CPU does not use
// up the time the request's database work is allowed.
func resumeDeadline(r *http.Request, began time.Time) (context.Context, context.CancelFunc) {
	d, ok := r.Context().Deadline()
	if !ok {
		return context.WithCancel(r.Context())
	}
	return context.WithDeadline(unbounded(r), d.Add(time.Since(began)))
}

// stepContext returns the context for one more step of a streamed answer: the request's, with
// a deadline of its own that starts now. A stream's database work is bounded step by step; the
// request's one deadline would cut a long stream short.
func (s *Server) stepContext(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(unbounded(r), s.timeout)
}
