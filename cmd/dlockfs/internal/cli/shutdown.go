package cli

import "time"

// Shutdown bounds.
const (
	// LeaveTimeout bounds the graceful leave (flush of the lock channel,
	// Serf's leave broadcast; the wan profile's takes a few seconds).
	LeaveTimeout = 15 * time.Second
	// ForceAfter: a signal at least this long after the first one ends a
	// slow shutdown at once.
	ForceAfter = time.Second
)
