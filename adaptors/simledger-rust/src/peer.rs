//! The messages this adaptor exchanges with the simledger adaptor of the same account at the
//! peer (proto/ilphost/simledger/v1/peer_message.proto): a `PeerRequest` goes out as the data of
//! Engine.SendData and comes in on ReceiveData; the `PeerReply` is the answer.

use prost::Message as _;

use crate::pb::simledger::{
    peer_reply, peer_request, LedgerAccountExchange, PeerReply, PeerRequest,
};
use crate::validate;

/// The request that tells the peer our ledger account.
pub fn ledger_account_request(ours: &str) -> Vec<u8> {
    PeerRequest {
        kind: Some(peer_request::Kind::LedgerAccountExchange(
            LedgerAccountExchange {
                ledger_account: ours.into(),
            },
        )),
    }
    .encode_to_vec()
}

/// The reply that tells the peer our ledger account.
pub fn ledger_account_reply(ours: &str) -> Vec<u8> {
    PeerReply {
        kind: Some(peer_reply::Kind::LedgerAccountExchange(
            LedgerAccountExchange {
                ledger_account: ours.into(),
            },
        )),
    }
    .encode_to_vec()
}

fn checked(exchange: LedgerAccountExchange, ours: &str) -> Result<String, String> {
    validate::ledger_account(&exchange.ledger_account)?;
    if exchange.ledger_account == ours {
        return Err(format!("the message names our own ledger account {ours:?}"));
    }
    Ok(exchange.ledger_account)
}

/// The peer's ledger account from a request it sent (ReceiveData), or why it is refused.
pub fn parse_request(data: &[u8], ours: &str) -> Result<String, String> {
    if data.is_empty() {
        return Err("data is empty: expected a PeerRequest (peer_message.proto)".into());
    }
    let request =
        PeerRequest::decode(data).map_err(|e| format!("data is not a PeerRequest: {e}"))?;
    match request.kind {
        Some(peer_request::Kind::LedgerAccountExchange(exchange)) => {
            checked(exchange, ours).map_err(|e| format!("data: {e}"))
        }
        None => Err("data: a PeerRequest of no known kind".into()),
    }
}

/// The peer's ledger account from its reply (Engine.SendData result), or why it is refused.
pub fn parse_reply(data: &[u8], ours: &str) -> Result<String, String> {
    let reply =
        PeerReply::decode(data).map_err(|e| format!("the reply is not a PeerReply: {e}"))?;
    match reply.kind {
        Some(peer_reply::Kind::LedgerAccountExchange(exchange)) => {
            checked(exchange, ours).map_err(|e| format!("the reply: {e}"))
        }
        None => Err("the reply is a PeerReply of no known kind".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        assert_eq!(
            parse_request(&ledger_account_request("host:alice"), "bob"),
            Ok("host:alice".into())
        );
        assert_eq!(
            parse_reply(&ledger_account_reply("host:bob"), "alice"),
            Ok("host:bob".into())
        );
    }

    #[test]
    fn refusals() {
        assert!(parse_request(b"", "a").unwrap_err().contains("empty"));
        assert!(parse_request(b"{\"type\":\"ledger_account\"}", "a").is_err());
        assert!(parse_request(&PeerRequest { kind: None }.encode_to_vec(), "a").is_err());
        // An empty reply decodes as a PeerReply without a kind.
        assert!(parse_reply(b"", "a").unwrap_err().contains("no known kind"));
        assert!(parse_request(&ledger_account_request("bad account"), "a").is_err());
        assert!(parse_request(&ledger_account_request("a"), "a")
            .unwrap_err()
            .contains("own"));
    }
}
