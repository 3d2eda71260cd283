//! The platform seam: memory mappings, randomness and process statistics.
//!
//! The core decides *what* to map and *where* values go; the embedding program
//! supplies a [`Platform`] that performs the syscalls (mmap/munmap/open). Tests use
//! [`FakePlatform`], which hands out heap memory.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// A contiguous, writable memory region owned by the platform layer
/// (an anonymous mapping, a shared mapping of `/dev/shm/NAME`, or heap memory in tests).
///
/// The region is released when the value is dropped.
pub trait Region: Send + Sync {
    /// Address of the first byte.
    fn as_ptr(&self) -> *mut u8;
    /// Length in bytes.
    fn len(&self) -> u64;
    /// True when the region has no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why an anonymous mapping failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// The OS refused the allocation (ENOMEM and friends).
    #[error("insufficient memory")]
    OutOfMemory,
    /// Any other OS error, with its text.
    #[error("{0}")]
    Os(String),
}

/// Why mapping `/dev/shm/NAME` failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShmError {
    /// `/dev/shm/NAME` does not exist.
    #[error("shared memory object not found")]
    NotFound,
    /// It exists but is not a regular file.
    #[error("not a regular file")]
    NotRegularFile,
    /// The file is smaller than `offset + size`; carries the file size.
    #[error("object too small: {0} bytes")]
    TooSmall(u64),
    /// The OS refused the mapping; carries the OS error text.
    #[error("{0}")]
    Os(String),
}

/// A sample of process resource usage, for the `process_*` metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessSample {
    /// Resident set size in bytes.
    pub resident_bytes: u64,
    /// User + system CPU seconds.
    pub cpu_seconds: f64,
}

/// Everything the core needs from the operating system.
pub trait Platform: Send + Sync {
    /// Maps `size` bytes of zeroed anonymous memory.
    fn map_anonymous(&self, size: u64) -> Result<Box<dyn Region>, MapError>;
    /// Maps `size` bytes of `/dev/shm/<name>` starting at file offset `offset`, shared.
    /// `name` has already been validated (no `/`, not `.`/`..`, no NUL).
    fn map_shm(&self, name: &str, offset: u64, size: u64) -> Result<Box<dyn Region>, ShmError>;
    /// 128 random bits (for version-4 UUIDs).
    fn random_u128(&self) -> u128;
    /// Current process resource usage.
    fn process_sample(&self) -> ProcessSample;
    /// The OS page size (`sysconf(_SC_PAGESIZE)`).
    fn page_size(&self) -> u64 {
        4096
    }
}

/// Heap memory standing in for a mapping (tests, fuzzing, embedding examples).
pub struct HeapRegion {
    buf: Box<[u8]>,
}

impl HeapRegion {
    /// A zeroed region of `len` bytes.
    pub fn new(len: usize) -> Self {
        Self { buf: vec![0u8; len].into_boxed_slice() }
    }
}

impl Region for HeapRegion {
    fn as_ptr(&self) -> *mut u8 {
        self.buf.as_ptr() as *mut u8
    }
    fn len(&self) -> u64 {
        self.buf.len() as u64
    }
}

/// A deterministic platform for tests: heap memory, a seeded RNG, a fixed process sample.
///
/// Anonymous mappings larger than `max_anonymous` fail with [`MapError::OutOfMemory`];
/// shared-memory objects exist only when registered with [`FakePlatform::add_shm`]
/// (they are backed by one shared heap buffer per name, so two mounts of the same name
/// see the same bytes).
pub struct FakePlatform {
    rng: AtomicU64,
    /// Largest anonymous mapping that succeeds.
    pub max_anonymous: u64,
    shm: Mutex<Vec<(String, std::sync::Arc<SharedBuf>)>>,
}

/// A heap buffer shared by all fake mappings of one fake shm name.
pub struct SharedBuf {
    buf: Box<[u8]>,
}

impl SharedBuf {
    /// The bytes of the fake shm file.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf
    }
}

struct SharedSlice {
    owner: std::sync::Arc<SharedBuf>,
    offset: usize,
    len: usize,
}

impl Region for SharedSlice {
    fn as_ptr(&self) -> *mut u8 {
        // SAFETY: offset + len was checked against the buffer length at creation.
        unsafe { (self.owner.buf.as_ptr() as *mut u8).add(self.offset) }
    }
    fn len(&self) -> u64 {
        self.len as u64
    }
}

impl FakePlatform {
    /// A fake platform whose RNG starts from `seed`.
    pub fn new(seed: u64) -> Self {
        Self { rng: AtomicU64::new(seed), max_anonymous: 1 << 34, shm: Mutex::new(Vec::new()) }
    }
    /// Registers a fake `/dev/shm/<name>` of `len` zeroed bytes and returns its buffer.
    pub fn add_shm(&self, name: &str, len: usize) -> std::sync::Arc<SharedBuf> {
        let buf = std::sync::Arc::new(SharedBuf { buf: vec![0u8; len].into_boxed_slice() });
        self.shm.lock().unwrap().push((name.to_string(), buf.clone()));
        buf
    }
}

impl Platform for FakePlatform {
    fn map_anonymous(&self, size: u64) -> Result<Box<dyn Region>, MapError> {
        if size > self.max_anonymous {
            return Err(MapError::OutOfMemory);
        }
        Ok(Box::new(HeapRegion::new(size as usize)))
    }
    fn map_shm(&self, name: &str, offset: u64, size: u64) -> Result<Box<dyn Region>, ShmError> {
        let shm = self.shm.lock().unwrap();
        let (_, buf) = shm.iter().find(|(n, _)| n == name).ok_or(ShmError::NotFound)?;
        let file_len = buf.buf.len() as u64;
        if offset.checked_add(size).is_none_or(|end| end > file_len) {
            return Err(ShmError::TooSmall(file_len));
        }
        Ok(Box::new(SharedSlice { owner: buf.clone(), offset: offset as usize, len: size as usize }))
    }
    fn random_u128(&self) -> u128 {
        // splitmix64, twice.
        let next = || {
            let mut z =
                self.rng.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed).wrapping_add(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        ((next() as u128) << 64) | next() as u128
    }
    fn process_sample(&self) -> ProcessSample {
        ProcessSample { resident_bytes: 1 << 20, cpu_seconds: 0.5 }
    }
}
