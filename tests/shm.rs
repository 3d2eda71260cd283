//! SPEC §5.1, §5.2, §5.5: shared-memory segments backed by files under /dev/shm.

mod common;

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use common::*;
use serde_json::Value;

/// A file (or directory) under /dev/shm with a unique name, removed on drop.
struct ShmFile {
    name: String,
    path: PathBuf,
}

impl ShmFile {
    fn new(len: u64) -> ShmFile {
        let name = unique("mc-e2e-shm");
        let path = PathBuf::from("/dev/shm").join(&name);
        let f = File::create(&path).expect("create /dev/shm file");
        f.set_len(len).expect("set_len");
        ShmFile { name, path }
    }

    fn dir() -> ShmFile {
        let name = unique("mc-e2e-shmdir");
        let path = PathBuf::from("/dev/shm").join(&name);
        std::fs::create_dir(&path).expect("create /dev/shm dir");
        ShmFile { name, path }
    }

    fn read_at(&self, off: u64, len: usize) -> Vec<u8> {
        let f = File::open(&self.path).unwrap();
        let mut buf = vec![0u8; len];
        f.read_exact_at(&mut buf, off).unwrap();
        buf
    }

    fn write_at(&self, off: u64, data: &[u8]) {
        let f = OpenOptions::new().write(true).open(&self.path).unwrap();
        f.write_all_at(data, off).unwrap();
    }
}

impl Drop for ShmFile {
    fn drop(&mut self) {
        if self.path.is_dir() {
            let _ = std::fs::remove_dir(&self.path);
        } else {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn mount_shm(s: &Server, body: &str) -> Vec<String> {
    let r = s.post("/api/mount_shm", body);
    assert_eq!(r.status, 200, "{body}: {}", r.text());
    let ids: Vec<String> = r.json()["segment_ids"]
        .as_array()
        .expect("segment_ids")
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect();
    assert!(ids.iter().all(|i| is_uuid_v4(i)), "{ids:?}");
    let quoted: Vec<String> = ids.iter().map(|i| format!("\"{i}\"")).collect();
    r.assert_json(200, &format!(r#"{{"status":"success","segment_ids":[{}]}}"#, quoted.join(",")));
    ids
}

fn segment<'a>(segs: &'a [Value], id: &str) -> &'a Value {
    segs.iter().find(|x| x["segment_id"] == id).unwrap_or_else(|| panic!("segment {id} not listed"))
}

fn hex(s: &str) -> u64 {
    u64::from_str_radix(s.strip_prefix("0x").expect("0x prefix"), 16).expect("hex address")
}

fn address_of(s: &Server, key: &str) -> (u64, u64) {
    let v = s.query_key(key).json();
    let d = &v["data"][0];
    (d["buffer_address_"].as_u64().expect("address"), d["size_"].as_u64().expect("size"))
}

#[test]
fn shm_segment_bytes_are_the_file_bytes() {
    for_each_runtime(|_| {
        let page = page_size();
        let file = ShmFile::new(4 * page);
        let s = Server::start(&[]);
        let ids = mount_shm(
            &s,
            &format!(
                r#"{{"name":"/{}","size":{},"offset":{page},"protocol":"tcp","location":""}}"#,
                file.name,
                2 * page
            ),
        );
        assert_eq!(ids.len(), 1);
        let segs = s.segments();
        let seg = segment(&segs, &ids[0]);
        assert_eq!(seg["size_bytes"].as_u64(), Some(2 * page));
        assert_eq!(seg["status"], "MOUNTED");
        assert_eq!(seg["protocol"], "tcp");
        let base = hex(seg["base_address"].as_str().unwrap());

        // REST → file.
        let value = b"hello shm world";
        s.put_raw("shm-key", value).assert_json(200, r#"{"status":"success"}"#);
        let (addr, size) = address_of(&s, "shm-key");
        assert_eq!(size, value.len() as u64);
        assert!(addr >= base && addr + size <= base + 2 * page);
        let off = page + (addr - base);
        assert_eq!(file.read_at(off, value.len()), value);

        // File → REST.
        let new = b"HELLO SHM WORLD";
        file.write_at(off, new);
        let r = s.get_value("shm-key");
        r.assert(200, CT_OCTET, "HELLO SHM WORLD");

        // A second value lands at its own file bytes too.
        s.put("json-key", "via json put");
        let (addr2, size2) = address_of(&s, "json-key");
        assert_eq!(file.read_at(page + (addr2 - base), size2 as usize), b"via json put");

        // Unmount: the file stays, with its bytes.
        s.post("/api/unmount_shm", &format!(r#"{{"segment_ids":["{}"]}}"#, ids[0]))
            .assert_json(200, r#"{"status":"success"}"#);
        assert!(s.segments().is_empty());
        assert!(!s.exists("shm-key"));
        let meta = std::fs::metadata(&file.path).expect("file still exists");
        assert_eq!(meta.len(), 4 * page);
        assert_eq!(file.read_at(off, new.len()), new);
    });
}

#[test]
fn mount_shm_file_errors() {
    for_each_runtime(|_| {
        let page = page_size();
        let s = Server::start(&[]);
        let missing = unique("mc-e2e-shm-missing");
        for name in [missing.clone(), format!("/{missing}")] {
            s.post("/api/mount_shm", &format!(r#"{{"name":"{name}","size":{page}}}"#))
                .assert_error(404, &format!("Shared memory object not found: {missing}"));
        }
        let dir = ShmFile::dir();
        s.post("/api/mount_shm", &format!(r#"{{"name":"{}","size":{page}}}"#, dir.name))
            .assert_error(400, "Invalid name: not a regular file");

        let file = ShmFile::new(2 * page);
        let too_small = format!("Invalid size: offset + size exceeds the object size of {} bytes", 2 * page);
        for (size, offset) in [(2 * page, page), (2 * page + 1, 0), (1, 2 * page)] {
            s.post("/api/mount_shm", &format!(r#"{{"name":"{}","size":{size},"offset":{offset}}}"#, file.name))
                .assert_error(400, &too_small);
        }
        assert!(s.segments().is_empty(), "failed mounts mount nothing");

        // Exact fit, and an exact (unrounded) odd size.
        let a = mount_shm(&s, &format!(r#"{{"name":"{}","size":{},"offset":0}}"#, file.name, 2 * page));
        let b = mount_shm(&s, &format!(r#"{{"name":"{}","size":5000,"protocol":"rdma"}}"#, file.name));
        let segs = s.segments();
        assert_eq!(segment(&segs, &a[0])["size_bytes"].as_u64(), Some(2 * page));
        let sb = segment(&segs, &b[0]);
        assert_eq!(sb["size_bytes"], 5000);
        assert_eq!(sb["size_human"], "4.88 KiB");
        assert_eq!(sb["protocol"], "rdma");
        assert_eq!(sb["allocator_capacity_bytes"], 5000);
        // The file is never truncated by mc-master.
        assert_eq!(std::fs::metadata(&file.path).unwrap().len(), 2 * page);
    });
}

#[test]
fn unmount_shm_only_accepts_shm_segments() {
    for_each_runtime(|_| {
        let page = page_size();
        let file = ShmFile::new(4 * page);
        let s = Server::start(&[]);
        let shm = mount_shm(&s, &format!(r#"{{"name":"{}","size":{}}}"#, file.name, 4 * page))[0].clone();
        let anon = s.mount(1)[0].clone();
        let failed = |id: &str| {
            serde_json::json!({
                "error": "Unmount failed for one or more segments",
                "failed_segment_ids": [id],
            })
            .to_string()
        };
        s.post("/api/unmount", &format!(r#"{{"segment_ids":"{shm}"}}"#)).assert_json(404, &failed(&shm));
        s.post("/api/unmount_shm", &format!(r#"{{"segment_ids":"{anon}"}}"#)).assert_json(404, &failed(&anon));
        let segs = s.segments();
        assert_eq!(segment(&segs, &shm)["status"], "MOUNTED");
        assert_eq!(segment(&segs, &anon)["status"], "MOUNTED");

        // Graceful unmount, then a repeat (success), then gone after grace 0.
        s.post("/api/unmount_shm", &format!(r#"{{"segment_ids":["{shm}"],"grace_period_seconds":60}}"#))
            .assert_json(200, r#"{"status":"success"}"#);
        assert_eq!(segment(&s.segments(), &shm)["status"], "GRACEFULLY_UNMOUNTING");
        s.post("/api/unmount_shm", &format!(r#"{{"segment_ids":"{}"}}"#, shm.to_uppercase()))
            .assert_json(200, r#"{"status":"success"}"#);
        assert!(wait_until(std::time::Duration::from_millis(500), || { s.segments().len() == 1 }));
        s.post("/api/unmount_shm", &format!(r#"{{"segment_ids":"{shm}"}}"#)).assert_json(404, &failed(&shm));
        assert!(file.path.exists());
    });
}

#[test]
fn mount_shm_registration_splitting() {
    for_each_runtime(|_| {
        let page = page_size();
        let total: u64 = 10485760;
        let limit: u64 = 4194304;
        // §5.5 chunking with A = PAGE.
        let al = page.max(limit / page * page);
        let mut want = Vec::new();
        let mut r = total;
        while r > 0 {
            let n = r.div_ceil(al);
            let chunk = r.min(r.div_ceil(n).div_ceil(page) * page);
            want.push(chunk);
            r -= chunk;
        }
        if page == 4096 {
            assert_eq!(want, [3497984, 3493888, 3493888], "SPEC example");
        }
        let file = ShmFile::new(total + page);
        let s = Server::start(&["--max-registration-size", &limit.to_string()]);
        let ids = mount_shm(&s, &format!(r#"{{"name":"{}","size":{total},"offset":{page}}}"#, file.name));
        assert_eq!(ids.len(), want.len());
        let segs = s.segments();
        let chunks: Vec<(u64, u64)> = ids
            .iter()
            .map(|id| {
                let seg = segment(&segs, id);
                (hex(seg["base_address"].as_str().unwrap()), seg["size_bytes"].as_u64().unwrap())
            })
            .collect();
        let sizes: Vec<u64> = chunks.iter().map(|c| c.1).collect();
        assert_eq!(sizes, want);
        for w in chunks.windows(2) {
            assert_eq!(w[0].0 + w[0].1, w[1].0, "address order, consecutive");
        }
        assert_eq!(s.metrics().val("master_mount_segment_requests_total"), want.len() as f64);
        // Each chunk maps its own part of the file.
        let first_base = chunks[0].0;
        let big = vec![b'z'; 3 << 20];
        s.put_raw("big", &big).assert_json(200, r#"{"status":"success"}"#);
        let (addr, size) = address_of(&s, "big");
        assert_eq!(file.read_at(page + (addr - first_base), size as usize), big);
    });
}

#[test]
fn size_human_of_exact_shm_sizes() {
    for_each_runtime(|_| {
        let file = ShmFile::new(1610612736); // sparse
        let s = Server::start(&[]);
        let cases: &[(u64, &str)] = &[
            (11, "11 B"),
            (1023, "1023 B"),
            (1024, "1 KiB"),
            (1536, "1.5 KiB"),
            (5000, "4.88 KiB"),
            (1048576, "1 MiB"),
            (536870912, "512 MiB"),
            (1073741823, "1024 MiB"),
            (1610612736, "1.5 GiB"),
        ];
        for (size, human) in cases {
            let id = mount_shm(&s, &format!(r#"{{"name":"{}","size":{size}}}"#, file.name))[0].clone();
            let segs = s.segments();
            let seg = segment(&segs, &id);
            assert_eq!(seg["size_bytes"].as_u64(), Some(*size));
            assert_eq!(seg["size_human"], *human, "size {size}");
        }
    });
}
