package transport

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/dlockfs/dlockfs/mutex"
)

// Payload layout (the plaintext inside a frame):
//
//	byte 0    version<<4 | kind   (version 3; kind 1..12 = mutex.MsgType,
//	                               mutex.MsgProbe being 12 with flag bit 2,
//	                               mutex.MsgBreak 12 with flag bit 3,
//	                               13 = query, see query.go,
//	                               14 = hello, 15 = welcome)
//	message:  flags byte (bit 0 = Try, bit 1 = Shared, bit 2 = Probe, bit 3 = Break;
//	          other bits must be 0)
//	          str From, uvarint FromIncarnation, str To, uvarint ToIncarnation,
//	          str Lock, uvarint Time, uvarint ReqTime,
//	          uvarint Config, uvarint Session, uvarint Reserve,
//	          str Target, uvarint TargetInc, uvarint Seen,
//	          uvarint len(Voters) (at most mutex.MaxVoters), str each voter
//	hello:    str Name, uvarint Incarnation, str ToName  (client -> server)
//	welcome:  str Name, uvarint Incarnation              (server -> client)
//
// where str is one length byte (0..255) followed by that many bytes. Nothing
// may follow the last field.
//
// The Shared flag came within version 2: a message without it is encoded as
// before, so peers that predate shared locks interoperate for exclusive ones
// and drop a shared request as malformed (unknown flags), which leaves that
// request waiting rather than granted wrongly.
const (
	wireVersion = 3  // 3: Seen, and kinds 11 (deferred) and 12 (suspect; probe with flagProbe)
	kindQuery   = 13 // status queries and answers (query.go), versioned by their own byte
	kindHello   = 14
	kindWelcome = 15

	flagTry    = 1
	flagShared = 2
	flagProbe  = 4 // kind 12 is mutex.MsgProbe, not MsgSuspect: the 4-bit kinds are all taken
	flagBreak  = 8 // kind 12 is mutex.MsgBreak (an operator's break), likewise

	// maxPayload is the largest encoded message: a version/type byte, a
	// flags byte, four full names, ten maximal varints and a full voter
	// set.
	maxPayload = 2 + 4*(1+mutex.MaxNameLen) + 10*binary.MaxVarintLen64 + mutex.MaxVoters*(1+mutex.MaxNameLen)
)

// errMalformed is wrapped by every decoding error.
var errMalformed = errors.New("malformed payload")

// appendMessage appends the encoding of m to dst. Names longer than
// mutex.MaxNameLen cannot be encoded.
func appendMessage(dst []byte, m mutex.Message) ([]byte, error) {
	if m.Type < mutex.MsgRequest || m.Type > mutex.MaxMsgType {
		return dst, fmt.Errorf("transport: encode: unknown message type %d", m.Type)
	}
	if len(m.From) > mutex.MaxNameLen || len(m.To) > mutex.MaxNameLen || len(m.Lock) > mutex.MaxNameLen ||
		len(m.Target) > mutex.MaxNameLen {
		return dst, fmt.Errorf("transport: encode: a name is longer than %d bytes", mutex.MaxNameLen)
	}
	if len(m.Voters) > mutex.MaxVoters {
		return dst, fmt.Errorf("transport: encode: %d voters, over %d", len(m.Voters), mutex.MaxVoters)
	}
	for _, v := range m.Voters {
		if len(v) > mutex.MaxNameLen {
			return dst, fmt.Errorf("transport: encode: a name is longer than %d bytes", mutex.MaxNameLen)
		}
	}
	var flags byte
	if m.Try {
		flags |= flagTry
	}
	if m.Shared {
		flags |= flagShared
	}
	kind := byte(m.Type)
	switch m.Type {
	case mutex.MsgProbe:
		kind, flags = byte(mutex.MsgSuspect), flags|flagProbe
	case mutex.MsgBreak:
		kind, flags = byte(mutex.MsgSuspect), flags|flagBreak
	}
	dst = append(dst, wireVersion<<4|kind, flags)
	dst = appendStr(dst, m.From)
	dst = binary.AppendUvarint(dst, m.FromIncarnation)
	dst = appendStr(dst, m.To)
	dst = binary.AppendUvarint(dst, m.ToIncarnation)
	dst = appendStr(dst, m.Lock)
	dst = binary.AppendUvarint(dst, m.Time)
	dst = binary.AppendUvarint(dst, m.ReqTime)
	dst = binary.AppendUvarint(dst, m.Config)
	dst = binary.AppendUvarint(dst, m.Session)
	dst = binary.AppendUvarint(dst, m.Reserve)
	dst = appendStr(dst, m.Target)
	dst = binary.AppendUvarint(dst, m.TargetInc)
	dst = binary.AppendUvarint(dst, m.Seen)
	dst = binary.AppendUvarint(dst, uint64(len(m.Voters)))
	for _, v := range m.Voters {
		dst = appendStr(dst, v)
	}
	return dst, nil
}

func appendStr(dst []byte, s string) []byte {
	dst = append(dst, byte(len(s)))
	return append(dst, s...)
}

// interner turns decoded name bytes into strings; it lets a connection
// reuse the strings it already has instead of allocating new ones.
type interner func([]byte) string

func plainString(b []byte) string { return string(b) }

// decoder reads a payload field by field. Its readers are small enough to
// be inlined; the first failure sticks (bad) and is reported by end.
type decoder struct {
	b    []byte
	n    int // length of the whole payload, for error offsets
	bad  bool
	why  string
	fail int // offset of the first failure
}

func newDecoder(b []byte) decoder { return decoder{b: b, n: len(b)} }

func (d *decoder) setBad(why string) {
	if !d.bad {
		d.bad, d.why, d.fail = true, why, d.n-len(d.b)
	}
	d.b = nil
}

func (d *decoder) byte() byte {
	if len(d.b) < 1 {
		d.setBad("truncated")
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) str(intern interner) string {
	if len(d.b) < 1 || len(d.b) < 1+int(d.b[0]) {
		d.setBad("truncated string")
		return ""
	}
	n := 1 + int(d.b[0])
	s := intern(d.b[1:n])
	d.b = d.b[n:]
	return s
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.setBad("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) end() error {
	if !d.bad && len(d.b) != 0 {
		d.setBad("trailing bytes")
	}
	if d.bad {
		return fmt.Errorf("%w: %s at byte %d", errMalformed, d.why, d.fail)
	}
	return nil
}

// header checks the version and returns the kind.
func (d *decoder) header() byte {
	h := d.byte()
	if !d.bad && h>>4 != wireVersion {
		d.setBad(fmt.Sprintf("version %d", h>>4))
	}
	return h & 0x0f
}

// decodeMessage decodes a payload made by appendMessage.
func decodeMessage(b []byte, intern interner) (mutex.Message, error) {
	d := newDecoder(b)
	var m mutex.Message
	kind := d.header()
	if !d.bad && (kind < byte(mutex.MsgRequest) || kind > byte(mutex.MsgSuspect)) {
		d.setBad(fmt.Sprintf("kind %d is not a message", kind))
	}
	m.Type = mutex.MsgType(kind)
	flags := d.byte()
	if !d.bad && flags&^(flagTry|flagShared|flagProbe|flagBreak) != 0 {
		d.setBad("unknown flags")
	}
	if !d.bad && flags&flagProbe != 0 && flags&flagBreak != 0 {
		d.setBad("probe and break flags together")
	}
	if flags&flagProbe != 0 {
		if !d.bad && kind != byte(mutex.MsgSuspect) {
			d.setBad("probe flag on another kind")
		}
		m.Type = mutex.MsgProbe
	}
	if flags&flagBreak != 0 {
		if !d.bad && kind != byte(mutex.MsgSuspect) {
			d.setBad("break flag on another kind")
		}
		m.Type = mutex.MsgBreak
	}
	m.Try = flags&flagTry != 0
	m.Shared = flags&flagShared != 0
	m.From = d.str(intern)
	m.FromIncarnation = d.uvarint()
	m.To = d.str(intern)
	m.ToIncarnation = d.uvarint()
	m.Lock = d.str(intern)
	m.Time = d.uvarint()
	m.ReqTime = d.uvarint()
	m.Config = d.uvarint()
	m.Session = d.uvarint()
	m.Reserve = d.uvarint()
	m.Target = d.str(intern)
	m.TargetInc = d.uvarint()
	m.Seen = d.uvarint()
	if n := d.uvarint(); !d.bad && n > mutex.MaxVoters {
		d.setBad("too many voters")
	} else if n > 0 {
		m.Voters = make([]string, 0, n)
		for range n {
			m.Voters = append(m.Voters, d.str(intern))
		}
	}
	if err := d.end(); err != nil {
		return mutex.Message{}, err
	}
	return m, nil
}

// hello opens every connection: the client names itself and the peer it
// means to reach. The server answers with a welcome naming itself.
type hello struct {
	Name        string
	Incarnation uint64
	ToName      string // empty in a welcome
	query       byte   // a query open's what byte; 0 for a hello
}

func appendHello(dst []byte, kind byte, h hello) []byte {
	dst = append(dst, wireVersion<<4|kind)
	dst = appendStr(dst, h.Name)
	dst = binary.AppendUvarint(dst, h.Incarnation)
	if kind == kindHello {
		dst = appendStr(dst, h.ToName)
	}
	return dst
}

func decodeHello(b []byte, kind byte) (hello, error) {
	d := newDecoder(b)
	var h hello
	if k := d.header(); !d.bad && k != kind {
		d.setBad(fmt.Sprintf("kind %d, want %d", k, kind))
	}
	h.Name = d.str(plainString)
	h.Incarnation = d.uvarint()
	if kind == kindHello {
		h.ToName = d.str(plainString)
	}
	if err := d.end(); err != nil {
		return hello{}, err
	}
	if h.Name == "" {
		return hello{}, fmt.Errorf("%w: empty name", errMalformed)
	}
	return h, nil
}
