//! [`StoreMemory`]: the memory a TE target serves when mc-master is the target of its own
//! segments, backed by the store (data-plane.md §5.1 item 2).
//!
//! The store decides every range ([`Store::open_read_range`], [`Store::open_write_range`]);
//! this is stricter than upstream's "inside one registered buffer" (§1.5):
//!
//! | request | served when | otherwise |
//! |---|---|---|
//! | READ  | the range lies inside one complete (or retired, not yet released) value on a live segment of this node | reject |
//! | WRITE | the range lies inside one allocation whose write is in progress (an RPC writer's PutStart placed it here) | reject |
//! | WRITE finished after the write was revoked, its writer expired or its segment unmounted | | reject at the end of the body |
//!
//! A window counts as a read in flight on its value and segment: nothing is freed or unmapped
//! under a transfer; it ends when the target drops the window.

use std::sync::Arc;

use mc_core::store::{RangeRefused, RangeWrite, RawRange, Store, ValueRead};

use crate::te::memory::{ReadWindow, Reject, TargetMemory, WriteWindow};

/// [`TargetMemory`] over this node's store.
#[derive(Clone)]
pub struct StoreMemory {
    store: Arc<Store>,
    open: bool,
}

impl StoreMemory {
    /// Serves the local segments of `store`.
    pub fn new(store: Arc<Store>) -> Self {
        Self { store, open: false }
    }

    /// Upstream's rule instead (`--te-open-access`): any range inside one live segment,
    /// read or written raw ([`Store::open_raw_range`]).
    pub fn open_access(store: Arc<Store>) -> Self {
        Self { store, open: true }
    }

    /// The store served.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }
}

impl std::fmt::Debug for StoreMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreMemory").finish_non_exhaustive()
    }
}

/// The reject of a refused range; its reason is the refusal's Display text.
pub fn reject_of(refused: RangeRefused) -> Reject {
    Reject::new(match refused {
        RangeRefused::NoSegment => "not within any segment of this node",
        RangeRefused::NotInValue => "not within one value",
        RangeRefused::NotComplete => "the value is not complete",
        RangeRefused::NotWritable => "not within a write in progress",
    })
}

struct StoreRead(ValueRead);

impl ReadWindow for StoreRead {
    fn bytes(&self) -> &[u8] {
        self.0.bytes()
    }
}

struct Raw(RawRange);

impl ReadWindow for Raw {
    fn bytes(&self) -> &[u8] {
        self.0.bytes()
    }
}

impl WriteWindow for Raw {
    fn write_at(&mut self, offset: u64, data: &[u8]) {
        self.0.write_at(offset, data);
    }

    fn dest(&mut self, offset: u64) -> Option<&mut [u8]> {
        Some(self.0.dest(offset))
    }

    fn finish(self: Box<Self>) -> Result<(), Reject> {
        Ok(())
    }
}

struct StoreWrite(RangeWrite);

impl WriteWindow for StoreWrite {
    fn write_at(&mut self, offset: u64, data: &[u8]) {
        self.0.write_at(offset, data);
    }

    fn dest(&mut self, offset: u64) -> Option<&mut [u8]> {
        Some(self.0.dest(offset))
    }

    fn finish(self: Box<Self>) -> Result<(), Reject> {
        self.0.finish().map_err(reject_of)
    }
}

impl TargetMemory for StoreMemory {
    fn open_read(&self, addr: u64, len: u64) -> Result<Box<dyn ReadWindow>, Reject> {
        if self.open {
            return self.store.open_raw_range(addr, len).map(|r| Box::new(Raw(r)) as _).map_err(reject_of);
        }
        match self.store.open_read_range(addr, len) {
            Ok(read) => Ok(Box::new(StoreRead(read))),
            Err(e) => Err(reject_of(e)),
        }
    }

    fn open_write(&self, addr: u64, len: u64) -> Result<Box<dyn WriteWindow>, Reject> {
        if self.open {
            return self.store.open_raw_range(addr, len).map(|r| Box::new(Raw(r)) as _).map_err(reject_of);
        }
        match self.store.open_write_range(addr, len) {
            Ok(write) => Ok(Box::new(StoreWrite(write))),
            Err(e) => Err(reject_of(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reject_reasons_are_the_display_texts() {
        for r in
            [RangeRefused::NoSegment, RangeRefused::NotInValue, RangeRefused::NotComplete, RangeRefused::NotWritable]
        {
            assert_eq!(reject_of(r).reason, r.to_string());
        }
    }
}
