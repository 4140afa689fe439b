package mutex_test

import (
	"fmt"

	"github.com/dlockfs/dlockfs/mutex"
)

// Two peers compete for one lock; the driver's job (moving messages and
// grants) is done by hand.
func Example() {
	a, _ := mutex.New(mutex.Config{Name: "a", Incarnation: 1})
	b, _ := mutex.New(mutex.Config{Name: "b", Incarnation: 2})
	a.AddMember("b", 2)
	b.AddMember("a", 1)
	a.Ready()
	b.Ready()
	peers := map[string]*mutex.Core{"a": a, "b": b}

	// run delivers every message until the network is quiet.
	run := func(rd mutex.Ready, at string) {
		queue := []mutex.Message{}
		for {
			for _, g := range rd.Grants {
				fmt.Printf("%s: opener %d holds %q, token %d\n", at, g.Opener, g.Lock, g.Token)
			}
			queue = append(queue, rd.Messages...)
			if len(queue) == 0 {
				return
			}
			m := queue[0]
			queue = queue[1:]
			_ = peers[m.To].Step(m)
			rd, at = peers[m.To].Ready(), m.To
		}
	}

	_ = a.Acquire(1, "lock")
	_ = b.Acquire(2, "lock")
	run(a.Ready(), "a")
	run(b.Ready(), "b")
	_ = a.Release(1)
	run(a.Ready(), "a")
	_ = b.Release(2)
	// Output:
	// a: opener 1 holds "lock", token 4
	// b: opener 2 holds "lock", token 6
}
