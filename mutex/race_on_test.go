//go:build race

package mutex

// raceScale divides the simulation's seed counts under the race detector:
// the core has no goroutines, so -race only slows it down. The README's test
// command runs the full simulation once more without -race.
const raceScale = 10
