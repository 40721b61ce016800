//! Misbehaving proxies: which streams read slowly or not at all, and the
//! process-wide reset storms and connection churn. Pure: the stream tasks
//! and the client's timers act on it.

use std::time::Duration;

use rand::{Rng, SeedableRng, rngs::StdRng};

/// How a stream reads its updates.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Class {
    /// Reads every update as it comes.
    Healthy,
    /// Waits `--slow-reader-delay` before reading each update, so HTTP/2
    /// flow control pushes back on the server.
    Slow,
    /// Reads its first update, then never reads again, keeping the stream open.
    Stuck,
}

impl Class {
    /// Every class.
    pub const ALL: [Class; 3] = [Class::Healthy, Class::Slow, Class::Stuck];

    /// The `class` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Healthy => "healthy",
            Class::Slow => "slow",
            Class::Stuck => "stuck",
        }
    }
}

/// The fault modes of a client process: a scenario's `clients.faults`.
pub use crate::scenario::Faults;

impl Faults {
    /// The class of the process's `ordinal`-th stream. The ordinal is
    /// permuted by a step of 11 modulo 100, which puts every 10 consecutive
    /// streams in 10 different percentiles: over every 100 streams exactly
    /// the given percentages are stuck and slow, and over every 10 exactly
    /// so when the percentages are multiples of 10.
    pub fn class(&self, ordinal: usize) -> Class {
        let r = (ordinal * 11 % 100) as u32;
        let (stuck, slow) = (
            u32::from(self.stuck_percent),
            u32::from(self.slow_reader_percent),
        );
        if r < stuck {
            Class::Stuck
        } else if r < stuck + slow {
            Class::Slow
        } else {
            Class::Healthy
        }
    }
}

/// Delays of a jittered timer: `every` plus up to `jitter`, drawn from `seed`.
pub fn jittered(every: Duration, jitter: Duration, seed: u64) -> impl Iterator<Item = Duration> {
    let mut rng = StdRng::seed_from_u64(seed);
    std::iter::repeat_with(move || {
        let extra = if jitter.is_zero() {
            Duration::ZERO
        } else {
            Duration::from_nanos(rng.random_range(0..=jitter.as_nanos() as u64))
        };
        every + extra
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_hundred_streams_have_exactly_the_percentages() {
        let f = Faults {
            slow_reader_percent: 20,
            stuck_percent: 10,
            slow_reader_delay: Duration::from_secs(1),
            ..Default::default()
        };
        for start in [0, 100, 1234] {
            let classes: Vec<Class> = (start..start + 100).map(|g| f.class(g)).collect();
            let count = |c| classes.iter().filter(|x| **x == c).count();
            assert_eq!(
                (
                    count(Class::Stuck),
                    count(Class::Slow),
                    count(Class::Healthy)
                ),
                (10, 20, 70)
            );
        }
        // Every 10 consecutive streams: 1 stuck, 2 slow, 7 healthy.
        for start in [0, 10, 370] {
            let ten: Vec<Class> = (start..start + 10).map(|g| f.class(g)).collect();
            let count = |c| ten.iter().filter(|x| **x == c).count();
            assert_eq!((count(Class::Stuck), count(Class::Slow)), (1, 2), "{start}");
        }
        assert!((0..1000).all(|g| Faults::default().class(g) == Class::Healthy));
    }

    #[test]
    fn validation_names_the_key() {
        let bad = |f: Faults, needle: &str| {
            let e = f.validate().unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        };
        bad(
            Faults {
                slow_reader_percent: 60,
                stuck_percent: 50,
                slow_reader_delay: Duration::from_secs(1),
                ..Default::default()
            },
            "add up to more than 100",
        );
        bad(
            Faults {
                slow_reader_percent: 5,
                slow_reader_delay: Duration::ZERO,
                ..Default::default()
            },
            "slow-reader-delay",
        );
        bad(
            Faults {
                reset_storm_interval: Some(Duration::ZERO),
                ..Default::default()
            },
            "reset-storm-interval",
        );
        bad(
            Faults {
                connection_churn_interval: Some(Duration::ZERO),
                ..Default::default()
            },
            "connection-churn-interval",
        );
        assert!(Faults::default().validate().is_ok());
    }

    #[test]
    fn jittered_timers_stay_within_their_bounds_and_replay() {
        let (every, jitter) = (Duration::from_secs(10), Duration::from_secs(2));
        let a: Vec<_> = jittered(every, jitter, 7).take(50).collect();
        assert!(a.iter().all(|d| *d >= every && *d <= every + jitter));
        assert_eq!(a, jittered(every, jitter, 7).take(50).collect::<Vec<_>>());
        assert!(
            jittered(every, Duration::ZERO, 1)
                .take(3)
                .all(|d| d == every)
        );
    }
}
