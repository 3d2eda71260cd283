//! (a) Raw request bytes into one `mc_core::http::Connection` driven with the real `Service`
//! over a `Master` on `FakePlatform` (1 MiB segment mounted): no panic, only documented
//! statuses, the timeouts fire and the connection closes, no leaked connection, value,
//! segment or byte once everything is unmounted.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use mc_fuzz::{at, check_exchange, config, exchange, master, wind_down};

fuzz_target!(|data: &[u8]| {
    let master = master(config());
    let x = exchange(&master, &[data], true);
    check_exchange(&x);
    wind_down(&master, at(Duration::from_secs(7200)));
});
