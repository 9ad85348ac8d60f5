package httpapi

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"

	"github.com/ledger/ledger/domain"
	"github.com/ledger/ledger/eventstore"
	"github.com/ledger/ledger/internal/app"
	"github.com/ledger/ledger/internal/audit"
	"github.com/ledger/ledger/internal/auth"
)

// Auditor is what the audit endpoints and /api/info?asOf need of the application layer. The
// server finds it on its Ledger; a Ledger without it answers those requests with 404.
type Auditor interface {
	InfoAsOf(ctx context.Context, accountID uuid.UUID, at app.AsOf) (app.Info, error)
	AccountEvents(ctx context.Context, accountID uuid.UUID, after int64, limit int) ([]eventstore.RecordedEvent, error)
	AuditLog(ctx context.Context, after eventstore.Checkpoint, limit int) ([]eventstore.RecordedEvent, error)
}

var _ Auditor = (*app.App)(nil)

// Limits of the audit endpoints' pages.
const (
	defaultAccountEvents = 100
	maxAccountEvents     = 1_000
	defaultLogEvents     = 10_000
	maxLogEvents         = 1_000_000
	// logPage is how many events the log stream reads, writes and flushes at a time.
	logPage = 1_000
	// logWriteWindow is how long the client may take to accept one page of the log stream; the
	// server's write timeout would otherwise cut a long stream off.
	logWriteWindow = 30 * time.Second
)

func (s *Server) auditor() (Auditor, error) {
	a, ok := s.Ledger.(Auditor)
	if !ok {
		return nil, errorf(errNotFound, "auditing is not available")
	}
	return a, nil
}

// info answers /api/info: the account now, or as of the asOf parameter when there is one.
func (s *Server) info(r *http.Request, accountID uuid.UUID) (app.Info, error) {
	if hasParam(r, "asOf") {
		return s.infoAsOf(r, accountID)
	}
	return s.Ledger.Info(r.Context(), accountID)
}

// infoAsOf answers /api/info?asOf=: the caller's account as it was at a past time or log
// position.
func (s *Server) infoAsOf(r *http.Request, accountID uuid.UUID) (app.Info, error) {
	q, err := query(r, "asOf")
	if err != nil {
		return app.Info{}, err
	}
	at, err := parseAsOf(q.Get("asOf"))
	if err != nil {
		return app.Info{}, err
	}
	a, err := s.auditor()
	if err != nil {
		return app.Info{}, err
	}
	return a.InfoAsOf(r.Context(), accountID, at)
}

// ParseAsOf reads the asOf of /api/info, an RFC 3339 time or a global log position, for every
// front end that travels in time.
func ParseAsOf(v string) (app.AsOf, error) { return parseAsOf(v) }

// parseAsOf reads an RFC 3339 time or a global log position.
func parseAsOf(v string) (app.AsOf, error) {
	if v == "" {
		return app.AsOf{}, errorf(errBadRequest, "asOf is empty: want an RFC 3339 time (2006-01-02T15:04:05Z) or a log position (a non-negative integer)")
	}
	if strings.Trim(v, "0123456789") == "" {
		pos, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return app.AsOf{}, errorf(errBadRequest, "asOf %q: a log position must fit in 64 bits", v)
		}
		return app.AtPosition(pos), nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil && strings.Contains(v, " ") {
		// An unencoded "+01:00" arrives as " 01:00".
		t, err = time.Parse(time.RFC3339Nano, strings.ReplaceAll(v, " ", "+"))
	}
	if err != nil {
		return app.AsOf{}, errorf(errBadRequest, "asOf %q: want an RFC 3339 time (2006-01-02T15:04:05Z, with the + of an offset encoded as %%2B) or a log position (a non-negative integer)", v)
	}
	return app.AtTime(t), nil
}

type accountEventsResponse struct {
	Username  string         `json:"username"`
	AccountID uuid.UUID      `json:"accountId"`
	StreamID  string         `json:"streamId"`
	Events    []audit.Record `json:"events"`
	// Next is the after of the next page, nil on the last one.
	Next *int64 `json:"next"`
}

// handleAccountEvents pages through one account's events, for its owner and for auditors and
// admins.
func (s *Server) handleAccountEvents(w http.ResponseWriter, r *http.Request) error {
	username, err := pathParam(r, "username")
	if err != nil {
		return err
	}
	c := claimsOf(r)
	own := c.Username == username
	if !own {
		// The same answer whether or not the employee exists: no one learns who does.
		if err := s.requireRole(r, "reading another employee's events", auth.RoleAuditor, auth.RoleAdmin); err != nil {
			return err
		}
	}
	q, err := query(r, "after", "limit")
	if err != nil {
		return err
	}
	after, err := intParam(q, "after", 0, 0, 1<<62, "a stream version")
	if err != nil {
		return err
	}
	limit, err := intParam(q, "limit", defaultAccountEvents, 1, maxAccountEvents, "a page size")
	if err != nil {
		return err
	}
	a, err := s.auditor()
	if err != nil {
		return err
	}
	id, err := s.Ledger.AccountID(r.Context(), username)
	if errors.Is(err, domain.ErrUnknownAccount) {
		if !own {
			err = errorf(errNotFound, "no employee named %q", username)
		} else {
			err = errorf(errUnauthorized, "unknown employee") // a valid token for a vanished account
		}
	}
	if err != nil {
		return err
	}
	// One event more than asked tells whether there is a next page.
	events, err := a.AccountEvents(r.Context(), id, after, int(limit)+1)
	if err != nil {
		return err
	}
	resp := accountEventsResponse{Username: username, AccountID: id, StreamID: domain.StreamID(id),
		Events: make([]audit.Record, 0, min(len(events), int(limit)))}
	if len(events) > int(limit) {
		events = events[:limit]
		next := events[len(events)-1].Version
		resp.Next = &next
	}
	for _, e := range events {
		resp.Events = append(resp.Events, audit.RecordOf(e))
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

// handleAuditLog streams the global log as newline-delimited JSON, for auditors and admins. It
// reads, writes and flushes a page at a time, so the client sees lines as they come and the
// server holds one page, however many are asked for; the client resumes after the last line's
// checkpoint. It stops early, with fewer lines than the limit, where the readable log ends.
func (s *Server) handleAuditLog(w http.ResponseWriter, r *http.Request) error {
	if err := s.requireRole(r, "reading the log", auth.RoleAuditor, auth.RoleAdmin); err != nil {
		return err
	}
	q, err := query(r, "after", "limit")
	if err != nil {
		return err
	}
	var after eventstore.Checkpoint
	if q.Has("after") {
		if after, err = eventstore.ParseCheckpoint(q.Get("after")); err != nil {
			return errorf(errBadRequest, "after %q: want a checkpoint transaction:position, as the lines carry", q.Get("after"))
		}
	}
	limit, err := intParam(q, "limit", defaultLogEvents, 1, maxLogEvents, "a number of events")
	if err != nil {
		return err
	}
	a, err := s.auditor()
	if err != nil {
		return err
	}
	ctx := r.Context()
	// The first page is read before the status is sent, so that a failure is still an error
	// response; after that, a failure can only cut the stream short.
	page, err := a.AuditLog(ctx, after, int(min(limit, logPage)))
	if err != nil {
		return err
	}
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	lw := audit.NewLineWriter(w)
	for sent := int64(0); ; {
		_ = rc.SetWriteDeadline(time.Now().Add(logWriteWindow)) // not every writer has deadlines; then the server's timeout stands
		for _, e := range page {
			if err := lw.Write(e); err != nil {
				return nil // the client went away
			}
		}
		if err := lw.Flush(); err != nil {
			return nil
		}
		_ = rc.Flush() // a writer that cannot flush sends everything at the end: still correct
		sent += int64(len(page))
		if len(page) < logPage || sent >= limit {
			return nil
		}
		step, cancel := s.stepContext(r)
		page, err = a.AuditLog(step, page[len(page)-1].Checkpoint(), int(min(limit-sent, logPage)))
		cancel()
		if err != nil {
			s.log.ErrorContext(ctx, "audit log stream cut short", "err", err, "after", after.String(), "sent", sent)
			panic(http.ErrAbortHandler) // the client sees a broken stream, never a clean end
		}
	}
}

// Unwrap gives http.ResponseController the writer under the access log's recorder, so that a
// streaming handler can flush and extend its write deadline.
func (sr *statusRecorder) Unwrap() http.ResponseWriter { return sr.ResponseWriter }

// query parses the query string strictly and refuses a parameter of names given twice.
func query(r *http.Request, names ...string) (url.Values, error) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, errorf(errBadRequest, "malformed query string: %v", err)
	}
	for _, n := range names {
		if len(q[n]) > 1 {
			return nil, errorf(errBadRequest, "%s is given %d times", n, len(q[n]))
		}
	}
	return q, nil
}

// intParam reads an optional integer parameter in [lo, hi].
func intParam(q url.Values, name string, def, lo, hi int64, what string) (int64, error) {
	if !q.Has(name) {
		return def, nil
	}
	v := q.Get(name)
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < lo || n > hi {
		return 0, errorf(errBadRequest, "%s %q: want %s, an integer from %d to %d", name, v, what, lo, hi)
	}
	return n, nil
}

// pathParam returns a path parameter decoded: chi matches the escaped path when the request has
// one (a "/" written as %2F), and then leaves the parameter escaped. Escapes can spell what no
// name holds (%00, %ff): such a parameter is refused before any query sees it.
func pathParam(r *http.Request, name string) (string, error) {
	v := chi.URLParam(r, name)
	if r.URL.RawPath != "" {
		d, err := url.PathUnescape(v)
		if err != nil {
			return "", errorf(errBadRequest, "%s: malformed escape in the path", name)
		}
		v = d
	}
	if err := storable(name, v); err != nil {
		return "", err
	}
	return v, nil
}

// hasParam reports whether the query names the parameter, even with a value that does not
// parse: such a request must be refused, not served as if the parameter were absent.
func hasParam(r *http.Request, name string) bool {
	for _, kv := range strings.Split(r.URL.RawQuery, "&") {
		k, _, _ := strings.Cut(kv, "=")
		if d, err := url.QueryUnescape(k); k == name || (err == nil && d == name) {
			return true
		}
	}
	return false
}
