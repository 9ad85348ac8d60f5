package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"

	"github.com/ledger/ledger/internal/auth"
)

// claims builds a token payload like the service's own, for sub, valid for an hour.
func claims(sub string) map[string]any {
	now := time.Now()
	return map[string]any{
		"sub": sub, "iss": tokenIssuer, "aud": []string{tokenAudience},
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix(), "jti": uniq("jti"),
	}
}

// signToken signs a payload (JSON of c) with alg and key.
func signToken(t testing.TB, c map[string]any, alg jwa.SignatureAlgorithm, key any) string {
	t.Helper()
	payload, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jws.Sign(payload, jws.WithKey(alg, key))
	if err != nil {
		t.Fatalf("sign %s token: %v", alg, err)
	}
	return string(tok)
}

// unsignedToken hand-builds a token with the given header and no signature.
func unsignedToken(t testing.TB, header string, c map[string]any) string {
	t.Helper()
	payload, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding
	return enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString(payload) + "."
}

// TestE2ETokenFailures: missing, malformed, expired and forged tokens are 401 everywhere, and
// change nothing.
func TestE2ETokenFailures(t *testing.T) {
	ts := startTestService(t)
	api := ts.api
	priv, pub, err := auth.LoadOrCreateKeys(ts.signingKeyFile, ts.verificationKeyFile)
	if err != nil {
		t.Fatalf("read the service's keys: %v", err)
	}
	_, otherKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}

	victim, mallory := uniq("victim"), uniq("mallory")
	victimTok := api.login(t, victim)
	malloryTok := api.login(t, mallory)
	victimBefore := api.info(t, victimTok)

	// The crafting machinery is sound: a token built here with the service's key for the right
	// issuer and audience is accepted. So the refusals below are about what each case changes.
	if in := api.info(t, signToken(t, claims(victim), jwa.EdDSA, priv)); in.String() != victimBefore.String() {
		t.Fatalf("hand-built valid token sees %s, want %s", in, victimBefore)
	}

	with := func(c map[string]any, edit func(map[string]any)) map[string]any {
		edit(c)
		return c
	}
	segments := strings.Split(malloryTok, ".")
	if len(segments) != 3 {
		t.Fatalf("token is not a compact JWS: %q", malloryTok)
	}
	// Mallory's signed payload, with the subject changed to the victim; signature kept.
	var mp map[string]any
	raw, err := base64.RawURLEncoding.DecodeString(segments[1])
	if err != nil || json.Unmarshal(raw, &mp) != nil {
		t.Fatalf("cannot decode the payload of %q", malloryTok)
	}
	mp["sub"] = victim
	tamperedPayload, _ := json.Marshal(mp)
	tampered := segments[0] + "." + base64.RawURLEncoding.EncodeToString(tamperedPayload) + "." + segments[2]
	sig := []byte(segments[2])
	if sig[0] == 'A' {
		sig[0] = 'B'
	} else {
		sig[0] = 'A'
	}
	badSig := segments[0] + "." + segments[1] + "." + string(sig)

	const unknownEmployee = "valid signature for an unknown employee"
	past := time.Now().Add(-2 * time.Hour)
	cases := []struct {
		name          string
		authorization string // the whole header; "" sends none
	}{
		{"no Authorization header", ""},
		{"Bearer with empty token", "Bearer "},
		{"Bearer with blanks", "Bearer    "},
		{"Bearer alone", "Bearer"},
		{"token without the Bearer scheme", victimTok},
		{"Basic scheme", "Basic " + base64.StdEncoding.EncodeToString([]byte(victim+":"+testPassword))},
		{"garbage", "Bearer garbage"},
		{"three garbage segments", "Bearer a.b.c"},
		{"binary junk", "Bearer " + base64.RawURLEncoding.EncodeToString([]byte{0xff, 0, 1, 2})},
		{"oversized token", "Bearer " + strings.Repeat("A", 9000) + "." + segments[1] + "." + segments[2]},
		{"alg none", "Bearer " + unsignedToken(t, `{"alg":"none","typ":"JWT"}`, claims(victim))},
		{"alg None", "Bearer " + unsignedToken(t, `{"alg":"None","typ":"JWT"}`, claims(victim))},
		{"alg none with a signature kept", "Bearer " + strings.TrimSuffix(unsignedToken(t, `{"alg":"none"}`, claims(victim)), ".") + "." + segments[2]},
		{"alg EdDSA without signature", "Bearer " + unsignedToken(t, `{"alg":"EdDSA","typ":"JWT"}`, claims(victim))},
		{"HS256 with a secret", "Bearer " + signToken(t, claims(victim), jwa.HS256, []byte("secret"))},
		{"HS256 keyed with the public key", "Bearer " + signToken(t, claims(victim), jwa.HS256, []byte(pub))},
		{"another Ed25519 key", "Bearer " + signToken(t, claims(victim), jwa.EdDSA, otherKey)},
		{"another Ed25519 key claiming admin", "Bearer " + signToken(t, with(claims("admin"), func(c map[string]any) { c["rol"] = []string{"admin"} }), jwa.EdDSA, otherKey)},
		{"tampered payload", "Bearer " + tampered},
		{"tampered signature", "Bearer " + badSig},
		{"expired", "Bearer " + signToken(t, with(claims(victim), func(c map[string]any) {
			c["iat"], c["nbf"], c["exp"] = past.Unix(), past.Unix(), past.Add(time.Hour).Unix()
		}), jwa.EdDSA, priv)},
		{"not yet valid", "Bearer " + signToken(t, with(claims(victim), func(c map[string]any) {
			c["nbf"] = time.Now().Add(time.Hour).Unix()
		}), jwa.EdDSA, priv)},
		{"wrong issuer", "Bearer " + signToken(t, with(claims(victim), func(c map[string]any) { c["iss"] = "someone-else" }), jwa.EdDSA, priv)},
		{"no issuer", "Bearer " + signToken(t, with(claims(victim), func(c map[string]any) { delete(c, "iss") }), jwa.EdDSA, priv)},
		{"wrong audience", "Bearer " + signToken(t, with(claims(victim), func(c map[string]any) { c["aud"] = []string{"other-api"} }), jwa.EdDSA, priv)},
		{"no audience", "Bearer " + signToken(t, with(claims(victim), func(c map[string]any) { delete(c, "aud") }), jwa.EdDSA, priv)},
		{"no expiry", "Bearer " + signToken(t, with(claims(victim), func(c map[string]any) { delete(c, "exp") }), jwa.EdDSA, priv)},
		{"no subject", "Bearer " + signToken(t, with(claims(victim), func(c map[string]any) { delete(c, "sub") }), jwa.EdDSA, priv)},
		{"empty subject", "Bearer " + signToken(t, with(claims(victim), func(c map[string]any) { c["sub"] = "" }), jwa.EdDSA, priv)},
		{"malformed roles claim", "Bearer " + signToken(t, with(claims(victim), func(c map[string]any) { c["rol"] = "admin" }), jwa.EdDSA, priv)},
		{"unknown role claimed", "Bearer " + signToken(t, with(claims(victim), func(c map[string]any) { c["rol"] = []string{"root"} }), jwa.EdDSA, priv)},
		{unknownEmployee, "Bearer " + signToken(t, claims(uniq("ghost")), jwa.EdDSA, priv)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := func(method, path string, body any) *http.Request {
				r := api.newRequest(t, method, path, "", body)
				if tc.authorization != "" {
					r.Header.Set("Authorization", tc.authorization)
				}
				return r
			}
			wantStatus(t, api.send(t, req(http.MethodGet, "/api/info", nil)), http.StatusUnauthorized)
			wantStatus(t, api.send(t, req(http.MethodGet, "/api/buy/pen", nil)), http.StatusUnauthorized)
			wantStatus(t, api.send(t, req(http.MethodPost, "/api/sendCoin", map[string]any{"toUser": mallory, "amount": 10})), http.StatusUnauthorized)
			grant := api.send(t, req(http.MethodPost, "/api/admin/grant", map[string]any{"toUser": mallory, "amount": 10, "reason": "forged"}))
			if tc.name == unknownEmployee {
				// The token itself is genuine and carries no admin role: refusing the role
				// before looking the employee up is as good as not knowing them.
				if grant.Status != http.StatusUnauthorized && grant.Status != http.StatusForbidden {
					t.Errorf("want 401 or 403, got %s", grant)
				}
			} else {
				wantStatus(t, grant, http.StatusUnauthorized)
			}
		})
	}

	wantSameInfo(t, "victim", victimBefore, api.info(t, victimTok))
	if in := api.info(t, malloryTok); in.Coins != 1000 || len(in.CoinHistory.Received) != 0 {
		t.Errorf("forged requests moved coins to mallory: %s", in)
	}
}
