//! Logs to stderr as hclog JSON lines, which the host understands (docs/protocol.md, section 8):
//! `{"@level":"info","@message":"…","@module":"…","@timestamp":"…", fields…}`.

use std::io::Write;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

static MODULE: OnceLock<String> = OnceLock::new();

/// Names the records (ILP_ADAPTOR_NAME, else the adaptor's own name).
pub fn init(module: String) {
    let _ = MODULE.set(module);
}

/// Writes one record; `fields` are (key, value) pairs.
pub fn record(level: &str, message: &str, fields: &[(&str, &dyn std::fmt::Display)]) {
    let mut line = Map::new();
    line.insert("@level".into(), Value::from(level));
    line.insert("@message".into(), Value::from(message));
    line.insert(
        "@module".into(),
        Value::from(MODULE.get().map_or("simledger-rust", String::as_str)),
    );
    line.insert("@timestamp".into(), Value::from(rfc3339(SystemTime::now())));
    for (key, value) in fields {
        line.insert((*key).into(), Value::from(value.to_string()));
    }
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "{}", Value::Object(line));
}

/// `2026-01-02T03:04:05.000000Z` (UTC), without a date library.
pub fn rfc3339(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let (days, seconds) = ((since.as_secs() / 86_400) as i64, since.as_secs() % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60,
        since.subsec_micros()
    )
}

macro_rules! info { ($msg:expr $(, $k:literal => $v:expr)* $(,)?) => { $crate::log::record("info", $msg, &[$(($k, &$v as &dyn std::fmt::Display)),*]) }; }
macro_rules! warning { ($msg:expr $(, $k:literal => $v:expr)* $(,)?) => { $crate::log::record("warn", $msg, &[$(($k, &$v as &dyn std::fmt::Display)),*]) }; }
macro_rules! error { ($msg:expr $(, $k:literal => $v:expr)* $(,)?) => { $crate::log::record("error", $msg, &[$(($k, &$v as &dyn std::fmt::Display)),*]) }; }
macro_rules! debug { ($msg:expr $(, $k:literal => $v:expr)* $(,)?) => { $crate::log::record("debug", $msg, &[$(($k, &$v as &dyn std::fmt::Display)),*]) }; }
pub(crate) use {debug, error, info, warning};

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let at = UNIX_EPOCH + Duration::from_micros(1_767_323_045_000_123);
        assert_eq!(rfc3339(at), "2026-01-02T03:04:05.000123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000000Z");
    }
}
