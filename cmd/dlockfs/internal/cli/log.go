package cli

import "log/slog"

// NewLogger returns the command's logger: warnings and errors on stderr, or
// everything with --debug. Without --debug the time is left out (it is
// noise on a terminal, and journald adds its own).
func NewLogger(e *Env, debug bool) *slog.Logger {
	opts := &slog.HandlerOptions{Level: slog.LevelWarn}
	if debug {
		opts.Level = slog.LevelDebug
	} else {
		opts.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}
	}
	return slog.New(slog.NewTextHandler(e.Stderr, opts))
}
