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

// Readers hold together, a writer waits for them: a and b take shared
// holds while c asks for an exclusive one.
func Example_shared() {
	names := []string{"a", "b", "c"}
	peers := map[string]*mutex.Core{}
	for i, n := range names {
		peers[n], _ = mutex.New(mutex.Config{Name: n, Incarnation: uint64(i + 1)})
	}
	for _, n := range names {
		for i, m := range names {
			peers[n].AddMember(m, uint64(i+1))
		}
		peers[n].Ready()
	}
	// settle delivers every message, in order, until the network is
	// quiet, printing the grants.
	var queue []mutex.Message
	collect := func(at string) {
		rd := peers[at].Ready()
		for _, g := range rd.Grants {
			mode := "exclusive"
			if g.Shared {
				mode = "shared"
			}
			fmt.Printf("%s: opener %d holds %q (%s)\n", at, g.Opener, g.Lock, mode)
		}
		queue = append(queue, rd.Messages...)
	}
	settle := func() {
		for len(queue) > 0 {
			m := queue[0]
			queue = queue[1:]
			_ = peers[m.To].Step(m)
			collect(m.To)
		}
	}

	_ = peers["a"].AcquireShared(1, "cfg")
	collect("a")
	_ = peers["b"].AcquireShared(2, "cfg")
	collect("b")
	settle()
	_ = peers["c"].Acquire(3, "cfg")
	collect("c")
	settle()
	fmt.Println("c waits for the readers")
	_ = peers["a"].Release(1)
	collect("a")
	_ = peers["b"].Release(2)
	collect("b")
	settle()
	// Output:
	// a: opener 1 holds "cfg" (shared)
	// b: opener 2 holds "cfg" (shared)
	// c waits for the readers
	// c: opener 3 holds "cfg" (exclusive)
}
