package auth

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"

	"golang.org/x/crypto/argon2"
)

// ErrPasswordMismatch reports a well-formed hash that does not match the
// supplied password; callers should treat it as "wrong credentials", not as
// an internal failure.
var ErrPasswordMismatch = errors.New("auth: password does not match")

// ErrMalformedHash reports a stored hash that cannot be parsed or whose
// parameters fall outside what we are willing to compute. It signals data
// corruption or tampering rather than a wrong password.
var ErrMalformedHash = errors.New("auth: malformed password hash")

// OWASP-recommended argon2id parameters: high enough to make offline
// guessing expensive, low enough (19 MiB, a few tens of milliseconds) that a
// login does not dominate request latency.
const (
	argonMemoryKiB = 19 * 1024
	argonTime      = 2
	argonThreads   = 1
	argonSaltLen   = 16
	argonKeyLen    = 32
)

// Upper bounds on parameters read back from a stored hash. A hash row is
// data, and a crafted one asking for gigabytes of memory or thousands of
// passes would otherwise turn a single login into a denial of service.
const (
	maxMemoryKiB = 256 * 1024
	maxTime      = 10
	maxThreads   = 16
	minKeyLen    = 16
	maxKeyLen    = 64
	minSaltLen   = 8
	maxSaltLen   = 64
)

// MaxPasswordBytes bounds the work one password can ask of the hasher; longer ones are refused
// where they come in.
const MaxPasswordBytes = 256

// b64 rejects non-canonical encodings so that one hash has exactly one
// textual form.
var b64 = base64.RawStdEncoding.Strict()

// Hasher hashes and verifies passwords with argon2id. Each computation holds
// one of a fixed number of slots, because argon2 is deliberately CPU- and
// memory-hungry and unbounded concurrency would let a login burst exhaust
// both. A Hasher is safe for concurrent use.
type Hasher struct {
	sem      chan struct{}
	inFlight atomic.Int64
	// peak lets tests prove the bound holds without racing on samples.
	peak atomic.Int64
}

// NewHasher returns a Hasher that runs at most workers argon2 computations at
// once; workers <= 0 means one per CPU.
func NewHasher(workers int) *Hasher {
	if workers <= 0 {
		workers = runtime.NumCPU()
	}
	return &Hasher{sem: make(chan struct{}, workers)}
}

// InFlight reports how many argon2 computations currently hold a slot, for
// metrics and for tests asserting the pool bound.
func (h *Hasher) InFlight() int {
	return int(h.inFlight.Load())
}

// acquire blocks until a slot is free, giving up when ctx ends so a client
// that hung up does not still cost us a hash.
func (h *Hasher) acquire(ctx context.Context) error {
	// A select with both cases ready picks at random, so check first to
	// guarantee an already-cancelled caller never starts a computation.
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("auth: waiting for hash worker: %w", err)
	}
	select {
	case h.sem <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("auth: waiting for hash worker: %w", ctx.Err())
	}
	n := h.inFlight.Add(1)
	for {
		p := h.peak.Load()
		if n <= p || h.peak.CompareAndSwap(p, n) {
			break
		}
	}
	return nil
}

func (h *Hasher) release() {
	h.inFlight.Add(-1)
	<-h.sem
}

type argonParams struct {
	memory  uint32
	time    uint32
	threads uint8
}

func (h *Hasher) derive(ctx context.Context, password string, salt []byte, p argonParams, keyLen uint32) ([]byte, error) {
	if err := h.acquire(ctx); err != nil {
		return nil, err
	}
	defer h.release()
	return argon2.IDKey([]byte(password), salt, p.time, p.memory, p.threads, keyLen), nil
}

// Hash returns a PHC-formatted argon2id hash of password with a fresh random
// salt. It blocks while all workers are busy, up to ctx's deadline.
func (h *Hasher) Hash(ctx context.Context, password string) (string, error) {
	salt := make([]byte, argonSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("auth: generating salt: %w", err)
	}
	p := argonParams{memory: argonMemoryKiB, time: argonTime, threads: argonThreads}
	key, err := h.derive(ctx, password, salt, p, argonKeyLen)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, p.memory, p.time, p.threads,
		b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

// Verify checks password against a hash produced by Hash (or any argon2id
// PHC string within our parameter limits). It returns nil on a match,
// ErrPasswordMismatch on a mismatch and an error wrapping ErrMalformedHash
// when encoded cannot be trusted. Parameters come from encoded so that
// raising the cost later does not invalidate existing hashes.
func (h *Hasher) Verify(ctx context.Context, encoded, password string) error {
	p, salt, want, err := parsePHC(encoded)
	if err != nil {
		return err
	}
	got, err := h.derive(ctx, password, salt, p, uint32(len(want)))
	if err != nil {
		return err
	}
	if subtle.ConstantTimeCompare(got, want) != 1 {
		return ErrPasswordMismatch
	}
	return nil
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformedHash}, args...)...)
}

// parsePHC is strict on purpose: the stored string is the only input that
// decides how much work a login costs, so anything unexpected is refused
// rather than guessed at.
func parsePHC(encoded string) (argonParams, []byte, []byte, error) {
	var p argonParams
	parts := strings.Split(encoded, "$")
	if len(parts) != 6 || parts[0] != "" {
		return p, nil, nil, malformed("want 5 '$'-separated fields")
	}
	if parts[1] != "argon2id" {
		return p, nil, nil, malformed("unsupported algorithm %q", parts[1])
	}
	if parts[2] != "v="+strconv.Itoa(argon2.Version) {
		return p, nil, nil, malformed("unsupported version %q", parts[2])
	}

	kv := strings.Split(parts[3], ",")
	if len(kv) != 3 {
		return p, nil, nil, malformed("want m, t and p parameters")
	}
	var vals [3]uint64
	for i, name := range [3]string{"m", "t", "p"} {
		v, ok := strings.CutPrefix(kv[i], name+"=")
		if !ok {
			return p, nil, nil, malformed("parameter %d: want %s=", i+1, name)
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return p, nil, nil, malformed("parameter %s: %w", name, err)
		}
		vals[i] = n
	}
	m, t, threads := vals[0], vals[1], vals[2]
	switch {
	case threads < 1 || threads > maxThreads:
		return p, nil, nil, malformed("p=%d outside 1..%d", threads, maxThreads)
	case t < 1 || t > maxTime:
		return p, nil, nil, malformed("t=%d outside 1..%d", t, maxTime)
	case m < 8*threads || m > maxMemoryKiB:
		// argon2 needs at least 8 KiB per lane.
		return p, nil, nil, malformed("m=%d outside %d..%d", m, 8*threads, maxMemoryKiB)
	}
	p = argonParams{memory: uint32(m), time: uint32(t), threads: uint8(threads)}

	salt, err := b64.DecodeString(parts[4])
	if err != nil {
		return p, nil, nil, malformed("salt: %w", err)
	}
	if len(salt) < minSaltLen || len(salt) > maxSaltLen {
		return p, nil, nil, malformed("salt length %d outside %d..%d", len(salt), minSaltLen, maxSaltLen)
	}
	key, err := b64.DecodeString(parts[5])
	if err != nil {
		return p, nil, nil, malformed("key: %w", err)
	}
	if len(key) < minKeyLen || len(key) > maxKeyLen {
		return p, nil, nil, malformed("key length %d outside %d..%d", len(key), minKeyLen, maxKeyLen)
	}
	return p, salt, key, nil
}
