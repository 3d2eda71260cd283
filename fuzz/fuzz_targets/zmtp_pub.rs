//! Arbitrary bytes from a would-be KV event subscriber into `kv_events::zmtp::PubSession`, in
//! the chunks the input splits into, with messages offered between chunks: no panic, output
//! only while the session is open, the queue bounded by its high-water mark.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mc_core::kv_events::zmtp::{encode_message, PubSession};

fuzz_target!(|data: &[u8]| {
    let mut s = PubSession::new(8);
    let msg = bytes::Bytes::from(encode_message(&[b"", &7u64.to_be_bytes(), b"payload"]));
    for chunk in data.split(|&b| b == 0xa5) {
        s.handle_input(chunk);
        s.offer(b"", &msg);
        assert!(s.backlog() <= 9, "the high-water mark bounds the queue");
        if let Some(out) = s.poll_transmit() {
            let n = out.len().min(7);
            s.consume(n);
        }
    }
});
