//! Delay before the next attempt of a run, from its retry policy.
use std::time::Duration;

use crate::values::{Jitter, RetryPolicy, RetryStrategy};
use rand::Rng;

/// Delay before attempt `failed_attempt + 1`, given that attempt `failed_attempt` (1-based)
/// just failed. `rng` picks the jitter so tests can pin it.
pub fn next_delay(policy: &RetryPolicy, failed_attempt: i32, rng: &mut impl Rng) -> Duration {
    let base = match policy.strategy {
        RetryStrategy::None => 0,
        RetryStrategy::Fixed => policy.initial_delay_ms,
        RetryStrategy::Exponential => {
            let exponent = (failed_attempt.max(1) - 1).min(30) as u32;
            policy.initial_delay_ms.saturating_mul(1u64 << exponent)
        }
    };
    let capped = base.min(policy.max_delay_ms.max(policy.initial_delay_ms));
    let ms = match policy.jitter {
        Jitter::None => capped,
        Jitter::Full => rng.random_range(0..=capped),
        Jitter::Equal => capped / 2 + rng.random_range(0..=capped - capped / 2),
    };
    Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{SeedableRng, rngs::StdRng};

    fn policy(strategy: RetryStrategy, jitter: Jitter) -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            strategy,
            initial_delay_ms: 100,
            max_delay_ms: 1000,
            jitter,
        }
    }

    #[test]
    fn exponential_doubles_and_caps() {
        let p = policy(RetryStrategy::Exponential, Jitter::None);
        let mut rng = StdRng::seed_from_u64(1);
        let delays: Vec<u64> = (1..=6)
            .map(|a| next_delay(&p, a, &mut rng).as_millis() as u64)
            .collect();
        assert_eq!(delays, vec![100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn fixed_and_none() {
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(
            next_delay(&policy(RetryStrategy::Fixed, Jitter::None), 4, &mut rng).as_millis(),
            100
        );
        assert_eq!(
            next_delay(&policy(RetryStrategy::None, Jitter::None), 4, &mut rng).as_millis(),
            0
        );
    }

    #[test]
    fn jitter_stays_in_range() {
        let mut rng = StdRng::seed_from_u64(7);
        for attempt in 1..8 {
            let full = next_delay(
                &policy(RetryStrategy::Exponential, Jitter::Full),
                attempt,
                &mut rng,
            );
            assert!(full.as_millis() <= 1000);
            let equal = next_delay(
                &policy(RetryStrategy::Fixed, Jitter::Equal),
                attempt,
                &mut rng,
            );
            assert!((50..=100).contains(&equal.as_millis()), "{equal:?}");
        }
    }

    #[test]
    fn huge_attempt_numbers_do_not_overflow() {
        let mut rng = StdRng::seed_from_u64(1);
        let p = RetryPolicy {
            max_delay_ms: u64::MAX,
            ..policy(RetryStrategy::Exponential, Jitter::None)
        };
        assert!(next_delay(&p, i32::MAX, &mut rng) > Duration::ZERO);
    }
}
