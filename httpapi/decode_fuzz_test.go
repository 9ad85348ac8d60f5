package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/google/uuid"

	"github.com/ledger/ledger/domain"
	"github.com/ledger/ledger/internal/app"
	"github.com/ledger/ledger/internal/auth"
	"github.com/ledger/ledger/internal/usernames"
)

// The decoding fuzz targets send arbitrary bodies, under arbitrary content types, through the
// real handler with the application layer faked: the fake refuses nothing and records what the
// handlers pass on, so every refusal comes from the HTTP edge and no database is needed. Next
// to the handler, each target computes the answer from the contract alone with a strict JSON
// reader (the oracle), and the two must agree: the same status, and on success the same values
// passed on to the application. The oracle ignores the content type: clients (curl -d among
// them) do not always send application/json, and the contract does not ask them to.

// alice exists, with fuzzPassword; the user token is hers, the admin token root's.
const (
	fuzzUser       = "alice"
	fuzzPassword   = "s3cret"
	fuzzAdmin      = "root"
	fuzzUserToken  = "fuzz-user-token"
	fuzzAdminToken = "fuzz-admin-token"
	fuzzHashPrefix = "hashed:" // what the fake hasher puts in front of a password
)

var fuzzUserID = uuid.MustParse("a11ce000-0000-4000-8000-00000000f022")

// fuzzLedger is the application layer for the decoding targets: alice exists, every other name
// is new, and commands succeed and are recorded.
type fuzzLedger struct {
	Ledger // everything else: these requests never reach it (a call would be a 500)
	calls  []fuzzCall
}

// fuzzCall is one call the handlers made, with the arguments that matter.
type fuzzCall struct {
	op                      string
	username, password      string
	toUser, reason, grantor string
	amount                  domain.Coins
}

func (l *fuzzLedger) LookupIdentity(_ context.Context, username string) (app.Identity, error) {
	if username == fuzzUser {
		return app.Identity{Username: fuzzUser, AccountID: fuzzUserID, PasswordHash: fuzzHashPrefix + fuzzPassword}, nil
	}
	return app.Identity{}, domain.ErrUnknownAccount
}

func (l *fuzzLedger) OpenAccount(_ context.Context, username, passwordHash string) (uuid.UUID, app.Result, error) {
	l.calls = append(l.calls, fuzzCall{op: "open", username: username, password: strings.TrimPrefix(passwordHash, fuzzHashPrefix)})
	return uuid.New(), app.Result{}, nil
}

func (l *fuzzLedger) AccountID(_ context.Context, username string) (uuid.UUID, error) {
	if username == fuzzUser {
		return fuzzUserID, nil
	}
	return uuid.Nil, domain.ErrUnknownAccount
}

func (l *fuzzLedger) Transfer(_ context.Context, from uuid.UUID, toUser string, amount domain.Coins) (app.Result, error) {
	if from != fuzzUserID {
		return app.Result{}, domain.ErrUnknownAccount
	}
	l.calls = append(l.calls, fuzzCall{op: "transfer", toUser: toUser, amount: amount})
	return app.Result{}, nil
}

func (l *fuzzLedger) Grant(_ context.Context, admin, toUser string, amount domain.Coins, reason string) (app.Result, error) {
	l.calls = append(l.calls, fuzzCall{op: "grant", grantor: admin, toUser: toUser, amount: amount, reason: reason})
	return app.Result{}, nil
}

// fuzzAuth fakes the password hasher, the token issuer and the verifier.
type fuzzAuth struct{}

func (fuzzAuth) Hash(_ context.Context, password string) (string, error) {
	return fuzzHashPrefix + password, nil
}

func (fuzzAuth) Verify(_ context.Context, encoded, password string) error {
	if encoded != fuzzHashPrefix+password {
		return auth.ErrPasswordMismatch
	}
	return nil
}

func (fuzzAuth) Issue(username string, roles ...auth.Role) (string, error) {
	return "token-for:" + username + ":" + auth.RolesOf(roles...).String(), nil
}

type fuzzTokens struct{}

func (fuzzTokens) Verify(token string) (auth.Claims, error) {
	switch token {
	case fuzzUserToken:
		return auth.Claims{Username: fuzzUser}, nil
	case fuzzAdminToken:
		return auth.Claims{Username: fuzzAdmin, Roles: auth.RolesOf(auth.RoleAdmin)}, nil
	}
	return auth.Claims{}, auth.ErrInvalidToken
}

// fuzzServer is the real handler over the fakes, and what it logged (errors only: a 500 and
// the stack of a panic).
type fuzzServer struct {
	handler http.Handler
	ledger  *fuzzLedger
	log     *bytes.Buffer
}

// fuzzLog keeps what the server logs at error level, with a panic's stack left readable.
type fuzzLog struct{ buf *bytes.Buffer }

func (h fuzzLog) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelError }

func (h fuzzLog) Handle(_ context.Context, r slog.Record) error {
	h.buf.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(h.buf, "\n  %s: %v", a.Key, a.Value.Any())
		return true
	})
	h.buf.WriteString("\n")
	return nil
}

func (h fuzzLog) WithAttrs([]slog.Attr) slog.Handler { return h }

func (h fuzzLog) WithGroup(string) slog.Handler { return h }

func newFuzzServer() *fuzzServer {
	fs := &fuzzServer{ledger: &fuzzLedger{}, log: &bytes.Buffer{}}
	fs.handler = New(Deps{
		Ledger:    fs.ledger,
		Passwords: fuzzAuth{},
		Issuer:    fuzzAuth{},
		Verifier:  fuzzTokens{},
		Roles:     fakeRoles{fuzzAdmin: auth.RolesOf(auth.RoleAdmin)},
		Log:       slog.New(fuzzLog{fs.log}),
	})
	return fs
}

// fuzzWant is the oracle's answer: a status, and on success the call the ledger must have seen
// (if any) and the response body.
type fuzzWant struct {
	status int
	call   *fuzzCall
	body   string
}

// serve sends one request and checks the answer against the oracle's.
func (fs *fuzzServer) serve(t *testing.T, path, token, contentType string, body []byte, w fuzzWant) {
	t.Helper()
	fs.ledger.calls = fs.ledger.calls[:0]
	fs.log.Reset()
	r := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
	r.Header.Set("Content-Type", contentType)
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	fs.handler.ServeHTTP(rec, r)
	got := rec.Result().StatusCode
	resp := rec.Body.Bytes()

	if got >= 500 {
		t.Fatalf("POST %s %q (Content-Type %q): %d %s\nserver log:\n%s", path, body, contentType, got, resp, fs.log)
	}
	calls := fs.ledger.calls
	if got != http.StatusOK {
		var e errorBody
		if err := json.Unmarshal(resp, &e); err != nil || e.Errors == "" || rec.Header().Get("Content-Type") != "application/json" {
			t.Fatalf("POST %s %q: %d with body %q (Content-Type %q), want a JSON error message",
				path, body, got, resp, rec.Header().Get("Content-Type"))
		}
		if len(calls) > 0 {
			t.Fatalf("POST %s %q answered %d after passing on %+v", path, body, got, calls)
		}
	}
	if got != w.status {
		t.Fatalf("POST %s %q (Content-Type %q): %d %s, want %d", path, body, contentType, got, resp, w.status)
	}
	if got == http.StatusOK && string(resp) != w.body {
		t.Fatalf("POST %s %q: 200 with body %q, want %q", path, body, resp, w.body)
	}
	if w.call == nil && len(calls) > 0 || w.call != nil && (len(calls) != 1 || calls[0] != *w.call) {
		t.Fatalf("POST %s %q passed on %+v, want %+v", path, body, calls, w.call)
	}
}

// oracleObject reads a body as a strict reader would: at most maxBody bytes of I-JSON (RFC
// 7493: UTF-8, escapes that spell Unicode characters, no object naming a member twice) holding
// one JSON object and nothing else.
func oracleObject(body []byte) (obj map[string]json.RawMessage, ok bool) {
	if len(body) > maxBody || !utf8.Valid(body) || !jsontext.Value(body).IsValid() {
		return nil, false
	}
	if err := json.Unmarshal(body, &obj); err != nil {
		return nil, false
	}
	return obj, obj != nil
}

// oracleString returns a required string field, as the contract reads one: present, not null,
// a string.
func oracleString(obj map[string]json.RawMessage, name string) (string, bool) {
	raw, ok := obj[name]
	if !ok || string(raw) == "null" {
		return "", false
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false
	}
	return s, true
}

// oracleAmount returns a required amount field, as the contract reads one: a JSON number whose
// exact value is an integer from 1 to domain.MaxBalance.
func oracleAmount(obj map[string]json.RawMessage, name string) (n int64, ok bool) {
	lit := string(obj[name])
	if lit == "" || !(lit[0] == '-' || lit[0] >= '0' && lit[0] <= '9') {
		return 0, false
	}
	// The float is the exact value correctly rounded, so it rules out what is far out of range
	// before the exact arithmetic, whose cost grows with the exponent.
	f, err := strconv.ParseFloat(lit, 64)
	if err != nil || math.Abs(f) < 0.5 || math.Abs(f) > 2*float64(domain.MaxBalance) {
		return 0, false
	}
	r, isNum := new(big.Rat).SetString(lit)
	if !isNum || !r.IsInt() {
		return 0, false
	}
	n = r.Num().Int64()
	return n, n >= 1 && domain.Coins(n) <= domain.MaxBalance
}

var fuzzContentTypes = []string{"application/json", "", "text/plain", "application/x-www-form-urlencoded",
	"application/json; charset=utf-16", "multipart/form-data; boundary=x"}

// FuzzDecodeAuth: POST /api/auth takes a JSON object with a string username (valid per
// domain.ValidateUsername) and a string password of 1 to 256 bytes, other fields ignored. A
// new name is registered with that password; alice's wrong password is a 401.
func FuzzDecodeAuth(f *testing.F) {
	for i, body := range []string{
		`{"username":"alice","password":"s3cret"}`,
		`{"username":"alice","password":"wrong"}`,
		`{"username":"Zoë 名前","password":"p"}`,
		`{"username":"bob","password":"hunter2","extra":[1,{"x":null}]}`,
		`{"username":"bob"}`,
		`{"password":"x"}`,
		`{"username":null,"password":"x"}`,
		`{"username":42,"password":"x"}`,
		`{"username":"bob","password":""}`,
		`{"username":"bob","password":"` + strings.Repeat("p", maxPasswordBytes) + `"}`,
		`{"username":"bob","password":"` + strings.Repeat("p", maxPasswordBytes+1) + `"}`,
		`{"username":"` + strings.Repeat("é", domain.MaxUsernameLength) + `","password":"x"}`,
		`{"username":"` + strings.Repeat("u", domain.MaxUsernameLength+1) + `","password":"x"}`,
		`{"username":" bob","password":"x"}`,
		`{"username":"b\u0000b","password":"x"}`,
		`{"username":"\ud800","password":"x"}`,
		"{\"username\":\"b\xffb\",\"password\":\"x\"}",
		`{"username":"bob","username":"carol","password":"x"}`,
		`{"Username":"bob","password":"x"}`,
		`[{"username":"bob","password":"x"}]`,
		`{"username":"bob","password":"x"} {}`,
		`username=alice&password=s3cret`,
		`null`, ``, " \n", `{}`, `{"username":"bob","password":"x"`,
	} {
		f.Add([]byte(body), fuzzContentTypes[i%len(fuzzContentTypes)])
	}

	fs := newFuzzServer()
	f.Fuzz(func(t *testing.T, body []byte, contentType string) {
		fs.serve(t, "/api/auth", "", contentType, body, wantAuth(body))
	})
}

// wantAuth is the oracle's answer to POST /api/auth with body.
func wantAuth(body []byte) fuzzWant {
	obj, ok := oracleObject(body)
	username, uok := oracleString(obj, "username")
	password, pok := oracleString(obj, "password")
	if !ok || !uok || !pok || domain.ValidateUsername(username) != nil || password == "" || len(password) > maxPasswordBytes {
		return fuzzWant{status: http.StatusBadRequest}
	}
	if username != fuzzUser {
		// A new name is stored in its normal form, or refused; the normal form may be fuzzUser.
		name, err := usernames.New(username)
		if err != nil {
			return fuzzWant{status: http.StatusBadRequest}
		}
		username = name
	}
	// Logging in never names a role in the token, an admin's neither.
	token, _ := json.Marshal(map[string]string{"token": "token-for:" + username + ":none"})
	w := fuzzWant{status: http.StatusOK, body: string(token) + "\n"}
	switch {
	case username != fuzzUser:
		w.call = &fuzzCall{op: "open", username: username, password: password}
	case password != fuzzPassword:
		w.status = http.StatusUnauthorized
	}
	return w
}

// FuzzDecodeSendCoinAndGrant sends each body to both commands that read toUser and amount (with
// moveRequest); both ignore fields they do not name:
//   - POST /api/sendCoin takes a JSON object with the fields toUser (a valid username, not the
//     sender's) and amount (an integer from 1 to domain.MaxBalance);
//   - POST /api/admin/grant takes a JSON object with the fields toUser (a string PostgreSQL can
//     store: no NUL), amount (the same) and reason (a string); whether the name exists and the
//     reason's length are the application's to check.
func FuzzDecodeSendCoinAndGrant(f *testing.F) {
	for i, body := range []string{
		`{"toUser":"bob","amount":25}`,
		`{"amount":1,"toUser":"名前"}`,
		`{"toUser":"jose\u0301","amount":3}`,
		`{"toUser":"\uff41lice","amount":3}`,
		`{"toUser":"\u0430dmin","amount":3}`,
		`{"toUser":"bob","amount":0}`,
		`{"toUser":"bob","amount":-1}`,
		`{"toUser":"bob","amount":-0}`,
		`{"toUser":"bob","amount":1.5}`,
		`{"toUser":"bob","amount":5.0}`,
		`{"toUser":"bob","amount":1e2}`,
		`{"toUser":"bob","amount":25e-1}`,
		`{"toUser":"bob","amount":"10"}`,
		`{"toUser":"bob","amount":true}`,
		`{"toUser":"bob","amount":null}`,
		`{"toUser":"bob","amount":1000000000000}`,
		`{"toUser":"bob","amount":1000000000001}`,
		`{"toUser":"bob","amount":9223372036854775807}`,
		`{"toUser":"bob","amount":9223372036854775808}`,
		`{"toUser":"bob","amount":-9223372036854775809}`,
		`{"toUser":"bob","amount":1e300}`,
		`{"toUser":"bob","amount":1e-300}`,
		`{"toUser":"alice","amount":1}`,
		`{"toUser":"","amount":1}`,
		`{"toUser":" bob","amount":1}`,
		`{"toUser":7,"amount":1}`,
		`{"toUser":"bob"}`,
		`{"amount":1}`,
		`{"toUser":"bob","amount":1,"memo":"x"}`,
		`{"ToUser":"bob","amount":1}`,
		`{"toUser":"bob","amount":2,"amount":3}`,
		`{"toUser":"bob","toUser":"carol","amount":2}`,
		`{"toUser":"bob","amount":2,"memo":{"a":1,"a":2}}`,
		`{"toUser":"bob","amount":2,"memo":{"a":1,"A":2}}`,
		`{"to\u0055ser":"bob","amount":4}`,
		`{"to\u0055ser":"bob","toUser":"carol","amount":4}`,
		`{"toUser":"bob\ud800","amount":4}`,
		`{"toUser":"bob\u0000","amount":4,"reason":"r"}`,
		`{"toUser":"bob","amount":1} x`,
		`{"toUser":"bob","amount":1`,
		`toUser=bob&amount=1`,
		`[]`, `null`, ``, `{}`,
		`{"toUser":"bob","amount":50,"reason":"hackathon winner"}`,
		`{"toUser":"bob","amount":50,"reason":""}`,
		`{"toUser":"","amount":1,"reason":"r"}`,
		`{"toUser":"bob","amount":50}`,
		`{"toUser":"bob","amount":50,"reason":null}`,
		`{"toUser":"bob","amount":50,"reason":7}`,
		`{"toUser":"bob","amount":0,"reason":"r"}`,
		`{"toUser":"bob","amount":1000000000000,"reason":"r"}`,
		`{"toUser":"bob","amount":1000000000001,"reason":"r"}`,
		`{"toUser":"bob","amount":1.0e3,"reason":"r"}`,
		`{"toUser":"bob","amount":50,"reason":"r","by":"me"}`,
		`{"toUser":"bob","amount":50,"reason":"r","reason":"s"}`,
		`{"toUser":["bob"],"amount":50,"reason":"r"}`,
		`{"reason":"r"}`,
	} {
		f.Add([]byte(body), fuzzContentTypes[i%len(fuzzContentTypes)])
	}

	fs := newFuzzServer()
	f.Fuzz(func(t *testing.T, body []byte, contentType string) {
		fs.serve(t, "/api/sendCoin", fuzzUserToken, contentType, body, wantSendCoin(body))
		fs.serve(t, "/api/admin/grant", fuzzAdminToken, contentType, body, wantGrant(body))
	})
}

// wantSendCoin is the oracle's answer to alice's POST /api/sendCoin with body.
func wantSendCoin(body []byte) fuzzWant {
	obj, ok := oracleObject(body)
	toUser, tok := oracleString(obj, "toUser")
	n, aok := oracleAmount(obj, "amount")
	if !ok || !tok || !aok ||
		domain.ValidateUsername(toUser) != nil || usernames.Lookup(toUser) == fuzzUser {
		return fuzzWant{status: http.StatusBadRequest}
	}
	toUser = usernames.Lookup(toUser)
	return fuzzWant{status: http.StatusOK, call: &fuzzCall{op: "transfer", toUser: toUser, amount: domain.Coins(n)}}
}

// wantGrant is the oracle's answer to root's POST /api/admin/grant with body.
func wantGrant(body []byte) fuzzWant {
	obj, ok := oracleObject(body)
	toUser, tok := oracleString(obj, "toUser")
	reason, rok := oracleString(obj, "reason")
	n, aok := oracleAmount(obj, "amount")
	// A name PostgreSQL cannot store names no one: refused before it is looked up.
	if !ok || !tok || !rok || !aok || strings.IndexByte(toUser, 0) >= 0 || !utf8.ValidString(toUser) {
		return fuzzWant{status: http.StatusBadRequest}
	}
	return fuzzWant{status: http.StatusOK,
		call: &fuzzCall{op: "grant", grantor: fuzzAdmin, toUser: usernames.Lookup(toUser), amount: domain.Coins(n), reason: reason}}
}

// FuzzDecodeAmount puts arbitrary text where the amount goes in otherwise valid sendCoin and
// grant bodies, so that the fuzzer spends its time on the number reader rather than on
// breaking the JSON around it.
func FuzzDecodeAmount(f *testing.F) {
	for _, lit := range []string{
		"1", "25", "0", "-0", "-1", "1.5", "5.0", "1e2", "1E+2", "25e-1", "100e-2", "0.1e1", "-5.0",
		"1000000000000", "1000000000001", "1e12", "1.000000000001e12", "9007199254740993",
		"9223372036854775807", "9223372036854775808", "-9223372036854775808", "1e300", "1e-300",
		"01", "+1", ".5", "1.", "0x10", "NaN", "Infinity", `"10"`, "true", "null", "[1]", "{}", "",
		" 7 ", "7 8", "1,\"x\":1",
	} {
		f.Add(lit)
	}

	fs := newFuzzServer()
	f.Fuzz(func(t *testing.T, lit string) {
		send := []byte(`{"toUser":"bob","amount":` + lit + `}`)
		fs.serve(t, "/api/sendCoin", fuzzUserToken, "application/json", send, wantSendCoin(send))
		grant := []byte(`{"toUser":"bob","reason":"r","amount":` + lit + `}`)
		fs.serve(t, "/api/admin/grant", fuzzAdminToken, "application/json", grant, wantGrant(grant))
	})
}
