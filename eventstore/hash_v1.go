package eventstore

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strconv"
)

// Hash rule 1, kept to verify the events written before events kept the bytes they hash
// (ADR 3, superseded by ADR 7). Their payload and metadata are in jsonb, which keeps values
// but not bytes, so the rule hashes a canonical re-encoding of each document: what
// encoding/json writes for it decoded into maps (keys sorted, no white space, HTML characters
// left alone), numbers kept as spelled. Those events hold only integers, which jsonb renders
// back as written, so re-encoding what jsonb returns gives back the bytes that were hashed.

// hashDomainV1 opens rule 1's encoding.
const hashDomainV1 = "ledger.event.v1"

// recordedAtLayoutV1 is how rule 1 spells the recorded-at time: UTC, microseconds.
const recordedAtLayoutV1 = "2006-01-02T15:04:05.000000Z"

// hashV1 returns SHA-256(prev ‖ rule 1's encoding of in), in's documents being as jsonb gives
// them back. Every field is length-prefixed.
func hashV1(prev []byte, in hashInput) ([]byte, error) {
	payload, err := canonicalV1(in.payload)
	if err != nil {
		return nil, fmt.Errorf("payload: %w", err)
	}
	metadata, err := canonicalV1(in.metadata)
	if err != nil {
		return nil, fmt.Errorf("metadata: %w", err)
	}
	h := sha256.New()
	h.Write(prev)
	for _, f := range [][]byte{
		[]byte(hashDomainV1),
		[]byte(in.streamID),
		strconv.AppendInt(nil, in.version, 10),
		[]byte(in.id.String()),
		[]byte(in.eventType),
		strconv.AppendInt(nil, int64(in.schemaVersion), 10),
		[]byte(in.recordedAt.UTC().Format(recordedAtLayoutV1)),
		payload,
		metadata,
	} {
		h.Write(binary.BigEndian.AppendUint64(nil, uint64(len(f))))
		h.Write(f)
	}
	return h.Sum(nil), nil
}

// canonicalV1 returns rule 1's canonical form of a JSON document.
func canonicalV1(doc []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("not valid JSON: %w", err)
	}
	if dec.More() {
		return nil, fmt.Errorf("not valid JSON: trailing data")
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("re-encode JSON: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte{'\n'}), nil
}
