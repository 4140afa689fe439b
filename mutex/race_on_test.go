//go:build race

package mutex

// raceScale divides the simulation's seed counts under the race detector:
// the core has no goroutines, so -race only slows it down. The README's test
// command runs the full simulation once more without -race.
const raceScale = 30

// raceDetector says whether the tests run under -race: the planted-bug
// searches, which scan hundreds of seeds for their first catch, run only
// without it (the README's second command).
const raceDetector = true
