package transport

import (
	"bufio"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"time"
)

// Connection layout. Both ends first send a preamble:
//
//	"DLKF" | version byte (1) | mode byte (0 plaintext, 1 AES-GCM) | 32 random bytes
//
// The server's random bytes are its challenge, the client's its nonce. Every
// byte after the preamble is a frame:
//
//	uint32 big-endian body length | body
//
// In plaintext mode the body is the payload (see codec.go). In AES-GCM mode
// the body is the payload sealed with the session key
//
//	HMAC-SHA256(Key, "dlockfs-v1" || serverChallenge || clientNonce)[:len(Key)]
//
// under the nonce direction(4 bytes) || counter(8 bytes, big-endian), the
// counter starting at 0 in each direction and rising by one per frame, and
// with the 4 length bytes as additional data. A replayed, reordered,
// truncated or forged frame therefore fails to open; so does any frame of a
// replayed connection, whose session key differs. The first client frame is
// a hello, the first server frame a welcome; after that only the client
// sends (lock messages), each connection carrying one direction.
const (
	magic       = "DLKF"
	protoVer    = 1
	modePlain   = 0
	modeAESGCM  = 1
	nonceLen    = 32
	preambleLen = len(magic) + 2 + nonceLen
	headerLen   = 4
	kdfLabel    = "dlockfs-v1"

	dirClientToServer = 0x63327300 // "c2s\0"
	dirServerToClient = 0x73326300 // "s2c\0"
)

var (
	errHandshake = errors.New("handshake failed")
	errOversized = errors.New("frame too large")
	errAuth      = errors.New("frame failed authentication")
	errIdentity  = errors.New("message identity does not match the connection's hello")
)

type preamble struct {
	mode  byte
	nonce [nonceLen]byte
}

func newPreamble(mode byte) (preamble, error) {
	p := preamble{mode: mode}
	if _, err := rand.Read(p.nonce[:]); err != nil {
		return p, fmt.Errorf("transport: random nonce: %w", err)
	}
	return p, nil
}

func (p preamble) append(dst []byte) []byte {
	dst = append(dst, magic...)
	dst = append(dst, protoVer, p.mode)
	return append(dst, p.nonce[:]...)
}

func parsePreamble(b []byte) (preamble, error) {
	var p preamble
	if len(b) != preambleLen || string(b[:len(magic)]) != magic {
		return p, fmt.Errorf("%w: bad magic", errHandshake)
	}
	if b[len(magic)] != protoVer {
		return p, fmt.Errorf("%w: protocol version %d", errHandshake, b[len(magic)])
	}
	p.mode = b[len(magic)+1]
	copy(p.nonce[:], b[len(magic)+2:])
	return p, nil
}

func modeName(mode byte) string {
	switch mode {
	case modePlain:
		return "plaintext"
	case modeAESGCM:
		return "AES-GCM"
	}
	return fmt.Sprintf("mode(%d)", mode)
}

// sessionKey derives the key of one connection from the cluster key and
// both ends' random bytes.
func sessionKey(key []byte, challenge, nonce [nonceLen]byte) []byte {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(kdfLabel))
	mac.Write(challenge[:])
	mac.Write(nonce[:])
	return mac.Sum(nil)[:len(key)]
}

// frameCipher seals or opens the frames of one direction of a connection.
// Without an AEAD it only frames.
type frameCipher struct {
	aead  cipher.AEAD
	nonce [12]byte
	ctr   uint64
	// challenge is the server's random bytes of the connection, from
	// which an in-band rekey derives the next session key (rekey.go).
	challenge [nonceLen]byte
}

func newFrameCipher(sessKey []byte, dir uint32) (*frameCipher, error) {
	c := &frameCipher{}
	if sessKey == nil {
		return c, nil
	}
	block, err := aes.NewCipher(sessKey)
	if err != nil {
		return nil, fmt.Errorf("transport: cipher: %w", err)
	}
	if c.aead, err = cipher.NewGCM(block); err != nil {
		return nil, fmt.Errorf("transport: gcm: %w", err)
	}
	binary.BigEndian.PutUint32(c.nonce[:4], dir)
	return c, nil
}

func (c *frameCipher) overhead() int {
	if c.aead == nil {
		return 0
	}
	return c.aead.Overhead()
}

func (c *frameCipher) next() []byte {
	binary.BigEndian.PutUint64(c.nonce[4:], c.ctr)
	c.ctr++
	return c.nonce[:]
}

// seal turns buf = [4 spare bytes | payload] into a complete frame.
func (c *frameCipher) seal(buf []byte) []byte {
	ov := c.overhead()
	buf = slices.Grow(buf, ov)
	binary.BigEndian.PutUint32(buf[:headerLen], uint32(len(buf)-headerLen+ov))
	if c.aead == nil {
		return buf
	}
	out := c.aead.Seal(buf[headerLen:headerLen], c.next(), buf[headerLen:], buf[:headerLen])
	return buf[:headerLen+len(out)]
}

// open returns the payload of a frame body, opened in place.
func (c *frameCipher) open(hdr, body []byte) ([]byte, error) {
	if c.aead == nil {
		return body, nil
	}
	p, err := c.aead.Open(body[:0], c.next(), body, hdr)
	if err != nil {
		return nil, errAuth
	}
	return p, nil
}

// frameReader reads and opens the frames of one direction.
type frameReader struct {
	conn    net.Conn
	br      *bufio.Reader
	c       *frameCipher
	max     int
	timeout time.Duration // from a frame's first byte to its last
	hdr     [headerLen]byte
	buf     []byte
	// send is the other direction's cipher, set by serverHandshake (a
	// query connection writes its answer with it).
	send *frameCipher
}

// read returns the next payload, valid until the next call. Unless the
// caller manages the deadlines (managed), it waits for a frame's first byte
// without a deadline and for the rest of the frame within timeout.
func (r *frameReader) read(managed bool) ([]byte, error) {
	if _, err := r.br.Peek(1); err != nil {
		return nil, err
	}
	own := false
	if !managed && r.br.Buffered() < headerLen {
		if err := r.conn.SetReadDeadline(time.Now().Add(r.timeout)); err != nil {
			return nil, err
		}
		own = true
	}
	if _, err := io.ReadFull(r.br, r.hdr[:]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint32(r.hdr[:]))
	if n > r.max || n < r.c.overhead() {
		return nil, fmt.Errorf("%w: %d bytes (max %d)", errOversized, n, r.max)
	}
	if !managed && !own && r.br.Buffered() < n {
		if err := r.conn.SetReadDeadline(time.Now().Add(r.timeout)); err != nil {
			return nil, err
		}
		own = true
	}
	if cap(r.buf) < n {
		r.buf = make([]byte, n, max(n, 1024))
	}
	body := r.buf[:n]
	if _, err := io.ReadFull(r.br, body); err != nil {
		return nil, err
	}
	if own {
		if err := r.conn.SetReadDeadline(time.Time{}); err != nil {
			return nil, err
		}
	}
	return r.c.open(r.hdr[:], body)
}
