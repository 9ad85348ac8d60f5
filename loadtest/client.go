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

// newTransport returns a transport tuned for many concurrent keep-alive requests to one host:
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

// api sends the workload's requests as the seeded employees. It calls the transport itself
// rather than an http.Client: the API answers without redirects, and the client's redirect
// bookkeeping, header copies and timer (each request has a deadline of its own) cost the
// generator CPU on every request for nothing.
type api struct {
	rt      http.RoundTripper
	names   []string
	bearers [][]string // the Authorization header's value, "Bearer <token>", by employee
	info    *url.URL
	buy     map[string]*url.URL // by item
	send    *url.URL
}

// jsonContent is the Content-Type of a sendCoin; requests share it, and the transport only
// reads it.
var jsonContent = []string{"application/json"}

func newAPI(rt http.RoundTripper, base string, names, tokens, items []string) (*api, error) {
	base = strings.TrimRight(base, "/")
	a := &api{rt: rt, names: names, bearers: make([][]string, len(tokens)), buy: make(map[string]*url.URL, len(items))}
	for i, t := range tokens {
		a.bearers[i] = []string{"Bearer " + t}
	}
	var err error
	if a.info, err = url.Parse(base + "/api/info"); err != nil {
		return nil, fmt.Errorf("target URL: %w", err)
	}
	if a.send, err = url.Parse(base + "/api/sendCoin"); err != nil {
		return nil, fmt.Errorf("target URL: %w", err)
	}
	for _, item := range items {
		if a.buy[item], err = url.Parse(base + "/api/buy/" + url.PathEscape(item)); err != nil {
			return nil, fmt.Errorf("target URL: %w", err)
		}
	}
	return a, nil
}

type sendCoinBody struct {
	ToUser string `json:"toUser"`
	Amount int64  `json:"amount"`
}

// do sends q and reads the whole answer. It returns the status and, for an error answer, the
// contract's error message; err is a failure to get an answer at all, or to read all of it.
func (a *api) do(ctx context.Context, q request) (status int, message string, err error) {
	// The URLs and header values are built once and shared: the transport only reads them.
	req := &http.Request{Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{"Authorization": a.bearers[q.user]}}
	switch q.op {
	case opInfo:
		req.Method, req.URL = http.MethodGet, a.info
	case opBuy:
		req.Method, req.URL = http.MethodGet, a.buy[q.item]
		if req.URL == nil {
			return 0, "", fmt.Errorf("item %q is not in the catalog the tool was given", q.item)
		}
	case opSend:
		body, err := json.Marshal(sendCoinBody{ToUser: a.names[q.to], Amount: q.amount})
		if err != nil {
			return 0, "", err
		}
		req.Method, req.URL = http.MethodPost, a.send
		req.Header["Content-Type"] = jsonContent
		req.ContentLength = int64(len(body))
		req.Body = io.NopCloser(bytes.NewReader(body))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	default:
		return 0, "", fmt.Errorf("unknown operation %v", q.op)
	}
	req.Host = req.URL.Host
	resp, err := a.rt.RoundTrip(req.WithContext(ctx))
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	// Read it all, so the connection goes back to the pool; a sane answer is far smaller. A 200
	// is a success whatever it says, so it is only read, through a pooled buffer.
	limited := io.LimitReader(resp.Body, 1<<20)
	if resp.StatusCode == http.StatusOK {
		if _, err := io.Copy(io.Discard, limited); err != nil {
			return resp.StatusCode, "", err
		}
		return resp.StatusCode, "", nil
	}
	body, err := io.ReadAll(limited)
	if err != nil {
		return resp.StatusCode, "", err
	}
	return resp.StatusCode, errorMessage(body), nil
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
