//go:build !race

package mutex

// raceScale divides the simulation's seed counts (see race_on_test.go).
const raceScale = 1
