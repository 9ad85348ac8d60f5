package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

// maxAnswer is the longest answer body the generator reads; no answer of the API comes near
// it. A longer one is an error.
const maxAnswer = 16 << 20

// maxIdle is how long a connection may wait in the pool: less than the ledger's own idle
// timeout (2 minutes), so that the generator rarely finds one the server has closed.
const maxIdle = 90 * time.Second

// api sends the workload's requests as the seeded employees through fasthttp's client for one
// host: the request's own goroutine writes it and reads the answer on a pooled keep-alive
// connection, which costs the generator far less CPU per request than net/http's Transport
// (docs/benchmarks.md has the numbers). At most maxConns connections are open; a request that
// finds none free waits for one, and that wait counts in its latency.
type api struct {
	hc      *fasthttp.HostClient
	names   []string
	bearers []string          // the Authorization header's value, "Bearer <token>", by employee
	info    string            // the routes' URLs
	buy     map[string]string // by item
	send    string
}

// newAPI returns the requests to the http or https URL base, over at most maxConns connections.
func newAPI(base string, maxConns int, names, tokens, items []string) (*api, error) {
	u, err := url.Parse(strings.TrimRight(base, "/"))
	if err != nil {
		return nil, fmt.Errorf("target URL: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("target URL %q: want http or https", base)
	}
	if maxConns < 1 {
		return nil, fmt.Errorf("at least one connection is needed, got %d", maxConns)
	}
	tls := u.Scheme == "https"
	a := &api{
		hc: &fasthttp.HostClient{
			Addr:                     fasthttp.AddMissingPort(u.Host, tls),
			IsTLS:                    tls,
			MaxConns:                 maxConns,
			MaxConnWaitTimeout:       time.Hour, // in effect: until the request's deadline
			MaxIdleConnDuration:      maxIdle,
			MaxResponseBodySize:      maxAnswer,
			NoDefaultUserAgentHeader: true,
			// Once more at most, and only what retryable allows.
			MaxIdemponentCallAttempts: 2,
			RetryIfErr: func(req *fasthttp.Request, _ int, err error) (bool, bool) {
				return false, retryable(req, err)
			},
		},
		names:   names,
		bearers: make([]string, len(tokens)),
		info:    u.String() + "/api/info",
		buy:     make(map[string]string, len(items)),
		send:    u.String() + "/api/sendCoin",
	}
	for i, t := range tokens {
		a.bearers[i] = "Bearer " + t
	}
	for _, item := range items {
		a.buy[item] = u.String() + "/api/buy/" + url.PathEscape(item)
	}
	return a, nil
}

// retryable decides whether a request that failed may be sent again: only an info, which
// changes nothing, and only when the server closed the connection before any byte of the
// answer (most likely it closed it while the connection sat idle in the pool). A buy or a
// sendCoin is never sent again, even when the server closed the connection without a word: it
// may have been received and committed. (A buy is a GET, but it spends coins.)
func retryable(req *fasthttp.Request, err error) bool {
	return string(req.URI().Path()) == "/api/info" &&
		(errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE))
}

// close closes the idle connections.
func (a *api) close() { a.hc.CloseIdleConnections() }

type sendCoinBody struct {
	ToUser string `json:"toUser"`
	Amount int64  `json:"amount"`
}

// do sends q, reads the whole answer, and gives up at deadline. It returns the status and, for
// an error answer, the contract's error message; err is a failure to get an answer at all, or
// to read all of it.
func (a *api) do(deadline time.Time, q request) (status int, message string, err error) {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	switch q.op {
	case opInfo:
		req.SetRequestURI(a.info)
	case opBuy:
		u, ok := a.buy[q.item]
		if !ok {
			return 0, "", fmt.Errorf("item %q is not in the catalog the tool was given", q.item)
		}
		req.SetRequestURI(u)
	case opSend:
		body, err := json.Marshal(sendCoinBody{ToUser: a.names[q.to], Amount: q.amount})
		if err != nil {
			return 0, "", err
		}
		req.SetRequestURI(a.send)
		req.Header.SetMethod(http.MethodPost)
		req.Header.SetContentType("application/json")
		req.SetBodyRaw(body)
	default:
		return 0, "", fmt.Errorf("unknown operation %v", q.op)
	}
	req.Header.Set("Authorization", a.bearers[q.user])
	if err := a.hc.DoDeadline(req, resp, deadline); err != nil {
		return 0, "", err
	}
	status = resp.StatusCode()
	if status == http.StatusOK {
		// A success whatever it says.
		return status, "", nil
	}
	return status, errorMessage(resp.Body()), nil
}

// errorMessage is the contract's {"errors": "..."} message, or a short description of an
// answer that is not one.
func errorMessage(body []byte) string {
	var e struct {
		Errors string `json:"errors"`
	}
	if err := json.Unmarshal(body, &e); err == nil && e.Errors != "" {
		return e.Errors
	}
	if len(body) == 0 {
		return "(empty body)"
	}
	s := strings.TrimSpace(string(body))
	if len(s) > 80 {
		s = s[:80]
	}
	return "(not a contract error) " + s
}

// classify decides how a request ended, by the workload's rules: a 400 "not enough coin" on
// a command is a success.
func classify(o op, status int, message string, err error) (outcome, errKey) {
	switch {
	case err != nil:
		return outError, newErrKey(0, transportMessage(err))
	case status == http.StatusOK:
		return outOK, errKey{}
	case status == http.StatusBadRequest && o != opInfo && strings.Contains(message, "not enough coin"):
		return outNotEnoughCoin, errKey{}
	default:
		return outError, newErrKey(status, message)
	}
}

// transportMessage names a failure to get an answer without the address, which varies.
func transportMessage(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, fasthttp.ErrTimeout), errors.Is(err, fasthttp.ErrNoFreeConns), errors.Is(err, fasthttp.ErrDialTimeout),
		errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, fasthttp.ErrConnectionClosed), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed"
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		return fmt.Sprintf("answer longer than %d MiB", maxAnswer>>20)
	}
	return err.Error()
}
