package eventstore

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// hasNUL reads canonical JSON's escapes; it must agree with the decoded document on whether any
// string or key holds a NUL, however the backslashes around it fall.
func FuzzHasNUL(f *testing.F) {
	for _, doc := range []string{
		`"\u0000"`, `"\\u0000"`, `"\\\u0000"`, `"\\\\u0000"`, `{"\u0000":1}`, `{"\\u0000":"\\"}`,
		`["a\\", "\u0000"]`, `"\ud800\u0000"`, `"\u00000"`, `"\u000a"`, `"\\"`, `{"a":[1,"b\\\\"]}`,
	} {
		f.Add([]byte(doc))
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		canon, err := CanonicalJSON(doc)
		if err != nil {
			return
		}
		var v any
		if err := json.NewDecoder(bytes.NewReader(canon)).Decode(&v); err != nil {
			t.Fatalf("canonical %s does not decode: %v", canon, err)
		}
		if got, want := hasNUL(canon), holdsNUL(v); got != want {
			t.Fatalf("hasNUL(%s) = %v, want %v", canon, got, want)
		}
	})
}

func holdsNUL(v any) bool {
	switch x := v.(type) {
	case string:
		return strings.ContainsRune(x, 0)
	case []any:
		for _, e := range x {
			if holdsNUL(e) {
				return true
			}
		}
	case map[string]any:
		for k, e := range x {
			if strings.ContainsRune(k, 0) || holdsNUL(e) {
				return true
			}
		}
	}
	return false
}
