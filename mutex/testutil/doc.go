// Package testutil holds the helpers that the tests of dlockfs's packages
// share: waiting for a condition ([WaitFor]), a log sink safe for
// concurrent use ([SyncBuffer]), a TCP proxy that can stall, swallow or cut
// what goes through it ([Proxy]), and a free 127.0.0.1 port ([FreeAddr]).
//
// It is for tests only: nothing but _test.go files imports it. Every
// helper takes the test's testing.TB, fails the test on error, and cleans
// up through t.Cleanup.
package testutil
