package main

import (
	"bytes"
	"context"
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
)

// newTransport returns the transport of an https target's load and of the tool's one-off
// requests, tuned for many concurrent keep-alive requests to one host:
// every connection it opens stays idle in the pool for reuse (the default keeps only two per
// host, which turns a busy load into a storm of new connections), and the number of
// connections is bounded so that an overloaded server queues requests in the client instead of
// exhausting ports; that queueing counts in the latency, measured from the scheduled time.
func newTransport(maxConns int, timeout time.Duration) *http.Transport {
	return &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          maxConns,
		MaxIdleConnsPerHost:   maxConns,
		MaxConnsPerHost:       maxConns,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: timeout,
		DisableCompression:    true,
	}
}

// api sends the workload's requests as the seeded employees. To an http target it sends them
// through a connPool of its own, which costs the generator far less CPU per request than
// net/http's Transport. An https target goes through the Transport (the pool speaks no TLS),
// called directly rather than through an http.Client: the API answers without redirects, and
// the client's redirect bookkeeping, header copies and timer (each request has a deadline of
// its own) cost the generator CPU on every request for nothing.
type api struct {
	pool    *connPool // nil: the target is https, served by rt
	rt      http.RoundTripper
	names   []string
	bearers [][]string // the Authorization header's value, "Bearer <token>", by employee
	info    endpoint
	buy     map[string]endpoint // by item
	send    endpoint
}

// endpoint is a route as each client wants it.
type endpoint struct {
	url    *url.URL // for the Transport, which only reads it
	target string   // for the pool: the request target, escaped
}

// jsonContent is the Content-Type of a sendCoin; requests share it, and the transport only
// reads it.
var jsonContent = []string{"application/json"}

// newAPI returns the requests to base: through a pool of at most maxConns connections of its
// own when base is http, through rt when it is https.
func newAPI(rt http.RoundTripper, maxConns int, base string, names, tokens, items []string) (*api, error) {
	a, err := newTransportAPI(rt, base, names, tokens, items)
	if err != nil {
		return nil, err
	}
	if a.info.url.Scheme == "http" {
		if a.pool, err = newConnPool(a.info.url, maxConns); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// newTransportAPI returns the requests to base, all sent through the transport rt.
func newTransportAPI(rt http.RoundTripper, base string, names, tokens, items []string) (*api, error) {
	base = strings.TrimRight(base, "/")
	a := &api{rt: rt, names: names, bearers: make([][]string, len(tokens)), buy: make(map[string]endpoint, len(items))}
	for i, t := range tokens {
		a.bearers[i] = []string{"Bearer " + t}
	}
	var err error
	if a.info, err = parseEndpoint(base + "/api/info"); err != nil {
		return nil, err
	}
	if a.send, err = parseEndpoint(base + "/api/sendCoin"); err != nil {
		return nil, err
	}
	for _, item := range items {
		if a.buy[item], err = parseEndpoint(base + "/api/buy/" + url.PathEscape(item)); err != nil {
			return nil, err
		}
	}
	return a, nil
}

func parseEndpoint(s string) (endpoint, error) {
	u, err := url.Parse(s)
	if err != nil {
		return endpoint{}, fmt.Errorf("target URL: %w", err)
	}
	return endpoint{url: u, target: u.RequestURI()}, nil
}

// close closes the idle connections.
func (a *api) close() {
	if a.pool != nil {
		a.pool.close()
	}
}

type sendCoinBody struct {
	ToUser string `json:"toUser"`
	Amount int64  `json:"amount"`
}

// do sends q and reads the whole answer. It returns the status and, for an error answer, the
// contract's error message; err is a failure to get an answer at all, or to read all of it.
func (a *api) do(ctx context.Context, q request) (status int, message string, err error) {
	method, ep := http.MethodGet, endpoint{}
	var body []byte
	switch q.op {
	case opInfo:
		ep = a.info
	case opBuy:
		var ok bool
		if ep, ok = a.buy[q.item]; !ok {
			return 0, "", fmt.Errorf("item %q is not in the catalog the tool was given", q.item)
		}
	case opSend:
		if body, err = json.Marshal(sendCoinBody{ToUser: a.names[q.to], Amount: q.amount}); err != nil {
			return 0, "", err
		}
		method, ep = http.MethodPost, a.send
	default:
		return 0, "", fmt.Errorf("unknown operation %v", q.op)
	}
	// Both read at most maxAnswer bytes of the body; of a 200, which is a success whatever it
	// says, nothing is kept.
	var errBody []byte
	if a.pool != nil {
		status, errBody, err = a.pool.roundTrip(ctx, &wireRequest{
			method: method, target: ep.target, authorization: a.bearers[q.user][0], body: body,
			readOnly: q.op == opInfo,
		})
	} else {
		status, errBody, err = a.roundTripHTTP(ctx, method, ep.url, a.bearers[q.user], body)
	}
	switch {
	case err != nil:
		return status, "", err
	case status == http.StatusOK:
		return status, "", nil
	}
	return status, errorMessage(errBody), nil
}

// roundTripHTTP sends a request through rt and reads the answer as connPool.roundTrip does.
func (a *api) roundTripHTTP(ctx context.Context, method string, u *url.URL, bearer []string, body []byte) (int, []byte, error) {
	// The URL and header values are built once and shared: the transport only reads them.
	req := &http.Request{Method: method, URL: u, Host: u.Host, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{"Authorization": bearer}}
	if body != nil {
		req.Header["Content-Type"] = jsonContent
		req.ContentLength = int64(len(body))
		req.Body = io.NopCloser(bytes.NewReader(body))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	}
	resp, err := a.rt.RoundTrip(req.WithContext(ctx))
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	// Read it all, so the connection goes back to the pool; a 200's body only through a pooled
	// buffer.
	limited := io.LimitReader(resp.Body, maxAnswer)
	if resp.StatusCode == http.StatusOK {
		_, err := io.Copy(io.Discard, limited)
		return resp.StatusCode, nil, err
	}
	b, err := io.ReadAll(limited)
	if err != nil {
		return resp.StatusCode, nil, err
	}
	return resp.StatusCode, b, nil
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

// transportMessage names a failure to get an answer without the URL, which varies.
func transportMessage(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed"
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return err.Error()
}
