//! The state of one of the adaptor's own connections, in gRPC's connectivity vocabulary, moved
//! only through the one table of docs/protocol.md (pure: the caller gives the time).

use std::time::SystemTime;

use crate::pb::types::{Connection as ConnectionProto, ConnectivityState as State};

/// The legal moves; SHUTDOWN is final.
pub fn legal(from: State, to: State) -> bool {
    use State::*;
    matches!(
        (from, to),
        (Idle, Connecting | Shutdown)
            | (Connecting, Ready | TransientFailure | Idle | Shutdown)
            | (Ready, Idle | TransientFailure | Connecting | Shutdown)
            | (TransientFailure, Connecting | Idle | Shutdown)
    )
}

/// One link with its state, since when, last error and failed attempts.
#[derive(Debug, Clone)]
pub struct Connection {
    pub name: &'static str,
    pub kind: &'static str,
    pub state: State,
    pub since: SystemTime,
    pub last_error: String,
    /// Failed attempts since the connection was last READY.
    pub attempts: u32,
}

impl Connection {
    pub fn new(name: &'static str, kind: &'static str, state: State, now: SystemTime) -> Self {
        Connection {
            name,
            kind,
            state,
            since: now,
            last_error: String::new(),
            attempts: 0,
        }
    }

    /// Moves to `next`; an illegal move is a bug and is returned as an error. TRANSIENT_FAILURE
    /// records the cause and counts an attempt; READY clears both.
    pub fn to(&self, next: State, cause: &str, now: SystemTime) -> Result<Connection, String> {
        if !legal(self.state, next) {
            return Err(format!(
                "connection {}: illegal transition {} -> {}",
                self.name,
                self.state.as_str_name(),
                next.as_str_name()
            ));
        }
        let mut moved = self.clone();
        moved.state = next;
        moved.since = now;
        match next {
            State::Ready => {
                moved.last_error.clear();
                moved.attempts = 0;
            }
            State::TransientFailure => {
                moved.last_error = cause.to_string();
                moved.attempts += 1;
            }
            _ => {}
        }
        Ok(moved)
    }

    pub fn proto(&self) -> ConnectionProto {
        ConnectionProto {
            name: self.name.into(),
            kind: self.kind.into(),
            state: self.state as i32,
            since: Some(prost_types::Timestamp::from(self.since)),
            last_error: self.last_error.clone(),
            attempts: self.attempts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const ALL: [State; 5] = [
        State::Idle,
        State::Connecting,
        State::Ready,
        State::TransientFailure,
        State::Shutdown,
    ];

    #[test]
    fn only_the_table_moves_and_shutdown_is_final() {
        let now = SystemTime::UNIX_EPOCH;
        let mut legal_moves = 0;
        for from in ALL {
            for to in ALL {
                let moved =
                    Connection::new("ledger", "settlement-system", from, now).to(to, "", now);
                assert_eq!(moved.is_ok(), legal(from, to), "{from:?} -> {to:?}");
                legal_moves += usize::from(moved.is_ok());
            }
        }
        assert_eq!(legal_moves, 2 + 4 + 4 + 3);
        assert!(ALL.iter().all(|to| !legal(State::Shutdown, *to)));
    }

    #[test]
    fn failures_count_until_ready() {
        let start = SystemTime::UNIX_EPOCH;
        let mut c = Connection::new("ledger", "settlement-system", State::Connecting, start);
        let steps = [
            (State::TransientFailure, "refused", 1, "refused"),
            (State::Connecting, "", 1, "refused"),
            (State::TransientFailure, "timeout", 2, "timeout"),
            (State::Connecting, "", 2, "timeout"),
            (State::Ready, "", 0, ""),
            (State::TransientFailure, "gone", 1, "gone"),
            (State::Shutdown, "", 1, "gone"),
        ];
        for (i, (to, cause, attempts, last_error)) in steps.into_iter().enumerate() {
            let at = start + Duration::from_secs(i as u64 + 1);
            c = c.to(to, cause, at).unwrap();
            assert_eq!(
                (c.attempts, c.last_error.as_str(), c.since),
                (attempts, last_error, at)
            );
        }
        let message = c.proto();
        assert_eq!(message.state, State::Shutdown as i32);
        assert_eq!((message.name.as_str(), message.attempts), ("ledger", 1));
    }
}
