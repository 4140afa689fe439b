package peer_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/dlockfs/dlockfs/mutex"
	"github.com/dlockfs/dlockfs/mutex/peer"
)

// Two peers on one host compete for a lock.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	key := []byte("an example key, 32 bytes long!!!")
	quiet := slog.New(slog.DiscardHandler)

	a, err := peer.Start(ctx, peer.Config{
		Name: "a", BindAddr: "127.0.0.1:0", Profile: peer.ProfileFast, Key: key, Logger: quiet,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer a.Leave(ctx)
	b, err := peer.Start(ctx, peer.Config{
		Name: "b", BindAddr: "127.0.0.1:0", Profile: peer.ProfileFast, Key: key, Logger: quiet,
		Join: []string{a.GossipAddr()},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer b.Leave(ctx)

	g, err := a.Lock(ctx, "build")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%s holds %q\n", a.Node(), g.Lock)

	if _, err := b.TryLock(ctx, "build"); errors.Is(err, mutex.ErrLocked) {
		fmt.Printf("%s: busy\n", b.Node())
	}
	if err := a.Unlock(g); err != nil {
		fmt.Println(err)
		return
	}
	g, err = b.Lock(ctx, "build")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%s holds %q\n", b.Node(), g.Lock)
	_ = b.Unlock(g)
	// Output:
	// a holds "build"
	// b: busy
	// b holds "build"
}
