package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// maxBody is the largest request body read; a larger one is refused whole.
const maxBody = 64 << 10

// fields reads a JSON object body into its raw fields. Unknown fields are tolerated; types are
// checked field by field, so that each problem gets a message that names it.
func fields(w http.ResponseWriter, r *http.Request) (map[string]json.RawMessage, error) {
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
	var obj map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&obj); err != nil {
		return nil, fmt.Errorf("%w: request body is not a JSON object: %s", errBadRequest, describeJSONError(err))
	}
	// More would miss a stray closing bracket: whatever follows the object must be blank.
	if len(bytes.TrimSpace(body[dec.InputOffset():])) > 0 {
		return nil, fmt.Errorf("%w: request body has data after the JSON object", errBadRequest)
	}
	if obj == nil {
		return nil, fmt.Errorf("%w: request body must be a JSON object, not null", errBadRequest)
	}
	return obj, nil
}

func describeJSONError(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("syntax error at byte %d", syn.Offset)
	case errors.As(err, &typ):
		return "expected an object, got " + typ.Value
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "unexpected end of input"
	}
	return "malformed JSON"
}

// stringField returns a required string field.
func stringField(obj map[string]json.RawMessage, name string) (string, error) {
	raw, ok := obj[name]
	if !ok || isNull(raw) {
		return "", fmt.Errorf("%w: %s is required", errBadRequest, name)
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", fmt.Errorf("%w: %s must be a string", errBadRequest, name)
	}
	return s, nil
}

// intField returns a required integer field: a JSON number without fraction or exponent that
// fits in 64 bits. A string holding digits is refused: clients must send numbers.
func intField(obj map[string]json.RawMessage, name string) (int64, error) {
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

func isNull(raw json.RawMessage) bool { return string(bytes.TrimSpace(raw)) == "null" }

// onlyFields refuses fields other than the allowed ones, naming them: the contract makes
// unknown fields on sendCoin a 400, so a client's typo never passes silently.
func onlyFields(obj map[string]json.RawMessage, allowed ...string) error {
	var unknown []string
	for k := range obj {
		if !slices.Contains(allowed, k) {
			unknown = append(unknown, strconv.Quote(k))
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	slices.Sort(unknown)
	return fmt.Errorf("%w: unknown field %s; allowed: %s", errBadRequest, strings.Join(unknown, ", "), strings.Join(allowed, ", "))
}
