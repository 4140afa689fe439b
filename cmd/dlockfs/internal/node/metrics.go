package node

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/dlockfs/dlockfs/mutex/peer"
)

// maxLockLabels bounds the lock names that get a label of their own in the
// per-lock counters; later names share otherLock.
const (
	maxLockLabels = 64
	otherLock     = "_other"
)

// lockMetrics are the counters the mount's openers update (cheap: one map
// lookup and an atomic add per open), plus a collector that reads the
// peer's Status at scrape time for the gauges and the message counters.
type lockMetrics struct {
	acquisitions *prometheus.CounterVec
	refusals     *prometheus.CounterVec
	interrupts   *prometheus.CounterVec
	drainRefused prometheus.Counter
	wait         prometheus.Histogram

	mu     sync.Mutex
	labels map[string]string // lock name -> its label (itself or otherLock)
}

func newLockMetrics() *lockMetrics {
	return &lockMetrics{
		acquisitions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dlockfs_acquisitions_total",
			Help: "Local opens granted, by lock (at most 64 names; others count as lock=\"_other\")."}, []string{"lock"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dlockfs_trylock_refusals_total",
			Help: "Local try-locks (O_NONBLOCK) refused because the lock was busy, by lock."}, []string{"lock"}),
		interrupts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dlockfs_interrupts_total",
			Help: "Local waits interrupted by a signal (request withdrawn), by lock."}, []string{"lock"}),
		drainRefused: prometheus.NewCounter(prometheus.CounterOpts{Name: "dlockfs_drain_refusals_total",
			Help: "Local opens refused or withdrawn because the peer was draining."}),
		wait: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "dlockfs_acquire_wait_seconds",
			Help:    "Time from a local open to its grant.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 12)}), // 100 µs .. ~7 min
		labels: map[string]string{},
	}
}

// label returns the lock's label, bounded by maxLockLabels.
func (m *lockMetrics) label(lock string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if l, ok := m.labels[lock]; ok {
		return l
	}
	l := lock
	if len(m.labels) >= maxLockLabels {
		l = otherLock
	}
	m.labels[lock] = l
	return l
}

// opened records the outcome of one local open. A nil m records nothing.
func (m *lockMetrics) opened(lock string, waited time.Duration, outcome openOutcome) {
	if m == nil {
		return
	}
	switch outcome {
	case openGranted:
		m.acquisitions.WithLabelValues(m.label(lock)).Inc()
		m.wait.Observe(waited.Seconds())
	case openBusy:
		m.refusals.WithLabelValues(m.label(lock)).Inc()
	case openInterrupted:
		m.interrupts.WithLabelValues(m.label(lock)).Inc()
	case openDraining:
		m.drainRefused.Inc()
	}
}

// openOutcome is how a local open ended.
type openOutcome int

const (
	openGranted openOutcome = iota
	openBusy
	openInterrupted
	openDraining
	openFailed // another error: not counted
)

// statusCollector turns the peer's Status into metrics at scrape time.
type statusCollector struct {
	d *drainLocker
}

var (
	descHolders  = prometheus.NewDesc("dlockfs_holders", "Locks held by a local opener now.", nil, nil)
	descWaiters  = prometheus.NewDesc("dlockfs_waiters", "Local openers waiting for a lock now.", nil, nil)
	descDeferred = prometheus.NewDesc("dlockfs_deferred_requests", "Requests of other peers this peer defers now.", nil, nil)
	descDraining = prometheus.NewDesc("dlockfs_draining", "1 while a SIGTERM drain waits for local holders.", nil, nil)
	descMembers  = prometheus.NewDesc("dlockfs_members", "Members Serf knows, by state (alive, failed, left).", []string{"state"}, nil)
	descConns    = prometheus.NewDesc("dlockfs_lock_connections",
		"Lock-channel connections open now, by direction (outbound, inbound).", []string{"direction"}, nil)
	descPeerConn = prometheus.NewDesc("dlockfs_lock_peers",
		"Alive members by this peer's outgoing lock connection state (connected, disconnected).", []string{"state"}, nil)
	descQueued   = prometheus.NewDesc("dlockfs_lock_channel_queued_messages", "Messages waiting in the lock channel's send queues.", nil, nil)
	descSent     = prometheus.NewDesc("dlockfs_messages_sent_total", "Ricart-Agrawala messages sent by the core.", nil, nil)
	descReceived = prometheus.NewDesc("dlockfs_messages_received_total", "Ricart-Agrawala messages received by the core (dropped ones included).", nil, nil)
	descDropped  = prometheus.NewDesc("dlockfs_messages_dropped_total", "Messages the core rejected, by reason.", []string{"reason"}, nil)
	descGrants   = prometheus.NewDesc("dlockfs_grants_total", "Grants by the core (all local openers).", nil, nil)
	descLamport  = prometheus.NewDesc("dlockfs_lamport", "The core's Lamport clock.", nil, nil)
	descFrames   = prometheus.NewDesc("dlockfs_lock_channel_frames_total", "Lock-channel frames, by direction (sent, received).", []string{"direction"}, nil)
	descByType   = prometheus.NewDesc("dlockfs_lock_channel_messages_total",
		"Lock messages written to or delivered from the lock channel, by direction (sent, received) and type (request, reply, busy, cancel, hello, ...).",
		[]string{"direction", "type"}, nil)
	descDials = prometheus.NewDesc("dlockfs_lock_channel_dials_total", "Lock-channel dials, by result (attempted, failed).", []string{"result"}, nil)
	// Revocations (quorum mode, not merged yet) will be a
	// dlockfs_revocations_total counter here, fed from Status.
)

func (c statusCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descHolders, descWaiters, descDeferred, descDraining, descMembers, descConns,
		descPeerConn, descQueued, descSent, descReceived, descDropped, descGrants, descLamport, descFrames, descByType, descDials} {
		ch <- d
	}
}

func (c statusCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.d.Peer.Status()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	holders, waiters, deferred := 0, 0, 0
	for _, l := range st.Locks {
		if l.State == peer.LockHolding {
			holders++
		}
		waiters += l.Waiting
		deferred += len(l.Queued)
	}
	gauge(descHolders, float64(holders))
	gauge(descWaiters, float64(waiters))
	gauge(descDeferred, float64(deferred))
	draining := 0.0
	if c.d.isDraining() {
		draining = 1
	}
	gauge(descDraining, draining)
	members := map[string]int{peer.MemberAlive: 0, peer.MemberFailed: 0, peer.MemberLeft: 0}
	conn := map[string]int{"connected": 0, "disconnected": 0}
	for _, m := range st.Members {
		members[m.Status]++
		if m.Status == peer.MemberAlive && m.Name != st.Node {
			if m.LockConnected {
				conn["connected"]++
			} else {
				conn["disconnected"]++
			}
		}
	}
	for s, n := range members {
		gauge(descMembers, float64(n), s)
	}
	for s, n := range conn {
		gauge(descPeerConn, float64(n), s)
	}
	gauge(descConns, float64(st.Transport.OutboundConns), "outbound")
	gauge(descConns, float64(st.Transport.InboundConns), "inbound")
	gauge(descQueued, float64(st.Transport.Queued))
	counter(descSent, st.Counters.Sent)
	counter(descReceived, st.Counters.Received)
	for reason, n := range st.Counters.DroppedBy {
		counter(descDropped, n, reason)
	}
	counter(descGrants, st.Counters.Grants)
	gauge(descLamport, float64(st.Lamport))
	counter(descFrames, st.Transport.FramesSent, "sent")
	counter(descFrames, st.Transport.FramesReceived, "received")
	for ty, n := range st.Transport.SentByType {
		counter(descByType, n, "sent", ty)
	}
	for ty, n := range st.Transport.ReceivedByType {
		counter(descByType, n, "received", ty)
	}
	counter(descDials, st.Transport.Dials, "attempted")
	counter(descDials, st.Transport.DialFailures, "failed")
}

// serveMetrics listens on addr and serves /metrics until the returned
// function is called. The listener is opened at once, so a taken port is
// an error before the peer joins.
func serveMetrics(addr string, d *drainLocker, m *lockMetrics, log *slog.Logger) (func(), error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(m.acquisitions, m.refusals, m.interrupts, m.drainRefused, m.wait, statusCollector{d: d},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("metrics server", "err", err)
		}
	}()
	return func() { _ = srv.Close() }, nil
}

var _ prometheus.Collector = statusCollector{}
