//! Time inputs. The core never reads a clock: every entry point takes a [`Now`].

use std::time::Instant;

/// The two clocks the core needs, sampled by the caller.
///
/// `mono` drives every deadline (leases, grace periods, timeouts, summary windows);
/// `wall_unix_secs` is used only to render the HTTP `Date` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time.
    pub mono: Instant,
    /// Wall-clock seconds since the Unix epoch.
    pub wall_unix_secs: u64,
}

impl Now {
    /// Builds a `Now` from its parts.
    pub fn new(mono: Instant, wall_unix_secs: u64) -> Self {
        Self { mono, wall_unix_secs }
    }
}
