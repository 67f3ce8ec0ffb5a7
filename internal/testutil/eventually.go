// Package testutil holds what the test packages of hagent share: the wait
// for a condition (Eventually, and Poll for a period of the caller's own).
//
// Tests wait for what they expect by polling it, never by sleeping for a
// time that happened to suffice: on a loaded machine everything is slow,
// and a wait that ends when the condition holds stays correct. A timeout is
// the bound of a failure, not an expected duration.
package testutil

import (
	"fmt"
	"testing"
	"time"
)

// Every is how often Eventually polls its condition.
const Every = 5 * time.Millisecond

// Cond is a condition: it holds when it returns true, or nil (its error
// then says what was seen instead, for the failure message).
type Cond interface {
	func() bool | func() error
}

// Eventually polls cond every Every until it holds, and fails t when it has
// not held within timeout, naming what was awaited (and, for a func() error,
// the last error).
func Eventually[C Cond](t testing.TB, timeout time.Duration, what string, cond C) {
	t.Helper()
	if err := Poll(timeout, Every, asError(cond)); err != nil {
		t.Fatalf("timed out waiting for %s: %v", what, err)
	}
}

// Poll calls cond every `every` until it returns nil, or timeout has passed;
// then it returns the last error, saying how long it waited. It is the loop
// of Eventually, for callers that choose the period (a measurement that
// needs millisecond resolution, or a costly condition) or that report the
// failure themselves.
func Poll(timeout, every time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %v: %w", timeout, err)
		}
		time.Sleep(every)
	}
}

var errFalse = fmt.Errorf("still false")

func asError[C Cond](cond C) func() error {
	switch c := any(cond).(type) {
	case func() bool:
		return func() error {
			if c() {
				return nil
			}
			return errFalse
		}
	case func() error:
		return c
	}
	panic(fmt.Sprintf("testutil: condition of type %T", cond)) // Cond admits only the two
}
