//! (b) The same request bytes fed unsplit, one byte at a time, and split at points chosen by
//! the input must produce byte-identical output (the Date header is constant: fixed wall
//! clock; durations are zero), `/metrics` bodies included: responses are counted when they
//! are produced, which does not depend on how the input was split. Memory addresses are
//! masked: each of the three runs has its own master and segment memory.
//!
//! Input: `k` (1 byte), then `k` split offsets (2 bytes each, little endian, modulo the
//! length), then the request bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mc_fuzz::{check_exchange, config, exchange, mask_addresses, master, pieces, split_spec};

fuzz_target!(|data: &[u8]| {
    let Some((input, cuts)) = split_spec(data, &[]) else { return };
    let pieces = pieces(&input, &cuts);

    let whole = exchange(&master(config()), &[&input], false);
    check_exchange(&whole);
    let split = exchange(&master(config()), &pieces, false);
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    let single = exchange(&master(config()), &bytes, false);

    // Each run has its own master, whose segment memory may sit at another address.
    let show = |b: &[u8]| mask_addresses(&String::from_utf8_lossy(b));
    assert_eq!(show(&whole.output), show(&split.output), "split at {pieces:?}");
    assert_eq!(whole.statuses, split.statuses);
    assert_eq!(show(&whole.output), show(&single.output), "fed one byte at a time");
    assert_eq!(whole.statuses, single.statuses);
});
