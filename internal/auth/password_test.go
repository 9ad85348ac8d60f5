package auth

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/argon2"
)

func TestHashAndVerify(t *testing.T) {
	ctx := context.Background()
	h := NewHasher(2)

	enc1, err := h.Hash(ctx, "correct horse")
	if err != nil {
		t.Fatalf("Hash: %v", err)
	}
	if want := "$argon2id$v=19$m=19456,t=2,p=1$"; !strings.HasPrefix(enc1, want) {
		t.Fatalf("hash %q does not start with %q", enc1, want)
	}
	enc2, err := h.Hash(ctx, "correct horse")
	if err != nil {
		t.Fatalf("Hash: %v", err)
	}
	if enc1 == enc2 {
		t.Fatal("two hashes of the same password are identical; salt is not random")
	}

	if err := h.Verify(ctx, enc1, "correct horse"); err != nil {
		t.Fatalf("Verify(correct) = %v, want nil", err)
	}
	if err := h.Verify(ctx, enc1, "correct horsf"); !errors.Is(err, ErrPasswordMismatch) {
		t.Fatalf("Verify(wrong) = %v, want ErrPasswordMismatch", err)
	}
	if n := h.InFlight(); n != 0 {
		t.Fatalf("InFlight after completion = %d, want 0", n)
	}
}

// Parameters must come from the stored string, otherwise raising the cost
// later would lock out every existing user.
func TestVerifyUsesStoredParameters(t *testing.T) {
	salt := []byte("0123456789abcdef")
	key := argon2.IDKey([]byte("pw"), salt, 1, 64, 1, 16)
	enc := fmt.Sprintf("$argon2id$v=19$m=64,t=1,p=1$%s$%s",
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key))

	h := NewHasher(1)
	if err := h.Verify(context.Background(), enc, "pw"); err != nil {
		t.Fatalf("Verify = %v, want nil", err)
	}
	if err := h.Verify(context.Background(), enc, "pW"); !errors.Is(err, ErrPasswordMismatch) {
		t.Fatalf("Verify(wrong) = %v, want ErrPasswordMismatch", err)
	}
}

func TestVerifyRejectsMalformedAndAbsurdHashes(t *testing.T) {
	salt := base64.RawStdEncoding.EncodeToString([]byte("0123456789abcdef"))
	key := base64.RawStdEncoding.EncodeToString(make([]byte, 32))
	phc := func(alg, ver, params, s, k string) string {
		return "$" + alg + "$" + ver + "$" + params + "$" + s + "$" + k
	}
	ok := "m=19456,t=2,p=1"

	cases := map[string]string{
		"empty":            "",
		"plain text":       "hunter2",
		"too few fields":   "$argon2id$v=19$m=19456,t=2,p=1$" + salt,
		"too many fields":  phc("argon2id", "v=19", ok, salt, key) + "$x",
		"no leading $":     strings.TrimPrefix(phc("argon2id", "v=19", ok, salt, key), "$"),
		"argon2i":          phc("argon2i", "v=19", ok, salt, key),
		"bcrypt":           "$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy",
		"old version":      phc("argon2id", "v=16", ok, salt, key),
		"params reordered": phc("argon2id", "v=19", "t=2,m=19456,p=1", salt, key),
		"param missing":    phc("argon2id", "v=19", "m=19456,t=2", salt, key),
		"param not number": phc("argon2id", "v=19", "m=abc,t=2,p=1", salt, key),
		"param negative":   phc("argon2id", "v=19", "m=19456,t=-2,p=1", salt, key),
		"param overflow":   phc("argon2id", "v=19", "m=99999999999,t=2,p=1", salt, key),
		"memory 4 GiB":     phc("argon2id", "v=19", "m=4194304,t=2,p=1", salt, key),
		"memory 257 MiB":   phc("argon2id", "v=19", "m=263168,t=2,p=1", salt, key),
		"memory too small": phc("argon2id", "v=19", "m=4,t=2,p=1", salt, key),
		"time 0":           phc("argon2id", "v=19", "m=19456,t=0,p=1", salt, key),
		"time 11":          phc("argon2id", "v=19", "m=19456,t=11,p=1", salt, key),
		"time huge":        phc("argon2id", "v=19", "m=19456,t=4000000000,p=1", salt, key),
		"threads 0":        phc("argon2id", "v=19", "m=19456,t=2,p=0", salt, key),
		"threads 17":       phc("argon2id", "v=19", "m=19456,t=2,p=17", salt, key),
		"threads 255":      phc("argon2id", "v=19", "m=19456,t=2,p=255", salt, key),
		"salt not base64":  phc("argon2id", "v=19", ok, "!!!!", key),
		"salt padded":      phc("argon2id", "v=19", ok, salt+"==", key),
		"salt too short":   phc("argon2id", "v=19", ok, base64.RawStdEncoding.EncodeToString([]byte("1234")), key),
		"key not base64":   phc("argon2id", "v=19", ok, salt, "@@@@"),
		"key 8 bytes":      phc("argon2id", "v=19", ok, salt, base64.RawStdEncoding.EncodeToString(make([]byte, 8))),
		"key 128 bytes":    phc("argon2id", "v=19", ok, salt, base64.RawStdEncoding.EncodeToString(make([]byte, 128))),
		"key empty":        phc("argon2id", "v=19", ok, salt, ""),
	}
	h := NewHasher(1)
	for name, enc := range cases {
		t.Run(name, func(t *testing.T) {
			err := h.Verify(context.Background(), enc, "pw")
			if !errors.Is(err, ErrMalformedHash) {
				t.Fatalf("Verify(%q) = %v, want ErrMalformedHash", enc, err)
			}
		})
	}
	if p := h.peak.Load(); p != 0 {
		t.Fatalf("a malformed hash reached argon2 (peak in-flight %d)", p)
	}
}

func TestHasherBoundsConcurrency(t *testing.T) {
	const workers, callers = 2, 8
	h := NewHasher(workers)

	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for i := range callers {
		wg.Go(func() {
			if _, err := h.Hash(context.Background(), fmt.Sprintf("pw-%d", i)); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("Hash: %v", err)
	}

	// peak is recorded at acquire time, so no sample can miss an overshoot.
	if p := h.peak.Load(); p > workers {
		t.Fatalf("peak in-flight = %d, exceeds bound %d", p, workers)
	} else if p < workers {
		t.Fatalf("peak in-flight = %d; with %d callers the pool should have been saturated at %d", p, callers, workers)
	}
	if n := h.InFlight(); n != 0 {
		t.Fatalf("InFlight after completion = %d, want 0", n)
	}
}

func TestHasherRespectsContextWhileWaiting(t *testing.T) {
	h := NewHasher(1)
	h.sem <- struct{}{} // occupy the only slot
	defer func() { <-h.sem }()

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := h.Hash(ctx, "pw")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Hash while pool is full = %v, want context.DeadlineExceeded", err)
	}
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Fatalf("Hash returned after %s; it should give up at the deadline", elapsed)
	}

	cancelled, cancelNow := context.WithCancel(context.Background())
	cancelNow()
	if err := h.Verify(cancelled, "$argon2id$v=19$m=64,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$AAAAAAAAAAAAAAAAAAAAAA", "pw"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Verify with cancelled ctx = %v, want context.Canceled", err)
	}
}

// A caller whose context is already done must not start an argon2 run even
// when a slot is free.
func TestHasherCancelledContextNeverComputes(t *testing.T) {
	h := NewHasher(4)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for range 50 {
		if _, err := h.Hash(ctx, "pw"); !errors.Is(err, context.Canceled) {
			t.Fatalf("Hash with cancelled ctx = %v, want context.Canceled", err)
		}
	}
	if p := h.peak.Load(); p != 0 {
		t.Fatalf("cancelled callers acquired a slot (peak %d)", p)
	}
}

func BenchmarkHash(b *testing.B) {
	h := NewHasher(0)
	ctx := context.Background()
	for b.Loop() {
		if _, err := h.Hash(ctx, "correct horse battery staple"); err != nil {
			b.Fatal(err)
		}
	}
}
