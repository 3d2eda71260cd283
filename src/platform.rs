//! The Linux platform layer: the syscalls the core asks for through `mc_core::platform::Platform`.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;

use mc_core::platform::{MapError, Platform, ProcessSample, Region, ShmError};
use memmap2::{MmapMut, MmapOptions};

/// A memory mapping handed to the core. Unmapped (munmap) on drop.
struct Mapping(MmapMut);

impl Region for Mapping {
    fn as_ptr(&self) -> *mut u8 {
        self.0.as_ptr() as *mut u8
    }
    fn len(&self) -> u64 {
        self.0.len() as u64
    }
}

/// The real platform: mmap for memory, the OS RNG for ids, `getrusage` and
/// `/proc/self/statm` for process statistics.
pub struct LinuxPlatform {
    page_size: u64,
}

thread_local! {
    /// `/proc/self/statm`, opened once per worker thread: a scrape re-reads it with one
    /// `pread` instead of stat + open + read + read + close. Per thread because procfs
    /// serializes reads of one open file on a mutex (its `seq_file`): with one file shared
    /// by the workers, concurrent scrapes slept on it.
    static STATM: Option<File> = File::open("/proc/self/statm").ok();
}

/// Reads a whole (small) procfs file from offset 0 into `buf`; procfs regenerates the text
/// on every read at offset 0.
fn read_proc<'b>(file: &File, buf: &'b mut [u8]) -> Option<&'b str> {
    let n = file.read_at(buf, 0).ok()?;
    std::str::from_utf8(&buf[..n]).ok()
}

impl LinuxPlatform {
    /// Reads the page size once.
    pub fn new() -> Self {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        Self { page_size: if page > 0 { page as u64 } else { 4096 } }
    }
}

fn is_oom(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOMEM) | Some(libc::EOVERFLOW) | Some(libc::EINVAL))
}

impl Platform for LinuxPlatform {
    fn map_anonymous(&self, size: u64) -> Result<Box<dyn Region>, MapError> {
        let len = usize::try_from(size).map_err(|_| MapError::OutOfMemory)?;
        match MmapOptions::new().len(len).map_anon() {
            Ok(m) => Ok(Box::new(Mapping(m))),
            Err(e) if is_oom(&e) => Err(MapError::OutOfMemory),
            Err(e) => Err(MapError::Os(e.to_string())),
        }
    }

    fn map_shm(&self, name: &str, offset: u64, size: u64) -> Result<Box<dyn Region>, ShmError> {
        let path = std::path::Path::new("/dev/shm").join(name);
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(ShmError::NotFound),
            Err(e) => return Err(ShmError::Os(e.to_string())),
        };
        if !meta.is_file() {
            return Err(ShmError::NotRegularFile);
        }
        if offset.checked_add(size).is_none_or(|end| end > meta.len()) {
            return Err(ShmError::TooSmall(meta.len()));
        }
        let file = OpenOptions::new().read(true).write(true).open(&path).map_err(|e| ShmError::Os(e.to_string()))?;
        let len = usize::try_from(size).map_err(|_| ShmError::Os("size too large".into()))?;
        // SAFETY: the file is a shared-memory object that other processes may change; the
        // core only reads and writes its bytes through raw pointers (no Rust references
        // that assume exclusivity outlive a copy).
        let map = unsafe { MmapOptions::new().offset(offset).len(len).map_mut(&file) };
        map.map(|m| Box::new(Mapping(m)) as Box<dyn Region>).map_err(|e| ShmError::Os(e.to_string()))
    }

    fn random_u128(&self) -> u128 {
        uuid::Uuid::new_v4().as_u128()
    }

    fn process_sample(&self) -> ProcessSample {
        let mut sample = ProcessSample::default();
        let mut buf = [0u8; 256];
        STATM.with(|f| {
            let rss: Option<u64> =
                f.as_ref().and_then(|f| read_proc(f, &mut buf)).and_then(|t| t.split_whitespace().nth(1)?.parse().ok());
            if let Some(pages) = rss {
                sample.resident_bytes = pages * self.page_size;
            }
        });
        // User + system CPU time of all threads, in microseconds: finer than the clock ticks
        // of /proc/self/stat, and a syscall rather than a procfs text to render and parse.
        // SAFETY: getrusage writes one `rusage` into the zeroed struct we own.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } == 0 {
            // Whole microseconds, then one division: the shortest decimal of the result is
            // what a scraper expects (2.573993, not the 2.5739929999999998 of a float sum).
            let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
            sample.cpu_seconds = (us(ru.ru_utime) + us(ru.ru_stime)) as f64 / 1e6;
        }
        sample
    }

    fn page_size(&self) -> u64 {
        self.page_size
    }
}
