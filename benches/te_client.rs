//! A TE TCP v2 load client for `benches/te.sh`: drives any TE target (mc-master's or
//! upstream's) over N persistent connections ("lanes"), one request in flight per lane,
//! blocking std sockets, READ bytes read straight into a buffer.
//!
//! ```text
//! te_client --addr 127.0.0.1:PORT --base ADDR --len LEN --op read|write --block BYTES
//!           [--lanes N] [--secs S] [--warmup S] [--pid TARGET_PID]
//! ```
//!
//! Lane *i* works on `[base + i*block, base + (i+1)*block)`; before the run each lane
//! writes a pattern there and reads it back (a check that the target stores what it is
//! sent). Requests are counted when they complete inside the measured window (after the
//! warm-up). Prints one JSON object: GB/s (10^9 B), requests, per-request latency
//! percentiles (µs), the target's CPU % over the window (utime + stime of `/proc/PID/stat`,
//! 100 = one core) and the client's own CPU %.
//!
//! Run by `benches/te/te.py`; `cargo bench --bench te_client -- ARGS` runs it by hand (the
//! `--bench` flag cargo appends is ignored).

use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use mc_rdma::te::wire::{Framing, Header, Op, Status, STATUS_LEN};

struct Args {
    addr: String,
    base: u64,
    len: u64,
    op: Op,
    block: usize,
    lanes: usize,
    secs: f64,
    warmup: f64,
    pid: Option<u32>,
}

fn usage(msg: &str) -> ! {
    eprintln!("te_client: {msg}");
    eprintln!(
        "usage: te_client --addr HOST:PORT --base ADDR --len LEN --op read|write --block BYTES \
         [--lanes N] [--secs S] [--warmup S] [--pid PID]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut a = Args {
        addr: String::new(),
        base: 0,
        len: 0,
        op: Op::Read,
        block: 0,
        lanes: 1,
        secs: 4.0,
        warmup: 0.5,
        pid: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--bench" {
            continue;
        }
        let val = it.next().unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        let num = |v: &str| v.parse::<u64>().unwrap_or_else(|_| usage(&format!("{flag}: not a number: {v}")));
        let float = |v: &str| v.parse::<f64>().unwrap_or_else(|_| usage(&format!("{flag}: not a number: {v}")));
        match flag.as_str() {
            "--addr" => a.addr = val,
            "--base" => a.base = num(&val),
            "--len" => a.len = num(&val),
            "--op" => {
                a.op = match val.as_str() {
                    "read" => Op::Read,
                    "write" => Op::Write,
                    _ => usage("--op is read or write"),
                }
            }
            "--block" => a.block = num(&val) as usize,
            "--lanes" => a.lanes = num(&val) as usize,
            "--secs" => a.secs = float(&val),
            "--warmup" => a.warmup = float(&val),
            "--pid" => a.pid = Some(num(&val) as u32),
            _ => usage(&format!("unknown flag {flag}")),
        }
    }
    if a.addr.is_empty() || a.base == 0 || a.block == 0 || a.lanes == 0 {
        usage("--addr, --base, --block and --lanes are required");
    }
    if (a.lanes as u64) * (a.block as u64) > a.len {
        usage("lanes × block does not fit in --len");
    }
    a
}

/// Reads until every slice is full (one `readv` per wakeup: status and payload together).
fn read_all(sock: &mut TcpStream, parts: &mut [&mut [u8]]) -> std::io::Result<()> {
    let mut done = vec![0usize; parts.len()];
    loop {
        let mut bufs: Vec<IoSliceMut<'_>> = Vec::with_capacity(parts.len());
        for (p, &d) in parts.iter_mut().zip(&done) {
            if d < p.len() {
                bufs.push(IoSliceMut::new(&mut p[d..]));
            }
        }
        if bufs.is_empty() {
            return Ok(());
        }
        let mut n = sock.read_vectored(&mut bufs)?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "target closed the connection"));
        }
        for (p, d) in parts.iter().zip(done.iter_mut()) {
            let take = (p.len() - *d).min(n);
            *d += take;
            n -= take;
        }
    }
}

/// Writes every slice (header and payload in one `writev` where the socket takes them).
fn write_all(sock: &mut TcpStream, parts: &[&[u8]]) -> std::io::Result<()> {
    let mut done = vec![0usize; parts.len()];
    loop {
        let bufs: Vec<IoSlice<'_>> =
            parts.iter().zip(&done).filter(|(p, &d)| d < p.len()).map(|(p, &d)| IoSlice::new(&p[d..])).collect();
        if bufs.is_empty() {
            return Ok(());
        }
        let mut n = sock.write_vectored(&bufs)?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::WriteZero, "socket closed"));
        }
        for (p, d) in parts.iter().zip(done.iter_mut()) {
            let take = (p.len() - *d).min(n);
            *d += take;
            n -= take;
        }
    }
}

fn check_status(st: &[u8; STATUS_LEN]) -> std::io::Result<()> {
    match Status::decode(st) {
        Ok(s) if s.is_ok() => Ok(()),
        Ok(s) => Err(std::io::Error::other(format!("target answered status {}", s.code))),
        Err(e) => Err(std::io::Error::other(e.to_string())),
    }
}

/// One v2 request on `sock`; READ bytes land in `buf`, WRITE bytes come from it.
fn request(sock: &mut TcpStream, op: Op, addr: u64, buf: &mut [u8]) -> std::io::Result<()> {
    let head = Header { size: buf.len() as u64, addr, op, framing: Framing::V2 }.encode();
    let mut st = [0u8; STATUS_LEN];
    match op {
        Op::Read => {
            write_all(sock, &[&head])?;
            let mut parts: [&mut [u8]; 2] = [&mut st, buf];
            read_all(sock, &mut parts)?;
        }
        Op::Write => {
            write_all(sock, &[&head, buf])?;
            read_all(sock, &mut [&mut st])?;
        }
    }
    check_status(&st)
}

fn pattern(lane: usize, buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (i as u64).wrapping_mul(31).wrapping_add(lane as u64 * 7 + (i >> 12) as u64) as u8;
    }
}

struct LaneResult {
    requests: u64,
    /// Latency of each request completed in the window, nanoseconds.
    lat: Vec<u64>,
    error: Option<String>,
}

fn lane(
    a: Arc<Args>,
    idx: usize,
    start: Arc<Barrier>,
    window: Arc<std::sync::OnceLock<(Instant, Instant)>>,
) -> LaneResult {
    let mut res = LaneResult { requests: 0, lat: Vec::new(), error: None };
    let addr = a.base + (idx * a.block) as u64;
    let mut buf = vec![0u8; a.block];
    let setup = (|| -> std::io::Result<TcpStream> {
        let mut sock = TcpStream::connect(&a.addr)?;
        sock.set_nodelay(true)?;
        // Check: what is written is read back.
        pattern(idx, &mut buf);
        request(&mut sock, Op::Write, addr, &mut buf)?;
        let mut back = vec![0u8; a.block];
        request(&mut sock, Op::Read, addr, &mut back)?;
        if back != buf {
            return Err(std::io::Error::other("read back differs from what was written"));
        }
        Ok(sock)
    })();
    start.wait();
    let mut sock = match setup {
        Ok(s) => s,
        Err(e) => {
            res.error = Some(format!("lane {idx}: {e}"));
            return res;
        }
    };
    let (from, to) = *window.wait();
    loop {
        let t0 = Instant::now();
        if t0 >= to {
            break;
        }
        if let Err(e) = request(&mut sock, a.op, addr, &mut buf) {
            res.error = Some(format!("lane {idx}: {e}"));
            break;
        }
        let t1 = Instant::now();
        if t1 > from && t1 <= to {
            res.requests += 1;
            res.lat.push((t1 - t0).as_nanos() as u64);
        }
    }
    res
}

fn target_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state is field 3 of stat(5), utime 14 and stime 15.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn own_cpu() -> f64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct it is given.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1000.0
}

fn main() {
    let a = Arc::new(parse_args());
    let start = Arc::new(Barrier::new(a.lanes + 1));
    let window = Arc::new(std::sync::OnceLock::new());
    let threads: Vec<_> = (0..a.lanes)
        .map(|i| {
            let (a, start, window) = (a.clone(), start.clone(), window.clone());
            std::thread::spawn(move || lane(a, i, start, window))
        })
        .collect();
    start.wait();
    let from = Instant::now() + Duration::from_secs_f64(a.warmup);
    let to = from + Duration::from_secs_f64(a.secs);
    let _ = window.set((from, to));
    sleep_until(from);
    let (t0, c0) = (a.pid.and_then(target_ticks), own_cpu());
    let w0 = Instant::now();
    sleep_until(to);
    let (t1, c1) = (a.pid.and_then(target_ticks), own_cpu());
    let wall = w0.elapsed().as_secs_f64();
    let results: Vec<LaneResult> = threads.into_iter().map(|t| t.join().expect("lane thread")).collect();

    let requests: u64 = results.iter().map(|r| r.requests).sum();
    let mut lat: Vec<u64> = results.iter().flat_map(|r| r.lat.iter().copied()).collect();
    lat.sort_unstable();
    let errors: Vec<String> = results.iter().filter_map(|r| r.error.clone()).collect();
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let target_cpu = match (t0, t1) {
        (Some(t0), Some(t1)) => serde_json::json!((t1 - t0) as f64 / tck / wall * 100.0),
        _ => serde_json::Value::Null,
    };
    let out = serde_json::json!({
        "op": if a.op == Op::Read { "read" } else { "write" },
        "block": a.block,
        "lanes": a.lanes,
        "secs": wall,
        "requests": requests,
        "gbps": requests as f64 * a.block as f64 / a.secs / 1e9,
        "p50_us": pct(&lat, 0.50),
        "p99_us": pct(&lat, 0.99),
        "max_us": lat.last().map_or(0.0, |&m| m as f64 / 1000.0),
        "target_cpu_pct": target_cpu,
        "client_cpu_pct": (c1 - c0) / wall * 100.0,
        "errors": errors,
    });
    println!("{out}");
    if !errors.is_empty() {
        std::process::exit(1);
    }
}
