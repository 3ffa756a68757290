//! The checks of request fields (pure). Each error names the field and says what is wrong; the
//! handlers answer it with INVALID_ARGUMENT. The grammars are those of adaptor.proto,
//! types.proto and the simulated ledger.

use crate::pb::types::Amount;

pub const MAX_KEY_LENGTH: usize = 128;
pub const MAX_SETTLEMENT_ID_LENGTH: usize = 512;
/// The data limit of an ILP packet, which carries adaptor messages between peers.
pub const MAX_DATA_BYTES: usize = 32767;

fn id_of(value: &str, max: usize, extra: &[u8]) -> bool {
    (1..=max).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._~-".contains(&b) || extra.contains(&b))
}

fn printable(value: &str) -> bool {
    value.bytes().all(|b| (0x20..=0x7e).contains(&b))
}

/// Shortens what goes into an error message: a request field can be long.
pub fn clip(value: &str) -> String {
    const LIMIT: usize = 80;
    if value.len() <= LIMIT {
        return value.to_string();
    }
    let mut end = LIMIT;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &value[..end])
}

/// A host account id: 1 to 128 of `[A-Za-z0-9._~-]`.
pub fn account_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("account_id is empty".into());
    }
    if !id_of(id, 128, b"") {
        return Err(format!(
            "account_id {:?}: must be 1 to 128 of [A-Za-z0-9._~-]",
            clip(id)
        ));
    }
    Ok(())
}

/// A simulated-ledger account id: 1 to 128 of `[A-Za-z0-9._~:-]`.
pub fn ledger_account(id: &str) -> Result<(), String> {
    if !id_of(id, 128, b":") {
        return Err(format!(
            "ledger account {:?}: must be 1 to 128 of [A-Za-z0-9._~:-]",
            clip(id)
        ));
    }
    Ok(())
}

/// An idempotency key: 1 to 128 printable ASCII characters.
pub fn idempotency_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("idempotency_key is empty".into());
    }
    if key.len() > MAX_KEY_LENGTH {
        return Err(format!(
            "idempotency_key is {} bytes long: at most {MAX_KEY_LENGTH}",
            key.len()
        ));
    }
    if !printable(key) {
        return Err(format!(
            "idempotency_key {:?}: only printable ASCII is allowed",
            clip(key)
        ));
    }
    Ok(())
}

/// A settlement id from ReceiveMoney: 1 to 512 printable ASCII characters.
pub fn settlement_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("settlement_id is empty".into());
    }
    if id.len() > MAX_SETTLEMENT_ID_LENGTH || !printable(id) {
        return Err(format!(
            "settlement_id {:?}: must be 1 to {MAX_SETTLEMENT_ID_LENGTH} printable ASCII characters",
            clip(id)
        ));
    }
    Ok(())
}

/// An amount to pay: base 10, no sign, no leading zeros, at most 78 digits, above zero, at the
/// ledger's scale.
pub fn payment(amount: Option<&Amount>, ledger_scale: u32) -> Result<(), String> {
    let amount = amount.ok_or("amount is required")?;
    let value = amount.value.as_str();
    let well_formed = (1..=78).contains(&value.len())
        && value.bytes().all(|b| b.is_ascii_digit())
        && (value == "0" || !value.starts_with('0'));
    if !well_formed {
        return Err(format!(
            "amount.value {:?}: must be a base-10 integer of at most 78 digits, no sign, no leading zeros",
            clip(value)
        ));
    }
    if value == "0" {
        return Err("amount.value is 0: a settlement must be greater than zero".into());
    }
    if amount.scale != ledger_scale {
        return Err(format!(
            "amount.scale is {}: the ledger counts at scale {ledger_scale} (convert first)",
            amount.scale
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amount(value: &str, scale: u32) -> Amount {
        Amount {
            value: value.into(),
            scale,
        }
    }

    #[test]
    fn account_ids() {
        assert!(account_id("bob").is_ok());
        assert!(account_id("a.b_c~d-e9").is_ok());
        assert!(account_id(&"x".repeat(128)).is_ok());
        for bad in ["", "a b", "a:b", "é", &"x".repeat(129)] {
            assert!(account_id(bad).is_err(), "{bad:?}");
        }
        assert!(ledger_account("host:bob").is_ok());
        assert!(ledger_account("").is_err());
    }

    #[test]
    fn keys_and_settlement_ids() {
        assert!(idempotency_key("k 1!~").is_ok());
        assert!(idempotency_key("").is_err());
        assert!(idempotency_key("tab\there").is_err());
        assert!(idempotency_key(&"k".repeat(129)).is_err());
        assert!(settlement_id("alice:k1").is_ok());
        assert!(settlement_id("").is_err());
        assert!(settlement_id(&"s".repeat(513)).is_err());
    }

    #[test]
    fn payments() {
        assert!(payment(Some(&amount("1500", 2)), 2).is_ok());
        assert!(payment(Some(&amount(&"9".repeat(78), 2)), 2).is_ok());
        for bad in ["0", "-1", "1.5", "", "01", "+1", &"9".repeat(79)] {
            assert!(payment(Some(&amount(bad, 2)), 2).is_err(), "{bad:?}");
        }
        assert!(payment(Some(&amount("1", 3)), 2)
            .unwrap_err()
            .contains("scale"));
        assert!(payment(None, 2).is_err());
    }

    #[test]
    fn clipping_keeps_characters_whole() {
        let long = "é".repeat(100);
        assert!(clip(&long).ends_with("..."));
        assert_eq!(clip("short"), "short");
    }
}
