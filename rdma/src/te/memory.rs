//! What a TE target reads from and writes into: the contract between the sans-IO target
//! ([`super::target`]) and the memory that backs this node's segments.
//!
//! The target validates nothing about addresses itself beyond `size > 0`, no overflow and the
//! configured maximum; [`TargetMemory`] decides whether `[addr, addr + len)` is served, which
//! for upstream compatibility (data-plane.md §1.5) means: the range lies inside **one**
//! registered (mounted) buffer. A window is the in-flight guard: while it lives, the memory
//! behind it must stay mapped (unmount waits for it), and it is dropped as soon as the request
//! is done, rejected or the connection dies.
//!
//! [`HeapMemory`] is a small implementation over heap bytes at a virtual base address, for
//! tests, fuzzing and stand-ins (TCP addresses are opaque: data-plane.md §2.4).

use std::fmt;
use std::sync::{Arc, Mutex};

/// Why a range is not served. The peer only ever learns "rejected" (status code 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reject {
    /// For logs.
    pub reason: &'static str,
}

impl Reject {
    /// A rejection with `reason` (for logs).
    pub const fn new(reason: &'static str) -> Self {
        Self { reason }
    }
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason)
    }
}

impl std::error::Error for Reject {}

/// The memory a target serves. Shared by every connection of every worker.
pub trait TargetMemory: Send + Sync {
    /// A window to read `[addr, addr + len)` from; `len > 0` and `addr + len` does not
    /// overflow. Its [`ReadWindow::bytes`] must be exactly `len` bytes long (a window of
    /// another length is treated as a rejection).
    fn open_read(&self, addr: u64, len: u64) -> Result<Box<dyn ReadWindow>, Reject>;

    /// A window to write `[addr, addr + len)` into, same preconditions. The payload arrives
    /// in order, in pieces, through [`WriteWindow::write_at`]; [`WriteWindow::finish`] is
    /// called once all `len` bytes were written. A window dropped without `finish` (the peer
    /// went away mid-body) may leave the range partly written.
    fn open_write(&self, addr: u64, len: u64) -> Result<Box<dyn WriteWindow>, Reject>;
}

/// Readable bytes that stay valid while the window lives (and keep their memory alive).
pub trait ReadWindow: Send {
    /// The bytes. Called repeatedly while they are being sent; must return the same slice.
    fn bytes(&self) -> &[u8];
}

/// A writable range, filled in order.
pub trait WriteWindow: Send {
    /// Writes `data` at `offset` from the window's start; `offset + data.len()` never exceeds
    /// the window's length, and calls cover the window in order without gaps.
    fn write_at(&mut self, offset: u64, data: &[u8]);

    /// All bytes were written. An error is reported to the peer as a rejection.
    fn finish(self: Box<Self>) -> Result<(), Reject>;

    /// The window's memory from `offset` to its end, when a socket may read straight into
    /// it (bytes placed there count as written by `write_at`); `None`: use `write_at`.
    fn dest(&mut self, offset: u64) -> Option<&mut [u8]> {
        let _ = offset;
        None
    }
}

/// Bytes owned by the window (a WRITE payload or a READ source the caller hands over).
impl ReadWindow for Vec<u8> {
    fn bytes(&self) -> &[u8] {
        self
    }
}

impl ReadWindow for bytes::Bytes {
    fn bytes(&self) -> &[u8] {
        self
    }
}

/// Heap bytes served at a virtual base address: `[base, base + len)` is the one buffer.
///
/// Reads copy the range when the window opens; writes are buffered and land in memory at
/// `finish`, so a write that loses its peer mid-body leaves memory untouched. Enough for
/// tests and stand-ins; a real segment writes in place.
#[derive(Clone, Debug)]
pub struct HeapMemory {
    base: u64,
    bytes: Arc<Mutex<Vec<u8>>>,
}

impl HeapMemory {
    /// `len` zero bytes at `base`.
    pub fn new(base: u64, len: usize) -> Self {
        Self { base, bytes: Arc::new(Mutex::new(vec![0; len])) }
    }

    /// The advertised start address.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// A copy of `len` bytes at `addr` (absolute), or `None` outside the buffer.
    pub fn read(&self, addr: u64, len: usize) -> Option<Vec<u8>> {
        let (start, end) = self.range(addr, len as u64)?;
        Some(self.lock()[start..end].to_vec())
    }

    /// Writes `data` at `addr` (absolute); false outside the buffer.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.range(addr, data.len() as u64) {
            Some((start, end)) => {
                self.lock()[start..end].copy_from_slice(data);
                true
            }
            None => false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.bytes.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `[addr, addr + len)` as indices, if it lies inside the buffer.
    fn range(&self, addr: u64, len: u64) -> Option<(usize, usize)> {
        let start = addr.checked_sub(self.base)?;
        let end = start.checked_add(len)?;
        let size = self.lock().len() as u64;
        (end <= size).then_some((start as usize, end as usize))
    }
}

impl TargetMemory for HeapMemory {
    fn open_read(&self, addr: u64, len: u64) -> Result<Box<dyn ReadWindow>, Reject> {
        let (start, end) = self.range(addr, len).ok_or(Reject::new("not within any registered buffer"))?;
        Ok(Box::new(self.lock()[start..end].to_vec()))
    }

    fn open_write(&self, addr: u64, len: u64) -> Result<Box<dyn WriteWindow>, Reject> {
        let (start, end) = self.range(addr, len).ok_or(Reject::new("not within any registered buffer"))?;
        Ok(Box::new(HeapWrite { memory: self.clone(), start, data: vec![0; end - start] }))
    }
}

struct HeapWrite {
    memory: HeapMemory,
    start: usize,
    data: Vec<u8>,
}

impl WriteWindow for HeapWrite {
    fn write_at(&mut self, offset: u64, data: &[u8]) {
        let start = offset as usize;
        if let Some(dst) = self.data.get_mut(start..start + data.len()) {
            dst.copy_from_slice(data);
        }
    }

    fn finish(self: Box<Self>) -> Result<(), Reject> {
        let mut bytes = self.memory.lock();
        let end = self.start + self.data.len();
        match bytes.get_mut(self.start..end) {
            Some(dst) => {
                dst.copy_from_slice(&self.data);
                Ok(())
            }
            None => Err(Reject::new("buffer shrank")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heap_memory_bounds() {
        let m = HeapMemory::new(0x1000, 16);
        assert!(m.open_read(0x1000, 16).is_ok());
        assert!(m.open_read(0x1008, 8).is_ok());
        assert!(m.open_read(0x1008, 9).is_err());
        assert!(m.open_read(0xfff, 1).is_err());
        assert!(m.open_write(u64::MAX, 1).is_err());
        assert_eq!(m.open_read(0x1000, 4).unwrap().bytes(), &[0; 4]);
    }

    #[test]
    fn heap_writes_land_at_finish() {
        let m = HeapMemory::new(0x1000, 16);
        let mut w = m.open_write(0x1004, 4).unwrap();
        w.write_at(0, b"ab");
        w.write_at(2, b"cd");
        assert_eq!(m.read(0x1004, 4).unwrap(), [0; 4]);
        w.finish().unwrap();
        assert_eq!(m.read(0x1004, 4).unwrap(), b"abcd");
        let mut dropped = m.open_write(0x1000, 2).unwrap();
        dropped.write_at(0, b"zz");
        drop(dropped);
        assert_eq!(m.read(0x1000, 2).unwrap(), [0; 2]);
        assert!(m.write(0x100e, b"xy"));
        assert!(!m.write(0x100f, b"xy"));
    }
}
