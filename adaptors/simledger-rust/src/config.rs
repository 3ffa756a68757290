//! What the operator and the host tell the adaptor, through environment variables, and the
//! gRPC clients it makes of them.

use std::path::PathBuf;

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::validate;

pub const ENV_LEDGER_ADDR: &str = "ILP_SIMLEDGER_ADDR";
pub const ENV_LEDGER_ACCOUNT: &str = "ILP_SIMLEDGER_ACCOUNT";
pub const ENV_STATE_PATH: &str = "ILP_ADAPTOR_STATE_DB";
pub const ENV_ENGINE_ADDR: &str = "ILP_HOST_ENGINE_ADDR";

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The simulated ledger's gRPC target: "unix:/path" or "host:port".
    pub ledger_addr: String,
    /// This side's account on the ledger (created at start).
    pub ledger_account: String,
    /// The adaptor's own state file.
    pub state_path: PathBuf,
    /// The host's Engine service; None when the host runs no engine.
    pub engine_addr: Option<String>,
}

impl Config {
    /// Reads and checks the variables; the error names the variable and the problem.
    pub fn from_env(getenv: impl Fn(&str) -> Option<String>) -> Result<Config, String> {
        let get = |key: &str| getenv(key).filter(|v| !v.is_empty());
        let ledger_addr = get(ENV_LEDGER_ADDR).ok_or_else(|| {
            format!("{ENV_LEDGER_ADDR} is not set: give the ledger's gRPC target, e.g. unix:/run/simledger.sock")
        })?;
        target(&ledger_addr).map_err(|e| format!("{ENV_LEDGER_ADDR}={ledger_addr:?}: {e}"))?;
        let ledger_account = get(ENV_LEDGER_ACCOUNT).ok_or_else(|| {
            format!("{ENV_LEDGER_ACCOUNT} is not set: give this side's ledger account")
        })?;
        validate::ledger_account(&ledger_account)
            .map_err(|e| format!("{ENV_LEDGER_ACCOUNT}: {e}"))?;
        let state_path = get(ENV_STATE_PATH).ok_or_else(|| {
            format!("{ENV_STATE_PATH} is not set: give the path of the adaptor's state file")
        })?;
        let engine_addr = get(ENV_ENGINE_ADDR);
        if let Some(addr) = &engine_addr {
            target(addr).map_err(|e| format!("{ENV_ENGINE_ADDR}={addr:?}: {e}"))?;
        }
        Ok(Config {
            ledger_addr,
            ledger_account,
            state_path: state_path.into(),
            engine_addr,
        })
    }
}

/// A gRPC target this adaptor can dial.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Unix(PathBuf),
    Tcp(String),
}

/// Parses "unix:/path", "unix:///path" or "host:port".
pub fn target(addr: &str) -> Result<Target, String> {
    if addr.chars().any(char::is_whitespace) {
        return Err("a gRPC target has no white space".into());
    }
    if let Some(rest) = addr.strip_prefix("unix:") {
        let path = rest.strip_prefix("//").unwrap_or(rest);
        if !path.starts_with('/') {
            return Err("a unix target needs an absolute path (unix:/path)".into());
        }
        return Ok(Target::Unix(path.into()));
    }
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            Ok(Target::Tcp(addr.into()))
        }
        _ => Err("expected unix:/path or host:port".into()),
    }
}

/// A lazily connecting plaintext channel to `target` (the ledger and the Engine are on private
/// sockets). Over a unix socket the authority is "localhost".
pub fn channel(target: &Target) -> Result<Channel, String> {
    match target {
        Target::Tcp(addr) => Endpoint::from_shared(format!("http://{addr}"))
            .map(|endpoint| endpoint.connect_lazy())
            .map_err(|e| e.to_string()),
        Target::Unix(path) => {
            let path = path.clone();
            let endpoint = Endpoint::from_static("http://localhost");
            Ok(
                endpoint.connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?))
                    }
                })),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |key| map.get(key).cloned()
    }

    const GOOD: [(&str, &str); 3] = [
        (ENV_LEDGER_ADDR, "unix:/run/ledger.sock"),
        (ENV_LEDGER_ACCOUNT, "host:alice"),
        (ENV_STATE_PATH, "state.json"),
    ];

    #[test]
    fn a_good_configuration() {
        let config = Config::from_env(env(&GOOD)).unwrap();
        assert_eq!(config.ledger_account, "host:alice");
        assert_eq!(config.engine_addr, None);
        let mut with_engine = GOOD.to_vec();
        with_engine.push((ENV_ENGINE_ADDR, "127.0.0.1:5000"));
        assert_eq!(
            Config::from_env(env(&with_engine))
                .unwrap()
                .engine_addr
                .as_deref(),
            Some("127.0.0.1:5000")
        );
    }

    #[test]
    fn each_problem_names_its_variable() {
        for (index, (key, _)) in GOOD.iter().enumerate() {
            let mut missing = GOOD.to_vec();
            missing.remove(index);
            assert!(Config::from_env(env(&missing))
                .unwrap_err()
                .starts_with(key));
        }
        let mut bad = GOOD.to_vec();
        bad[1] = (ENV_LEDGER_ACCOUNT, "no spaces");
        assert!(Config::from_env(env(&bad))
            .unwrap_err()
            .starts_with(ENV_LEDGER_ACCOUNT));
        bad = GOOD.to_vec();
        bad[0] = (ENV_LEDGER_ADDR, "unix:relative");
        assert!(Config::from_env(env(&bad))
            .unwrap_err()
            .starts_with(ENV_LEDGER_ADDR));
    }

    #[test]
    fn targets() {
        assert_eq!(
            target("unix:/a/b.sock"),
            Ok(Target::Unix("/a/b.sock".into()))
        );
        assert_eq!(
            target("unix:///a/b.sock"),
            Ok(Target::Unix("/a/b.sock".into()))
        );
        assert_eq!(target("localhost:7"), Ok(Target::Tcp("localhost:7".into())));
        for bad in ["", "nohost", ":7", "h:port", "a b:1"] {
            assert!(target(bad).is_err(), "{bad:?}");
        }
    }
}
