// Package console is the ledger's web console under /console/: server-rendered pages
// (html/template) for auditors, operators and employees, with every asset embedded in the
// binary. It signs people in with the API's own check and login limits, keeps sessions in the
// database, and reads through the application layer's queries, the same ones the API and the
// CLI use: the overview with the bank invariant, accounts and their history (a balance chart,
// the hash chain, time travel, downloads), the global log with a live tail, the projections
// with rebuilds, and the verifier, both with live progress.
package console

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"runtime/debug"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ledger/ledger/eventstore"
	"github.com/ledger/ledger/httpapi"
	"github.com/ledger/ledger/internal/app"
	"github.com/ledger/ledger/internal/audit"
	"github.com/ledger/ledger/internal/auth"
	"github.com/ledger/ledger/projections"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Prefix is where the console is mounted on the API's server.
const Prefix = "/console"

// Ledger is what the console reads and writes through the application layer.
type Ledger interface {
	AccountID(ctx context.Context, username string) (uuid.UUID, error)
	Info(ctx context.Context, accountID uuid.UUID) (app.Info, error)
	InfoAsOf(ctx context.Context, accountID uuid.UUID, at app.AsOf) (app.Info, error)
	AccountEvents(ctx context.Context, accountID uuid.UUID, after int64, limit int) ([]eventstore.RecordedEvent, error)
	ReadAccountEvents(ctx context.Context, accountID uuid.UUID, after int64, limit int, fn func(*eventstore.RecordedEvent)) error
	AuditLog(ctx context.Context, after eventstore.Checkpoint, limit int) ([]eventstore.RecordedEvent, error)
	AuditLogBefore(ctx context.Context, before eventstore.Checkpoint, limit int) ([]eventstore.RecordedEvent, error)
	Accounts(ctx context.Context, prefix, after string, limit int) ([]app.AccountSummary, error)
	Usernames(ctx context.Context, ids []uuid.UUID) (map[uuid.UUID]string, error)
	BankTotals(ctx context.Context, budget int64) (app.Totals, error)
	Roles(ctx context.Context, username string) (auth.Roles, error)
	CreateSession(ctx context.Context, username string, ttl time.Duration) (app.Session, error)
	SessionOf(ctx context.Context, token string) (app.Session, error)
	EndSession(ctx context.Context, token string) error
}

var _ Ledger = (*app.App)(nil)

// Deps are the console's collaborators.
type Deps struct {
	Ledger Ledger
	// SignIn checks a username and password under the API's login limits (httpapi's SignIn).
	SignIn func(r *http.Request, username, password string) (string, error)
	// SessionTTL is how long a session lasts: the lifetime of the API's tokens.
	SessionTTL time.Duration
	// Projections reports every projection's status.
	Projections func(ctx context.Context) ([]projections.Status, error)
	// Rebuild runs the rebuild `ledger projections rebuild` runs, reporting its progress.
	Rebuild func(ctx context.Context, name string, progress func(projections.RebuildProgress)) (projections.RebuildReport, error)
	// Verify runs the verifier `ledger audit verify` runs, reporting its progress.
	Verify func(ctx context.Context, progress func(done, total int64)) (*audit.Report, error)
	// Metrics are the numbers /metrics serves; the overview shows some of them.
	Metrics prometheus.Gatherer
	// Wake tells the live tail that the log may have grown.
	Wake app.Waker
	Log  *slog.Logger
}

// Console serves the pages.
type Console struct {
	Deps
	router chi.Router
	pages  map[string]*template.Template
	jobs   *jobs
	rates  commandRate
	// ending is closed when the server shuts down: streams end, so that the shutdown does not
	// wait for pages left open.
	ending  chan struct{}
	endOnce sync.Once
}

// New returns the console; Close stops the rebuilds and verifications it runs.
func New(d Deps) (*Console, error) {
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	c := &Console{Deps: d, jobs: newJobs(), ending: make(chan struct{})}
	if err := c.parseTemplates(); err != nil {
		return nil, err
	}
	static, err := fs.Sub(staticFS, "static")
	if err != nil {
		return nil, err
	}
	r := chi.NewRouter()
	r.Use(c.recoverer, securityHeaders)
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		c.fail(w, r, errorf(http.StatusNotFound, "there is no page at %s", r.URL.Path))
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		c.fail(w, r, errorf(http.StatusMethodNotAllowed, "%s is not allowed here", r.Method))
	})
	r.Handle("/static/*", http.StripPrefix(Prefix+"/static/", cacheStatic(http.FileServerFS(static))))
	r.Get("/signin", c.handleSignInForm)
	r.Post("/signin", c.page(c.handleSignIn))
	r.Group(func(r chi.Router) {
		r.Use(c.session)
		r.Post("/signout", c.page(c.handleSignOut))
		r.Get("/", c.only(c.handleOverview, auth.RoleAuditor, auth.RoleAdmin))
		r.Get("/overview.json", c.only(c.handleOverviewJSON, auth.RoleAuditor, auth.RoleAdmin))
		r.Get("/accounts", c.only(c.handleAccounts, auth.RoleAuditor, auth.RoleAdmin))
		r.Get("/accounts/{name}", c.page(c.handleAccount))
		r.Get("/accounts/{name}/events.ndjson", c.page(c.handleDownload(ndjsonDownload)))
		r.Get("/accounts/{name}/events.csv", c.page(c.handleDownload(csvDownload)))
		r.Get("/log", c.only(c.handleLog, auth.RoleAuditor, auth.RoleAdmin))
		r.Get("/log/tail", c.only(c.handleTail, auth.RoleAuditor, auth.RoleAdmin))
		r.Get("/projections", c.only(c.handleProjections, auth.RoleAuditor, auth.RoleAdmin))
		r.Post("/projections/rebuild", c.only(c.handleRebuild, auth.RoleAdmin))
		r.Get("/verify", c.only(c.handleVerify, auth.RoleAuditor, auth.RoleAdmin))
		r.Post("/verify", c.only(c.handleStartVerify, auth.RoleAuditor, auth.RoleAdmin))
		r.Get("/jobs/{id}/events", c.only(c.handleJobEvents, auth.RoleAuditor, auth.RoleAdmin))
	})
	c.router = r
	return c, nil
}

// ServeHTTP implements http.Handler.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) { c.router.ServeHTTP(w, r) }

// EndStreams ends the live tails and progress streams open now and refuses new ones; pass it
// to http.Server.RegisterOnShutdown.
func (c *Console) EndStreams() { c.endOnce.Do(func() { close(c.ending) }) }

// Close ends the streams, stops the jobs that are running and waits for them.
func (c *Console) Close() {
	c.EndStreams()
	c.jobs.close()
}

// pageError is an error with the status and message its page shows.
type pageError struct {
	code int
	msg  string
}

func (e *pageError) Error() string { return e.msg }

func errorf(code int, format string, args ...any) error {
	return &pageError{code: code, msg: fmt.Sprintf(format, args...)}
}

// handler is a console page's handler: it answers its own successes and returns its failures,
// which page renders (fail).
type handler func(w http.ResponseWriter, r *http.Request) error

// page makes h an http.HandlerFunc that renders h's error, if any, with fail.
func (c *Console) page(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			c.fail(w, r, err)
		}
	}
}

// fail renders err as a page: the console's own errors say what they are; anything else goes
// through the API's one error table, so that internal details stay in the log.
func (c *Console) fail(w http.ResponseWriter, r *http.Request, err error) {
	code, msg := httpapi.Status(err)
	var pe *pageError
	if errors.As(err, &pe) {
		code, msg = pe.code, pe.msg
	}
	if end := r.Context().Err(); end != nil && code >= 500 && pe == nil {
		code, msg = httpapi.Status(fmt.Errorf("%w: %w", end, err))
	}
	if wait, ok := httpapi.IsTooManyAttempts(err); ok {
		w.Header().Set("Retry-After", fmt.Sprint(int(wait.Seconds())))
	}
	if code >= 500 {
		c.Log.ErrorContext(r.Context(), "console request failed", "err", err, "method", r.Method, "path", r.URL.Path)
	}
	if code == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	c.render(w, r, code, "error", errorPage{Code: code, Status: http.StatusText(code), Message: msg})
}

type errorPage struct {
	Code            int
	Status, Message string
}

func (c *Console) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				c.Log.ErrorContext(r.Context(), "panic serving console page", "panic", v, "stack", string(debug.Stack()))
				c.fail(w, r, errorf(http.StatusInternalServerError, "the console failed to show this page; the error is in the server's log"))
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// securityHeaders keep the pages to their own origin: no inline script, no framing, nothing
// fetched from elsewhere.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
			"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "same-origin")
		next.ServeHTTP(w, r)
	})
}

func cacheStatic(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=300")
		next.ServeHTTP(w, r)
	})
}
