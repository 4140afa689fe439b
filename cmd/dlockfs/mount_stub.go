package main

import (
	"context"
	"errors"
)

// runMount is wired to mutex/peer and fs when they land.
func runMount(_ context.Context, _ *env, _ config) error {
	return errors.New("not wired yet")
}
