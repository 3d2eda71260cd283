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

// The store's guards are the windows themselves: no wrapper types.

impl ReadWindow for ValueRead {
    fn bytes(&self) -> &[u8] {
        ValueRead::bytes(self)
    }
}

impl ReadWindow for RawRange {
    fn bytes(&self) -> &[u8] {
        RawRange::bytes(self)
    }
}

impl WriteWindow for RawRange {
    fn write_at(&mut self, offset: u64, data: &[u8]) {
        RawRange::write_at(self, offset, data);
    }

    fn dest(&mut self, offset: u64) -> Option<&mut [u8]> {
        Some(RawRange::dest(self, offset))
    }

    fn finish(self: Box<Self>) -> Result<(), Reject> {
        Ok(())
    }
}

impl WriteWindow for RangeWrite {
    fn write_at(&mut self, offset: u64, data: &[u8]) {
        RangeWrite::write_at(self, offset, data);
    }

    fn dest(&mut self, offset: u64) -> Option<&mut [u8]> {
        Some(RangeWrite::dest(self, offset))
    }

    fn finish(self: Box<Self>) -> Result<(), Reject> {
        RangeWrite::finish(*self).map_err(reject_of)
    }
}

impl TargetMemory for StoreMemory {
    fn open_read(&self, addr: u64, len: u64) -> Result<Box<dyn ReadWindow>, Reject> {
        let window: Result<Box<dyn ReadWindow>, RangeRefused> = match self.open {
            true => self.store.open_raw_range(addr, len).map(|r| Box::new(r) as _),
            false => self.store.open_read_range(addr, len).map(|r| Box::new(r) as _),
        };
        window.map_err(reject_of)
    }

    fn open_write(&self, addr: u64, len: u64) -> Result<Box<dyn WriteWindow>, Reject> {
        let window: Result<Box<dyn WriteWindow>, RangeRefused> = match self.open {
            true => self.store.open_raw_range(addr, len).map(|r| Box::new(r) as _),
            false => self.store.open_write_range(addr, len).map(|w| Box::new(w) as _),
        };
        window.map_err(reject_of)
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
