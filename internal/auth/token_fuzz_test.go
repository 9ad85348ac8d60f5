package auth

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"
)

// Fixed keys and a fixed clock, so that a token means the same on every run: a genuine token
// (and so every mutation of one in the committed corpus) verifies, or fails, the same way.
var (
	fuzzKey      = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{0x17}, ed25519.SeedSize))
	fuzzOtherKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{0x42}, ed25519.SeedSize))
	fuzzNow      = t0.Add(time.Minute)
)

// fuzzClaims are the claims our Issuer writes (with a fixed jti), for hand-signed seeds.
func fuzzClaims(edit func(map[string]any)) map[string]any {
	m := map[string]any{
		"sub": "alice",
		"iss": testIss,
		"aud": []string{testAud},
		"iat": t0.Unix(),
		"nbf": t0.Unix(),
		"exp": t0.Add(time.Hour).Unix(),
		"jti": "c2VlZC10b2tlbi0wMDE",
	}
	if edit != nil {
		edit(m)
	}
	return m
}

// tokenSeeds are genuine tokens of the test issuer and the ways a client or attacker may bend
// them: flipped bytes, swapped or missing segments, alg none, HMAC with the public key, another
// key, bad claims, other serialisations.
func tokenSeeds(f *testing.F) []string {
	pub := fuzzKey.Public().(ed25519.PublicKey)
	good := signRaw(f, fuzzClaims(nil), jwa.EdDSA, fuzzKey)
	admin := signRaw(f, fuzzClaims(func(m map[string]any) { m["rol"] = []string{"admin"} }), jwa.EdDSA, fuzzKey)
	issued := mustIssue(f, newIssuerAt(fuzzKey, testIss, testAud, time.Hour, t0), "bob", true)
	p := strings.Split(good, ".")

	seeds := []string{good, admin, issued}
	for i := 0; i < len(good); i += len(good)/24 + 1 {
		b := []byte(good)
		b[i] ^= 0x01
		seeds = append(seeds, string(b))
	}
	none := b64url(`{"alg":"none","typ":"JWT"}`)
	payload, err := json.Marshal(fuzzClaims(nil))
	if err != nil {
		f.Fatal(err)
	}
	jsonForm, err := jws.Sign(payload, jws.WithKey(jwa.EdDSA, fuzzKey), jws.WithJSON())
	if err != nil {
		f.Fatal(err)
	}
	seeds = append(seeds,
		withLastSigChar(good, 0x01), // an unused bit of the signature's last character
		withLastSigChar(good, 0x20),
		good[:len(good)-1],
		p[1]+"."+p[0]+"."+p[2],
		p[0]+"."+p[2]+"."+p[1],
		p[2]+"."+p[1]+"."+p[0],
		p[0]+"."+p[1]+".",
		p[0]+"."+p[1]+"."+p[2]+"."+p[2],
		p[0]+"."+p[1]+"."+p[2]+"=",
		none+"."+p[1]+".",
		none+"."+p[1]+"."+p[2],
		b64url(`{"alg":"EdDSA","crit":["b64"],"b64":false}`)+"."+p[1]+"."+p[2],
		signRaw(f, fuzzClaims(nil), jwa.HS256, []byte(pub)),
		signRaw(f, fuzzClaims(nil), jwa.EdDSA, fuzzOtherKey),
		signRaw(f, fuzzClaims(func(m map[string]any) { m["exp"] = t0.Add(-time.Hour).Unix() }), jwa.EdDSA, fuzzKey),
		signRaw(f, fuzzClaims(func(m map[string]any) { m["nbf"] = t0.Add(time.Hour).Unix() }), jwa.EdDSA, fuzzKey),
		signRaw(f, fuzzClaims(func(m map[string]any) { m["iss"] = "someone-else" }), jwa.EdDSA, fuzzKey),
		signRaw(f, fuzzClaims(func(m map[string]any) { m["aud"] = "other-app" }), jwa.EdDSA, fuzzKey),
		signRaw(f, fuzzClaims(func(m map[string]any) { delete(m, "exp") }), jwa.EdDSA, fuzzKey),
		signRaw(f, fuzzClaims(func(m map[string]any) { m["sub"] = "" }), jwa.EdDSA, fuzzKey),
		signRaw(f, fuzzClaims(func(m map[string]any) { m["rol"] = "admin" }), jwa.EdDSA, fuzzKey),
		signRaw(f, fuzzClaims(func(m map[string]any) { m["rol"] = []string{"root"} }), jwa.EdDSA, fuzzKey),
		string(jsonForm),
		" "+good,
		good+"\n",
		"Bearer "+good,
		"", ".", "..", "a.b.c", "e30.e30.",
		strings.Repeat("a", maxTokenLen+1),
	)
	return seeds
}

// FuzzVerify feeds arbitrary strings to Verify as bearer tokens. None may panic; each must be
// refused with ErrInvalidToken and a short client-facing reason, unless it is a genuine token of
// the test issuer: signed with its key over exactly the token's own header and payload, with a
// canonically encoded signature, and claims that are valid now. Verifiers with and without the
// cache must agree, and a cache warmed with a genuine token must never answer for another.
func FuzzVerify(f *testing.F) {
	for _, s := range tokenSeeds(f) {
		f.Add(s)
	}
	pub := fuzzKey.Public().(ed25519.PublicKey)
	plain := newVerifierAt(pub, 0, fuzzNow)
	cached := newVerifierAt(pub, 4, fuzzNow)
	if _, err := cached.Verify(signRaw(f, fuzzClaims(nil), jwa.EdDSA, fuzzKey)); err != nil {
		f.Fatalf("the genuine seed token is refused: %v", err)
	}

	f.Fuzz(func(t *testing.T, token string) {
		c, err := plain.Verify(token)
		cc, cerr := cached.Verify(token)
		again, aerr := cached.Verify(token) // from the cache, if the first call put it there
		for _, r := range []struct {
			c   Claims
			err error
		}{{cc, cerr}, {again, aerr}} {
			if (r.err == nil) != (err == nil) || !sameClaims(r.c, c) {
				t.Fatalf("verifiers disagree: without cache (%+v, %v), with cache (%+v, %v)", c, err, r.c, r.err)
			}
		}
		if err != nil {
			for _, e := range []error{err, cerr, aerr} {
				if !errors.Is(e, ErrInvalidToken) {
					t.Fatalf("refusal %v does not wrap ErrInvalidToken", e)
				}
				if msg := e.Error(); !strings.HasPrefix(msg, ErrInvalidToken.Error()+": ") || len(msg) > 64 {
					t.Fatalf("refusal %q is not a short client-facing reason", msg)
				}
			}
			if c != (Claims{}) || cc != (Claims{}) {
				t.Fatalf("refusal came with claims %+v / %+v", c, cc)
			}
			return
		}
		if reason := genuine(pub, token, c); reason != "" {
			t.Fatalf("accepted a token that is not genuine (%s): %q -> %+v", reason, token, c)
		}
	})
}

func sameClaims(a, b Claims) bool {
	return a.Username == b.Username && a.Roles == b.Roles && a.ExpiresAt.Equal(b.ExpiresAt)
}

// genuine checks an accepted token without the JWT library: what is wrong with it, or "" if
// only the holder of the test issuer's key can have made it and its claims are what Verify
// returned and are valid at fuzzNow.
func genuine(pub ed25519.PublicKey, token string, c Claims) string {
	p := strings.Split(token, ".")
	if len(p) != 3 {
		return "not three segments"
	}
	sig, err := base64.RawURLEncoding.Strict().DecodeString(p[2])
	if err != nil || !ed25519.Verify(pub, []byte(p[0]+"."+p[1]), sig) {
		return "signature does not verify over the token's own header and payload"
	}
	var header struct {
		Alg string `json:"alg"`
	}
	if raw, err := base64.RawURLEncoding.DecodeString(p[0]); err != nil || json.Unmarshal(raw, &header) != nil || header.Alg != "EdDSA" {
		return "header is not an EdDSA header"
	}
	var claims struct {
		Sub *string         `json:"sub"`
		Iss string          `json:"iss"`
		Aud json.RawMessage `json:"aud"`
		Exp *int64          `json:"exp"`
		Nbf *int64          `json:"nbf"`
		Iat *int64          `json:"iat"`
		Rol []string        `json:"rol"`
	}
	raw, err := base64.RawURLEncoding.DecodeString(p[1])
	if err != nil || json.Unmarshal(raw, &claims) != nil {
		return "payload is not the issuer's claims"
	}
	var aud []string
	if json.Unmarshal(claims.Aud, &aud) != nil {
		var one string
		if json.Unmarshal(claims.Aud, &one) != nil {
			return "aud is neither a string nor a list"
		}
		aud = []string{one}
	}
	skew := int64(clockSkew / time.Second)
	switch now := fuzzNow.Unix(); {
	case claims.Sub == nil || *claims.Sub == "" || *claims.Sub != c.Username:
		return "sub is missing or not the username"
	case claims.Iss != testIss:
		return "wrong iss"
	case !slices.Contains(aud, testAud):
		return "wrong aud"
	case claims.Exp == nil || *claims.Exp != c.ExpiresAt.Unix() || now >= *claims.Exp+skew:
		return "exp is missing, expired or not the expiry returned"
	case claims.Nbf != nil && *claims.Nbf > now+skew, claims.Iat != nil && *claims.Iat > now+skew:
		return "not yet valid"
	case !sameRoles(claims.Rol, c.Roles):
		return "roles differ from rol"
	}
	return ""
}

// sameRoles reports whether the rol claim names exactly the roles of rs.
func sameRoles(names []string, rs Roles) bool {
	var got Roles
	for _, n := range names {
		r, err := ParseRole(n)
		if err != nil {
			return false
		}
		got |= RolesOf(r)
	}
	return got == rs
}
