package transport

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/dlockfs/dlockfs/mutex"
)

// Status queries. A peer asks another for its view of the locks on a
// short-lived query connection to its lock port: the same preamble and
// session key as a lock connection, but the client's first frame is a
// query open (kind kindQuery, op queryOpen) instead of a hello. The server
// answers with its welcome and then answer frames (op queryAnswer, the
// last one without the "more" flag) or one error frame (op queryError),
// and closes the connection. A query connection is not a lock connection:
// it does not replace the client's inbound lock connection, and its frames
// never reach Incoming.
//
// Query payloads (see codec.go for str and the header byte):
//
//	every query frame: header (kind 13) | byte op | byte queryVersion (1)
//	open:    str Name, uvarint Incarnation, str ToName, byte what (1 = status)
//	answer:  byte flags (bit 0 more, bit 1 majority mode, bit 2 lease valid,
//	         bit 3 truncated), str Node, uvarint Incarnation, uvarint Lamport,
//	         uvarint len(Locks), each lock:
//	           str Name, byte Phase, byte lockflags (bit 0 Try, bit 1 Shared),
//	           uvarint Token, uvarint ReqTime, uvarint Waiting,
//	           uvarint len(Queued), str each, uvarint len(Awaiting), str each
//	error:   str message (at most 255 bytes)
//
// Shared came within query version 1: an answer without shared locks is
// encoded as before; a client that predates it refuses an answer that
// carries one (unknown lock flags) and reports the peer as not answering.
//
// A server that predates queries fails the handshake (its hello decoder
// refuses kind 13) and closes the connection: the client reports it as not
// answering. A newer query version is refused the same way.
const (
	queryVersion = 1

	queryOpen   = 1
	queryAnswer = 2
	queryError  = 3

	queryStatus = 1 // what: the peer's view of its locks

	answerMore      = 1
	answerMajority  = 2
	answerLease     = 4
	answerTruncated = 8

	lockTry    = 1
	lockShared = 2

	// answerBudget bounds the payload of one answer frame: every peer
	// accepts frames this large (MaxFrameSize is at least minFrameSize).
	answerBudget = maxPayload
	// maxAnswerFrames bounds the frames of one answer (about 4 MiB); the
	// locks beyond are left out and the answer is marked Truncated.
	maxAnswerFrames = 256
)

// StatusAnswer is one peer's answer to a status query: its view of every
// lock it has state for.
type StatusAnswer struct {
	Node        string
	Incarnation uint64
	Lamport     uint64
	// Majority reports majority mode; LeaseValid that the peer holds a
	// lease now (majority mode only).
	Majority, LeaseValid bool
	// Truncated reports that locks were left out (the answer would have
	// exceeded maxAnswerFrames frames, or a lock's lists a frame).
	Truncated bool
	// Locks carry Name, Phase, Token, ReqTime, Try, Shared, Waiting,
	// Queued and Awaiting; Holder, Holders and Permissions are not sent
	// (they are local).
	Locks []mutex.LockStatus
}

// StatusHandler answers a status query from peer from. It runs on the
// query connection's goroutine, never on the driver's; ctx ends when the
// connection's deadline passes or the transport closes.
type StatusHandler func(ctx context.Context, from string) (StatusAnswer, error)

// statusHandler holds the handler set by HandleStatus.
type statusHandler = atomic.Pointer[StatusHandler]

// HandleStatus sets the function that answers other peers' status queries
// (nil: queries are answered with an error). Safe to call at any time.
func (t *Transport) HandleStatus(h StatusHandler) {
	if h == nil {
		t.status.Store(nil)
		return
	}
	t.status.Store(&h)
}

// ErrQueryRefused wraps the error a peer answered a query with.
var ErrQueryRefused = errors.New("transport: query refused")

// QueryStatus asks the added peer name for its view of the locks, on a
// connection of its own, and waits for the whole answer until ctx ends: a
// peer that is paused, unreachable or too old to answer makes it return
// ctx's error (wrapped) when ctx ends, or the connection's error sooner.
// The lock connections are not touched.
func (t *Transport) QueryStatus(ctx context.Context, name string) (StatusAnswer, error) {
	t.mu.RLock()
	p := t.peers[name]
	t.mu.RUnlock()
	if p == nil {
		return StatusAnswer{}, fmt.Errorf("transport: query %q: not a known peer", name)
	}
	inc, addr := p.target()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(t.ctx, cancel)
	defer stop()
	d := net.Dialer{Timeout: t.cfg.DialTimeout}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return StatusAnswer{}, fmt.Errorf("transport: query %q at %s: %w", name, addr, err)
	}
	defer conn.Close()
	closeOnEnd := context.AfterFunc(ctx, func() { conn.Close() })
	defer closeOnEnd()
	ans, err := t.queryConn(conn, name, inc)
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err() // the connection's error only says it was closed
		}
		return StatusAnswer{}, fmt.Errorf("transport: query %q at %s: %w", name, addr, err)
	}
	return ans, nil
}

// queryConn runs the client side of one query connection.
func (t *Transport) queryConn(conn net.Conn, name string, inc uint64) (StatusAnswer, error) {
	br := bufio.NewReaderSize(conn, 16<<10)
	bw := bufio.NewWriterSize(conn, 1024)
	var key []byte
	if t.keys != nil {
		key = t.keys.GetPrimaryKey()
	}
	open := func(dst []byte) []byte {
		return appendQueryOpen(dst, hello{Name: t.cfg.Name, Incarnation: t.cfg.Incarnation, ToName: name}, queryStatus)
	}
	_, recv, err := t.clientOpen(conn, br, bw, key, name, inc, open)
	if err != nil {
		return StatusAnswer{}, err
	}
	fr := frameReader{conn: conn, br: br, c: recv, max: t.cfg.MaxFrameSize}
	var ans StatusAnswer
	for frames := 0; frames < maxAnswerFrames; frames++ {
		payload, err := fr.read(true)
		if err != nil {
			return StatusAnswer{}, fmt.Errorf("read answer: %w", err)
		}
		more, err := decodeAnswer(payload, &ans)
		if err != nil {
			return StatusAnswer{}, err
		}
		if !more {
			if ans.Node != name {
				return StatusAnswer{}, fmt.Errorf("%w: answer from %q, asked %q", errIdentity, ans.Node, name)
			}
			return ans, nil
		}
	}
	return StatusAnswer{}, fmt.Errorf("%w: answer of more than %d frames", errMalformed, maxAnswerFrames)
}

// serveQuery answers the query h opened, on conn, sealing with send, and
// returns when the answer is written (the caller closes conn).
func (t *Transport) serveQuery(conn net.Conn, send *frameCipher, h hello, remote string) {
	deadline := time.Now().Add(t.cfg.WriteTimeout)
	if err := conn.SetDeadline(deadline); err != nil {
		return
	}
	ctx, cancel := context.WithDeadline(t.ctx, deadline)
	defer cancel()
	var (
		ans StatusAnswer
		err error
	)
	if hp := t.status.Load(); hp == nil {
		err = errors.New("this peer answers no status queries")
	} else {
		ans, err = (*hp)(ctx, h.Name)
	}
	bw := bufio.NewWriterSize(conn, 32<<10)
	write := func(payload []byte) error {
		_, err := bw.Write(send.seal(payload))
		return err
	}
	if err != nil {
		msg := err.Error()
		if len(msg) > mutex.MaxNameLen {
			msg = msg[:mutex.MaxNameLen]
		}
		buf := append([]byte{0, 0, 0, 0}, wireVersion<<4|kindQuery, queryError, queryVersion)
		if err := write(appendStr(buf, msg)); err == nil {
			_ = bw.Flush()
		}
		return
	}
	ans.Node = t.cfg.Name
	ans.Incarnation = t.cfg.Incarnation
	for _, frame := range appendAnswerFrames(ans) {
		if err := write(frame); err != nil {
			t.log.Debug("transport: writing a status answer failed", "remote", remote, "peer", h.Name, "err", err)
			return
		}
	}
	if err := bw.Flush(); err != nil {
		t.log.Debug("transport: writing a status answer failed", "remote", remote, "peer", h.Name, "err", err)
	}
}

// appendQueryOpen appends a query open (after the 4 spare header bytes the
// caller put in dst).
func appendQueryOpen(dst []byte, h hello, what byte) []byte {
	dst = append(dst, wireVersion<<4|kindQuery, queryOpen, queryVersion)
	dst = appendStr(dst, h.Name)
	dst = binary.AppendUvarint(dst, h.Incarnation)
	dst = appendStr(dst, h.ToName)
	return append(dst, what)
}

// decodeClientOpen decodes the first client frame: a hello, or a query
// open (then what is its what byte, else 0).
func decodeClientOpen(b []byte) (h hello, what byte, err error) {
	if len(b) == 0 || b[0]&0x0f != kindQuery {
		h, err = decodeHello(b, kindHello)
		return h, 0, err
	}
	d := newDecoder(b)
	d.header()
	if op := d.byte(); !d.bad && op != queryOpen {
		d.setBad(fmt.Sprintf("query op %d, want open", op))
	}
	if v := d.byte(); !d.bad && v != queryVersion {
		d.setBad(fmt.Sprintf("query version %d", v))
	}
	h.Name = d.str(plainString)
	h.Incarnation = d.uvarint()
	h.ToName = d.str(plainString)
	what = d.byte()
	if !d.bad && what != queryStatus {
		d.setBad(fmt.Sprintf("unknown query %d", what))
	}
	if err := d.end(); err != nil {
		return hello{}, 0, err
	}
	if h.Name == "" {
		return hello{}, 0, fmt.Errorf("%w: empty name", errMalformed)
	}
	return h, what, nil
}

// appendAnswerFrames encodes ans as one or more answer payloads, each
// after 4 spare header bytes and at most answerBudget bytes long.
func appendAnswerFrames(ans StatusAnswer) [][]byte {
	var flags byte
	if ans.Majority {
		flags |= answerMajority
	}
	if ans.LeaseValid {
		flags |= answerLease
	}
	if ans.Truncated {
		flags |= answerTruncated
	}
	head := func(flags byte, n int) []byte {
		b := append(make([]byte, 0, 512), 0, 0, 0, 0, wireVersion<<4|kindQuery, queryAnswer, queryVersion, flags)
		b = appendStr(b, ans.Node)
		b = binary.AppendUvarint(b, ans.Incarnation)
		b = binary.AppendUvarint(b, ans.Lamport)
		return binary.AppendUvarint(b, uint64(n))
	}
	// Group the encoded locks into frames; a lock too large for a frame
	// of its own is left out.
	var (
		frames [][][]byte
		cur    [][]byte
		size   int
	)
	const headRoom = 8 + 1 + mutex.MaxNameLen + 3*binary.MaxVarintLen64
	for _, l := range ans.Locks {
		e := appendLockView(nil, l)
		if headRoom+len(e) > answerBudget {
			flags |= answerTruncated
			continue
		}
		if headRoom+size+len(e) > answerBudget {
			frames = append(frames, cur)
			cur, size = nil, 0
		}
		cur = append(cur, e)
		size += len(e)
	}
	frames = append(frames, cur)
	if len(frames) > maxAnswerFrames {
		frames = frames[:maxAnswerFrames]
		flags |= answerTruncated
	}
	out := make([][]byte, 0, len(frames))
	for i, locks := range frames {
		f := flags
		if i < len(frames)-1 {
			f |= answerMore
		}
		b := head(f, len(locks))
		for _, e := range locks {
			b = append(b, e...)
		}
		out = append(out, b)
	}
	return out
}

func appendLockView(dst []byte, l mutex.LockStatus) []byte {
	dst = appendStr(dst, l.Name)
	var f byte
	if l.Try {
		f |= lockTry
	}
	if l.Shared {
		f |= lockShared
	}
	dst = append(dst, byte(l.Phase), f)
	dst = binary.AppendUvarint(dst, l.Token)
	dst = binary.AppendUvarint(dst, l.ReqTime)
	dst = binary.AppendUvarint(dst, uint64(max(l.Waiting, 0)))
	for _, list := range [][]string{l.Queued, l.Awaiting} {
		dst = binary.AppendUvarint(dst, uint64(len(list)))
		for _, s := range list {
			dst = appendStr(dst, s)
		}
	}
	return dst
}

// decodeAnswer decodes one answer (or error) frame into ans, appending its
// locks, and reports whether more frames follow.
func decodeAnswer(b []byte, ans *StatusAnswer) (bool, error) {
	d := newDecoder(b)
	if k := d.header(); !d.bad && k != kindQuery {
		d.setBad(fmt.Sprintf("kind %d, want a query answer", k))
	}
	op := d.byte()
	if v := d.byte(); !d.bad && v != queryVersion {
		d.setBad(fmt.Sprintf("query version %d", v))
	}
	switch {
	case d.bad:
	case op == queryError:
		msg := d.str(plainString)
		if err := d.end(); err != nil {
			return false, err
		}
		return false, fmt.Errorf("%w: %s", ErrQueryRefused, msg)
	case op != queryAnswer:
		d.setBad(fmt.Sprintf("query op %d, want an answer", op))
	}
	flags := d.byte()
	if !d.bad && flags&^(answerMore|answerMajority|answerLease|answerTruncated) != 0 {
		d.setBad("unknown answer flags")
	}
	ans.Node = d.str(plainString)
	ans.Incarnation = d.uvarint()
	ans.Lamport = d.uvarint()
	ans.Majority = flags&answerMajority != 0
	ans.LeaseValid = flags&answerLease != 0
	ans.Truncated = ans.Truncated || flags&answerTruncated != 0
	n := d.uvarint()
	if !d.bad && n > uint64(len(d.b)) { // every lock takes bytes
		d.setBad("too many locks")
	}
	for i := uint64(0); i < n && !d.bad; i++ {
		var l mutex.LockStatus
		l.Name = d.str(plainString)
		ph := d.byte()
		if !d.bad && ph > byte(mutex.Holding) {
			d.setBad(fmt.Sprintf("phase %d", ph))
		}
		l.Phase = mutex.Phase(ph)
		lf := d.byte()
		if !d.bad && lf&^(lockTry|lockShared) != 0 {
			d.setBad("unknown lock flags")
		}
		l.Try = lf&lockTry != 0
		l.Shared = lf&lockShared != 0
		l.Token = d.uvarint()
		l.ReqTime = d.uvarint()
		w := d.uvarint()
		if !d.bad && w > 1<<31 {
			d.setBad("waiting count out of range")
		}
		l.Waiting = int(w)
		for _, list := range []*[]string{&l.Queued, &l.Awaiting} {
			m := d.uvarint()
			if !d.bad && m > uint64(len(d.b)) {
				d.setBad("list too long")
			}
			for j := uint64(0); j < m && !d.bad; j++ {
				*list = append(*list, d.str(plainString))
			}
		}
		ans.Locks = append(ans.Locks, l)
	}
	if err := d.end(); err != nil {
		return false, err
	}
	return flags&answerMore != 0, nil
}
