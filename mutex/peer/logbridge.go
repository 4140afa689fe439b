package peer

import (
	"bytes"
	"context"
	"log"
	"log/slog"
	"strings"
	"sync/atomic"
)

// serfLogWriter turns Serf's and memberlist's "[LEVEL] component: text"
// lines into slog records: DEBUG and INFO at debug level (Serf logs every
// member event at INFO), WARN at warn, ERR at error. While joining is set
// it also notices a node name conflict (another live node claims our
// name). Serf logs the same line on the node that had the name first when
// a newcomer claims it: that node is not joining, and carries on.
type serfLogWriter struct {
	log      *slog.Logger
	joining  *atomic.Bool
	conflict *atomic.Bool
}

func newSerfLogger(l *slog.Logger, joining, conflict *atomic.Bool) *log.Logger {
	return log.New(&serfLogWriter{log: l, joining: joining, conflict: conflict}, "", 0)
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
	if strings.Contains(s, "Shutdown without a Leave") {
		// Our own shutdown after a failed start or a kill: we say why.
		level = slog.LevelDebug
	}
	if w.joining.Load() && strings.Contains(s, "Node name conflicts with another node") {
		w.conflict.Store(true)
	}
	w.log.Log(context.Background(), level, s)
}
