// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
//! Rate limiting of warnings caused by guest input: at most `burst` messages per second, and a
//! summary of how many were suppressed.

use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct RateLimiter {
    burst: u32,
    state: Mutex<(Instant, u32, u64)>,
}

impl RateLimiter {
    pub fn new(burst: u32) -> Self {
        RateLimiter {
            burst,
            state: Mutex::new((Instant::now(), 0, 0)),
        }
    }

    /// Returns `Some(suppressed_before)` when a message may be logged now.
    pub fn allow(&self) -> Option<u64> {
        let Ok(mut s) = self.state.lock() else {
            return None;
        };
        let now = Instant::now();
        if now.duration_since(s.0) >= Duration::from_secs(1) {
            s.0 = now;
            s.1 = 0;
        }
        if s.1 < self.burst {
            s.1 += 1;
            let sup = s.2;
            s.2 = 0;
            Some(sup)
        } else {
            s.2 += 1;
            None
        }
    }
}

/// `warn!` through a rate limiter.
#[macro_export]
macro_rules! rl_warn {
    ($rl:expr, $($arg:tt)*) => {
        if let Some(sup) = $rl.allow() {
            if sup > 0 {
                log::warn!("({} similar warnings suppressed)", sup);
            }
            log::warn!($($arg)*);
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_counts_suppressed() {
        let rl = RateLimiter::new(3);
        assert_eq!(rl.allow(), Some(0));
        assert_eq!(rl.allow(), Some(0));
        assert_eq!(rl.allow(), Some(0));
        assert_eq!(rl.allow(), None);
        assert_eq!(rl.allow(), None);
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(rl.allow(), Some(2));
    }
}
