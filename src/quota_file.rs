//! Upstream's file connector of tenant quota policies (`--tenant-quota-connector-uri PATH`,
//! docs/operations.md): the policies of `--enable-multi-tenants` read at start and saved
//! after every change, in upstream's YAML so one file serves either master:
//!
//! ```yaml
//! version: 1
//!
//! tenants:
//!   - name: "team-a"
//!     quota: 1073741824      # bytes, or a size such as 1GB (1024-based)
//! ```
//!
//! Only this subset of YAML is read: `key: value` lines, `- ` list items, `#` comments,
//! plain, `"double"` or `'single'` quoted scalars. A save writes a temporary file beside the
//! target, syncs it, renames it over the target and syncs the directory, so a crash leaves
//! the old file or the new one, never a part.

use std::io::Write;
use std::path::{Path, PathBuf};

use mc_core::store::PolicySink;

use crate::cli::parse_size;

/// A scalar without its quotes and escapes.
fn scalar(raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    if let Some(rest) = raw.strip_prefix('"') {
        let body = rest.strip_suffix('"').ok_or_else(|| format!("unterminated string {raw}"))?;
        let mut out = String::new();
        let mut chars = body.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('"') => out.push('"'),
                    Some('\\') => out.push('\\'),
                    Some('/') => out.push('/'),
                    other => return Err(format!("unsupported escape \\{} in {raw}", other.unwrap_or(' '))),
                },
                '"' => return Err(format!("stray quote in {raw}")),
                c => out.push(c),
            }
        }
        return Ok(out);
    }
    if let Some(rest) = raw.strip_prefix('\'') {
        let body = rest.strip_suffix('\'').ok_or_else(|| format!("unterminated string {raw}"))?;
        return Ok(body.replace("''", "'"));
    }
    // A plain scalar ends at a comment.
    Ok(raw.split(" #").next().unwrap_or("").trim().to_string())
}

/// Splits `key: value` (the value may be empty).
fn key_value(line: &str) -> Option<(&str, &str)> {
    let (k, v) = line.split_once(':')?;
    let k = k.trim();
    (!k.is_empty() && !k.contains(' ')).then_some((k, v))
}

/// The policies of a policy file, by the order in the file; errors name the line.
pub fn parse(text: &str) -> Result<Vec<(String, u64)>, String> {
    let mut version = None;
    let mut in_tenants = false;
    let mut tenants: Vec<(Option<String>, Option<String>, usize)> = Vec::new();
    let mut any = false;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim_end();
        let content = line.trim_start();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        any = true;
        let indented = line.len() != content.len();
        let err = |what: &str| format!("line {n}: {what}");
        if !indented {
            let (k, v) = key_value(content).ok_or_else(|| err("expected `key: value`"))?;
            in_tenants = false;
            match k {
                "version" => version = Some(scalar(v).map_err(|e| err(&e))?),
                "tenants" => match scalar(v).map_err(|e| err(&e))?.as_str() {
                    "" => in_tenants = true,
                    "[]" => {}
                    _ => return Err(err("tenants must be a list")),
                },
                _ => {} // other keys are not ours
            }
            continue;
        }
        if !in_tenants {
            return Err(err("unexpected indented line"));
        }
        let item = match content.strip_prefix("- ").or_else(|| (content == "-").then_some("")) {
            Some(rest) => {
                tenants.push((None, None, n));
                rest.trim()
            }
            None => content,
        };
        if item.is_empty() {
            continue;
        }
        let entry = tenants.last_mut().ok_or_else(|| err("a tenant entry must start with `- `"))?;
        let (k, v) = key_value(item).ok_or_else(|| err("expected `name:` or `quota:`"))?;
        let v = scalar(v).map_err(|e| err(&e))?;
        match k {
            "name" if entry.0.is_none() => entry.0 = Some(v),
            "quota" if entry.1.is_none() => entry.1 = Some(v),
            "name" | "quota" => return Err(err(&format!("{k} given twice"))),
            _ => return Err(err(&format!("unknown key {k:?} in a tenant entry"))),
        }
    }
    if !any {
        return Err("tenant quota policy must be a YAML map".into());
    }
    match version.as_deref() {
        None => return Err("tenant quota policy version is required".into()),
        Some("1") => {}
        Some(v) => return Err(format!("unsupported tenant quota policy version: {v}")),
    }
    let mut out: Vec<(String, u64)> = Vec::with_capacity(tenants.len());
    for (name, quota, n) in tenants {
        let name = name.filter(|s| !s.is_empty()).ok_or_else(|| format!("line {n}: tenant name is required"))?;
        let quota = quota.filter(|q| !q.is_empty()).ok_or_else(|| format!("line {n}: quota must not be empty"))?;
        let bytes = parse_size(&quota).map_err(|_| format!("line {n}: invalid quota for tenant {name:?}: {quota}"))?;
        if out.iter().any(|(t, _)| *t == name) {
            return Err(format!("line {n}: tenant {name:?} is listed twice"));
        }
        out.push((name, bytes));
    }
    Ok(out)
}

/// The file's text for `policies` (upstream's layout; names double-quoted).
pub fn render(policies: &[(String, u64)]) -> String {
    if policies.is_empty() {
        return "version: 1\n\ntenants: []\n".into();
    }
    let mut out = String::from("version: 1\n\ntenants:\n");
    for (name, bytes) in policies {
        let quoted = name.replace('\\', "\\\\").replace('"', "\\\"");
        out.push_str(&format!("  - name: \"{quoted}\"\n    quota: {bytes}\n"));
    }
    out
}

/// Reads the policies of `path`; a missing file is no policies (it is written on the first
/// change).
pub fn load(path: &Path) -> Result<Vec<(String, u64)>, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            log::info!(
                "tenant quota policies: {} does not exist yet; it is written on the first change",
                path.display()
            );
            Ok(Vec::new())
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Saves the policies to one file, atomically.
pub struct FileSink {
    pub path: PathBuf,
}

impl PolicySink for FileSink {
    fn save(&self, policies: &[(String, u64)]) -> Result<(), String> {
        let dir = self.path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let name = self.path.file_name().ok_or("the policy path names no file")?.to_string_lossy().into_owned();
        let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(render(policies).as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            std::fs::File::open(dir)?.sync_all()
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            format!("{}: {e}", self.path.display())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_file_is_read_and_written_back_the_same() {
        let text = "version: 1\n\ntenants:\n  - name: \"tb\"\n    quota: 1048576\n";
        assert_eq!(parse(text).unwrap(), [("tb".to_string(), 1 << 20)]);
        assert_eq!(render(&parse(text).unwrap()), text);
        assert_eq!(render(&[]), "version: 1\n\ntenants: []\n");
        assert_eq!(parse(&render(&[])).unwrap(), []);
        let odd = [("a \"b\" \\ c".to_string(), 5), ("x: y #z".to_string(), 6)];
        assert_eq!(parse(&render(&odd)).unwrap(), odd);
    }

    #[test]
    fn hand_written_files_with_sizes_plain_names_and_comments() {
        let text = "# quotas\nversion: 1\ntenants:\n  - name: team-a   # the A team\n    quota: 1GB\n  -\n    quota: '2k'\n    name: 'b''s'\n";
        assert_eq!(parse(text).unwrap(), [("team-a".to_string(), 1 << 30), ("b's".to_string(), 2048)]);
    }

    #[test]
    fn bad_files_are_refused_with_upstreams_reasons() {
        let cases = [
            ("", "must be a YAML map"),
            ("tenants: []\n", "version is required"),
            ("version: 2\ntenants: []\n", "unsupported tenant quota policy version: 2"),
            ("version: 1\ntenants:\n  - name: a\n    quota: -5\n", "invalid quota for tenant \"a\""),
            ("version: 1\ntenants:\n  - name: a\n", "quota must not be empty"),
            ("version: 1\ntenants:\n  - quota: 5\n", "tenant name is required"),
            ("version: 1\ntenants:\n  - name: a\n    quota: 1\n  - name: a\n    quota: 2\n", "listed twice"),
            ("version: 1\ntenants:\n  - name: a\n    size: 1\n", "unknown key"),
            ("version: 1\ntenants:\n  - name: \"a\n    quota: 1\n", "unterminated"),
            ("version: 1\n  stray: 1\n", "unexpected indented line"),
        ];
        for (text, why) in cases {
            let e = parse(text).unwrap_err();
            assert!(e.contains(why), "{text:?}: {e}");
        }
    }

    #[test]
    fn the_file_sink_replaces_the_file_whole() {
        let dir =
            std::env::temp_dir().join(format!("mc-quota-{}-{:?}", std::process::id(), std::thread::current().id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("quotas.yaml");
        assert_eq!(load(&path).unwrap(), [], "missing: no policies");
        let sink = FileSink { path: path.clone() };
        sink.save(&[("a".into(), 1)]).unwrap();
        sink.save(&[("a".into(), 1), ("b".into(), 2)]).unwrap();
        assert_eq!(load(&path).unwrap(), [("a".to_string(), 1), ("b".to_string(), 2)]);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "no temporary file left");
        let bad = FileSink { path: dir.join("no/such/dir/q.yaml") };
        assert!(bad.save(&[]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
