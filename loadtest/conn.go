package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// maxAnswer is the most of an answer's body the generator reads; a sane answer is far smaller.
// A longer body is cut there and its connection closed.
const maxAnswer = 1 << 20

// maxIdle is how long a connection may wait in the pool: less than the ledger's own idle
// timeout (2 minutes), so that the generator rarely finds one the server has closed.
const maxIdle = 90 * time.Second

// connPool is a small HTTP/1.1 client for one plain-http target. net/http's Transport hands
// every request from the caller to a connection's write goroutine and the answer back from
// its read goroutine; at thousands of requests per second those hand-offs and the wake-ups
// behind them were most of the generator's CPU. Here the request's own goroutine writes the
// request and reads the answer on a pooled keep-alive connection.
//
// At most max connections are open; a request that finds none idle and the limit reached
// waits for one, and that wait counts in its latency, as it did in the Transport.
type connPool struct {
	addr   string // host:port to dial
	host   string // the Host header
	dialer net.Dialer
	slots  chan struct{} // a request holds one while it owns a connection (or dials one)

	mu     sync.Mutex
	idle   []*clientConn // the most recently used last: they are taken from the end
	closed bool
}

// clientConn is one connection and the buffers its requests reuse.
type clientConn struct {
	nc        net.Conn
	br        *bufio.Reader
	wbuf      []byte
	used      bool      // it answered a request: the server may have closed it since
	idleSince time.Time // when it went back to the pool
}

// wireRequest is one request as the pool sends it.
type wireRequest struct {
	method        string
	target        string // the request target: path and query, escaped
	authorization string // the header's value; empty: none
	body          []byte // sent as application/json; nil: no body
	// readOnly requests change nothing on the server, so one whose answer did not come may be
	// sent again; see retryable.
	readOnly bool
}

// newConnPool returns a pool for the http URL base that keeps at most max connections.
func newConnPool(base *url.URL, max int) (*connPool, error) {
	if base.Scheme != "http" {
		return nil, fmt.Errorf("the generator's own client speaks plain http, not %q", base.Scheme)
	}
	if max < 1 {
		return nil, fmt.Errorf("at least one connection is needed, got %d", max)
	}
	port := base.Port()
	if port == "" {
		port = "80"
	}
	return &connPool{
		addr:   net.JoinHostPort(base.Hostname(), port),
		host:   base.Host,
		dialer: net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second},
		slots:  make(chan struct{}, max),
	}, nil
}

// roundTrip sends r and reads its answer: the status and, for any status but 200, the body
// (at most maxAnswer bytes of it). A 200's body is read and dropped: a 200 is a success
// whatever it says, but a body cut short is an error. err is a failure to get an answer or
// to read all of it; when the status line had arrived, status is set with it.
func (p *connPool) roundTrip(ctx context.Context, r *wireRequest) (status int, body []byte, err error) {
	if err := p.acquire(ctx); err != nil {
		return 0, nil, err
	}
	defer func() { <-p.slots }()
	c, err := p.take(ctx, !r.readOnly)
	if err != nil {
		return 0, nil, err
	}
	res, fail := c.exchange(ctx, p.host, r)
	if fail.err != nil && retryable(r, c.used, fail) && ctx.Err() == nil {
		// The server most likely closed the connection while it sat in the pool, and this
		// request was either not acted on or is harmless to repeat. Once more, on a new
		// connection: the other idle ones may have been closed as well.
		c.nc.Close()
		if c, err = p.dial(ctx); err != nil {
			return 0, nil, err
		}
		res, fail = c.exchange(ctx, p.host, r)
	}
	if fail.err != nil {
		c.nc.Close()
		if ctxErr := ctx.Err(); ctxErr != nil {
			// The deadline or a cancellation ended it, by way of the connection's deadline.
			fail.err = ctxErr
		}
		return res.status, nil, fail.err
	}
	p.put(c, res.reusable)
	return res.status, res.body, nil
}

// acquire waits for a connection slot, or for ctx to end.
func (p *connPool) acquire(ctx context.Context) error {
	select {
	case p.slots <- struct{}{}:
		return nil
	default:
	}
	select {
	case p.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// take returns an idle connection, the most recently used first, or a new one. With check,
// an idle connection is first checked for a close by the server, which a request that must
// not be sent twice could otherwise not recover from.
func (p *connPool) take(ctx context.Context, check bool) (*clientConn, error) {
	for {
		p.mu.Lock()
		n := len(p.idle)
		if n == 0 {
			p.mu.Unlock()
			return p.dial(ctx)
		}
		c := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		if !check || stillOpen(c.nc) {
			return c, nil
		}
		c.nc.Close()
	}
}

func (p *connPool) dial(ctx context.Context) (*clientConn, error) {
	nc, err := p.dialer.DialContext(ctx, "tcp", p.addr)
	if err != nil {
		return nil, err
	}
	return &clientConn{nc: nc, br: bufio.NewReaderSize(nc, 4096), wbuf: make([]byte, 0, 512)}, nil
}

// put returns c to the pool, or closes it when it cannot carry another request. It also
// closes the connections that have been idle longer than maxIdle, the oldest being first.
func (p *connPool) put(c *clientConn, reusable bool) {
	if !reusable {
		c.nc.Close()
		return
	}
	now := time.Now()
	c.used, c.idleSince = true, now
	var stale []*clientConn
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		c.nc.Close()
		return
	}
	for len(p.idle) > 0 && now.Sub(p.idle[0].idleSince) > maxIdle {
		stale = append(stale, p.idle[0])
		p.idle[0] = nil
		p.idle = p.idle[1:]
	}
	p.idle = append(p.idle, c)
	p.mu.Unlock()
	for _, s := range stale {
		s.nc.Close()
	}
}

// close closes the idle connections; those in use are closed when their requests end.
func (p *connPool) close() {
	p.mu.Lock()
	idle := p.idle
	p.idle, p.closed = nil, true
	p.mu.Unlock()
	for _, c := range idle {
		c.nc.Close()
	}
}

// answer is what an exchange read.
type answer struct {
	status   int
	body     []byte // for any status but 200
	reusable bool   // the body was read to its end and the server keeps the connection open
}

// failure is why an exchange failed, and how far it had got.
type failure struct {
	err error
	// written is how many bytes of the request left; -1: all of them.
	written int
	// answered: some of the answer had arrived.
	answered bool
}

// retryable decides whether a request that failed on a connection may be sent again on a
// fresh one. Only a reused connection qualifies (the server may have closed it while it was
// idle, which is no failure of the server), and then only when the request cannot have been
// acted on twice:
//   - the write failed before any byte of the request left: nothing reached the server;
//   - a read-only request whose write failed, or whose connection ended (EOF, reset) before
//     any byte of the answer arrived.
//
// A buy or a sendCoin that was written in full is never sent again, even when the server
// closed the connection without a word: it may have been received and committed. (A buy is a
// GET, but it spends coins, so it is no more repeatable than a POST.) A timeout is never
// retried: the request's time is up.
func retryable(r *wireRequest, reused bool, f failure) bool {
	var ne net.Error
	switch {
	case !reused, f.answered, errors.As(f.err, &ne) && ne.Timeout():
		return false
	case f.written == 0:
		return true
	case !r.readOnly:
		return false
	case f.written > 0:
		return true
	}
	return errors.Is(f.err, io.EOF) || errors.Is(f.err, io.ErrUnexpectedEOF) || errors.Is(f.err, syscall.ECONNRESET)
}

// aLongTimeAgo is a deadline that has passed: it ends a connection's reads and writes at once.
var aLongTimeAgo = time.Unix(1, 0)

// exchange writes r on c in one write and reads the answer on the calling goroutine. The
// connection's deadline is the context's, and an early cancellation sets one that has passed;
// either way the connection then fails the exchange and is closed.
func (c *clientConn) exchange(ctx context.Context, host string, r *wireRequest) (a answer, f failure) {
	deadline, _ := ctx.Deadline() // none: the zero time, which clears an earlier request's
	if err := c.nc.SetDeadline(deadline); err != nil {
		return answer{}, failure{err: err}
	}
	if ctx.Done() != nil {
		stop := context.AfterFunc(ctx, func() { c.nc.SetDeadline(aLongTimeAgo) })
		defer func() {
			if !stop() {
				// The passed deadline may be set after this returns: the connection must
				// not carry another request.
				a.reusable = false
			}
		}()
	}

	c.wbuf = appendRequest(c.wbuf[:0], host, r)
	if n, err := c.nc.Write(c.wbuf); err != nil {
		return answer{}, failure{err: err, written: n}
	}
	// The first byte of the answer, apart: a connection the server closed while idle ends
	// here with nothing read.
	if _, err := c.br.Peek(1); err != nil {
		return answer{}, failure{err: err, written: -1}
	}
	a, err := readAnswer(c.br)
	if err != nil {
		return a, failure{err: err, written: -1, answered: true}
	}
	// Bytes after the answer were not asked for: the connection is out of step.
	a.reusable = a.reusable && c.br.Buffered() == 0
	return a, failure{}
}

// appendRequest appends r as HTTP/1.1 to b. Keep-alive is HTTP/1.1's default, so no
// Connection header is needed.
func appendRequest(b []byte, host string, r *wireRequest) []byte {
	b = append(b, r.method...)
	b = append(b, ' ')
	b = append(b, r.target...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, host...)
	if r.authorization != "" {
		b = append(b, "\r\nAuthorization: "...)
		b = append(b, r.authorization...)
	}
	if r.body != nil {
		b = append(b, "\r\nContent-Type: application/json\r\nContent-Length: "...)
		b = strconv.AppendInt(b, int64(len(r.body)), 10)
	}
	b = append(b, "\r\n\r\n"...)
	return append(b, r.body...)
}

var (
	errMalformed   = errors.New("malformed HTTP answer")
	errLineTooLong = errors.New("HTTP answer header line too long")
	errEncoding    = errors.New("HTTP answer in a transfer encoding other than chunked")
)

// readAnswer reads one answer from br: status line, header and body.
func readAnswer(br *bufio.Reader) (answer, error) {
	var status int
	var h header
	for {
		line, err := readLine(br)
		if err != nil {
			return answer{}, err
		}
		var http10 bool
		if status, http10, err = parseStatusLine(line); err != nil {
			return answer{}, err
		}
		if h, err = readHeader(br, http10); err != nil {
			return answer{}, err
		}
		// An interim answer (100 Continue, 103 Early Hints) is followed by the real one.
		if status >= 200 || status == 101 {
			break
		}
	}
	// From here on an error comes with the status, as net/http's body reads do.
	a := answer{status: status}
	keep := a.status != 200
	var complete bool
	var err error
	switch {
	case a.status == 101:
		return answer{}, fmt.Errorf("%w: unasked-for 101 Switching Protocols", errMalformed)
	case a.status == 204 || a.status == 304:
		complete = true
	case h.chunked:
		a.body, complete, err = readChunked(br, keep)
	case h.contentLength >= 0:
		a.body, complete, err = readLength(br, h.contentLength, keep)
	default:
		// Delimited by the end of the connection, which cannot carry another request.
		a.body, err = readToEnd(br, keep)
		h.close = true
	}
	a.reusable = complete && !h.close
	return a, err
}

// header is what the generator needs of an answer's header.
type header struct {
	contentLength int64 // -1: none
	chunked       bool
	close         bool // the server closes the connection after this answer
}

func parseStatusLine(line []byte) (status int, http10 bool, err error) {
	// HTTP/1.1 200 OK
	if len(line) < 12 || string(line[:7]) != "HTTP/1." || line[8] != ' ' || (len(line) > 12 && line[12] != ' ') {
		return 0, false, fmt.Errorf("%w: status line %q", errMalformed, truncate(line))
	}
	for _, d := range line[9:12] {
		if d < '0' || d > '9' {
			return 0, false, fmt.Errorf("%w: status line %q", errMalformed, truncate(line))
		}
		status = status*10 + int(d-'0')
	}
	if status < 100 {
		return 0, false, fmt.Errorf("%w: status line %q", errMalformed, truncate(line))
	}
	return status, line[7] == '0', nil
}

func readHeader(br *bufio.Reader, http10 bool) (header, error) {
	h := header{contentLength: -1, close: http10}
	for {
		line, err := readLine(br)
		if err != nil {
			return h, err
		}
		if len(line) == 0 {
			if h.chunked {
				// A length beside chunked is not to be trusted, nor the connection after it.
				h.close = h.close || h.contentLength >= 0
			}
			return h, nil
		}
		i := 0
		for i < len(line) && line[i] != ':' {
			i++
		}
		if i == 0 || i == len(line) {
			return h, fmt.Errorf("%w: header line %q", errMalformed, truncate(line))
		}
		name, value := line[:i], trimSpace(line[i+1:])
		switch {
		case equalFold(name, "Content-Length"):
			n, ok := parseDecimal(value)
			if !ok || (h.contentLength >= 0 && n != h.contentLength) {
				return h, fmt.Errorf("%w: Content-Length %q", errMalformed, truncate(value))
			}
			h.contentLength = n
		case equalFold(name, "Transfer-Encoding"):
			if !equalFold(value, "chunked") {
				return h, fmt.Errorf("%w: %q", errEncoding, truncate(value))
			}
			h.chunked = true
		case equalFold(name, "Connection"):
			if hasToken(value, "close") {
				h.close = true
			} else if http10 && hasToken(value, "keep-alive") {
				h.close = false
			}
		}
	}
}

// readLength reads a body of n bytes: kept when keep, else dropped. Of a body longer than
// maxAnswer only maxAnswer bytes are read, and complete is false.
func readLength(br *bufio.Reader, n int64, keep bool) (body []byte, complete bool, err error) {
	complete = n <= maxAnswer
	if !complete {
		n = maxAnswer
	}
	if keep {
		body = make([]byte, n)
		_, err = io.ReadFull(br, body)
	} else {
		_, err = br.Discard(int(n))
	}
	if err != nil {
		return nil, false, unexpectedEOF(err)
	}
	return body, complete, nil
}

// readToEnd reads a body that ends with the connection: kept when keep, else dropped. Of a
// body longer than maxAnswer only maxAnswer bytes are read.
func readToEnd(br *bufio.Reader, keep bool) ([]byte, error) {
	limited := io.LimitReader(br, maxAnswer)
	if keep {
		return io.ReadAll(limited)
	}
	_, err := io.Copy(io.Discard, limited)
	return nil, err
}

// readChunked reads a chunked body and its trailer: kept when keep, else dropped. Of a body
// longer than maxAnswer only maxAnswer bytes are read, and complete is false.
func readChunked(br *bufio.Reader, keep bool) (body []byte, complete bool, err error) {
	total := 0
	for {
		line, err := readLine(br)
		if err != nil {
			return nil, false, unexpectedEOF(err)
		}
		size, ok := parseChunkSize(line)
		if !ok {
			return nil, false, fmt.Errorf("%w: chunk size %q", errMalformed, truncate(line))
		}
		if size == 0 {
			break
		}
		n, cut := size, false
		if size > int64(maxAnswer-total) {
			n, cut = int64(maxAnswer-total), true
		}
		if keep {
			body = append(body, make([]byte, n)...)
			_, err = io.ReadFull(br, body[total:])
		} else {
			_, err = br.Discard(int(n))
		}
		if err != nil {
			return nil, false, unexpectedEOF(err)
		}
		total += int(n)
		if cut {
			return body, false, nil
		}
		// The chunk's data ends with a line break.
		if line, err = readLine(br); err != nil {
			return nil, false, unexpectedEOF(err)
		} else if len(line) != 0 {
			return nil, false, fmt.Errorf("%w: no line break after a chunk", errMalformed)
		}
	}
	// The trailer: header lines, none of which matter here, up to an empty one.
	for {
		line, err := readLine(br)
		if err != nil {
			return nil, false, unexpectedEOF(err)
		}
		if len(line) == 0 {
			return body, true, nil
		}
	}
}

// readLine reads a line and returns it without its line break; it is valid until the next
// read from br.
func readLine(br *bufio.Reader) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	switch {
	case errors.Is(err, bufio.ErrBufferFull):
		return nil, errLineTooLong
	case err != nil:
		return nil, err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

// unexpectedEOF is err, but io.ErrUnexpectedEOF for an answer that ended early.
func unexpectedEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// parseChunkSize parses a chunk-size line: hexadecimal digits, then perhaps whitespace and
// chunk extensions, which are ignored.
func parseChunkSize(line []byte) (int64, bool) {
	var n int64
	i := 0
	for ; i < len(line); i++ {
		d := line[i]
		switch {
		case d >= '0' && d <= '9':
			d -= '0'
		case d >= 'a' && d <= 'f':
			d -= 'a' - 10
		case d >= 'A' && d <= 'F':
			d -= 'A' - 10
		default:
			goto end
		}
		if i == 15 { // 16 hex digits would overflow; no answer is that long
			return 0, false
		}
		n = n<<4 | int64(d)
	}
end:
	if i == 0 {
		return 0, false
	}
	rest := trimSpace(line[i:])
	return n, len(rest) == 0 || rest[0] == ';'
}

func parseDecimal(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	var n int64
	for _, d := range b {
		if d < '0' || d > '9' {
			return 0, false
		}
		n = n*10 + int64(d-'0')
	}
	return n, true
}

// equalFold reports whether b is s, ignoring ASCII case.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		if lower(b[i]) != lower(s[i]) {
			return false
		}
	}
	return true
}

func lower(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// hasToken reports whether the comma-separated list v holds token, ignoring ASCII case.
func hasToken(v []byte, token string) bool {
	for len(v) > 0 {
		i := 0
		for i < len(v) && v[i] != ',' {
			i++
		}
		if equalFold(trimSpace(v[:i]), token) {
			return true
		}
		if i == len(v) {
			break
		}
		v = v[i+1:]
	}
	return false
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// truncate shortens what goes into an error message: the message is an error key, and the
// report lists each key.
func truncate(b []byte) []byte {
	if len(b) > 40 {
		return b[:40]
	}
	return b
}
