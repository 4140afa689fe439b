// Package bench is "dlockfs bench": it measures a local cluster
// (localcluster) with child processes that open and close the lock files
// (benchclient.go, the hidden "bench __client" mode), splits the
// uncontended rows into where the time went from the children's and the
// mounts' timestamps (breakdown.go, localcluster.LockTimes), measures
// loopback TCP and the lock channel in this process for scale
// (benchnet.go), and reports the figures against the targets (bench.go).
// With --sweep it measures clusters of several sizes in turn, and the
// memory of many named locks (sweep.go), and draws them as an SVG
// (plot.go).
package bench
