package eventstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
)

// Reads and checks for auditors: a stream page by page, a stream as of a point in the past,
// the end of the readable log, and one link of a hash chain at a time.

// LoadPage returns at most limit events of streamID with a version above after, in version
// order. A stream's versions are dense and each commits after the one before it, so paging by
// version never skips an event.
func (s *Store) LoadPage(ctx context.Context, streamID string, after int64, limit int) ([]RecordedEvent, error) {
	if limit <= 0 {
		return nil, invalid("load page: limit %d must be positive", limit)
	}
	rows, err := s.pool.Query(ctx, `SELECT `+eventColumns+` FROM events
		WHERE stream_id = $1 AND stream_version > $2 ORDER BY stream_version LIMIT $3`, streamID, after, limit)
	if err != nil {
		return nil, fmt.Errorf("eventstore: load page %q: %w", streamID, err)
	}
	evs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (RecordedEvent, error) { return scanEvent(r) })
	if err != nil {
		return nil, fmt.Errorf("eventstore: load page %q: %w", streamID, err)
	}
	return evs, nil
}

// PayloadEvent is what folding a stored event needs: its version, type and payload.
type PayloadEvent struct {
	Version       int64
	Type          string
	SchemaVersion int
	// Payload is the document as stored (not validated: it was when it was appended).
	Payload []byte
}

// LoadThroughPosition returns what folding needs of the events of streamID at or before the
// global position pos, in version order. Appends to one stream are serialised, so a stream's
// positions ascend with its versions and the answer is a prefix of the stream.
func (s *Store) LoadThroughPosition(ctx context.Context, streamID string, pos int64) ([]PayloadEvent, error) {
	// "+ 0" keeps the planner on the stream's index alone: with stale statistics it ANDs in a
	// scan of the primary key up to the position, most of the statement's time on a long log.
	return s.loadPayloads(ctx, "load through position", streamID, `global_position + 0 <= $2`, pos)
}

// LoadRecordedBy returns what folding needs of the events of streamID recorded at or before t,
// in version order. Recorded-at times are stamped before an append waits for its stream, so in
// rare cases a version is recorded a moment earlier than the one before it: the answer may then
// have a hole, and a caller that needs a prefix of the stream stops at the first one.
func (s *Store) LoadRecordedBy(ctx context.Context, streamID string, t time.Time) ([]PayloadEvent, error) {
	return s.loadPayloads(ctx, "load recorded by", streamID, `recorded_at <= $2`, t)
}

// loadPayloads reads one stream's payloads with one statement through the (stream_id,
// stream_version) index, and only the columns folding needs: a time-travelling read of a long
// stream is mostly the cost of moving and decoding them.
func (s *Store) loadPayloads(ctx context.Context, what, streamID, cond string, arg any) ([]PayloadEvent, error) {
	rows, err := s.pool.Query(ctx, `SELECT stream_version, event_type, schema_version, payload FROM events
		WHERE stream_id = $1 AND `+cond+` ORDER BY stream_version`, streamID, arg)
	if err != nil {
		return nil, fmt.Errorf("eventstore: %s %q: %w", what, streamID, err)
	}
	defer rows.Close()
	var out []PayloadEvent
	types := make(map[string]string)
	for rows.Next() {
		var e PayloadEvent
		var schema int32
		var typ []byte
		// []byte, not json.RawMessage, for the payload: pgx would validate the JSON.
		if err := rows.Scan(&e.Version, &typ, &schema, &e.Payload); err != nil {
			return nil, fmt.Errorf("eventstore: %s %q: %w", what, streamID, err)
		}
		var ok bool
		if e.Type, ok = types[string(typ)]; !ok {
			e.Type = string(typ)
			types[e.Type] = e.Type
		}
		e.SchemaVersion = int(schema)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("eventstore: %s %q: %w", what, streamID, err)
	}
	return out, nil
}

// WaitSettled returns once every transaction with an id below xid has ended (usually within
// milliseconds): from then on the log's readers (ReadLog, LogHead) read every event those
// transactions committed. It polls the fence, the oldest running transaction, until ctx ends.
func (s *Store) WaitSettled(ctx context.Context, xid uint64) error {
	for {
		var settled bool
		if err := s.pool.QueryRow(ctx, `SELECT pg_snapshot_xmin(pg_current_snapshot()) >= $1::text::xid8`,
			strconv.FormatUint(xid, 10)).Scan(&settled); err != nil {
			return fmt.Errorf("eventstore: wait for the log's fence: %w", err)
		}
		if settled {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// LogHead returns the checkpoint of the last event a log reader can read now, below the oldest
// running transaction; the zero Checkpoint when there is none. Every event at or before it
// stays readable in ReadLog, whatever commits later, so it is a fixed end for a replay.
func (s *Store) LogHead(ctx context.Context) (Checkpoint, error) {
	var c Checkpoint
	err := s.pool.QueryRow(ctx, `SELECT transaction_id, global_position FROM events
		WHERE transaction_id < pg_snapshot_xmin(pg_current_snapshot())
		ORDER BY transaction_id DESC, global_position DESC LIMIT 1`).Scan(&c.TransactionID, &c.Position)
	if errors.Is(err, pgx.ErrNoRows) {
		return Checkpoint{}, nil
	}
	if err != nil {
		return Checkpoint{}, fmt.Errorf("eventstore: log head: %w", err)
	}
	return c, nil
}

// ReadLogRaw is ReadLog for readers of the whole log that check every stored byte but do not
// use the decoded metadata, as the verifier does: the same statement, order and fence, but
// rows are decoded straight from PostgreSQL's binary format, and payload and metadata are taken
// as they come, neither validated nor decoded (Metadata stays zero; RawMetadata holds the
// document). Decoding is most of what ReadLog costs per event, and a replay of millions of
// events pays it for nothing. Events are appended to buf[:0], which may be a previous page to
// reuse.
func (s *Store) ReadLogRaw(ctx context.Context, after Checkpoint, limit int, buf []RecordedEvent) ([]RecordedEvent, error) {
	if limit <= 0 {
		return nil, invalid("read log: limit %d must be positive", limit)
	}
	rows, err := s.pool.Query(ctx, ReadLogSQL, after.TransactionID, after.Position, limit)
	if err != nil {
		return nil, fmt.Errorf("eventstore: read log: %w", err)
	}
	defer rows.Close()
	out := buf[:0]
	d := rawDecoder{binary: binaryLogColumns(rows.FieldDescriptions()), names: make(map[string]string)}
	for rows.Next() {
		var e RecordedEvent
		if d.binary {
			err = d.decode(rows.RawValues(), &e)
		} else {
			// Another query mode than pgx's default sends text: let pgx decode it. []byte, not
			// json.RawMessage, for the documents: pgx would validate the JSON.
			var schema int32
			var payload, meta []byte
			err = rows.Scan(&e.Position, &e.TransactionID, &e.StreamID, &e.Version, &e.ID,
				&e.Type, &schema, &payload, &meta, &e.RecordedAt, &e.Hash)
			e.SchemaVersion, e.Payload, e.RawMetadata = int(schema), payload, meta
		}
		if err != nil {
			return nil, fmt.Errorf("eventstore: read log: %w", err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("eventstore: read log: %w", err)
	}
	return out, nil
}

// logColumnTypes are the types of eventColumns, in order.
var logColumnTypes = [...]uint32{pgtype.Int8OID, pgtype.XID8OID, pgtype.TextOID, pgtype.Int8OID, pgtype.UUIDOID,
	pgtype.TextOID, pgtype.Int4OID, pgtype.JSONBOID, pgtype.JSONBOID, pgtype.TimestamptzOID, pgtype.ByteaOID}

// binaryLogColumns reports whether the columns are eventColumns in the formats pgx asks for
// by default: binary, except for text and jsonb, which it takes as text (the same bytes as
// their binary format, but for jsonb's leading version byte).
func binaryLogColumns(fields []pgconn.FieldDescription) bool {
	if len(fields) != len(logColumnTypes) {
		return false
	}
	for i, f := range fields {
		if f.DataTypeOID != logColumnTypes[i] {
			return false
		}
		switch f.DataTypeOID {
		case pgtype.TextOID:
		case pgtype.JSONBOID:
			if f.Format != pgtype.TextFormatCode {
				return false
			}
		default:
			if f.Format != pgtype.BinaryFormatCode {
				return false
			}
		}
	}
	return true
}

// rawDecoder decodes rows of eventColumns as binaryLogColumns describes them. The bytes of a
// page's rows are copied into a few large blocks instead of one allocation per value, and
// stream ids and types, which repeat, are shared.
type rawDecoder struct {
	binary bool
	names  map[string]string
	block  []byte
}

// postgresEpoch is where PostgreSQL counts timestamps from, in Unix microseconds.
const postgresEpoch = 946_684_800_000_000

func (d *rawDecoder) decode(v [][]byte, e *RecordedEvent) error {
	for i, b := range v {
		want := 0
		switch logColumnTypes[i] {
		case pgtype.Int8OID, pgtype.XID8OID, pgtype.TimestamptzOID:
			want = 8
		case pgtype.Int4OID:
			want = 4
		case pgtype.UUIDOID:
			want = 16
		}
		if b == nil || (want > 0 && len(b) != want) {
			return fmt.Errorf("column %d: %d bytes", i, len(b))
		}
	}
	e.Position = int64(binary.BigEndian.Uint64(v[0]))
	e.TransactionID = binary.BigEndian.Uint64(v[1])
	e.StreamID = d.name(v[2])
	e.Version = int64(binary.BigEndian.Uint64(v[3]))
	copy(e.ID[:], v[4])
	e.Type = d.name(v[5])
	e.SchemaVersion = int(int32(binary.BigEndian.Uint32(v[6])))
	e.Payload = d.bytes(v[7])
	e.RawMetadata = d.bytes(v[8])
	us := int64(binary.BigEndian.Uint64(v[9]))
	if us == math.MaxInt64 || us == math.MinInt64 {
		return errors.New("recorded_at is infinite")
	}
	e.RecordedAt = time.UnixMicro(postgresEpoch + us).UTC()
	e.Hash = d.bytes(v[10])
	return nil
}

func (d *rawDecoder) name(b []byte) string {
	if s, ok := d.names[string(b)]; ok {
		return s
	}
	s := string(b)
	d.names[s] = s
	return s
}

// bytes copies b into the current block; the result's capacity ends with it, so that appending
// to it never writes over the next value.
func (d *rawDecoder) bytes(b []byte) []byte {
	if len(d.block)+len(b) > cap(d.block) {
		d.block = make([]byte, 0, max(256<<10, len(b)))
	}
	start := len(d.block)
	d.block = append(d.block, b...)
	return d.block[start:len(d.block):len(d.block)]
}

// VerifyLink checks one link of a stream's hash chain: that e's stored hash is the hash of prev
// (the stored hash of the stream's previous event, nil for version 1) and e's content. A reader
// walking the global log checks every stream's chain this way, one event at a time, without
// holding whole streams; VerifyChain is the same check over one stream. Checking that versions
// follow each other is left to the caller, who knows the previous one. nil means the link holds.
func VerifyLink(prev []byte, e RecordedEvent) *ChainBreak {
	scratch := scratchPool.Get().(*[]byte)
	defer scratchPool.Put(scratch)
	buf, err := appendCanonical((*scratch)[:0], e.Payload)
	if err != nil {
		return &ChainBreak{StreamID: e.StreamID, Version: e.Version, EventID: e.ID, Reason: "payload: " + err.Error()}
	}
	split := len(buf)
	if buf, err = appendCanonical(buf, e.RawMetadata); err != nil {
		return &ChainBreak{StreamID: e.StreamID, Version: e.Version, EventID: e.ID, Reason: "metadata: " + err.Error()}
	}
	*scratch = buf
	want := linkHash(prev, hashInput{
		streamID: e.StreamID, version: e.Version, id: e.ID, eventType: e.Type,
		schemaVersion: e.SchemaVersion, recordedAt: e.RecordedAt, payload: buf[:split], metadata: buf[split:],
	})
	if !bytes.Equal(want[:], e.Hash) {
		return &ChainBreak{StreamID: e.StreamID, Version: e.Version, EventID: e.ID, Reason: "hash mismatch"}
	}
	return nil
}

// scratchPool holds VerifyLink's buffers for canonical documents, so that checking a link
// allocates nothing in the usual case.
var scratchPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// linkHash is chainHash computed in one pass over one buffer, without the allocations and
// formatting of the general code: a replay of millions of events hashes every one. The tests
// hold it to chainHash's answers.
func linkHash(prev []byte, in hashInput) [sha256.Size]byte {
	var space [768]byte
	b := append(space[:0], prev...)
	field := func(n int) { b = binary.BigEndian.AppendUint64(b, uint64(n)) }
	field(len(hashDomain))
	b = append(b, hashDomain...)
	field(len(in.streamID))
	b = append(b, in.streamID...)
	var num [20]byte
	v := strconv.AppendInt(num[:0], in.version, 10)
	field(len(v))
	b = append(b, v...)
	field(36)
	b = appendUUID(b, in.id)
	field(len(in.eventType))
	b = append(b, in.eventType...)
	v = strconv.AppendInt(num[:0], int64(in.schemaVersion), 10)
	field(len(v))
	b = append(b, v...)
	t := in.recordedAt.UTC()
	if y := t.Year(); y >= 1000 && y <= 9999 {
		field(len(recordedAtLayout))
		b = appendRecordedAt(b, t)
	} else {
		s := t.Format(recordedAtLayout)
		field(len(s))
		b = append(b, s...)
	}
	field(len(in.payload))
	b = append(b, in.payload...)
	field(len(in.metadata))
	b = append(b, in.metadata...)
	return sha256.Sum256(b)
}

// appendUUID appends id's canonical text form, as id.String() writes it.
func appendUUID(b []byte, id uuid.UUID) []byte {
	const digits = "0123456789abcdef"
	for i, c := range id {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			b = append(b, '-')
		}
		b = append(b, digits[c>>4], digits[c&0x0f])
	}
	return b
}

// appendRecordedAt appends t (UTC, a four-digit year) in recordedAtLayout.
func appendRecordedAt(b []byte, t time.Time) []byte {
	pad := func(n, width int) {
		var d [9]byte
		for i := width - 1; i >= 0; i-- {
			d[i] = byte('0' + n%10)
			n /= 10
		}
		b = append(b, d[:width]...)
	}
	year, month, day := t.Date()
	hour, minute, second := t.Clock()
	pad(year, 4)
	b = append(b, '-')
	pad(int(month), 2)
	b = append(b, '-')
	pad(day, 2)
	b = append(b, 'T')
	pad(hour, 2)
	b = append(b, ':')
	pad(minute, 2)
	b = append(b, ':')
	pad(second, 2)
	b = append(b, '.')
	pad(t.Nanosecond()/1000, 6)
	return append(b, 'Z')
}

// appendCanonical appends CanonicalJSON(doc) to dst, fast for the documents the log holds.
// Verifying a log of millions of events spends much of its time here, and the general path
// (decode into maps, re-encode) is several times slower than a direct rewrite of the bytes
// PostgreSQL returns. The fast path gives up on anything unusual, and CanonicalJSON, the
// definition, answers then.
func appendCanonical(dst, doc []byte) ([]byte, error) {
	c := canonicalizer{src: doc, out: dst}
	if c.document() {
		return c.out, nil
	}
	b, err := CanonicalJSON(doc)
	if err != nil {
		return dst, err
	}
	return append(dst, b...), nil
}

// canonicalizer rewrites a JSON document into canonical form in one pass: object members
// sorted by key, no white space. It handles objects, arrays, literals, integers of up to 64
// bits and strings without escapes (the only strings whose bytes encoding/json writes back
// unchanged); any other input makes it give up rather than guess.
type canonicalizer struct {
	src   []byte
	i     int
	out   []byte
	depth int
}

// maxCanonicalDepth bounds the fast path's recursion; deeper documents take the general path.
const maxCanonicalDepth = 64

func (c *canonicalizer) document() bool {
	c.space()
	if !c.value() {
		return false
	}
	c.space()
	return c.i == len(c.src)
}

func (c *canonicalizer) space() {
	for c.i < len(c.src) {
		switch c.src[c.i] {
		case ' ', '\t', '\n', '\r':
			c.i++
		default:
			return
		}
	}
}

func (c *canonicalizer) value() bool {
	if c.i >= len(c.src) {
		return false
	}
	switch b := c.src[c.i]; {
	case b == '{':
		return c.object()
	case b == '[':
		return c.array()
	case b == '"':
		s, ok := c.str()
		c.out = append(c.out, s...)
		return ok
	case b == '-' || (b >= '0' && b <= '9'):
		return c.integer()
	default:
		for _, lit := range []string{"true", "false", "null"} {
			if bytes.HasPrefix(c.src[c.i:], []byte(lit)) {
				c.i += len(lit)
				c.out = append(c.out, lit...)
				return true
			}
		}
		return false
	}
}

// member is an object member while its object is rewritten: the key (quotes included) and
// where its canonical value sits in out.
type member struct {
	key        []byte
	start, end int
}

func (c *canonicalizer) object() bool {
	if c.depth++; c.depth > maxCanonicalDepth {
		return false
	}
	defer func() { c.depth-- }()
	c.i++ // {
	c.space()
	if c.i < len(c.src) && c.src[c.i] == '}' {
		c.i++
		c.out = append(c.out, "{}"...)
		return true
	}
	// Values are written in document order first, then copied in key order behind them, and the
	// sorted copy is moved back into place.
	base := len(c.out)
	var spare [8]member
	members := spare[:0]
	for {
		c.space()
		if c.i >= len(c.src) || c.src[c.i] != '"' {
			return false
		}
		key, ok := c.str()
		if !ok {
			return false
		}
		c.space()
		if c.i >= len(c.src) || c.src[c.i] != ':' {
			return false
		}
		c.i++
		c.space()
		start := len(c.out)
		if !c.value() {
			return false
		}
		members = append(members, member{key: key, start: start, end: len(c.out)})
		c.space()
		if c.i >= len(c.src) {
			return false
		}
		if c.src[c.i] == ',' {
			c.i++
			continue
		}
		if c.src[c.i] != '}' {
			return false
		}
		c.i++
		break
	}
	// Keys are held with their quotes; order them by what is between the quotes, or "a " would
	// sort before "a" (a quote is greater than a space).
	slices.SortFunc(members, func(a, b member) int {
		return bytes.Compare(a.key[1:len(a.key)-1], b.key[1:len(b.key)-1])
	})
	sorted := len(c.out)
	c.out = append(c.out, '{')
	for k, m := range members {
		if k > 0 {
			if bytes.Equal(members[k-1].key, m.key) {
				return false // a duplicate key: the general path decides which value wins
			}
			c.out = append(c.out, ',')
		}
		c.out = append(c.out, m.key...)
		c.out = append(c.out, ':')
		c.out = append(c.out, c.out[m.start:m.end]...)
	}
	c.out = append(c.out, '}')
	n := copy(c.out[base:], c.out[sorted:])
	c.out = c.out[:base+n]
	return true
}

func (c *canonicalizer) array() bool {
	if c.depth++; c.depth > maxCanonicalDepth {
		return false
	}
	defer func() { c.depth-- }()
	c.i++ // [
	c.out = append(c.out, '[')
	c.space()
	if c.i < len(c.src) && c.src[c.i] == ']' {
		c.i++
		c.out = append(c.out, ']')
		return true
	}
	for {
		c.space()
		if !c.value() {
			return false
		}
		c.space()
		if c.i >= len(c.src) {
			return false
		}
		switch c.src[c.i] {
		case ',':
			c.i++
			c.out = append(c.out, ',')
		case ']':
			c.i++
			c.out = append(c.out, ']')
			return true
		default:
			return false
		}
	}
}

// str returns the string at c.i, quotes included, when encoding/json would write its decoded
// value back as the very same bytes: no escapes, no control characters, valid UTF-8 without
// U+2028 and U+2029 (which it escapes).
func (c *canonicalizer) str() ([]byte, bool) {
	start := c.i
	ascii := true
	for j := c.i + 1; j < len(c.src); j++ {
		switch b := c.src[j]; {
		case b == '"':
			c.i = j + 1
			s := c.src[start:c.i]
			if !ascii && (!utf8.Valid(s) || bytes.Contains(s, []byte("\u2028")) || bytes.Contains(s, []byte("\u2029"))) {
				return nil, false
			}
			return s, true
		case b == '\\' || b < 0x20:
			return nil, false
		case b >= utf8.RuneSelf:
			ascii = false
		}
	}
	return nil, false
}

// integer copies an integer that fits in 64 bits, as CanonicalJSON keeps it; fractions,
// exponents, -0 and leading zeros are left to the general path (which refuses most of them).
func (c *canonicalizer) integer() bool {
	start := c.i
	if c.src[c.i] == '-' {
		c.i++
	}
	digits := c.i
	for c.i < len(c.src) && c.src[c.i] >= '0' && c.src[c.i] <= '9' {
		c.i++
	}
	n := c.i - digits
	if n == 0 || (n > 1 && c.src[digits] == '0') {
		return false
	}
	if c.i < len(c.src) {
		if b := c.src[c.i]; b == '.' || b == 'e' || b == 'E' {
			return false
		}
	}
	s := c.src[start:c.i]
	if string(s) == "-0" {
		return false
	}
	if n >= 19 {
		if _, err := strconv.ParseInt(string(s), 10, 64); err != nil {
			return false
		}
	}
	c.out = append(c.out, s...)
	return true
}
