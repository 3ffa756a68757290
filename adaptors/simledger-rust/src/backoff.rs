//! The retry pause (pure): doubles from `initial` per attempt up to `max`, then a jitter in
//! [0, 1) takes it down to between half and all of that ("equal jitter").

use std::time::Duration;

pub fn delay(attempt: u32, initial: Duration, max: Duration, jitter: f64) -> Duration {
    let doubling = 2u32.saturating_pow(attempt.saturating_sub(1).min(30));
    let full = initial.saturating_mul(doubling).min(max);
    full.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// A number in [0, 1) that differs between calls and processes (no crate needed for this).
pub fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_with_equal_jitter() {
        let (initial, max) = (Duration::from_millis(100), Duration::from_secs(2));
        for (attempt, full_ms) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (5, 1600),
            (6, 2000),
            (100, 2000),
        ] {
            let full = Duration::from_millis(full_ms);
            assert_eq!(
                delay(attempt, initial, max, 0.0),
                full / 2,
                "attempt {attempt}"
            );
            let high = delay(attempt, initial, max, 0.999_999);
            assert!(
                high <= full && high >= full * 99 / 100,
                "attempt {attempt}: {high:?}"
            );
        }
        assert_eq!(delay(0, initial, max, 0.0), initial / 2);
    }

    #[test]
    fn jitter_is_in_range() {
        for _ in 0..100 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j));
        }
    }
}
