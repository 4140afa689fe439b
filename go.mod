module github.com/dlockfs/dlockfs

go 1.26.8

require (
	github.com/hanwen/go-fuse/v2 v2.12.1 // indirect
	github.com/hashicorp/serf v0.11.0 // indirect
)
