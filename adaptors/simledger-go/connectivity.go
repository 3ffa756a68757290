package main

import (
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	typesv1 "github.com/interledger-settlement-host/adaptors/simledger-go/gen/ilphost/types/v1"
)

// The state of one of the adaptor's own connections, in gRPC's connectivity vocabulary, moved
// only through the one table of docs/protocol.md (pure: no I/O, the caller gives the time).

type connState = typesv1.ConnectivityState

const (
	stateIdle             = typesv1.ConnectivityState_CONNECTIVITY_STATE_IDLE
	stateConnecting       = typesv1.ConnectivityState_CONNECTIVITY_STATE_CONNECTING
	stateReady            = typesv1.ConnectivityState_CONNECTIVITY_STATE_READY
	stateTransientFailure = typesv1.ConnectivityState_CONNECTIVITY_STATE_TRANSIENT_FAILURE
	stateShutdown         = typesv1.ConnectivityState_CONNECTIVITY_STATE_SHUTDOWN
)

// legalMoves is the transition table; SHUTDOWN is final.
var legalMoves = map[connState][]connState{
	stateIdle:             {stateConnecting, stateShutdown},
	stateConnecting:       {stateReady, stateTransientFailure, stateIdle, stateShutdown},
	stateReady:            {stateIdle, stateTransientFailure, stateConnecting, stateShutdown},
	stateTransientFailure: {stateConnecting, stateIdle, stateShutdown},
	stateShutdown:         {},
}

// connection is one link with its state, since when, last error and failed attempts.
type connection struct {
	name      string
	kind      string
	state     connState
	since     time.Time
	lastError string
	// attempts counts failed attempts since the connection was last READY.
	attempts uint32
}

func newConnection(name, kind string, state connState, now time.Time) connection {
	return connection{name: name, kind: kind, state: state, since: now}
}

// to moves to next; an illegal move is a bug and is returned as an error. A failure
// (TRANSIENT_FAILURE) records cause and counts an attempt; READY clears both.
func (c connection) to(next connState, cause string, now time.Time) (connection, error) {
	legal := false
	for _, allowed := range legalMoves[c.state] {
		legal = legal || allowed == next
	}
	if !legal {
		return c, fmt.Errorf("connection %s: illegal transition %s -> %s", c.name,
			stateName(c.state), stateName(next))
	}
	c.state, c.since = next, now
	switch next {
	case stateReady:
		c.lastError, c.attempts = "", 0
	case stateTransientFailure:
		c.lastError = cause
		c.attempts++
	}
	return c, nil
}

func (c connection) proto() *typesv1.Connection {
	return &typesv1.Connection{
		Name:      c.name,
		Kind:      c.kind,
		State:     c.state,
		Since:     timestamppb.New(c.since),
		LastError: c.lastError,
		Attempts:  c.attempts,
	}
}

// stateName is the short name, e.g. READY, for logs and errors.
func stateName(s connState) string {
	const prefix = "CONNECTIVITY_STATE_"
	name := s.String()
	if len(name) > len(prefix) && name[:len(prefix)] == prefix {
		return name[len(prefix):]
	}
	return name
}
