//! The process contract of docs/protocol.md that is pure logic: the magic cookie, the choice of
//! the contract version, and the handshake line.

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine as _;

pub const MAGIC_COOKIE_KEY: &str = "ILP_SETTLEMENT_ADAPTOR";
pub const MAGIC_COOKIE_VALUE: &str = "5c1d7e0a9b3f4e2c8a6d1f0b7e9c3a5d";
/// The contract versions this adaptor speaks.
pub const CONTRACT_VERSIONS: &[u32] = &[1];
/// go-plugin's core protocol version, the first field of the handshake line.
pub const CORE_VERSION: u32 = 1;

pub const ENV_PROTOCOL_VERSIONS: &str = "PLUGIN_PROTOCOL_VERSIONS";
pub const ENV_TRANSPORT: &str = "ILP_ADAPTOR_TRANSPORT";
pub const ENV_UNIX_SOCKET_DIR: &str = "PLUGIN_UNIX_SOCKET_DIR";
pub const ENV_MIN_PORT: &str = "PLUGIN_MIN_PORT";
pub const ENV_MAX_PORT: &str = "PLUGIN_MAX_PORT";
pub const ENV_CLIENT_CERT: &str = "PLUGIN_CLIENT_CERT";
pub const ENV_ADAPTOR_NAME: &str = "ILP_ADAPTOR_NAME";

/// The version to speak given `PLUGIN_PROTOCOL_VERSIONS` (None: unset): the highest offered
/// one we support. Entries that are not numbers are ignored, as go-plugin does; when nothing
/// usable is offered, our lowest. Err names what was offered when nothing is common.
pub fn negotiate(offered: Option<&str>) -> Result<u32, String> {
    let theirs: Vec<u32> = offered
        .unwrap_or("")
        .split(',')
        .filter_map(|item| {
            let item = item.trim();
            if !item.is_empty() && item.bytes().all(|b| b.is_ascii_digit()) {
                item.parse().ok()
            } else {
                None
            }
        })
        .collect();
    if theirs.is_empty() {
        return Ok(CONTRACT_VERSIONS[0]);
    }
    CONTRACT_VERSIONS
        .iter()
        .copied()
        .filter(|v| theirs.contains(v))
        .max()
        .ok_or_else(|| {
            format!(
                "simledger-rust speaks contract version(s) {:?}; the host offered {}={:?}",
                CONTRACT_VERSIONS,
                ENV_PROTOCOL_VERSIONS,
                offered.unwrap_or("")
            )
        })
}

/// Where the adaptor listens, as the handshake line names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Unix(String),
    Tcp(String),
}

/// `CORE|APP|NETWORK|ADDR|grpc|CERT`: CERT is the certificate's DER in unpadded standard
/// base64, or empty without TLS.
pub fn handshake_line(version: u32, address: &Address, cert_der: Option<&[u8]>) -> String {
    let (network, addr) = match address {
        Address::Unix(path) => ("unix", path.as_str()),
        Address::Tcp(addr) => ("tcp", addr.as_str()),
    };
    let cert = cert_der
        .map(|der| STANDARD_NO_PAD.encode(der))
        .unwrap_or_default();
    format!("{CORE_VERSION}|{version}|{network}|{addr}|grpc|{cert}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_picks_the_highest_common_version() {
        assert_eq!(negotiate(None), Ok(1));
        assert_eq!(negotiate(Some("1")), Ok(1));
        assert_eq!(negotiate(Some("1,2")), Ok(1));
        assert_eq!(negotiate(Some(" 2 , 1 ")), Ok(1));
        // Nothing usable offered: our lowest, as go-plugin does.
        assert_eq!(negotiate(Some("")), Ok(1));
        assert_eq!(negotiate(Some("x,,-1")), Ok(1));
        assert!(negotiate(Some("99")).unwrap_err().contains("\"99\""));
        assert!(negotiate(Some("2,x")).is_err());
    }

    #[test]
    fn handshake_lines() {
        let unix = Address::Unix("/tmp/d/adaptor.sock".into());
        assert_eq!(
            handshake_line(1, &unix, None),
            "1|1|unix|/tmp/d/adaptor.sock|grpc|"
        );
        let tcp = Address::Tcp("127.0.0.1:41235".into());
        // 3 bytes: no padding either way; 4 bytes would pad with "==" in padded base64.
        assert_eq!(
            handshake_line(1, &tcp, Some(&[1, 2, 3, 4])),
            "1|1|tcp|127.0.0.1:41235|grpc|AQIDBA"
        );
    }
}
