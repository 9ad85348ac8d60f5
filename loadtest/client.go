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

// newHTTPClient returns a client tuned for many concurrent keep-alive requests to one host:
// every connection it opens stays idle in the pool for reuse (the default keeps only two per
// host, which turns a busy load into a storm of new connections), and the number of
// connections is bounded so that an overloaded server queues requests in the client instead of
// exhausting ports; that queueing counts in the latency, measured from the scheduled time.
func newHTTPClient(maxConns int, timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:          maxConns,
			MaxIdleConnsPerHost:   maxConns,
			MaxConnsPerHost:       maxConns,
			IdleConnTimeout:       90 * time.Second,
			ResponseHeaderTimeout: timeout,
			DisableCompression:    true,
		},
	}
}

// api sends the workload's requests as the seeded employees.
type api struct {
	http    *http.Client
	base    string
	names   []string
	bearers []string // "Bearer <token>", by employee
}

func newAPI(hc *http.Client, base string, names, tokens []string) *api {
	b := make([]string, len(tokens))
	for i, t := range tokens {
		b[i] = "Bearer " + t
	}
	return &api{http: hc, base: strings.TrimRight(base, "/"), names: names, bearers: b}
}

type sendCoinBody struct {
	ToUser string `json:"toUser"`
	Amount int64  `json:"amount"`
}

// do sends q and reads the whole answer. It returns the status and, for an error answer, the
// contract's error message; err is a failure to get an answer at all.
func (a *api) do(ctx context.Context, q request) (status int, message string, err error) {
	var req *http.Request
	switch q.op {
	case opInfo:
		req, err = http.NewRequestWithContext(ctx, http.MethodGet, a.base+"/api/info", nil)
	case opBuy:
		req, err = http.NewRequestWithContext(ctx, http.MethodGet, a.base+"/api/buy/"+url.PathEscape(q.item), nil)
	case opSend:
		body, merr := json.Marshal(sendCoinBody{ToUser: a.names[q.to], Amount: q.amount})
		if merr != nil {
			return 0, "", merr
		}
		req, err = http.NewRequestWithContext(ctx, http.MethodPost, a.base+"/api/sendCoin", bytes.NewReader(body))
		if err == nil {
			req.Header.Set("Content-Type", "application/json")
		}
	default:
		return 0, "", fmt.Errorf("unknown operation %v", q.op)
	}
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Authorization", a.bearers[q.user])
	resp, err := a.http.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	// Read it all, so the connection goes back to the pool; a sane answer is far smaller.
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return resp.StatusCode, "", err
	}
	if resp.StatusCode == http.StatusOK {
		return resp.StatusCode, "", nil
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
