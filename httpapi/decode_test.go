package httpapi

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/ledger/ledger/domain"
	"github.com/ledger/ledger/internal/app"
	"github.com/ledger/ledger/internal/auth"
)

func TestIntField(t *testing.T) {
	cases := []struct {
		raw     string
		want    int64
		wantErr string
	}{
		{`10`, 10, ""},
		{`-3`, -3, ""},
		{`5.0`, 5, ""},
		{`1e2`, 100, ""},
		{`1.5`, 0, "must be an integer"},
		{`"10"`, 0, "must be an integer"},
		{`true`, 0, "must be an integer"},
		{`[1]`, 0, "must be an integer"},
		{`{}`, 0, "must be an integer"},
		{`9223372036854775807`, 9223372036854775807, ""},
		{`9223372036854775808`, 0, "out of range"},
		{`-99999999999999999999`, 0, "out of range"},
		{`1e300`, 0, "must be an integer"},
		{`null`, 0, "is required"},
	}
	for _, c := range cases {
		t.Run(c.raw, func(t *testing.T) {
			got, err := intField(map[string]jsontext.Value{"amount": jsontext.Value(c.raw)}, "amount")
			if c.wantErr == "" {
				if err != nil || got != c.want {
					t.Fatalf("got %d, %v; want %d", got, err, c.want)
				}
				return
			}
			if !errors.Is(err, errBadRequest) || !strings.Contains(err.Error(), c.wantErr) || !strings.Contains(err.Error(), "amount") {
				t.Fatalf("err = %v, want a bad request naming amount and saying %q", err, c.wantErr)
			}
		})
	}
	if _, err := intField(map[string]jsontext.Value{}, "amount"); !errors.Is(err, errBadRequest) || !strings.Contains(err.Error(), "amount is required") {
		t.Fatalf("missing: %v", err)
	}
}

func TestFields(t *testing.T) {
	cases := map[string]string{
		"":                                 "empty",
		"   ":                              "empty",
		"[1,2]":                            "not a JSON object",
		"null":                             "not null",
		"42":                               "not a JSON object",
		`{"a":1`:                           "not a JSON object",
		`{"a":1} {"b":2}`:                  "data after",
		"{\"a\":\"\xff\"}":                 "UTF-8",
		`{"a":"\ud800"}`:                   "not a JSON object",
		`true`:                             "got a boolean",
		`"x"`:                              "got a string",
		`{"a":1,}`:                         "not a JSON object",
		`{"a":1} x`:                        "data after",
		`{"toUser":"a","toUser":"b"}`:      `names the field "toUser" more than once`,
		`{"to\u0055ser":"a","toUser":"b"}`: `names the field "toUser" more than once`,
		`{"x":{"y":1,"y":2}}`:              `names the field "y" more than once in /x`,
		`{"toUser":"a","ToUser":"b"}`:      "",
		`{"toUser":"x","amount":1}` + "":   "",
		strings.Repeat(" ", maxBody+1):     "larger than",
	}
	for body, want := range cases {
		t.Run(fmt.Sprintf("%.20q", body), func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(body))
			_, err := fields(httptest.NewRecorder(), r)
			if want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, errBadRequest) || !strings.Contains(err.Error(), want) {
				t.Fatalf("err = %v, want bad request with %q", err, want)
			}
		})
	}
}

func TestStatusTable(t *testing.T) {
	cases := []struct {
		err  error
		code int
	}{
		{fmt.Errorf("wrap: %w", domain.ErrInsufficientFunds), 400},
		{domain.ErrUnknownItem, 400},
		{domain.ErrSelfTransfer, 400},
		{domain.ErrUnknownAccount, 400},
		{domain.ErrInvalidAmount, 400},
		{domain.ErrAmountOverflow, 400},
		{domain.ErrInvalidUsername, 400},
		{domain.ErrInvalidReason, 400},
		{errorf(errBadRequest, "x"), 400},
		{errorf(errUnauthorized, "x"), 401},
		{fmt.Errorf("%w: expired", auth.ErrInvalidToken), 401},
		{errorf(errForbidden, "x"), 403},
		{errNotFound, 404},
		{app.ErrNotOpenedYet, 404},
		{app.ErrBusy, 500},
		{errors.New("pq: connection refused at 10.0.0.1"), 500},
		{domain.ErrCorruptHistory, 500},
	}
	for _, c := range cases {
		code, msg := status(c.err)
		if code != c.code {
			t.Errorf("status(%v) = %d, want %d", c.err, code, c.code)
		}
		if code == 500 && c.err != app.ErrBusy && msg != "internal error" {
			t.Errorf("internal error leaks %q", msg)
		}
	}
	if _, msg := status(fmt.Errorf("as of 3: %w", app.ErrNotOpenedYet)); msg != "no such account at that time" {
		t.Errorf("asOf before the account message %q", msg)
	}
	if _, msg := status(fmt.Errorf("x: %w", domain.ErrInsufficientFunds)); !strings.Contains(msg, "not enough coin") {
		t.Errorf("insufficient funds message %q lacks the contract text", msg)
	}
}

// BenchmarkDecodeSendCoin measures reading a typical sendCoin body: the object, toUser and
// amount, as the handler does on every transfer.
func BenchmarkDecodeSendCoin(b *testing.B) {
	body := []byte(`{"toUser":"employee-004217","amount":25}`)
	w := httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodPost, "/api/sendCoin", nil)
	b.ReportAllocs()
	for b.Loop() {
		r.Body = io.NopCloser(bytes.NewReader(body))
		if _, toUser, n, err := moveRequest(w, r); err != nil || toUser != "employee-004217" || n != 25 {
			b.Fatal(toUser, n, err)
		}
	}
}
