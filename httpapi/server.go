// Package httpapi serves the merch-shop HTTP contract (auth, info, sendCoin, buy) and the
// ledger's additions (admin grant, health, readiness, the OpenAPI document) over chi. It
// decodes and validates input, authenticates bearer tokens, calls the application layer, and
// maps every error to a status in one place; clients never see internal details.
package httpapi

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"

	"github.com/ledger/ledger/domain"
	"github.com/ledger/ledger/internal/app"
	"github.com/ledger/ledger/internal/auth"
	"github.com/ledger/ledger/projections"
)

// Ledger is what the API needs of the application layer.
type Ledger interface {
	LookupIdentity(ctx context.Context, username string) (app.Identity, error)
	OpenAccount(ctx context.Context, username, passwordHash string) (uuid.UUID, app.Result, error)
	AccountID(ctx context.Context, username string) (uuid.UUID, error)
	Info(ctx context.Context, accountID uuid.UUID) (app.Info, error)
	Buy(ctx context.Context, accountID uuid.UUID, item string) (app.Result, error)
	Transfer(ctx context.Context, fromID uuid.UUID, toUser string, amount domain.Coins) (app.Result, error)
	Grant(ctx context.Context, admin, toUser string, amount domain.Coins, reason string) (app.Result, error)
}

// Passwords hashes and checks passwords.
type Passwords interface {
	Hash(ctx context.Context, password string) (string, error)
	Verify(ctx context.Context, encoded, password string) error
}

// TokenIssuer mints access tokens.
type TokenIssuer interface {
	Issue(username string, roles ...auth.Role) (string, error)
}

// TokenVerifier checks access tokens.
type TokenVerifier interface {
	Verify(token string) (auth.Claims, error)
}

var (
	_ Ledger        = (*app.App)(nil)
	_ Passwords     = (*auth.Hasher)(nil)
	_ TokenIssuer   = (*auth.Issuer)(nil)
	_ TokenVerifier = (*auth.Verifier)(nil)
)

// Deps are the server's collaborators.
type Deps struct {
	Ledger    Ledger
	Passwords Passwords
	Issuer    TokenIssuer
	Verifier  TokenVerifier
	// Roles are the employees' roles and their record; nil gives no one a role.
	Roles Roles
	// Ready reports whether the service can serve (database reachable, projectors running).
	Ready func(ctx context.Context) error
	// Projections reports the projections' status to admins; nil turns the endpoint off.
	Projections func(ctx context.Context) ([]projections.Status, error)
	// Requests records every request (metrics); nil records nothing.
	Requests RequestObserver
	// Metrics is served at GET /metrics; nil leaves the path unrouted.
	Metrics http.Handler
	// AuthLimiter limits failed logins and sign-ups on POST /api/auth; nil limits nothing.
	AuthLimiter *AuthLimiter
	Log         *slog.Logger

	// RequestTimeout bounds all the database work of one request; 0 is DefaultRequestTimeout.
	RequestTimeout time.Duration
}

// RequestObserver records each request by method, route pattern, status and duration.
type RequestObserver interface {
	ObserveRequest(method, route string, status int, elapsed time.Duration)
}

// Server is the HTTP API.
type Server struct {
	Deps
	log     *slog.Logger
	router  chi.Router
	timeout time.Duration
}

// maxPasswordBytes bounds the work one login can ask of the password hasher.
const maxPasswordBytes = auth.MaxPasswordBytes

// New returns the API's handler.
func New(d Deps) *Server {
	s := &Server{Deps: d, log: d.Log, timeout: d.RequestTimeout}
	if s.timeout <= 0 {
		s.timeout = DefaultRequestTimeout
	}
	r := chi.NewRouter()
	r.Use(s.observe, s.requestID, s.recoverer, s.accessLog, s.deadline)
	r.NotFound(func(w http.ResponseWriter, r *http.Request) { s.writeError(w, r, errNotFound) })
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusMethodNotAllowed, errorBody{Errors: "method not allowed"})
	})

	r.Post("/api/auth", s.api(s.handleAuth))
	r.Get("/api/health", s.handleHealth)
	r.Get("/api/ready", s.handleReady)
	r.Get("/api/openapi.yaml", handleOpenAPI)
	if d.Metrics != nil {
		r.Method(http.MethodGet, "/metrics", d.Metrics)
	}
	r.Group(func(r chi.Router) {
		r.Use(s.authenticate)
		r.Get("/api/info", s.api(s.handleInfo))
		r.Post("/api/sendCoin", s.api(s.handleSendCoin))
		r.Get("/api/buy/{item}", s.api(s.handleBuy))
		r.Post("/api/admin/grant", s.api(s.handleGrant))
		r.Get("/api/audit/accounts/{username}/events", s.api(s.handleAccountEvents))
		r.Get("/api/audit/log", s.api(s.handleAuditLog))
		r.Get("/api/audit/roles", s.api(s.handleRoleChanges))
		r.Get("/api/admin/projections", s.api(s.handleProjections))
	})
	s.router = r
	return s
}

// Mount serves h under the path prefix (h sees paths relative to it), behind the server's
// request ids, metrics, access log and deadline; h answers its own errors and recovers its
// own panics.
func (s *Server) Mount(prefix string, h http.Handler) { s.router.Mount(prefix, h) }

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.router.ServeHTTP(w, r) }

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v) // the client went away: nothing left to tell it
}

type ctxKey int

const (
	keyRequestID ctxKey = iota
	keyClaims
	keyClientRequestID
)

// RequestIDFrom returns the request id of ctx, for log handlers.
func RequestIDFrom(ctx context.Context) string {
	id, _ := ctx.Value(keyRequestID).(string)
	return id
}

// ClientRequestIDFrom returns the X-Request-ID the client sent with the request of ctx, if it
// sent an acceptable one, for log handlers.
func ClientRequestIDFrom(ctx context.Context) string {
	id, _ := ctx.Value(keyClientRequestID).(string)
	return id
}

// maxClientRequestID is the longest X-Request-ID of a client's that is kept.
const maxClientRequestID = 128

// requestID gives every request an id of ours, a UUIDv7, and puts it on the response's
// X-Request-ID, the context (so every log line of the request carries it) and the events. The
// client chooses its X-Request-ID, so it is never taken for ours: the events' metadata keeps it
// apart (clientRequestId), and so do the log lines (client_request_id). It is kept only when it
// is one header of 1 to 128 visible ASCII characters; any other is dropped, and the request is
// served all the same: a tracing header is no reason to refuse a payment.
func (s *Server) requestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := uuid.Must(uuid.NewV7()).String()
		w.Header().Set("X-Request-ID", id)
		ctx := context.WithValue(r.Context(), keyRequestID, id)
		rc := app.RequestContext{RequestID: id}
		if sent := r.Header.Values("X-Request-ID"); len(sent) > 0 {
			if client, ok := clientRequestID(sent); ok {
				rc.ClientRequestID = client
				ctx = context.WithValue(ctx, keyClientRequestID, client)
			} else {
				s.log.DebugContext(ctx, "client's X-Request-ID dropped", "headers", len(sent), "bytes", len(sent[0]))
			}
		}
		ctx = app.WithRequest(ctx, rc)
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// clientRequestID returns the client's request id if the X-Request-ID headers sent are one of 1
// to maxClientRequestID visible ASCII characters (no spaces or control characters).
func clientRequestID(sent []string) (string, bool) {
	if len(sent) != 1 || len(sent[0]) == 0 || len(sent[0]) > maxClientRequestID {
		return "", false
	}
	v := sent[0]
	for i := range len(v) {
		if c := v[i]; c <= ' ' || c > '~' {
			return "", false
		}
	}
	return v, true
}

func (s *Server) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.log.ErrorContext(r.Context(), "panic serving request", "panic", v, "stack", string(debug.Stack()))
				writeJSON(w, http.StatusInternalServerError, errorBody{Errors: "internal error"})
			}
		}()
		next.ServeHTTP(w, r)
	})
}

type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (sr *statusRecorder) WriteHeader(code int) {
	sr.code = code
	sr.ResponseWriter.WriteHeader(code)
}

// accessLog logs every request at debug level, and client errors at info, with the route
// pattern (not the raw path) so log lines group by endpoint. A client that went away is no
// error: debug.
func (s *Server) accessLog(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
		next.ServeHTTP(rec, r)
		level := slog.LevelDebug
		if rec.code >= 400 && rec.code < 500 && rec.code != statusClientClosedRequest {
			level = slog.LevelInfo
		}
		if !s.log.Enabled(r.Context(), level) {
			return
		}
		route := chi.RouteContext(r.Context()).RoutePattern()
		s.log.Log(r.Context(), level, "request", "method", r.Method, "route", route,
			"status", rec.code, "duration_ms", float64(time.Since(start).Microseconds())/1000)
	})
}

// observe reports each request to Deps.Requests under its route pattern, never the raw path,
// so that the number of series stays bounded. It is the outermost middleware: a panic the
// recoverer turned into a 500 counts as that 500.
func (s *Server) observe(next http.Handler) http.Handler {
	if s.Requests == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
		next.ServeHTTP(rec, r)
		s.Requests.ObserveRequest(r.Method, chi.RouteContext(r.Context()).RoutePattern(), rec.code, time.Since(start))
	})
}

func (s *Server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := r.Header.Get("Authorization")
		token, ok := strings.CutPrefix(h, "Bearer ")
		if !ok || strings.TrimSpace(token) == "" {
			s.writeError(w, r, errorf(errUnauthorized, "missing bearer token"))
			return
		}
		claims, err := s.Verifier.Verify(strings.TrimSpace(token))
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), keyClaims, claims)))
	})
}

func claimsOf(r *http.Request) auth.Claims {
	c, _ := r.Context().Value(keyClaims).(auth.Claims)
	return c
}
