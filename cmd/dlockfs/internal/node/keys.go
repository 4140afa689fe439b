package node

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/dlockfs/dlockfs/cmd/dlockfs/internal/cli"
	"github.com/dlockfs/dlockfs/mutex/peer"
	"github.com/dlockfs/dlockfs/mutex/transport"
)

// The control socket: a unix socket the mount serves next to its
// mountpoint (MOUNTPOINT.sock unless --control), mode 0600, accepting only
// connections from its own user or root. One request per connection: a
// JSON line {"op": "list|install|use|remove", "key": "BASE64"}; one JSON
// line back, a controlReply.
const (
	// defaultControl is the control socket of the mount at /run/dlockfs,
	// the mountpoint the README and help use.
	defaultControl = "/run/dlockfs.sock"
	// controlSuffix makes a mount's default control socket from its
	// mountpoint.
	controlSuffix = ".sock"
	// controlTimeout bounds one control exchange (reading the request,
	// writing the reply); the key operation itself is bounded by Serf's
	// query timeout.
	controlTimeout = 10 * time.Second
	// keysTimeout bounds "dlockfs keys" waiting for the reply: Serf's
	// query timeout is 3.2 s with the lan profile, ~35 s with wan.
	keysTimeout = time.Minute
	// maxControlRequest bounds a request line.
	maxControlRequest = 4096
)

// keysConfig holds the options of "dlockfs keys".
type keysConfig struct {
	control string
	json    bool
	op      peer.KeyOp
	key     string // base64 as given, or "-": read it from stdin
}

// controlRequest is one request on the control socket.
type controlRequest struct {
	Op  peer.KeyOp `json:"op"`
	Key string     `json:"key,omitempty"`
	// Node, Force and TimeoutMS are the arguments of "forget"; Node is
	// the lock of "break".
	Node      string `json:"node,omitempty"`
	Force     bool   `json:"force,omitempty"`
	TimeoutMS int64  `json:"timeout_ms,omitempty"`
}

// controlReply answers a controlRequest. Error is empty on success; Kind
// classifies it: "primary" (remove of the primary key), "plaintext" (the
// mount has no key), "incomplete" (some member failed), "usage", "other".
type controlReply struct {
	Key    string         `json:"key,omitempty"` // the key the operation was about (base64)
	Report peer.KeyReport `json:"report"`
	Error  string         `json:"error,omitempty"`
	Kind   string         `json:"kind,omitempty"`
	// Voters is the voter set after a forget.
	Voters []string `json:"voters,omitempty"`
	// Cluster answers a cluster-status (clusterstatus.go).
	Cluster *peer.ClusterStatus `json:"cluster,omitempty"`
}

// defaultControlPath is the control socket of a mount at dir.
func defaultControlPath(dir string) string {
	return filepath.Clean(dir) + controlSuffix
}

// decodeKey decodes a KEY given to keys; its errors are usage errors
// (exit 2).
func decodeKey(s string) ([]byte, error) {
	key, err := decodeKeyText("KEY", s)
	if err != nil {
		return nil, cli.Usage(err)
	}
	return key, nil
}

// parseKeys parses "keys [--control PATH] [--json] list|install KEY|use
// KEY|remove KEY".
func parseKeys(cfg *config, args []string) error {
	k := &cfg.keys
	fs := cli.NewFlagSet("keys")
	fs.StringVar(&k.control, "control", defaultControl, "")
	fs.BoolVar(&k.json, "json", false, "")
	pos, _, err := cli.ParseInterspersed(fs, args, -1)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return cli.Usagef("missing operation: list, install KEY, use KEY or remove KEY")
	}
	if k.control == "" {
		return cli.Usagef("--control: empty path")
	}
	k.op = peer.KeyOp(pos[0])
	switch k.op {
	case peer.KeyList:
		if len(pos) != 1 {
			return cli.Usagef("list takes no KEY, got %q", pos[1:])
		}
		return nil
	case peer.KeyInstall, peer.KeyUse, peer.KeyRemove:
	default:
		return cli.Usagef("unknown operation %q: want list, install, use or remove", pos[0])
	}
	if len(pos) != 2 {
		return cli.Usagef("%s takes one KEY (base64, or - to read it from stdin), got %d arguments", k.op, len(pos)-1)
	}
	k.key = pos[1]
	if k.key != "-" {
		_, err := decodeKey(k.key)
		return err
	}
	return nil
}

// runKeys sends one keyring operation to the mount's control socket and
// prints the members' answers.
func runKeys(ctx context.Context, e *cli.Env, cfg config) error {
	k := cfg.keys
	req := controlRequest{Op: k.op}
	if k.op != peer.KeyList {
		s := k.key
		if s == "-" {
			b, err := io.ReadAll(io.LimitReader(os.Stdin, maxControlRequest))
			if err != nil {
				return fmt.Errorf("reading KEY from stdin: %w", err)
			}
			s = string(b)
		}
		key, err := decodeKey(s)
		if err != nil {
			return err
		}
		req.Key = base64.StdEncoding.EncodeToString(key)
	}
	reply, err := callControl(ctx, k.control, req)
	if err != nil {
		return err
	}
	if k.json {
		b, _ := json.MarshalIndent(reply, "", "  ")
		fmt.Fprintf(e.Stdout, "%s\n", b)
	} else {
		printKeyReport(e, reply)
	}
	switch reply.Kind {
	case "":
		return nil
	case "usage":
		return cli.WithCode(cli.ExitUsage, errors.New(reply.Error))
	default:
		return errors.New(reply.Error)
	}
}

// err is the reply's error, if any: exit code usage for a "usage" kind.
func (r controlReply) err() error {
	if r.Error == "" {
		return nil
	}
	if r.Kind == "usage" {
		return cli.WithCode(cli.ExitUsage, errors.New(r.Error))
	}
	return errors.New(r.Error)
}

// callControl makes one request on the control socket at path.
func callControl(ctx context.Context, path string, req controlRequest) (controlReply, error) {
	return callControlTimeout(ctx, path, req, keysTimeout)
}

// callControlTimeout is callControl, waiting up to timeout for the reply.
func callControlTimeout(ctx context.Context, path string, req controlRequest, timeout time.Duration) (controlReply, error) {
	var reply controlReply
	d := net.Dialer{Timeout: 5 * time.Second}
	conn, err := d.DialContext(ctx, "unix", path)
	switch {
	case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ECONNREFUSED):
		return reply, cli.Codef(cli.ExitNotMounted, "no live dlockfs mount serves the control socket %s "+
			"(is 'dlockfs mount' running? a mount at DIR listens on DIR%s unless --control): %w", path, controlSuffix, err)
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return reply, fmt.Errorf("control socket %s: %w (run as the mount's user, usually root)", path, err)
	case err != nil:
		return reply, fmt.Errorf("control socket %s: %w", path, err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return reply, err
	}
	b, _ := json.Marshal(req)
	if _, err := conn.Write(append(b, '\n')); err != nil {
		return reply, fmt.Errorf("control socket %s: %w", path, err)
	}
	line, err := bufio.NewReader(conn).ReadBytes('\n')
	if err != nil {
		return reply, fmt.Errorf("control socket %s: no reply: %w", path, err)
	}
	if err := json.Unmarshal(line, &reply); err != nil {
		return reply, fmt.Errorf("control socket %s: bad reply %q: %w", path, line, err)
	}
	return reply, nil
}

// printKeyReport prints a reply for people: stdout for the result, the
// members' messages on stderr.
func printKeyReport(e *cli.Env, r controlReply) {
	rep := r.Report
	switch {
	case rep.Nodes == 0 && r.Error != "":
		// Refused before asking the cluster: runKeys prints the error.
		return
	case rep.Op == peer.KeyList:
		tw := tabwriter.NewWriter(e.Stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "KEY\tID\tINSTALLED ON\tPRIMARY ON")
		keys := make([]string, 0, len(rep.Keys))
		for k := range rep.Keys {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool { // primary first
			pi, pj := rep.PrimaryKeys[keys[i]], rep.PrimaryKeys[keys[j]]
			if pi != pj {
				return pi > pj
			}
			return keys[i] < keys[j]
		})
		for _, k := range keys {
			fmt.Fprintf(tw, "%s\t%s\t%d/%d\t%d/%d\n", k, keyIDOf(k), rep.Keys[k], rep.Nodes, rep.PrimaryKeys[k], rep.Nodes)
		}
		tw.Flush()
		fmt.Fprintf(e.Stdout, "%d of %d members answered, %d with an error\n", rep.Responses, rep.Nodes, rep.Errors)
	default:
		verb := map[peer.KeyOp]string{peer.KeyInstall: "installed", peer.KeyUse: "made primary", peer.KeyRemove: "removed"}[rep.Op]
		ok := rep.Responses - rep.Errors
		if r.Error == "" {
			fmt.Fprintf(e.Stdout, "key %s %s on all %d members\n", keyIDOf(r.Key), verb, rep.Nodes)
		} else {
			fmt.Fprintf(e.Stdout, "key %s %s on %d of %d members\n", keyIDOf(r.Key), verb, ok, rep.Nodes)
		}
	}
	names := make([]string, 0, len(rep.Messages))
	for n := range rep.Messages {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(e.Stderr, "  %s: %s\n", n, rep.Messages[n])
	}
}

// keyIDOf is the short id of a base64 key (as in the mount's logs).
func keyIDOf(b64 string) string {
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return "?"
	}
	return transport.KeyID(key)
}

// controlServer serves the control socket of a mount.
type controlServer struct {
	ln   *net.UnixListener
	p    *peer.Peer
	log  *slog.Logger
	ops  sync.Mutex // one keyring operation at a time
	wg   sync.WaitGroup
	path string
}

// serveControl listens on path (mode 0600) and serves keyring requests for
// p until close. A stale socket (no one answers) is replaced; a live one is
// an error.
func serveControl(path string, p *peer.Peer, log *slog.Logger) (*controlServer, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("control socket %s: exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("control socket %s: another dlockfs mount serves it (give this one --control PATH)", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("control socket %s: removing the stale socket: %w", path, err)
		}
	}
	old := syscall.Umask(0o177)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	s := &controlServer{ln: ln, p: p, log: log, path: path}
	s.wg.Add(1)
	go s.accept()
	return s, nil
}

// close stops serving, removes the socket and waits for the requests under
// way (a keyring operation ends within Serf's query timeout).
func (s *controlServer) close() {
	s.ln.Close()
	s.wg.Wait()
}

func (s *controlServer) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				s.log.Warn("control socket: accept", "err", err)
			}
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer c.Close()
			s.serve(c)
		}()
	}
}

// allowed reports whether the connecting process runs as our user or root.
func allowed(c *net.UnixConn) (bool, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return false, err
	}
	var cred *syscall.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return false, err
	}
	if cerr != nil {
		return false, cerr
	}
	return cred.Uid == 0 || int(cred.Uid) == os.Geteuid(), nil
}

func (s *controlServer) serve(c *net.UnixConn) {
	if err := c.SetReadDeadline(time.Now().Add(controlTimeout)); err != nil {
		return
	}
	reply := func(r controlReply) {
		b, _ := json.Marshal(r)
		_ = c.SetWriteDeadline(time.Now().Add(controlTimeout))
		_, _ = c.Write(append(b, '\n'))
	}
	if ok, err := allowed(c); !ok {
		s.log.Warn("control socket: refused a process of another user", "err", err)
		reply(controlReply{Error: "permission denied: not the mount's user or root", Kind: "other"})
		return
	}
	line, err := bufio.NewReader(io.LimitReader(c, maxControlRequest)).ReadBytes('\n')
	if err != nil {
		return
	}
	var req controlRequest
	if err := json.Unmarshal(line, &req); err != nil {
		reply(controlReply{Error: "bad request: " + err.Error(), Kind: "usage"})
		return
	}
	if req.Op == opClusterStatus { // no keyring lock: it changes nothing
		reply(s.serveClusterStatus(req))
		return
	}
	if req.Op == opBreak { // no keyring lock: it waits only for one answer
		reply(s.serveBreak(req))
		return
	}
	if req.Op == opForget {
		s.ops.Lock()
		r := s.serveForget(req)
		s.ops.Unlock()
		reply(r)
		return
	}
	var key []byte
	if req.Op != peer.KeyList {
		if key, err = decodeKey(req.Key); err != nil {
			reply(controlReply{Error: err.Error(), Kind: "usage"})
			return
		}
	}
	s.ops.Lock()
	rep, err := s.p.Keys(context.Background(), req.Op, key)
	s.ops.Unlock()
	r := controlReply{Key: req.Key, Report: rep}
	if err != nil {
		r.Error = cli.OneLine(err.Error())
		switch {
		case errors.Is(err, peer.ErrPrimaryKey):
			r.Kind = "primary"
		case errors.Is(err, peer.ErrNotEncrypted):
			r.Kind = "plaintext"
		case errors.Is(err, peer.ErrKeyIncomplete):
			r.Kind = "incomplete"
		default:
			r.Kind = "other"
		}
		s.log.Warn("keys: operation failed", "op", string(req.Op), "key", keyIDOf(req.Key), "err", r.Error)
	} else if req.Op != peer.KeyList {
		s.log.Info("keys: applied on every member", "op", string(req.Op), "key", keyIDOf(req.Key), "members", rep.Nodes)
	}
	reply(r)
}

// startControl serves the mount's control socket: at --control if given
// (a failure is fatal), else at MOUNTPOINT.sock (a failure only warns: a
// mount in a directory whose parent we cannot write still works, without
// 'dlockfs keys'). --control none serves nothing.
func startControl(m mountConfig, dir string, p *peer.Peer, log *slog.Logger) (*controlServer, error) {
	switch m.control {
	case "none":
		return nil, nil
	case "":
		path := defaultControlPath(dir)
		s, err := serveControl(path, p, log)
		if err != nil {
			log.Warn("no control socket: 'dlockfs keys' cannot reach this mount (set --control PATH)", "err", err)
			return nil, nil
		}
		return s, nil
	}
	s, err := serveControl(m.control, p, log)
	if err != nil {
		return nil, fmt.Errorf("--control: %w", err)
	}
	return s, nil
}
