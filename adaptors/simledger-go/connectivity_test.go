package main

import (
	"testing"
	"time"
)

var allStates = []connState{stateIdle, stateConnecting, stateReady, stateTransientFailure, stateShutdown}

func TestOnlyTheTableMoves(t *testing.T) {
	legal := map[[2]connState]bool{}
	for from, tos := range legalMoves {
		for _, to := range tos {
			legal[[2]connState{from, to}] = true
		}
	}
	now := time.Unix(1000, 0)
	for _, from := range allStates {
		for _, to := range allStates {
			_, err := newConnection("ledger", "settlement-system", from, now).to(to, "", now)
			if want := legal[[2]connState{from, to}]; (err == nil) != want {
				t.Errorf("%s -> %s: error %v, legal %v", stateName(from), stateName(to), err, want)
			}
		}
	}
	if len(legalMoves[stateShutdown]) != 0 {
		t.Error("SHUTDOWN must be final")
	}
}

func TestFailuresCountUntilReady(t *testing.T) {
	start := time.Unix(1000, 0)
	c := newConnection("ledger", "settlement-system", stateConnecting, start)
	steps := []struct {
		to       connState
		cause    string
		attempts uint32
		lastErr  string
	}{
		{stateTransientFailure, "refused", 1, "refused"},
		{stateConnecting, "", 1, "refused"},
		{stateTransientFailure, "timeout", 2, "timeout"},
		{stateConnecting, "", 2, "timeout"},
		{stateReady, "", 0, ""},
		{stateTransientFailure, "gone", 1, "gone"},
		{stateShutdown, "", 1, "gone"},
	}
	for i, step := range steps {
		at := start.Add(time.Duration(i+1) * time.Second)
		var err error
		c, err = c.to(step.to, step.cause, at)
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if c.attempts != step.attempts || c.lastError != step.lastErr || !c.since.Equal(at) {
			t.Errorf("step %d (%s): attempts %d, last error %q, since %v", i,
				stateName(step.to), c.attempts, c.lastError, c.since)
		}
	}
	message := c.proto()
	if message.GetName() != "ledger" || message.GetKind() != "settlement-system" ||
		message.GetState() != stateShutdown || message.GetAttempts() != 1 {
		t.Errorf("proto() = %v", message)
	}
}
