//! Cutting a transfer into RDMA work requests (data-plane.md §3.4 item 1).
//!
//! Upstream's rule (`RdmaTransport::submitTransferTask`): step through the request in
//! `MC_SLICE_SIZE` (64 KiB) strides; when what is left is at most slice size +
//! `fragment_limit` (slice / `MC_FRAGMENT_RATIO` = 16 KiB), it becomes the last slice whole
//! (so a tail is never a tiny fragment: every slice but a lone one is above 16 KiB).
//!
//! Upstream then requires each slice to lie in one registered local buffer and one remote
//! buffer, and fails the slice otherwise. Here the request is first cut into *runs* at every
//! local and remote buffer boundary (adjacent buffers, e.g. an MR split above `max_mr_size`),
//! and each run is sliced by upstream's rule: a request inside one local and one remote buffer
//! (the normal case) gets exactly upstream's slices, and no slice ever crosses a boundary.

use std::fmt;

/// `MC_SLICE_SIZE` default: 64 KiB.
pub const SLICE_SIZE: u64 = 64 << 10;
/// `MC_FRAGMENT_RATIO` default.
pub const FRAGMENT_RATIO: u64 = 4;
/// `fragment_limit` = slice size / fragment ratio: 16 KiB.
pub const FRAGMENT_LIMIT: u64 = SLICE_SIZE / FRAGMENT_RATIO;

/// The slice sizes (upstream's `slice_size` and `fragment_limit`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SliceConfig {
    /// The stride (64 KiB).
    pub slice_size: u64,
    /// A tail up to `slice_size + fragment_limit` is kept whole (16 KiB).
    pub fragment_limit: u64,
}

impl Default for SliceConfig {
    fn default() -> Self {
        Self { slice_size: SLICE_SIZE, fragment_limit: FRAGMENT_LIMIT }
    }
}

/// One work request's worth of a transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slice {
    /// Offset from the start of the request.
    pub offset: u64,
    /// Local (source of a WRITE, destination of a READ) address.
    pub local_addr: u64,
    /// Remote address.
    pub remote_addr: u64,
    /// Length in bytes (nonzero).
    pub len: u64,
    /// Index of the local buffer holding `[local_addr, local_addr + len)`.
    pub local_buffer: usize,
    /// Index of the remote buffer holding `[remote_addr, remote_addr + len)`.
    pub remote_buffer: usize,
}

/// Why a request cannot be sliced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SliceError {
    /// Upstream's "Memory region not registered": the local address is in no local buffer.
    LocalNotRegistered(u64),
    /// The remote address is in no buffer of the peer's descriptor.
    RemoteNotRegistered(u64),
    /// `addr + len` overflows.
    Overflow,
}

impl fmt::Display for SliceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SliceError::LocalNotRegistered(a) => write!(f, "Memory region not registered: local address {a:#x}"),
            SliceError::RemoteNotRegistered(a) => {
                write!(f, "remote address {a:#x} is in no buffer of the peer's descriptor")
            }
            SliceError::Overflow => f.write_str("address range overflows"),
        }
    }
}

impl std::error::Error for SliceError {}

/// Upstream's slice lengths for a run of `len` bytes.
pub fn upstream_lengths(len: u64, cfg: SliceConfig) -> Vec<u64> {
    let mut out = Vec::new();
    let mut offset = 0;
    while offset < len {
        let left = len - offset;
        if left <= cfg.slice_size.saturating_add(cfg.fragment_limit) {
            out.push(left);
            break;
        }
        out.push(cfg.slice_size);
        offset += cfg.slice_size;
    }
    out
}

/// The index of the `(addr, length)` buffer holding `addr`, and that buffer's end.
fn holder(buffers: &[(u64, u64)], addr: u64) -> Option<(usize, u64)> {
    buffers.iter().enumerate().find_map(|(i, &(start, len))| {
        let end = start.checked_add(len)?;
        (start <= addr && addr < end).then_some((i, end))
    })
}

/// Slices `len` bytes between `local_addr` (inside `local_buffers`) and `remote_addr` (inside
/// `remote_buffers`), buffers given as `(addr, length)`. Zero bytes give no slices.
pub fn slice_request(
    local_addr: u64,
    remote_addr: u64,
    len: u64,
    local_buffers: &[(u64, u64)],
    remote_buffers: &[(u64, u64)],
    cfg: SliceConfig,
) -> Result<Vec<Slice>, SliceError> {
    local_addr.checked_add(len).ok_or(SliceError::Overflow)?;
    remote_addr.checked_add(len).ok_or(SliceError::Overflow)?;
    let mut out = Vec::new();
    let mut offset = 0;
    while offset < len {
        let (l, r) = (local_addr + offset, remote_addr + offset);
        let (local_buffer, local_end) = holder(local_buffers, l).ok_or(SliceError::LocalNotRegistered(l))?;
        let (remote_buffer, remote_end) = holder(remote_buffers, r).ok_or(SliceError::RemoteNotRegistered(r))?;
        let run = (len - offset).min(local_end - l).min(remote_end - r);
        let mut at = 0;
        for piece in upstream_lengths(run, cfg) {
            out.push(Slice {
                offset: offset + at,
                local_addr: l + at,
                remote_addr: r + at,
                len: piece,
                local_buffer,
                remote_buffer,
            });
            at += piece;
        }
        offset += run;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const K: u64 = 1024;

    #[test]
    fn upstream_sizes() {
        let c = SliceConfig::default();
        assert_eq!(upstream_lengths(0, c), Vec::<u64>::new());
        assert_eq!(upstream_lengths(1, c), vec![1]);
        assert_eq!(upstream_lengths(64 * K, c), vec![64 * K]);
        assert_eq!(upstream_lengths(80 * K, c), vec![80 * K]);
        assert_eq!(upstream_lengths(80 * K + 1, c), vec![64 * K, 16 * K + 1]);
        assert_eq!(upstream_lengths(128 * K, c), vec![64 * K, 64 * K]);
        assert_eq!(upstream_lengths(144 * K, c), vec![64 * K, 80 * K]);
        assert_eq!(upstream_lengths(3 << 20, c).len(), 48);
    }

    #[test]
    fn cut_at_buffer_boundaries() {
        let c = SliceConfig::default();
        // The local side is two adjacent buffers (an MR split), the boundary 100 KiB in.
        let local = [(0x1000_0000, 100 * K), (0x1000_0000 + 100 * K, 1 << 20)];
        let remote = [(0x9000_0000, 1 << 20)];
        let s = slice_request(0x1000_0000, 0x9000_0000, 200 * K, &local, &remote, c).unwrap();
        let lens: Vec<u64> = s.iter().map(|s| s.len).collect();
        assert_eq!(lens, vec![64 * K, 36 * K, 64 * K, 36 * K]);
        assert_eq!(s[1].local_buffer, 0);
        assert_eq!(s[2].local_buffer, 1);
        assert_eq!(s[2].offset, 100 * K);
        assert_eq!(s[2].remote_addr, 0x9000_0000 + 100 * K);
    }

    #[test]
    fn unregistered_and_overflow() {
        let c = SliceConfig::default();
        let b = [(0x1000, 0x1000)];
        assert_eq!(slice_request(0x1800, 0x1000, 0x1000, &b, &b, c), Err(SliceError::LocalNotRegistered(0x2000)));
        assert_eq!(slice_request(0x1000, 0x1800, 0x1000, &b, &b, c), Err(SliceError::RemoteNotRegistered(0x2000)));
        assert_eq!(slice_request(0x1000, 0x1000, 1, &[], &b, c), Err(SliceError::LocalNotRegistered(0x1000)));
        assert_eq!(slice_request(u64::MAX, 0x1000, 2, &b, &b, c), Err(SliceError::Overflow));
        assert_eq!(slice_request(0x1000, 0x1000, 0, &[], &[], c), Ok(vec![]));
        assert!(SliceError::LocalNotRegistered(0x10).to_string().contains("Memory region not registered"));
    }

    /// Adjacent buffers of the given lengths from `base`.
    fn layout(base: u64, lens: &[u64]) -> Vec<(u64, u64)> {
        let mut at = base;
        lens.iter()
            .map(|&l| {
                let b = (at, l);
                at += l;
                b
            })
            .collect()
    }

    proptest! {
        #[test]
        fn slices_cover_exactly_and_never_cross(
            local_lens in prop::collection::vec(1u64..400_000, 1..5),
            remote_lens in prop::collection::vec(1u64..400_000, 1..5),
            start in 0u64..200_000,
            len in 0u64..1_000_000,
        ) {
            let c = SliceConfig::default();
            let local = layout(0x10_0000_0000, &local_lens);
            let remote = layout(0x70_0000_0000, &remote_lens);
            let total_l: u64 = local_lens.iter().sum();
            let total_r: u64 = remote_lens.iter().sum();
            let start = start % total_l.min(total_r);
            let len = len % (total_l.min(total_r) - start + 1);
            let slices = slice_request(local[0].0 + start, remote[0].0 + start, len, &local, &remote, c).unwrap();
            let mut next = 0;
            for s in &slices {
                prop_assert_eq!(s.offset, next);
                prop_assert!(s.len > 0 && s.len <= c.slice_size + c.fragment_limit);
                prop_assert_eq!(s.local_addr, local[0].0 + start + s.offset);
                prop_assert_eq!(s.remote_addr, remote[0].0 + start + s.offset);
                let (la, ll) = local[s.local_buffer];
                prop_assert!(la <= s.local_addr && s.local_addr + s.len <= la + ll);
                let (ra, rl) = remote[s.remote_buffer];
                prop_assert!(ra <= s.remote_addr && s.remote_addr + s.len <= ra + rl);
                next += s.len;
            }
            prop_assert_eq!(next, len);
        }

        #[test]
        fn one_buffer_each_gives_upstream_slices(len in 0u64..2_000_000) {
            let c = SliceConfig::default();
            let b = [(0x1000, 4 << 20)];
            let slices = slice_request(0x1000, 0x1000, len, &b, &b, c).unwrap();
            let lens: Vec<u64> = slices.iter().map(|s| s.len).collect();
            prop_assert_eq!(&lens, &upstream_lengths(len, c));
            if lens.len() > 1 {
                prop_assert!(lens[..lens.len() - 1].iter().all(|&l| l == c.slice_size));
                prop_assert!(*lens.last().unwrap() > c.fragment_limit);
            }
        }
    }
}
