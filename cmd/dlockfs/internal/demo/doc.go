// Package demo is "dlockfs demo": a local cluster (localcluster) with bash
// workers incrementing a shared counter under the lock, a timeline while
// they run, and a summary that checks the run (no lost update, no
// overlapping holds, rising fencing tokens).
package demo
