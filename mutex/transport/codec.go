package transport

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/dlockfs/dlockfs/mutex"
)

// Payload layout (the plaintext inside a frame):
//
//	byte 0    version<<4 | kind   (version 1; kind 1..5 = mutex.MsgType,
//	                               14 = hello, 15 = welcome)
//	message:  flags byte (bit 0 = Try; other bits must be 0)
//	          str From, uvarint FromIncarnation, str To, uvarint ToIncarnation,
//	          str Lock, uvarint Time, uvarint ReqTime
//	hello:    str Name, uvarint Incarnation, str ToName  (client -> server)
//	welcome:  str Name, uvarint Incarnation              (server -> client)
//
// where str is one length byte (0..255) followed by that many bytes. Nothing
// may follow the last field.
const (
	wireVersion = 1
	kindHello   = 14
	kindWelcome = 15

	flagTry = 1

	// maxPayload is the largest encoded message: a version/type byte, a
	// flags byte, three full names and five maximal varints.
	maxPayload = 2 + 3*(1+mutex.MaxNameLen) + 5*binary.MaxVarintLen64
)

// errMalformed is wrapped by every decoding error.
var errMalformed = errors.New("malformed payload")

// appendMessage appends the encoding of m to dst. Names longer than
// mutex.MaxNameLen cannot be encoded.
func appendMessage(dst []byte, m mutex.Message) ([]byte, error) {
	if m.Type < mutex.MsgRequest || m.Type > mutex.MsgHello {
		return dst, fmt.Errorf("transport: encode: unknown message type %d", m.Type)
	}
	if len(m.From) > mutex.MaxNameLen || len(m.To) > mutex.MaxNameLen || len(m.Lock) > mutex.MaxNameLen {
		return dst, fmt.Errorf("transport: encode: a name is longer than %d bytes", mutex.MaxNameLen)
	}
	var flags byte
	if m.Try {
		flags |= flagTry
	}
	dst = append(dst, wireVersion<<4|byte(m.Type), flags)
	dst = appendStr(dst, m.From)
	dst = binary.AppendUvarint(dst, m.FromIncarnation)
	dst = appendStr(dst, m.To)
	dst = binary.AppendUvarint(dst, m.ToIncarnation)
	dst = appendStr(dst, m.Lock)
	dst = binary.AppendUvarint(dst, m.Time)
	dst = binary.AppendUvarint(dst, m.ReqTime)
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

// decoder reads a payload field by field; the first error sticks.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", errMalformed, what)
	}
	d.b = nil
}

func (d *decoder) byte(what string) byte {
	if len(d.b) < 1 {
		d.fail("truncated " + what)
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) str(what string, intern interner) string {
	n := int(d.byte(what))
	if d.err != nil {
		return ""
	}
	if len(d.b) < n {
		d.fail("truncated " + what)
		return ""
	}
	s := intern(d.b[:n])
	d.b = d.b[n:]
	return s
}

func (d *decoder) uvarint(what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("bad varint " + what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) end() error {
	if d.err == nil && len(d.b) != 0 {
		d.fail("trailing bytes")
	}
	return d.err
}

// header checks the version and returns the kind.
func (d *decoder) header() byte {
	h := d.byte("header")
	if d.err == nil && h>>4 != wireVersion {
		d.fail(fmt.Sprintf("version %d", h>>4))
	}
	return h & 0x0f
}

// decodeMessage decodes a payload made by appendMessage.
func decodeMessage(b []byte, intern interner) (mutex.Message, error) {
	d := decoder{b: b}
	var m mutex.Message
	kind := d.header()
	if d.err == nil && (kind < byte(mutex.MsgRequest) || kind > byte(mutex.MsgHello)) {
		d.fail(fmt.Sprintf("kind %d is not a message", kind))
	}
	m.Type = mutex.MsgType(kind)
	flags := d.byte("flags")
	if d.err == nil && flags&^flagTry != 0 {
		d.fail("unknown flags")
	}
	m.Try = flags&flagTry != 0
	m.From = d.str("from", intern)
	m.FromIncarnation = d.uvarint("from incarnation")
	m.To = d.str("to", intern)
	m.ToIncarnation = d.uvarint("to incarnation")
	m.Lock = d.str("lock", intern)
	m.Time = d.uvarint("time")
	m.ReqTime = d.uvarint("reqtime")
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
	d := decoder{b: b}
	var h hello
	if k := d.header(); d.err == nil && k != kind {
		d.fail(fmt.Sprintf("kind %d, want %d", k, kind))
	}
	h.Name = d.str("name", plainString)
	h.Incarnation = d.uvarint("incarnation")
	if kind == kindHello {
		h.ToName = d.str("to name", plainString)
	}
	if err := d.end(); err != nil {
		return hello{}, err
	}
	if h.Name == "" {
		return hello{}, fmt.Errorf("%w: empty name", errMalformed)
	}
	return h, nil
}
