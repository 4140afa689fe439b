// Package bench is "dlockfs bench": it measures a local cluster
// (localcluster) with child processes that open and close the lock files
// (benchclient.go, the hidden "bench __client" mode), measures loopback TCP
// and the lock channel in this process for scale (benchnet.go), and reports
// the figures against the targets (bench.go).
package bench
