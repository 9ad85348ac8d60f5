package auth

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"
)

const (
	testIss = "ledger-test"
	testAud = "merch-store"
)

var t0 = time.Unix(1_700_000_000, 0)

func fixedClock(t time.Time) func() time.Time { return func() time.Time { return t } }

func genKey(t testing.TB) (ed25519.PublicKey, ed25519.PrivateKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}

func newIssuerAt(key ed25519.PrivateKey, iss, aud string, ttl time.Duration, now time.Time) *Issuer {
	i := NewIssuer(key, iss, aud, ttl)
	i.now = fixedClock(now)
	return i
}

func newVerifierAt(key ed25519.PublicKey, cacheSize int, now time.Time) *Verifier {
	v := NewVerifier(key, testIss, testAud, cacheSize)
	v.now = fixedClock(now)
	return v
}

func mustIssue(t testing.TB, i *Issuer, user string, admin bool) string {
	t.Helper()
	var roles []Role
	if admin {
		roles = append(roles, RoleAdmin)
	}
	tok, err := i.Issue(user, roles...)
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	return tok
}

// signRaw signs arbitrary claims so tests can produce tokens our Issuer
// would never emit.
func signRaw(t testing.TB, claims map[string]any, alg jwa.SignatureAlgorithm, key any) string {
	t.Helper()
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	out, err := jws.Sign(payload, jws.WithKey(alg, key))
	if err != nil {
		t.Fatalf("jws.Sign: %v", err)
	}
	return string(out)
}

func validClaims() map[string]any {
	return map[string]any{
		"sub": "alice",
		"iss": testIss,
		"aud": testAud,
		"iat": t0.Unix(),
		"nbf": t0.Unix(),
		"exp": t0.Add(time.Hour).Unix(),
	}
}

func b64url(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func TestIssueVerifyRoundTrip(t *testing.T) {
	pub, priv := genKey(t)
	iss := newIssuerAt(priv, testIss, testAud, time.Hour, t0)
	v := newVerifierAt(pub, 0, t0.Add(time.Minute))

	for _, admin := range []bool{false, true} {
		tok := mustIssue(t, iss, "alice", admin)
		c, err := v.Verify(tok)
		if err != nil {
			t.Fatalf("Verify(admin=%v): %v", admin, err)
		}
		want := Claims{Username: "alice", ExpiresAt: t0.Add(time.Hour)}
		if admin {
			want.Roles = RolesOf(RoleAdmin)
		}
		if c.Username != want.Username || c.Roles != want.Roles || !c.ExpiresAt.Equal(want.ExpiresAt) {
			t.Fatalf("claims = %+v, want %+v", c, want)
		}
	}

	// A hand-built token with the same claims also verifies, proving the
	// negative cases below fail for the reason they name and not because of
	// some unrelated difference from Issue's output.
	if _, err := v.Verify(signRaw(t, validClaims(), jwa.EdDSA, priv)); err != nil {
		t.Fatalf("Verify(hand-signed valid token): %v", err)
	}
}

func TestIssueRefusesBadInput(t *testing.T) {
	_, priv := genKey(t)
	if _, err := NewIssuer(priv, testIss, testAud, time.Hour).Issue(""); err == nil {
		t.Error("Issue with empty username succeeded")
	}
	if _, err := NewIssuer(priv, testIss, testAud, 0).Issue("alice"); err == nil {
		t.Error("Issue with zero ttl succeeded")
	}
	if _, err := NewIssuer(nil, testIss, testAud, time.Hour).Issue("alice"); err == nil {
		t.Error("Issue with nil key succeeded")
	}
}

func TestVerifyRejects(t *testing.T) {
	pub, priv := genKey(t)
	_, otherPriv := genKey(t)
	now := t0.Add(time.Minute)
	good := mustIssue(t, newIssuerAt(priv, testIss, testAud, time.Hour, t0), "alice", false)
	parts := strings.Split(good, ".")

	tampered := func() string {
		raw, err := base64.RawURLEncoding.DecodeString(parts[1])
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		m["sub"] = "mallory"
		m["rol"] = []string{"admin"}
		b, _ := json.Marshal(m)
		return parts[0] + "." + base64.RawURLEncoding.EncodeToString(b) + "." + parts[2]
	}()

	without := func(claim string) map[string]any {
		m := validClaims()
		delete(m, claim)
		return m
	}
	with := func(claim string, val any) map[string]any {
		m := validClaims()
		m[claim] = val
		return m
	}
	noneHeader := b64url(`{"alg":"none","typ":"JWT"}`)
	payload, _ := json.Marshal(validClaims())

	cases := []struct {
		name, token, reason string
	}{
		{"empty", "", "empty token"},
		{"garbage", "not-a-token", "malformed token"},
		{"garbage with dots", "a.b.c", ""},
		{"oversized", strings.Repeat("a", maxTokenLen+1), "too large"},
		{"alg none", noneHeader + "." + b64url(string(payload)) + ".", "bad signature"},
		{"alg none with our signature", noneHeader + "." + parts[1] + "." + parts[2], "bad signature"},
		{"HS256 with public key as secret", signRaw(t, validClaims(), jwa.HS256, []byte(pub)), "bad signature"},
		{"HS256 with other secret", signRaw(t, validClaims(), jwa.HS256, []byte("s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t")), "bad signature"},
		{"signed by another key", mustIssue(t, newIssuerAt(otherPriv, testIss, testAud, time.Hour, t0), "alice", false), "bad signature"},
		{"tampered payload", tampered, "bad signature"},
		{"signature stripped", parts[0] + "." + parts[1] + ".", "bad signature"},
		{"expired", mustIssue(t, newIssuerAt(priv, testIss, testAud, time.Hour, t0.Add(-2*time.Hour)), "alice", false), "expired"},
		{"not yet valid", mustIssue(t, newIssuerAt(priv, testIss, testAud, time.Hour, t0.Add(time.Hour)), "alice", false), "not yet valid"},
		{"missing exp", signRaw(t, without("exp"), jwa.EdDSA, priv), "missing required claim"},
		{"missing sub", signRaw(t, without("sub"), jwa.EdDSA, priv), "missing required claim"},
		{"empty sub", signRaw(t, with("sub", ""), jwa.EdDSA, priv), "empty subject"},
		{"wrong issuer", mustIssue(t, newIssuerAt(priv, "someone-else", testAud, time.Hour, t0), "alice", false), "wrong issuer"},
		{"wrong audience", mustIssue(t, newIssuerAt(priv, testIss, "other-app", time.Hour, t0), "alice", false), "wrong audience"},
		{"roles not a list", signRaw(t, with("rol", "admin"), jwa.EdDSA, priv), "roles"},
		{"roles not strings", signRaw(t, with("rol", []any{true}), jwa.EdDSA, priv), "roles"},
		{"unknown role", signRaw(t, with("rol", []string{"root"}), jwa.EdDSA, priv), "roles"},
		{"JSON serialisation", func() string {
			out, err := jws.Sign(payload, jws.WithKey(jwa.EdDSA, priv), jws.WithJSON())
			if err != nil {
				t.Fatal(err)
			}
			return string(out)
		}(), "malformed token"},
	}

	for _, cacheSize := range []int{0, 16} {
		for _, tc := range cases {
			t.Run(fmt.Sprintf("%s/cache=%d", tc.name, cacheSize), func(t *testing.T) {
				v := newVerifierAt(pub, cacheSize, now)
				// A valid token in the cache must not make any neighbour pass.
				if _, err := v.Verify(good); err != nil {
					t.Fatalf("Verify(good): %v", err)
				}
				c, err := v.Verify(tc.token)
				if err == nil {
					t.Fatalf("Verify succeeded with claims %+v", c)
				}
				if !errors.Is(err, ErrInvalidToken) {
					t.Fatalf("error %v does not wrap ErrInvalidToken", err)
				}
				if c != (Claims{}) {
					t.Fatalf("failed Verify returned non-zero claims %+v", c)
				}
				if tc.reason != "" && !strings.Contains(err.Error(), tc.reason) {
					t.Fatalf("error %q does not mention %q", err, tc.reason)
				}
				if len(err.Error()) > 64 {
					t.Fatalf("error %q is too long to be a client-facing reason", err)
				}
			})
		}
	}
}

func TestVerifyErrorKeepsCauseForLogs(t *testing.T) {
	pub, _ := genKey(t)
	_, otherPriv := genKey(t)
	v := newVerifierAt(pub, 0, t0)
	_, err := v.Verify(mustIssue(t, newIssuerAt(otherPriv, testIss, testAud, time.Hour, t0), "alice", false))
	if !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("err = %v, want ErrInvalidToken", err)
	}
	if !jws.IsVerificationError(err) {
		t.Fatalf("underlying verification error not reachable through %v", err)
	}
}

func TestVerifyAcceptsSmallSkew(t *testing.T) {
	pub, priv := genKey(t)
	tok := mustIssue(t, newIssuerAt(priv, testIss, testAud, time.Hour, t0), "alice", false)

	// A replica whose clock is slightly behind the issuer's must still accept
	// a fresh token...
	if _, err := newVerifierAt(pub, 0, t0.Add(-3*time.Second)).Verify(tok); err != nil {
		t.Fatalf("Verify 3s before iat: %v", err)
	}
	// ...but not one from well outside the tolerance.
	if _, err := newVerifierAt(pub, 0, t0.Add(-time.Minute)).Verify(tok); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("Verify a minute before iat = %v, want ErrInvalidToken", err)
	}
	if _, err := newVerifierAt(pub, 0, t0.Add(time.Hour+time.Minute)).Verify(tok); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("Verify a minute after exp = %v, want ErrInvalidToken", err)
	}
}

func TestCacheHitReturnsSameClaims(t *testing.T) {
	pub, priv := genKey(t)
	v := newVerifierAt(pub, 8, t0.Add(time.Minute))
	tok := mustIssue(t, newIssuerAt(priv, testIss, testAud, time.Hour, t0), "bob", true)

	first, err := v.Verify(tok)
	if err != nil {
		t.Fatal(err)
	}
	second, err := v.Verify(tok)
	if err != nil {
		t.Fatal(err)
	}
	if first != second {
		t.Fatalf("cached claims %+v differ from verified claims %+v", second, first)
	}
	if hits, misses := v.CacheStats(); hits != 1 || misses != 1 {
		t.Fatalf("CacheStats = (%d hits, %d misses), want (1, 1)", hits, misses)
	}
}

func TestCacheHonoursExpiry(t *testing.T) {
	pub, priv := genKey(t)
	tok := mustIssue(t, newIssuerAt(priv, testIss, testAud, time.Hour, t0), "bob", false)
	exp := t0.Add(time.Hour)

	now := t0.Add(time.Minute)
	v := NewVerifier(pub, testIss, testAud, 8)
	v.now = func() time.Time { return now }

	if _, err := v.Verify(tok); err != nil {
		t.Fatal(err)
	}
	now = exp.Add(-time.Second)
	if _, err := v.Verify(tok); err != nil {
		t.Fatalf("Verify just before exp: %v", err)
	}
	if hits, _ := v.CacheStats(); hits != 1 {
		t.Fatalf("hits = %d before expiry, want 1", hits)
	}

	// Inside the skew window the token is still acceptable, but the answer
	// must come from a fresh check, never from the cache, and must not be
	// cached again.
	now = exp.Add(2 * time.Second)
	if _, err := v.Verify(tok); err != nil {
		t.Fatalf("Verify within skew after exp: %v", err)
	}
	if hits, misses := v.CacheStats(); hits != 1 || misses != 2 {
		t.Fatalf("CacheStats after exp = (%d, %d), want (1, 2)", hits, misses)
	}
	if n := v.cache.len(); n != 0 {
		t.Fatalf("expired token still cached (%d entries)", n)
	}

	now = exp.Add(time.Minute)
	_, err := v.Verify(tok)
	if !errors.Is(err, ErrInvalidToken) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("Verify after exp = %v, want expired ErrInvalidToken", err)
	}
	if hits, _ := v.CacheStats(); hits != 1 {
		t.Fatalf("expired token served from cache (hits = %d)", hits)
	}
}

// A cached token is accepted exactly when a fresh check accepts it, whatever the clock says
// at the hit: before nbf/iat (a clock stepped back) as after exp, with the checks' skew and
// whole-second rounding. Past exp the cache is stricter and leaves the answer to the checks.
func TestCacheAgreesWithChecksAtEveryInstant(t *testing.T) {
	pub, priv := genKey(t)
	// Issued at t0 (nbf = iat = t0), the first use a minute later warms the cache.
	tok := mustIssue(t, newIssuerAt(priv, testIss, testAud, time.Hour, t0), "bob", true)
	exp := t0.Add(time.Hour)
	for _, tc := range []struct {
		name    string
		at      time.Time
		valid   bool
		fromHit bool
	}{
		{"a minute before nbf", t0.Add(-time.Minute), false, false},
		{"just outside the skew before nbf", t0.Add(-clockSkew - time.Nanosecond), false, false},
		{"at the edge of the skew before nbf", t0.Add(-clockSkew), true, true},
		{"within the skew before nbf", t0.Add(-3 * time.Second), true, true},
		{"at nbf", t0, true, true},
		{"a second before exp", exp.Add(-time.Second), true, true},
		{"at exp", exp, true, false},
		{"within the skew after exp", exp.Add(clockSkew - time.Nanosecond), true, false},
		{"at the edge of the skew after exp", exp.Add(clockSkew), false, false},
		{"a minute after exp", exp.Add(time.Minute), false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now := t0.Add(time.Minute)
			cached := NewVerifier(pub, testIss, testAud, 8)
			cached.now = func() time.Time { return now }
			if _, err := cached.Verify(tok); err != nil {
				t.Fatal(err)
			}
			now = tc.at
			want, wantErr := newVerifierAt(pub, 0, tc.at).Verify(tok)
			if (wantErr == nil) != tc.valid {
				t.Fatalf("fresh check: err = %v, want valid %v", wantErr, tc.valid)
			}
			hitsBefore, _ := cached.CacheStats()
			got, err := cached.Verify(tok)
			if (err == nil) != (wantErr == nil) || got != want {
				t.Fatalf("cached verifier says (%+v, %v), a fresh check (%+v, %v)", got, err, want, wantErr)
			}
			if wantErr != nil && err.Error() != wantErr.Error() {
				t.Fatalf("cached verifier refuses with %q, a fresh check with %q", err, wantErr)
			}
			if hits, _ := cached.CacheStats(); (hits > hitsBefore) != tc.fromHit {
				t.Fatalf("served from the cache: %v, want %v", hits > hitsBefore, tc.fromHit)
			}
		})
	}
}

func TestCacheNeverServesTamperedToken(t *testing.T) {
	pub, priv := genKey(t)
	v := newVerifierAt(pub, 8, t0.Add(time.Minute))
	tok := mustIssue(t, newIssuerAt(priv, testIss, testAud, time.Hour, t0), "alice", false)
	if _, err := v.Verify(tok); err != nil {
		t.Fatal(err)
	}

	// Any change to the string, even one a lenient decoder would forgive,
	// must be a different cache key and must fail on its own merits.
	for _, bad := range []string{
		withLastSigChar(tok, 0x20), // flips a signature bit
		withLastSigChar(tok, 0x01), // flips only an unused padding bit
		tok + " ",
		" " + tok,
	} {
		if _, err := v.Verify(bad); !errors.Is(err, ErrInvalidToken) {
			t.Fatalf("tampered token %q: err = %v, want ErrInvalidToken", bad, err)
		}
	}
	if hits, misses := v.CacheStats(); hits != 0 || misses != 3 {
		t.Fatalf("CacheStats = (%d hits, %d misses), want (0, 3)", hits, misses)
	}
}

const b64urlAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

// withLastSigChar XORs the 6-bit value of the token's final character. For a
// 64-byte Ed25519 signature that character carries 2 signature bits (0x30)
// and 4 unused bits (0x0f).
func withLastSigChar(tok string, mask byte) string {
	v := strings.IndexByte(b64urlAlphabet, tok[len(tok)-1])
	return tok[:len(tok)-1] + string(b64urlAlphabet[byte(v)^mask])
}

func TestVerifyRejectsNonCanonicalSignature(t *testing.T) {
	pub, priv := genKey(t)
	v := newVerifierAt(pub, 0, t0.Add(time.Minute))
	tok := mustIssue(t, newIssuerAt(priv, testIss, testAud, time.Hour, t0), "alice", false)
	for _, mask := range []byte{0x01, 0x02, 0x04, 0x08, 0x0f} {
		if _, err := v.Verify(withLastSigChar(tok, mask)); !errors.Is(err, ErrInvalidToken) {
			t.Fatalf("padding-bit variant (mask %#x) accepted: %v", mask, err)
		}
	}
}

func TestCacheIsBounded(t *testing.T) {
	const size = 8
	pub, priv := genKey(t)
	v := newVerifierAt(pub, size, t0.Add(time.Minute))
	iss := newIssuerAt(priv, testIss, testAud, time.Hour, t0)

	var toks []string
	for i := range 5 * size {
		tok := mustIssue(t, iss, fmt.Sprintf("user-%d", i), false)
		toks = append(toks, tok)
		if _, err := v.Verify(tok); err != nil {
			t.Fatal(err)
		}
		if n := v.cache.len(); n > size {
			t.Fatalf("cache holds %d entries, bound is %d", n, size)
		}
		if n := len(v.cache.items); n != v.cache.ll.Len() {
			t.Fatalf("cache map (%d) and list (%d) out of sync", n, v.cache.ll.Len())
		}
	}
	if n := v.cache.len(); n != size {
		t.Fatalf("cache holds %d entries after %d inserts, want %d", n, 5*size, size)
	}

	// The most recent tokens are cached; the oldest were evicted.
	_, before := v.CacheStats()
	if _, err := v.Verify(toks[len(toks)-1]); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(toks[0]); err != nil {
		t.Fatal(err)
	}
	hits, after := v.CacheStats()
	if hits != 1 || after != before+1 {
		t.Fatalf("want newest to hit and oldest to miss; hits=%d misses %d->%d", hits, before, after)
	}
}

func TestVerifyConcurrent(t *testing.T) {
	pub, priv := genKey(t)
	v := newVerifierAt(pub, 4, t0.Add(time.Minute))
	iss := newIssuerAt(priv, testIss, testAud, time.Hour, t0)
	_, otherPriv := genKey(t)
	forged := mustIssue(t, newIssuerAt(otherPriv, testIss, testAud, time.Hour, t0), "user-0", false)

	const nTokens = 10
	toks := make([]string, nTokens)
	for i := range toks {
		toks[i] = mustIssue(t, iss, fmt.Sprintf("user-%d", i), i%2 == 0)
	}

	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 16 {
		wg.Go(func() {
			for j := range 100 {
				k := (g*7 + j) % nTokens
				c, err := v.Verify(toks[k])
				if err != nil || c.Username != fmt.Sprintf("user-%d", k) || c.Roles.Has(RoleAdmin) != (k%2 == 0) {
					errs <- fmt.Errorf("token %d: claims %+v, err %v", k, c, err)
					return
				}
				if j%10 == 0 {
					if _, err := v.Verify(forged); !errors.Is(err, ErrInvalidToken) {
						errs <- fmt.Errorf("forged token: err %v", err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := v.cache.len(); n > 4 {
		t.Fatalf("cache grew to %d under concurrency, bound is 4", n)
	}
	hits, misses := v.CacheStats()
	if hits+misses != 16*(100+10) {
		t.Fatalf("hits+misses = %d, want %d", hits+misses, 16*110)
	}
}

func benchmarkVerify(b *testing.B, cacheSize int) {
	pub, priv := genKey(b)
	tok := mustIssue(b, NewIssuer(priv, testIss, testAud, time.Hour), "alice", true)
	v := NewVerifier(pub, testIss, testAud, cacheSize)
	for b.Loop() {
		if _, err := v.Verify(tok); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyNoCache(b *testing.B) { benchmarkVerify(b, 0) }

func BenchmarkVerifyCached(b *testing.B) { benchmarkVerify(b, 1024) }
