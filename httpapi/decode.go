package httpapi

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	"github.com/ledger/ledger/eventstore"
)

// maxBody is the largest request body read; a larger one is refused whole.
const maxBody = 64 << 10

// fields reads a JSON object body into its raw members. The body must be I-JSON (RFC 7493):
// UTF-8 throughout, escapes that spell Unicode characters, and no member named twice in any
// object, since readers disagree on which of two "toUser" members counts. Members the caller
// does not ask for are ignored, as the contract says; types are checked member by member, so
// that each problem gets a message that names it.
func fields(w http.ResponseWriter, r *http.Request) (map[string]jsontext.Value, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return nil, fmt.Errorf("%w: request body larger than %d bytes", errBadRequest, maxBody)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: cannot read request body", errBadRequest)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, fmt.Errorf("%w: request body is empty; a JSON object is required", errBadRequest)
	}
	if !utf8.Valid(body) {
		return nil, fmt.Errorf("%w: request body is not valid UTF-8", errBadRequest)
	}
	var obj map[string]jsontext.Value
	if err := json.Unmarshal(body, &obj); err != nil {
		return nil, fmt.Errorf("%w: %s", errBadRequest, describeJSONError(body, err))
	}
	if obj == nil {
		return nil, fmt.Errorf("%w: request body must be a JSON object, not null", errBadRequest)
	}
	return obj, nil
}

// describeJSONError says what is wrong with a body that json.Unmarshal refused.
func describeJSONError(body []byte, err error) string {
	var syn *jsontext.SyntacticError
	var sem *json.SemanticError
	switch {
	case errors.As(err, &syn) && errors.Is(syn.Err, jsontext.ErrDuplicateName):
		name, in := syn.JSONPointer.LastToken(), syn.JSONPointer.Parent()
		if in == "" {
			return fmt.Sprintf("request body names the field %q more than once", name)
		}
		return fmt.Sprintf("request body names the field %q more than once in %s", name, in)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "request body is not a JSON object: unexpected end of input"
	case errors.As(err, &syn) && syn.JSONPointer == "" && syn.ByteOffset > 0 &&
		jsontext.Value(body[:syn.ByteOffset]).IsValid():
		// Refused at the top level after a whole value: something follows the object.
		return "request body has data after the JSON object"
	case errors.As(err, &syn):
		return fmt.Sprintf("request body is not a JSON object: %v at byte %d", syn.Err, syn.ByteOffset)
	case errors.As(err, &sem) && sem.JSONKind != 0:
		return "request body is not a JSON object: expected an object, got " + kindName(sem.JSONKind)
	}
	return "request body is not a JSON object: malformed JSON"
}

func kindName(k jsontext.Kind) string {
	switch k {
	case '"':
		return "a string"
	case '0':
		return "a number"
	case 't', 'f':
		return "a boolean"
	case '[':
		return "an array"
	}
	return k.String()
}

// stringField returns a required string field.
func stringField(obj map[string]jsontext.Value, name string) (string, error) {
	raw, ok := obj[name]
	if !ok || isNull(raw) {
		return "", fmt.Errorf("%w: %s is required", errBadRequest, name)
	}
	if raw.Kind() != '"' {
		return "", fmt.Errorf("%w: %s must be a string", errBadRequest, name)
	}
	// fields has checked the string: it unquotes without error.
	s, err := jsontext.AppendUnquote(nil, raw)
	if err != nil {
		return "", fmt.Errorf("%w: %s must be a string", errBadRequest, name)
	}
	return string(s), nil
}

// intField returns a required integer field: a JSON number without fraction or exponent that
// fits in 64 bits. A string holding digits is refused: clients must send numbers.
func intField(obj map[string]jsontext.Value, name string) (int64, error) {
	raw, ok := obj[name]
	if !ok || isNull(raw) {
		return 0, fmt.Errorf("%w: %s is required", errBadRequest, name)
	}
	lit := strings.TrimSpace(string(raw))
	if lit == "" || !(lit[0] == '-' || (lit[0] >= '0' && lit[0] <= '9')) {
		return 0, fmt.Errorf("%w: %s must be an integer", errBadRequest, name)
	}
	if strings.ContainsAny(lit, ".eE") {
		// 5.0 and 1e2 are integers spelled as floats; the value must be exactly an integer (a
		// float64 would round 1.00000000000000000001 to 1). The float rules out huge exponents
		// before the exact arithmetic, whose cost grows with them.
		f, err := strconv.ParseFloat(lit, 64)
		if err != nil || math.Abs(f) >= 1<<63 {
			return 0, fmt.Errorf("%w: %s must be an integer in range", errBadRequest, name)
		}
		if r, ok := new(big.Rat).SetString(lit); ok && r.IsInt() && r.Num().IsInt64() {
			return r.Num().Int64(), nil
		}
		return 0, fmt.Errorf("%w: %s must be an integer", errBadRequest, name)
	}
	n, err := strconv.ParseInt(lit, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: %s is out of range", errBadRequest, name)
	}
	return n, nil
}

// storable refuses client text that PostgreSQL cannot store (see eventstore.CheckText), naming
// the input it came from: a query with it would fail in the database, as a server error.
func storable(name, s string) error {
	if err := eventstore.CheckText(s); err != nil {
		return fmt.Errorf("%w: %s: %v", errBadRequest, name, err)
	}
	return nil
}

func isNull(raw jsontext.Value) bool { return raw.Kind() == 'n' }
