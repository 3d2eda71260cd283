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
use mc_fuzz::{check_exchange, config, exchange, mask_addresses, master};

fuzz_target!(|data: &[u8]| {
    let Some((&k, rest)) = data.split_first() else { return };
    let k = usize::from(k % 16);
    if rest.len() < 2 * k {
        return;
    }
    let (offsets, input) = rest.split_at(2 * k);
    let input = input.to_vec();
    let len = input.len();
    let mut cuts: Vec<usize> = offsets
        .chunks(2)
        .map(|c| if len == 0 { 0 } else { usize::from(u16::from_le_bytes([c[0], c[1]])) % (len + 1) })
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut pieces: Vec<&[u8]> = Vec::new();
    let mut prev = 0;
    for c in cuts.into_iter().chain([len]) {
        pieces.push(&input[prev..c]);
        prev = c;
    }

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
