package main

// End-to-end harness: the real service (startService) on a free port against the package's own
// migrated database, driven over real HTTP. Every response that passes through apiClient is
// validated against the embedded OpenAPI document; a status the document does not list fails
// the test.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/ledger/ledger/httpapi"
	"github.com/ledger/ledger/internal/pgtest"
	"github.com/ledger/ledger/projections"
)

var db *pgtest.Database

func TestMain(m *testing.M) {
	os.Exit(pgtest.Main(m, "cmd", &db))
}

// testPassword is the password of every employee the suite creates.
const testPassword = "correct horse battery staple"

// catalog is the contract's price list.
var catalog = map[string]int64{
	"t-shirt": 80, "cup": 20, "book": 50, "pen": 10, "powerbank": 200,
	"hoody": 300, "umbrella": 200, "socks": 10, "wallet": 50, "pink-hoody": 500,
}

// cheapItems are the items of the company's load workload.
var cheapItems = []string{"cup", "book", "pen", "socks", "wallet"}

func init() {
	// The document describes /api/openapi.yaml as a string of YAML; the library's YAML decoder
	// would turn the body into a map and then compare it with `type: string`. Keep it a string.
	openapi3filter.RegisterBodyDecoder("application/yaml", func(r io.Reader, _ http.Header, _ *openapi3.SchemaRef, _ openapi3filter.EncodingFn) (any, error) {
		b, err := io.ReadAll(r)
		return string(b), err
	})
}

// uniq returns prefix with a random suffix, so tests sharing the database never collide.
func uniq(prefix string) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return prefix + "-" + hex.EncodeToString(b[:])
}

// lockedBuffer collects the service's log lines; they are shown when a test fails.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testService is a running ledger for one test.
type testService struct {
	svc                                 *service
	cfg                                 serveConfig
	signingKeyFile, verificationKeyFile string
	api                                 *apiClient
	logs                                *lockedBuffer
}

func startTestService(t *testing.T, adjust ...func(*serveConfig)) *testService {
	t.Helper()
	dir := t.TempDir()
	cfg := serveConfig{
		Host:                "127.0.0.1",
		Port:                0,
		DatabaseURL:         db.URL,
		SigningKeyFile:      filepath.Join(dir, "keys", "jwt-signing.pem"),
		VerificationKeyFile: filepath.Join(dir, "keys", "jwt-verification.pem"),
		TokenTTL:            time.Hour,
		RunAPI:              true,
		RunProjectors:       true,
		LogLevel:            "warn",
		DBMaxConns:          16, // the server is shared with other test packages
		AppendWriters:       4,
		ReadSlots:           4,
		PollSpacing:         projections.DefaultPollSpacing,
		ShutdownTimeout:     20 * time.Second,
		RequestTimeout:      httpapi.DefaultRequestTimeout,
		MaxConnections:      defaultMaxConnections,
	}
	for _, a := range adjust {
		a(&cfg)
	}
	if err := cfg.validate(); err != nil {
		t.Fatalf("test configuration: %v", err)
	}
	logs := &lockedBuffer{}
	level, _ := cfg.level()
	svc, err := startService(context.Background(), cfg, newLogger(logs, level))
	if err != nil {
		t.Fatalf("start service: %v", err)
	}
	t.Cleanup(func() {
		if err := svc.Close(); err != nil {
			t.Errorf("close service: %v", err)
		}
		if t.Failed() {
			out := logs.String()
			if len(out) > 20_000 {
				out = "…" + out[len(out)-20_000:]
			}
			t.Logf("service log:\n%s", out)
		}
	})
	for _, f := range []string{cfg.SigningKeyFile, cfg.VerificationKeyFile} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("key file was not created: %v", err)
		}
	}
	// The package database's admin, made as an operator makes one: tests log in as "admin".
	if cfg.DatabaseURL == db.URL {
		ensureAdmin(t, db.URL)
	}
	ts := &testService{svc: svc, cfg: cfg, signingKeyFile: cfg.SigningKeyFile,
		verificationKeyFile: cfg.VerificationKeyFile, api: newAPIClient(t, "http://"+svc.addr), logs: logs}
	ts.api.waitReady(t)
	return ts
}

// apiClient is the suite's only way to talk HTTP to a ledger.
type apiClient struct {
	base   string
	hc     *http.Client
	router routers.Router
	errDoc *openapi3.Schema
	// busyOK leaves 500 "account is busy" answers to the caller instead of failing the test.
	busyOK bool
	// lateOK leaves 503 "could not answer in time" answers (the request deadline passed on a
	// saturated machine) to the caller instead of failing the test.
	lateOK bool
}

// isBusy reports the service's answer for a command that lost the race for its account too
// often: a 500 that names the account as busy.
func (r response) isBusy() bool {
	return r.Status == http.StatusInternalServerError && strings.Contains(r.errMsg(), "busy")
}

func newAPIClient(t testing.TB, base string) *apiClient {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromData(httpapi.OpenAPI)
	if err != nil {
		t.Fatalf("load OpenAPI document: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("OpenAPI document is invalid: %v", err)
	}
	// Route requests to the server under test rather than the document's example server.
	doc.Servers = openapi3.Servers{{URL: base}}
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatalf("OpenAPI router: %v", err)
	}
	errSchema := doc.Components.Schemas["ErrorResponse"]
	if errSchema == nil || errSchema.Value == nil {
		t.Fatal("OpenAPI document has no ErrorResponse schema")
	}
	return &apiClient{
		base:   base,
		router: router,
		errDoc: errSchema.Value,
		hc: &http.Client{
			// A guard against a hung server, not a performance expectation.
			Timeout:   2 * time.Minute,
			Transport: &http.Transport{MaxIdleConns: 128, MaxIdleConnsPerHost: 128, MaxConnsPerHost: 128},
		},
	}
}

// response is a fully read HTTP response.
type response struct {
	Method, Path string
	Status       int
	Header       http.Header
	Body         []byte
}

func (r response) String() string {
	body := string(r.Body)
	if len(body) > 300 {
		body = body[:300] + "…"
	}
	return fmt.Sprintf("%s %s → %d %s", r.Method, r.Path, r.Status, body)
}

// errMsg returns the {"errors": "..."} message of an error response ("" when there is none).
func (r response) errMsg() string {
	var e struct {
		Errors *string `json:"errors"`
	}
	if json.Unmarshal(r.Body, &e) != nil || e.Errors == nil {
		return ""
	}
	return *e.Errors
}

// newRequest builds a request. body is nil (none), []byte or string (sent as is), or any other
// value (sent as its JSON). token "" sends no Authorization header.
func (c *apiClient) newRequest(t testing.TB, method, path, token string, body any) *http.Request {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	case string:
		rd = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatalf("marshal request body: %v", err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		t.Fatalf("build request %s %s: %v", method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return req
}

// do sends a request and validates the response. Safe to call from many goroutines: problems
// are reported with t.Errorf, and a transport failure returns Status 0.
func (c *apiClient) do(t testing.TB, method, path, token string, body any) response {
	t.Helper()
	return c.send(t, c.newRequest(t, method, path, token, body))
}

// send sends req, which must be an operation of the OpenAPI document, and validates the
// response against it.
func (c *apiClient) send(t testing.TB, req *http.Request) response {
	t.Helper()
	return c.roundTrip(t, req, false)
}

// sendUnrouted sends req to a path the document does not describe; the response must be a
// JSON error body of the document's ErrorResponse schema.
func (c *apiClient) sendUnrouted(t testing.TB, req *http.Request) response {
	t.Helper()
	return c.roundTrip(t, req, true)
}

func (c *apiClient) roundTrip(t testing.TB, req *http.Request, unrouted bool) response {
	t.Helper()
	resp, err := c.hc.Do(req)
	r := response{Method: req.Method, Path: req.URL.RequestURI()}
	if err != nil {
		t.Errorf("%s %s: %v", req.Method, r.Path, err)
		return r
	}
	defer resp.Body.Close()
	r.Status, r.Header = resp.StatusCode, resp.Header
	if r.Body, err = io.ReadAll(resp.Body); err != nil {
		t.Errorf("%s %s: read body: %v", req.Method, r.Path, err)
		return r
	}

	route, params, ferr := c.router.FindRoute(req)
	switch {
	case unrouted && ferr == nil:
		t.Errorf("%s %s: expected a path outside the OpenAPI document, but it has route %s", req.Method, r.Path, route.Path)
	case unrouted:
		c.checkErrorBody(t, r)
	case ferr != nil:
		t.Errorf("%s %s: not an operation of the OpenAPI document: %v", req.Method, r.Path, ferr)
	default:
		in := &openapi3filter.ResponseValidationInput{
			RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route},
			Status:                 r.Status,
			Header:                 r.Header,
			Body:                   io.NopCloser(bytes.NewReader(r.Body)),
			Options:                &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
		}
		if verr := openapi3filter.ValidateResponse(context.Background(), in); verr != nil {
			t.Errorf("response does not match the OpenAPI document: %v\n%s", verr, r)
		}
		if r.Status >= 400 && route.Path != "/api/ready" {
			c.checkErrorBody(t, r)
		}
	}
	// The contract: 5xx must never be caused by client input, and this suite sends nothing else.
	if r.Status >= 500 && !(r.Status == http.StatusServiceUnavailable && req.URL.Path == "/api/ready") && !(c.busyOK && r.isBusy()) &&
		!(c.lateOK && r.Status == http.StatusServiceUnavailable) {
		t.Errorf("server error: %s", r)
	}
	return r
}

// checkErrorBody asserts the contract's error body: JSON {"errors": "<non-empty message>"}.
func (c *apiClient) checkErrorBody(t testing.TB, r response) {
	t.Helper()
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("error response with Content-Type %q, want application/json: %s", ct, r)
	}
	var v any
	if err := json.Unmarshal(r.Body, &v); err != nil {
		t.Errorf("error response is not JSON (%v): %s", err, r)
		return
	}
	if err := c.errDoc.VisitJSON(v); err != nil {
		t.Errorf("error response does not match ErrorResponse: %v: %s", err, r)
	}
	if strings.TrimSpace(r.errMsg()) == "" {
		t.Errorf("error response without a message: %s", r)
	}
}

// waitReady polls /api/ready until it answers 200: the projectors start in the background.
func (c *apiClient) waitReady(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		r := c.do(t, http.MethodGet, "/api/ready", "", nil)
		if r.Status == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("service never became ready: %s", r)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ---- contract operations ----

func (c *apiClient) auth(t testing.TB, username, password string) response {
	t.Helper()
	return c.do(t, http.MethodPost, "/api/auth", "", map[string]string{"username": username, "password": password})
}

// login authenticates (creating the employee on first use) and returns the token.
func (c *apiClient) login(t testing.TB, username string) string {
	t.Helper()
	r := c.auth(t, username, testPassword)
	if r.Status != http.StatusOK {
		t.Fatalf("auth %q: %s", username, r)
	}
	tok := tokenOf(t, r)
	if tok == "" {
		t.FailNow()
	}
	return tok
}

// tokenOf returns the token of a 200 /api/auth response ("" after t.Errorf when it has none).
func tokenOf(t testing.TB, r response) string {
	t.Helper()
	var body struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(r.Body, &body); err != nil || body.Token == "" {
		t.Errorf("no token in %s", r)
		return ""
	}
	return body.Token
}

type holding struct {
	Type     string `json:"type"`
	Quantity int64  `json:"quantity"`
}

type receivedEntry struct {
	FromUser string `json:"fromUser"`
	Amount   int64  `json:"amount"`
}

type sentEntry struct {
	ToUser string `json:"toUser"`
	Amount int64  `json:"amount"`
}

type info struct {
	Coins       int64     `json:"coins"`
	Inventory   []holding `json:"inventory"`
	CoinHistory struct {
		Received []receivedEntry `json:"received"`
		Sent     []sentEntry     `json:"sent"`
	} `json:"coinHistory"`
}

// items returns the inventory as item → quantity.
func (in info) items() map[string]int64 {
	m := map[string]int64{}
	for _, h := range in.Inventory {
		m[h.Type] += h.Quantity
	}
	return m
}

// canonical returns the info with its lists sorted, for order-insensitive comparison.
func (in info) canonical() info {
	out := in
	out.Inventory = append([]holding{}, in.Inventory...)
	sort.Slice(out.Inventory, func(i, j int) bool { return out.Inventory[i].Type < out.Inventory[j].Type })
	out.CoinHistory.Received = append([]receivedEntry{}, in.CoinHistory.Received...)
	sort.Slice(out.CoinHistory.Received, func(i, j int) bool {
		a, b := out.CoinHistory.Received[i], out.CoinHistory.Received[j]
		return a.FromUser < b.FromUser || (a.FromUser == b.FromUser && a.Amount < b.Amount)
	})
	out.CoinHistory.Sent = append([]sentEntry{}, in.CoinHistory.Sent...)
	sort.Slice(out.CoinHistory.Sent, func(i, j int) bool {
		a, b := out.CoinHistory.Sent[i], out.CoinHistory.Sent[j]
		return a.ToUser < b.ToUser || (a.ToUser == b.ToUser && a.Amount < b.Amount)
	})
	return out
}

func (in info) String() string {
	b, _ := json.Marshal(in.canonical())
	return string(b)
}

// tryInfo fetches /api/info; ok is false (after t.Errorf) when it was not a 200 with a body.
func (c *apiClient) tryInfo(t testing.TB, token string) (info, bool) {
	t.Helper()
	r := c.do(t, http.MethodGet, "/api/info", token, nil)
	if r.Status != http.StatusOK {
		t.Errorf("info: %s", r)
		return info{}, false
	}
	var in info
	if err := json.Unmarshal(r.Body, &in); err != nil {
		t.Errorf("info: decode: %v: %s", err, r)
		return info{}, false
	}
	return in, true
}

func (c *apiClient) info(t testing.TB, token string) info {
	t.Helper()
	in, ok := c.tryInfo(t, token)
	if !ok {
		t.FailNow()
	}
	return in
}

func (c *apiClient) sendCoin(t testing.TB, token, toUser string, amount any) response {
	t.Helper()
	return c.do(t, http.MethodPost, "/api/sendCoin", token, map[string]any{"toUser": toUser, "amount": amount})
}

func (c *apiClient) buy(t testing.TB, token, item string) response {
	t.Helper()
	return c.do(t, http.MethodGet, "/api/buy/"+url.PathEscape(item), token, nil)
}

func (c *apiClient) grant(t testing.TB, token string, body any) response {
	t.Helper()
	return c.do(t, http.MethodPost, "/api/admin/grant", token, body)
}

// ---- assertions ----

// wantOK asserts a 200 with the contract's empty body.
func wantOK(t testing.TB, r response) {
	t.Helper()
	if r.Status != http.StatusOK {
		t.Fatalf("want 200, got %s", r)
	}
	if len(bytes.TrimSpace(r.Body)) != 0 {
		t.Errorf("want an empty body on 200, got %s", r)
	}
}

// wantStatus asserts the status and, when contains is not empty, that the error message
// contains each of the given substrings (case-insensitive).
func wantStatus(t testing.TB, r response, status int, contains ...string) {
	t.Helper()
	if r.Status != status {
		t.Errorf("want %d, got %s", status, r)
		return
	}
	msg := strings.ToLower(r.errMsg())
	for _, s := range contains {
		if !strings.Contains(msg, strings.ToLower(s)) {
			t.Errorf("want a message containing %q, got %s", s, r)
		}
	}
}

// wantSameInfo asserts that an account did not change.
func wantSameInfo(t testing.TB, who string, before, after info) {
	t.Helper()
	if before.String() != after.String() {
		t.Errorf("%s changed:\nbefore %s\nafter  %s", who, before, after)
	}
}
