// Package localcluster runs what the demo and the bench share: a cluster of
// peers inside this process on 127.0.0.1, each mounted in a temporary
// directory (Start, Cluster.Close), the child processes that use the mounts
// (StartChild: the serving process must never touch its own mounts). Its
// shutdown follows the same signal policy as mount's (cli.Signals).
package localcluster
