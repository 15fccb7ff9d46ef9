//! Time as a value: the core never reads a clock.
//!
//! A [`Timestamp`] is a number of microseconds since an epoch chosen by whoever drives the core (the proxy
//! uses its own start; a replay uses the recording's start). Everything in `wire` and `link` takes the
//! current time as an argument, so the same inputs at the same times always give the same story.

use std::fmt;
use std::time::Duration;

/// Microseconds since the driver's epoch.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize)]
#[serde(transparent)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The epoch itself.
    pub const ZERO: Timestamp = Timestamp(0);

    /// A timestamp `micros` microseconds after the epoch.
    pub const fn from_micros(micros: u64) -> Self {
        Timestamp(micros)
    }

    /// A timestamp from fractional seconds after the epoch (negative and non-finite values clamp to 0).
    pub fn from_secs_f64(secs: f64) -> Self {
        if secs.is_finite() && secs > 0.0 { Timestamp((secs * 1_000_000.0).round() as u64) } else { Timestamp(0) }
    }

    /// Microseconds since the epoch.
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// This timestamp moved back by `d` (saturating at the epoch).
    pub fn minus(self, d: Duration) -> Timestamp {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_sub(micros))
    }

    /// Time elapsed from `earlier` to `self`; zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }

    /// This timestamp moved forward by `d` (saturating).
    pub fn plus(self, d: Duration) -> Timestamp {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_add(micros))
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:06}s", self.0 / 1_000_000, self.0 % 1_000_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_instead_of_panicking() {
        let a = Timestamp::from_micros(10);
        let b = Timestamp::from_micros(25);
        assert_eq!(b.since(a), Duration::from_micros(15));
        assert_eq!(a.since(b), Duration::ZERO);
        assert_eq!(Timestamp::from_micros(u64::MAX).plus(Duration::from_secs(1)).as_micros(), u64::MAX);
        assert_eq!(Timestamp::from_secs_f64(-3.0), Timestamp::ZERO);
        assert_eq!(Timestamp::from_secs_f64(f64::NAN), Timestamp::ZERO);
        assert_eq!(Timestamp::from_secs_f64(1.5).as_micros(), 1_500_000);
        assert_eq!(format!("{:?}", Timestamp::from_micros(1_000_042)), "1.000042s");
    }
}
