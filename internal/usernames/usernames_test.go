package usernames

import (
	"errors"
	"strings"
	"testing"

	"github.com/ledger/ledger/domain"
)

func TestNew(t *testing.T) {
	for _, tc := range []struct {
		name, in, want, refusal string
	}{
		{"ASCII", "alice", "alice", ""},
		{"case is kept", "Alice", "Alice", ""},
		{"NFD is composed", "jose\u0301", "jos\u00e9", ""},
		{"NFC stays", "jos\u00e9", "jos\u00e9", ""},
		{"full-width is folded", "\uff41\uff4c\uff49\uff43\uff45", "alice", ""},
		{"words", "Zoë 名前 fox-1", "Zoë 名前 fox-1", ""},
		{"Japanese with Latin", "Yamada 山田たろう カタカナ", "Yamada 山田たろう カタカナ", ""},
		{"Korean with Han", "김철수 金", "김철수 金", ""},
		{"Cyrillic alone", "иван", "иван", ""},
		{"Cyrillic a among Latin", "\u0430dmin", "", "mixes letters of the Cyrillic and Latin scripts"},
		{"Greek o among Latin", "b\u03bfb", "", "mixes letters of the Latin and Greek scripts"},
		{"Cyrillic beside Japanese", "山田 \u0430", "", "mixes letters of the Han and Cyrillic scripts"},
		{"right-to-left override", "adm\u202ein", "", "character U+202E RIGHT-TO-LEFT OVERRIDE is not allowed"},
		{"zero-width space", "ali\u200bce", "", "character U+200B ZERO WIDTH SPACE is not allowed"},
		{"zero-width joiner", "ali\u200dce", "", "character U+200D ZERO WIDTH JOINER is not allowed"},
		{"soft hyphen", "ali\u00adce", "", "character U+00AD SOFT HYPHEN is not allowed"},
		{"no-break space", "ali\u00a0ce", "", "character U+00A0 NO-BREAK SPACE is not allowed"},
		{"emoji", "fox🦊", "", "character U+1F98A FOX FACE is not allowed"},
		{"two spaces", "a  b", "", "two spaces in a row"},
		{"control", "a\x01b", "", "control characters"},
		{"empty", "", "", "empty"},
		{"leading space", " alice", "", "white space"},
		{"too long", strings.Repeat("u", domain.MaxUsernameLength+1), "", "longer than"},
		{"invalid UTF-8", "a\xffb", "", "not valid UTF-8"},
		{"right-to-left mixed with digits first", "1\u05d0", "", "not a valid username"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := New(tc.in)
			if tc.refusal == "" {
				if err != nil || got != tc.want {
					t.Fatalf("New(%+q) = %+q, %v; want %+q", tc.in, got, err, tc.want)
				}
				if again, err := New(got); err != nil || again != got {
					t.Errorf("New is not stable: New(%+q) = %+q, %v", got, again, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("New(%+q) = %+q, want a refusal with %q", tc.in, got, tc.refusal)
			}
			if !errors.Is(err, domain.ErrInvalidUsername) || !strings.Contains(err.Error(), tc.refusal) {
				t.Errorf("New(%+q): %v, want domain.ErrInvalidUsername with %q", tc.in, err, tc.refusal)
			}
		})
	}
}

// TestLookup: a name New accepts is looked up in its normal form; one it refuses as it is,
// since an account stored before the rules may have it.
func TestLookup(t *testing.T) {
	for in, want := range map[string]string{
		"jose\u0301":  "jos\u00e9",
		"\uff41lice":  "alice",
		"alice":       "alice",
		"\u0430dmin":  "\u0430dmin",
		"adm\u202ein": "adm\u202ein",
		"ali\u200bce": "ali\u200bce",
		"Zoë 名前 🦊-01": "Zoë 名前 🦊-01",
	} {
		if got := Lookup(in); got != want {
			t.Errorf("Lookup(%+q) = %+q, want %+q", in, got, want)
		}
	}
}

func BenchmarkLookupASCII(b *testing.B) {
	for b.Loop() {
		Lookup("employee-04217")
	}
}

func BenchmarkLookupUnicode(b *testing.B) {
	for b.Loop() {
		Lookup("Zoë 名前 fox")
	}
}
