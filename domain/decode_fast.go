package domain

import (
	"strconv"
	"unicode/utf8"

	"github.com/google/uuid"
)

// fastDecode reads the five payload shapes the ledger writes directly, without encoding/json's
// reflection (the largest share of replaying the log, folding an account or projecting a
// batch). Anything else (an unknown key, an escape in a string, a fraction, a duplicate key,
// null) it hands back, ok false, to decodeJSON, which is the definition; the tests and a fuzz
// target hold the two to the same answers.
func fastDecode(eventType string, schemaVersion int, payload []byte) (Event, bool) {
	if schemaVersion != SchemaVersion {
		return nil, false
	}
	r := &payloadReader{b: payload, ok: true}
	var e Event
	switch eventType {
	case TypeAccountOpened:
		var v AccountOpened
		r.object(func(key []byte, seen *uint8) {
			switch string(key) {
			case "accountId":
				r.once(seen, 1)
				v.AccountID = r.uuid()
			case "username":
				r.once(seen, 2)
				v.Username = r.str()
			default:
				r.ok = false
			}
		})
		e = v
	case TypeCoinsGranted:
		var v CoinsGranted
		r.object(func(key []byte, seen *uint8) {
			switch string(key) {
			case "amount":
				r.once(seen, 1)
				v.Amount = Coins(r.integer())
			case "reason":
				r.once(seen, 2)
				v.Reason = r.str()
			case "grantedBy":
				r.once(seen, 4)
				v.GrantedBy = r.str()
			default:
				r.ok = false
			}
		})
		e = v
	case TypeCoinsSent, TypeCoinsReceived:
		var v CoinsSent
		r.object(func(key []byte, seen *uint8) {
			switch string(key) {
			case "transferId":
				r.once(seen, 1)
				v.TransferID = r.uuid()
			case "from":
				r.once(seen, 2)
				v.From = r.accountRef()
			case "to":
				r.once(seen, 4)
				v.To = r.accountRef()
			case "amount":
				r.once(seen, 8)
				v.Amount = Coins(r.integer())
			default:
				r.ok = false
			}
		})
		if eventType == TypeCoinsSent {
			e = v
		} else {
			e = CoinsReceived(v)
		}
	case TypeItemPurchased:
		var v ItemPurchased
		r.object(func(key []byte, seen *uint8) {
			switch string(key) {
			case "item":
				r.once(seen, 1)
				v.Item = r.str()
			case "price":
				r.once(seen, 2)
				v.Price = Coins(r.integer())
			case "quantity":
				r.once(seen, 4)
				v.Quantity = r.integer()
			default:
				r.ok = false
			}
		})
		e = v
	default:
		return nil, false
	}
	r.space()
	return e, r.ok && r.i == len(r.b)
}

// payloadReader reads the JSON of one payload; any surprise clears ok, and what it returns
// after that does not matter.
type payloadReader struct {
	b  []byte
	i  int
	ok bool
}

func (r *payloadReader) space() {
	for r.i < len(r.b) && (r.b[r.i] == ' ' || r.b[r.i] == '\t' || r.b[r.i] == '\n' || r.b[r.i] == '\r') {
		r.i++
	}
}

// expect consumes c after white space.
func (r *payloadReader) expect(c byte) bool {
	r.space()
	if r.ok && r.i < len(r.b) && r.b[r.i] == c {
		r.i++
		return true
	}
	r.ok = false
	return false
}

// object reads an object, calling member with each key; member must read the value (and
// switch on string(key), which does not allocate). seen is the object's bit set, for once.
func (r *payloadReader) object(member func(key []byte, seen *uint8)) {
	if !r.expect('{') {
		return
	}
	var seen uint8
	r.space()
	if r.i < len(r.b) && r.b[r.i] == '}' {
		r.i++
		return
	}
	for r.ok {
		key := r.rawString()
		if !r.expect(':') {
			return
		}
		member(key, &seen)
		r.space()
		if r.i >= len(r.b) {
			r.ok = false
			return
		}
		switch r.b[r.i] {
		case ',':
			r.i++
		case '}':
			r.i++
			return
		default:
			r.ok = false
		}
	}
}

// once refuses a key met twice (encoding/json keeps the last; the general path decides).
func (r *payloadReader) once(seen *uint8, bit uint8) {
	if *seen&bit != 0 {
		r.ok = false
	}
	*seen |= bit
}

// rawString returns a string's bytes when they are its value: no escapes, no control
// characters, valid UTF-8.
func (r *payloadReader) rawString() []byte {
	if !r.expect('"') {
		return nil
	}
	start := r.i
	ascii := true
	for ; r.i < len(r.b); r.i++ {
		switch c := r.b[r.i]; {
		case c == '"':
			s := r.b[start:r.i]
			r.i++
			if !ascii && !utf8.Valid(s) {
				r.ok = false
			}
			return s
		case c == '\\' || c < 0x20:
			r.ok = false
			return nil
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	r.ok = false
	return nil
}

func (r *payloadReader) str() string { return string(r.rawString()) }

func (r *payloadReader) uuid() uuid.UUID {
	s := r.rawString()
	if !r.ok {
		return uuid.Nil
	}
	id, err := uuid.ParseBytes(s) // what uuid.UUID's UnmarshalText does
	if err != nil {
		r.ok = false
	}
	return id
}

// integer reads an integer as encoding/json reads one into an int64: no fraction, no exponent.
func (r *payloadReader) integer() int64 {
	r.space()
	start := r.i
	if r.i < len(r.b) && r.b[r.i] == '-' {
		r.i++
	}
	digits := r.i
	for r.i < len(r.b) && r.b[r.i] >= '0' && r.b[r.i] <= '9' {
		r.i++
	}
	if r.i == digits || (r.i-digits > 1 && r.b[digits] == '0') {
		r.ok = false
		return 0
	}
	n, err := strconv.ParseInt(string(r.b[start:r.i]), 10, 64)
	if err != nil {
		r.ok = false
	}
	return n
}

func (r *payloadReader) accountRef() AccountRef {
	var ref AccountRef
	r.object(func(key []byte, seen *uint8) {
		switch string(key) {
		case "id":
			r.once(seen, 1)
			ref.ID = r.uuid()
		case "username":
			r.once(seen, 2)
			ref.Username = r.str()
		default:
			r.ok = false
		}
	})
	return ref
}
