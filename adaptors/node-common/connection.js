'use strict';
// One connection of an adaptor (its settlement system, a peer) in gRPC's connectivity
// vocabulary, moving only along the one table of legal transitions (docs/protocol.md,
// "Connections and readiness"), and its protobuf form. Pure: no gRPC, no I/O.

/** The legal moves between connection states. */
const TRANSITIONS = {
  IDLE: ['CONNECTING', 'SHUTDOWN'],
  CONNECTING: ['READY', 'TRANSIENT_FAILURE', 'IDLE', 'SHUTDOWN'],
  READY: ['IDLE', 'TRANSIENT_FAILURE', 'CONNECTING', 'SHUTDOWN'],
  TRANSIENT_FAILURE: ['CONNECTING', 'IDLE', 'SHUTDOWN'],
  SHUTDOWN: [],
};

class Connection {
  constructor(name, kind, now = new Date()) {
    this.name = name;
    this.kind = kind;
    this.state = 'IDLE';
    this.since = now;
    this.lastError = '';
    this.attempts = 0;
  }

  /**
   * Move to `state`; throws on an illegal move (a bug), returns false when already there.
   * TRANSIENT_FAILURE counts a failed attempt and keeps `error`; READY clears both.
   */
  moveTo(state, error = '', now = new Date()) {
    if (state === this.state) return false;
    if (!TRANSITIONS[this.state].includes(state)) {
      throw new Error(`illegal connection transition ${this.state} -> ${state} (${this.name})`);
    }
    if (state === 'READY') {
      this.attempts = 0;
      this.lastError = '';
    } else if (state === 'TRANSIENT_FAILURE') {
      this.attempts += 1;
      this.lastError = error;
    }
    this.state = state;
    this.since = now;
    return true;
  }
}

function timestampOf(date) {
  const millis = date.getTime();
  return { seconds: Math.floor(millis / 1000), nanos: (millis % 1000) * 1e6 };
}

/** The `ilphost.types.v1.Connection` message (proto-loader form: keepCase, enums as strings). */
function connectionMessage(connection) {
  return {
    name: connection.name,
    kind: connection.kind,
    state: `CONNECTIVITY_STATE_${connection.state}`,
    since: timestampOf(connection.since),
    last_error: connection.lastError,
    attempts: connection.attempts,
  };
}

module.exports = { Connection, TRANSITIONS, connectionMessage };
