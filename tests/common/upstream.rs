//! Upstream Mooncake for the end-to-end tests that run its unchanged client: the wheel
//! (`mooncake-transfer-engine-non-cuda`) in a virtual environment, installed on first use
//! together with Debian's `libibverbs1` when the wheel needs it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub const WHEEL: &str = "mooncake-transfer-engine-non-cuda";

/// Kills (and reaps) the process on drop.
pub struct Kill(pub Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn run(cmd: &mut Command) -> Option<String> {
    let out = cmd.stdin(Stdio::null()).output().ok()?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    out.status.success().then_some(text.clone()).or_else(|| {
        eprintln!("{:?} failed:\n{}", cmd, text.lines().rev().take(15).collect::<Vec<_>>().join("\n"));
        None
    })
}

pub fn imports(py: &Path) -> Result<(), String> {
    let out = Command::new(py)
        .args(["-c", "from mooncake.store import MooncakeDistributedStore"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// A Python with the wheel installed, or why there is none. The environment is cached in
/// `target/tmp/rpc-upstream-venv`; `MC_UPSTREAM_VENV` points at another one.
pub fn environment() -> Result<PathBuf, String> {
    let venv = std::env::var_os("MC_UPSTREAM_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("rpc-upstream-venv"));
    let py = venv.join("bin/python");
    if imports(&py).is_err() {
        if !py.exists() {
            run(Command::new("python3").args(["-m", "venv"]).arg(&venv))
                .ok_or("cannot create a virtual environment")?;
        }
        if !venv.join("bin/mooncake_master").exists() {
            eprintln!("installing {WHEEL} into {} ...", venv.display());
            run(Command::new(&py).args(["-m", "pip", "install", "-q", "--disable-pip-version-check", WHEEL]))
                .ok_or(format!("cannot install {WHEEL} (no network?)"))?;
        }
    }
    if let Err(e) = imports(&py) {
        if !e.contains("libibverbs") {
            return Err(format!("the wheel does not import: {e}"));
        }
        eprintln!("installing Debian's libibverbs1 ...");
        let apt =
            |args: &[&str]| run(Command::new("apt-get").args(args).env("DEBIAN_FRONTEND", "noninteractive")).is_some();
        if !apt(&["install", "-y", "-qq", "libibverbs1"]) {
            apt(&["update", "-qq"]);
            apt(&["install", "-y", "-qq", "libibverbs1"]);
        }
        imports(&py).map_err(|e| format!("the wheel does not import: {e}"))?;
    }
    Ok(py)
}

/// The wheel's Python for test `name`, or `None` after printing why it is skipped
/// (`MC_SKIP_UPSTREAM=1`, or the wheel cannot be had, e.g. without network).
pub fn python_or_skip(name: &str) -> Option<PathBuf> {
    if std::env::var("MC_SKIP_UPSTREAM").is_ok_and(|v| v == "1") {
        println!("SKIP {name}: MC_SKIP_UPSTREAM=1");
        return None;
    }
    environment().map_err(|why| println!("SKIP {name}: {why}")).ok()
}

/// A Python with pyzmq and msgpack (a real ZMQ subscriber for the KV event tests), or `None`
/// after printing why test `name` is skipped. Cached in `target/tmp/kv-events-venv`.
pub fn pyzmq_or_skip(name: &str) -> Option<PathBuf> {
    // Tests of one binary run in parallel: one installs, the others wait for it.
    static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _once = INSTALL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if std::env::var("MC_SKIP_UPSTREAM").is_ok_and(|v| v == "1") {
        println!("SKIP {name}: MC_SKIP_UPSTREAM=1");
        return None;
    }
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kv-events-venv");
    let py = venv.join("bin/python");
    let ok = |py: &Path| {
        Command::new(py)
            .args(["-c", "import zmq, msgpack"])
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !ok(&py) {
        if !py.exists() && run(Command::new("python3").args(["-m", "venv"]).arg(&venv)).is_none() {
            println!("SKIP {name}: cannot create a virtual environment");
            return None;
        }
        eprintln!("installing pyzmq and msgpack into {} ...", venv.display());
        if run(Command::new(&py).args([
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "pyzmq",
            "msgpack",
        ]))
        .is_none()
            || !ok(&py)
        {
            println!("SKIP {name}: cannot install pyzmq and msgpack (no network?)");
            return None;
        }
    }
    Some(py)
}
