// Package usernames decides which names new accounts may take, and which account a name sent
// by a client means, so that names that look alike are one account or none: a name is
// normalised and checked with the PRECIS UsernameCasePreserved profile (RFC 8265, from
// golang.org/x/text), which folds full-width forms, composes to NFC and refuses control,
// format and invisible characters, and must not mix scripts. Accounts stored before these
// rules keep their names: Lookup leaves a name the rules refuse as it is.
package usernames

import (
	"fmt"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/secure/precis"
	"golang.org/x/text/unicode/runenames"

	"github.com/ledger/ledger/domain"
)

// profile is case-preserving: folding case would merge accounts stored as "Alice" and "alice"
// before these rules, and leave one of them unreachable.
var profile = precis.UsernameCasePreserved

// New returns the name a new account called name is stored under, or an error wrapping
// domain.ErrInvalidUsername that says why it cannot be one. Words separated by single spaces
// are each a PRECIS username, as RFC 8265 section 3.5 lets an application allow.
func New(name string) (string, error) {
	if err := domain.ValidateUsername(name); err != nil {
		return "", err
	}
	words := strings.Split(name, " ")
	for i, w := range words {
		if w == "" {
			return "", fmt.Errorf("%w: two spaces in a row", domain.ErrInvalidUsername)
		}
		n, err := profile.String(w)
		if err != nil {
			return "", refused(w, err)
		}
		words[i] = n
	}
	norm := strings.Join(words, " ")
	if scripts := mixedScripts(norm); scripts != nil {
		last := len(scripts) - 1
		return "", fmt.Errorf("%w: mixes letters of the %s and %s scripts, which can look alike",
			domain.ErrInvalidUsername, strings.Join(scripts[:last], ", "), scripts[last])
	}
	if err := domain.ValidateUsername(norm); err != nil {
		return "", err
	}
	return norm, nil
}

// Lookup returns the name to find an existing account called name by: the name New gives, or
// name itself when New refuses it (an account stored before these rules).
func Lookup(name string) string {
	if n, err := New(name); err == nil {
		return n
	}
	return name
}

// refused explains why the profile refused word: the first character it does not allow on its
// own, or else (a rule about characters in context, like right-to-left text) the profile's
// own words.
func refused(word string, err error) error {
	for _, r := range word {
		if _, rerr := profile.String(string(r)); rerr != nil {
			return fmt.Errorf("%w: character U+%04X %s is not allowed", domain.ErrInvalidUsername, r, runenames.Name(r))
		}
	}
	return fmt.Errorf("%w: not a valid username (%v)", domain.ErrInvalidUsername, err)
}

// highlyRestrictive are the sets of scripts that may mix in one name: those of Unicode's
// "Highly Restrictive" level (UTS #39, section 5.2), under which Japanese, Chinese and Korean
// names may carry Latin letters. Any other name keeps to one script.
var highlyRestrictive = [][]string{
	{"Latin", "Han", "Hiragana", "Katakana"},
	{"Latin", "Han", "Bopomofo"},
	{"Latin", "Han", "Hangul"},
}

// mixedScripts returns the scripts of name's letters when they may not mix, by the standard
// library's script tables, or nil. Common and inherited characters (digits, marks) go with any.
func mixedScripts(name string) []string {
	var scripts []string
	for _, r := range name {
		s := "Latin"
		if r >= utf8.RuneSelf {
			s = scriptOf(r)
		} else if !unicode.IsLetter(r) {
			continue
		}
		if s != "" && !slices.Contains(scripts, s) {
			scripts = append(scripts, s)
		}
	}
	if len(scripts) < 2 {
		return nil
	}
	for _, allowed := range highlyRestrictive {
		if !slices.ContainsFunc(scripts, func(s string) bool { return !slices.Contains(allowed, s) }) {
			return nil
		}
	}
	return scripts
}

// likelyScripts are tried first, before all of unicode.Scripts.
var likelyScripts = []string{"Latin", "Han", "Cyrillic", "Greek", "Hiragana", "Katakana", "Hangul", "Arabic", "Hebrew"}

// scriptOf is the script of r, or "" for Common and Inherited.
func scriptOf(r rune) string {
	if unicode.In(r, unicode.Common, unicode.Inherited) {
		return ""
	}
	for _, name := range likelyScripts {
		if unicode.Is(unicode.Scripts[name], r) {
			return name
		}
	}
	for name, table := range unicode.Scripts {
		if unicode.Is(table, r) {
			return name
		}
	}
	return ""
}
