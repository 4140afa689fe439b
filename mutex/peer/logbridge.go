package peer

import (
	"bytes"
	"context"
	"log"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// serfLogWriter turns Serf's and memberlist's "[LEVEL] component: text"
// lines into slog records: DEBUG and INFO at debug level (Serf logs every
// member event at INFO), WARN at warn, ERR at error. It reads nothing
// else from the lines: name conflicts are seen by conflictWatch.
type serfLogWriter struct {
	log *slog.Logger

	mu         sync.Mutex
	lastKeyLog time.Time // last warning about an outsider's key
	suppressed int       // such lines since
}

// keyWarnEvery is how often gossip that our keys cannot read is reported.
const keyWarnEvery = 10 * time.Second

// outsiderKeyError reports whether a memberlist error line is about a
// message we could not decrypt (or that was not encrypted): somebody
// outside the cluster key, not a fault of ours.
func outsiderKeyError(s string) bool {
	return strings.Contains(s, "No installed keys could decrypt") ||
		strings.Contains(s, "no installed keys could decrypt") ||
		strings.Contains(s, "Decrypt packet failed") ||
		strings.Contains(s, "remote state is not encrypted") ||
		strings.Contains(s, "remote state is encrypted and encryption is not configured")
}

func newSerfLogger(l *slog.Logger) *log.Logger {
	return log.New(&serfLogWriter{log: l}, "", 0)
}

func (w *serfLogWriter) Write(b []byte) (int, error) {
	n := len(b)
	for line := range bytes.SplitSeq(bytes.TrimRight(b, "\n"), []byte{'\n'}) {
		w.line(string(line))
	}
	return n, nil
}

func (w *serfLogWriter) line(s string) {
	level := slog.LevelInfo
	for _, l := range []struct {
		prefix string
		level  slog.Level
	}{
		{"[DEBUG] ", slog.LevelDebug},
		{"[INFO] ", slog.LevelDebug},
		{"[WARN] ", slog.LevelWarn},
		{"[ERR] ", slog.LevelError},
		{"[ERROR] ", slog.LevelError},
	} {
		if rest, ok := strings.CutPrefix(s, l.prefix); ok {
			s, level = rest, l.level
			break
		}
	}
	if level >= slog.LevelError && outsiderKeyError(s) {
		w.outsider(s)
		return
	}
	if strings.Contains(s, "Shutdown without a Leave") {
		// Our own shutdown after a failed start or a kill: we say why.
		level = slog.LevelDebug
	}
	w.log.Log(context.Background(), level, s)
}

// outsider reports gossip from outside the cluster key as a WARN naming
// the address, at most once per keyWarnEvery (the others are counted).
func (w *serfLogWriter) outsider(s string) {
	from := "unknown"
	if _, f, ok := strings.Cut(s, "from="); ok {
		from = strings.Fields(f + " ")[0]
	}
	w.mu.Lock()
	now := time.Now()
	if !w.lastKeyLog.IsZero() && now.Sub(w.lastKeyLog) < keyWarnEvery {
		w.suppressed++
		w.mu.Unlock()
		return
	}
	n := w.suppressed
	w.lastKeyLog, w.suppressed = now, 0
	w.mu.Unlock()
	w.log.Warn("gossip our cluster keys cannot read: a node with another or no --key-file is trying to reach this one",
		"from", from, "more_since_last_warning", n, "detail", s)
}
