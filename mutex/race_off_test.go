//go:build !race

package mutex

// raceScale divides the simulation's seed counts (see race_on_test.go).
const raceScale = 1

// raceDetector says whether the tests run under -race (see race_on_test.go).
const raceDetector = false
