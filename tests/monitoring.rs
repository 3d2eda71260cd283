//! docs/monitoring: the Grafana dashboard and the Prometheus alert rules only query what
//! `/metrics` serves, and the rules are valid and fire (`promtool`, when installed).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

const DASHBOARD: &str = "docs/monitoring/grafana-dashboard.json";
const ALERTS: &str = "docs/monitoring/alerts.yml";
const ALERTS_TEST: &str = "docs/monitoring/alerts_test.yml";

/// Series the queries may use that mc-master does not serve: Prometheus's own per-target series.
const PROMETHEUS_OWN: &[&str] = &["up"];

/// Label names the queries may use that no mc-master sample carries: the target labels
/// Prometheus attaches to every scraped series.
const TARGET_LABELS: &[&str] = &["instance", "job"];

fn path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(path(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// PromQL name extraction
// ---------------------------------------------------------------------------------------------

/// The metric and label names a PromQL expression refers to.
#[derive(Debug, Default, PartialEq)]
struct PromNames {
    metrics: BTreeSet<String>,
    /// Label names of matchers `{name="..."}` and of `by`/`without`/`on`/`ignoring`/
    /// `group_left`/`group_right` lists.
    labels: BTreeSet<String>,
}

/// Aggregation operators and keywords (case-insensitive in PromQL); never metric names here.
const KEYWORDS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
    "and",
    "or",
    "unless",
    "atan2",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
    "nan",
];

/// Keywords followed by a parenthesised list of label names.
const LABEL_LIST_KEYWORDS: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Index just past the string literal opening at `s[i]` (`"`, `'` or a backtick).
fn skip_string(s: &[char], i: usize) -> usize {
    let quote = s[i];
    let mut j = i + 1;
    while j < s.len() {
        match s[j] {
            '\\' if quote != '`' => j += 2,
            c if c == quote => return j + 1,
            _ => j += 1,
        }
    }
    s.len()
}

/// Index just past a Grafana variable `$name` or `${name...}` starting at `s[i]` (`$`).
fn skip_variable(s: &[char], i: usize) -> usize {
    let mut j = i + 1;
    if s.get(j) == Some(&'{') {
        while j < s.len() && s[j] != '}' {
            j += 1;
        }
        return (j + 1).min(s.len());
    }
    while j < s.len() && is_ident_char(s[j]) {
        j += 1;
    }
    j
}

/// Identifiers directly inside the bracket group opening at `s[i]` (strings and variables
/// skipped), and the index just past its closing bracket.
fn group_idents(s: &[char], i: usize, close: char) -> (Vec<String>, usize) {
    let mut out = Vec::new();
    let mut j = i + 1;
    while j < s.len() {
        let c = s[j];
        if c == close {
            return (out, j + 1);
        } else if c == '"' || c == '\'' || c == '`' {
            j = skip_string(s, j);
        } else if c == '$' {
            j = skip_variable(s, j);
        } else if is_ident_start(c) {
            let start = j;
            while j < s.len() && is_ident_char(s[j]) {
                j += 1;
            }
            out.push(s[start..j].iter().collect());
        } else {
            j += 1;
        }
    }
    (out, s.len())
}

fn skip_ws(s: &[char], mut i: usize) -> usize {
    while i < s.len() && s[i].is_whitespace() {
        i += 1;
    }
    i
}

/// Extracts the metric names and label names of a PromQL expression: string literals, label
/// matchers, range selectors and subqueries, Grafana variables, numbers and durations,
/// comments, function names (an identifier followed by `(`), keywords and aggregation operators
/// are not metric names; the identifiers left are.
fn promql_names(expr: &str) -> PromNames {
    let s: Vec<char> = expr.chars().collect();
    let mut names = PromNames::default();
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '#' {
            while i < s.len() && s[i] != '\n' {
                i += 1;
            }
        } else if c == '"' || c == '\'' || c == '`' {
            i = skip_string(&s, i);
        } else if c == '$' {
            i = skip_variable(&s, i);
        } else if c == '{' {
            // Label matchers: `name op "value"`; in `{"metric", ...}` the quoted name is skipped.
            let (idents, next) = group_idents(&s, i, '}');
            names.labels.extend(idents);
            i = next;
        } else if c == '[' {
            // Range selector or subquery: durations and variables only.
            i = group_idents(&s, i, ']').1;
        } else if c.is_ascii_digit() || (c == '.' && s.get(i + 1).is_some_and(|d| d.is_ascii_digit())) {
            // Number (1, 0.5, 1e-3, 0x1f) or duration (5m, 1h30m).
            i += 1;
            while i < s.len() {
                let exponent_sign = matches!(s[i], '-' | '+') && matches!(s[i - 1], 'e' | 'E');
                if !(s[i].is_ascii_alphanumeric() || s[i] == '.' || s[i] == '_' || exponent_sign) {
                    break;
                }
                i += 1;
            }
        } else if is_ident_start(c) {
            let start = i;
            while i < s.len() && is_ident_char(s[i]) {
                i += 1;
            }
            let ident: String = s[start..i].iter().collect();
            let lower = ident.to_ascii_lowercase();
            let next = skip_ws(&s, i);
            let paren_follows = s.get(next) == Some(&'(');
            if LABEL_LIST_KEYWORDS.contains(&lower.as_str()) {
                if paren_follows {
                    let (idents, after) = group_idents(&s, next, ')');
                    names.labels.extend(idents);
                    i = after;
                }
            } else if KEYWORDS.contains(&lower.as_str()) || paren_follows {
                // keyword, aggregation operator or function
            } else {
                names.metrics.insert(ident);
            }
        } else {
            i += 1;
        }
    }
    names
}

// ---------------------------------------------------------------------------------------------
// Expressions of the dashboard and of the rules
// ---------------------------------------------------------------------------------------------

/// Splits `s` at its last comma outside brackets and strings.
fn split_last_top_level_comma(s: &str) -> Option<(&str, &str)> {
    let chars: Vec<(usize, char)> = s.char_indices().collect();
    let plain: Vec<char> = chars.iter().map(|&(_, c)| c).collect();
    let (mut depth, mut k, mut last) = (0i32, 0, None);
    while k < plain.len() {
        match plain[k] {
            '"' | '\'' | '`' => {
                k = skip_string(&plain, k);
                continue;
            }
            '(' | '{' | '[' => depth += 1,
            ')' | '}' | ']' => depth -= 1,
            ',' if depth == 0 => last = Some(chars[k].0),
            _ => {}
        }
        k += 1;
    }
    last.map(|at| (&s[..at], &s[at + 1..]))
}

/// The PromQL inside a Grafana Prometheus variable query, and the label it lists:
/// `label_values(expr, label)`, `label_values(label)`, `query_result(expr)`, `label_names(expr)`;
/// `metrics(regex)` has none.
fn variable_query_promql(q: &str) -> (Option<String>, Option<String>) {
    let q = q.trim();
    let call = |name: &str| q.strip_prefix(name).and_then(|r| r.trim_start().strip_prefix('(')?.strip_suffix(')'));
    if let Some(inner) = call("label_values") {
        return match split_last_top_level_comma(inner) {
            Some((expr, label)) => (Some(expr.trim().to_string()), Some(label.trim().to_string())),
            None => (None, Some(inner.trim().to_string())),
        };
    }
    if let Some(inner) = call("query_result").or_else(|| call("label_names")) {
        return (Some(inner.trim().to_string()).filter(|e| !e.is_empty()), None);
    }
    if call("metrics").is_some() {
        return (None, None);
    }
    (Some(q.to_string()), None)
}

/// Every PromQL expression of the dashboard as (where, expr): each `expr` string anywhere in the
/// JSON (panel targets, rows' nested panels, annotations) and the query of each query variable.
fn dashboard_exprs(dash: &Value) -> (Vec<(String, String)>, Vec<String>) {
    fn walk(v: &Value, at: &str, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(map) => {
                let title = map.get("title").and_then(Value::as_str).map(|t| format!("{at} > {t}"));
                let here = title.as_deref().unwrap_or(at);
                for (k, child) in map {
                    match (k.as_str(), child) {
                        ("expr", Value::String(e)) => {
                            let refid = map.get("refId").and_then(Value::as_str).unwrap_or("?");
                            out.push((format!("{here} (refId {refid})"), e.clone()))
                        }
                        _ => walk(child, here, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|x| walk(x, at, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(dash, "dashboard", &mut out);
    let mut listed_labels = Vec::new();
    for var in dash["templating"]["list"].as_array().expect("templating.list") {
        if var["type"] != "query" {
            continue;
        }
        let q = match &var["query"] {
            Value::String(q) => q.clone(),
            Value::Object(o) => o.get("query").and_then(Value::as_str).unwrap_or_default().to_string(),
            other => panic!("variable {} has query {other}", var["name"]),
        };
        let (expr, label) = variable_query_promql(&q);
        if let Some(e) = expr {
            out.push((format!("variable {}", var["name"]), e));
        }
        listed_labels.extend(label);
    }
    (out, listed_labels)
}

/// The `expr:` values of a rules file as (line number, expr): plain, quoted, and block scalars
/// (`|`, `|-`, `>`, `>-`, ...), with the continuation lines of multi-line plain scalars.
fn yaml_exprs(text: &str) -> Vec<(usize, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut n = 0;
    while n < lines.len() {
        let line = lines[n];
        let body = line.trim_start();
        let body_indent = line.len() - body.len();
        let (key_indent, rest) = match body.strip_prefix("- ") {
            Some(r) if r.trim_start().starts_with("expr:") => {
                let r2 = r.trim_start();
                (body_indent + 2 + (r.len() - r2.len()), r2)
            }
            _ => (body_indent, body),
        };
        let Some(value) = rest.strip_prefix("expr:") else {
            n += 1;
            continue;
        };
        let value = value.trim();
        let start_line = n + 1;
        n += 1;
        // Lines more indented than the key belong to the value (blank lines too).
        let mut continuation = Vec::new();
        while n < lines.len() {
            let l = lines[n];
            let indent = l.len() - l.trim_start().len();
            if l.trim().is_empty() || indent > key_indent {
                continuation.push(l);
                n += 1;
            } else {
                break;
            }
        }
        while continuation.last().is_some_and(|l| l.trim().is_empty()) {
            continuation.pop();
        }
        let expr = if value.starts_with('|') || value.starts_with('>') {
            continuation.iter().map(|l| l.trim()).collect::<Vec<_>>().join("\n")
        } else if let Some(q) = value.strip_prefix('"') {
            let all = std::iter::once(q).chain(continuation.iter().map(|l| l.trim())).collect::<Vec<_>>().join(" ");
            let end = all.rfind('"').unwrap_or_else(|| panic!("line {start_line}: unterminated \"-quoted expr"));
            all[..end].replace("\\\"", "\"").replace("\\\\", "\\")
        } else if let Some(q) = value.strip_prefix('\'') {
            let all = std::iter::once(q).chain(continuation.iter().map(|l| l.trim())).collect::<Vec<_>>().join(" ");
            let end = all.rfind('\'').unwrap_or_else(|| panic!("line {start_line}: unterminated '-quoted expr"));
            all[..end].replace("''", "'")
        } else {
            let first = value.split(" #").next().unwrap_or_default();
            std::iter::once(first)
                .chain(continuation.iter().map(|l| l.trim()).filter(|l| !l.starts_with('#')))
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert!(!expr.trim().is_empty(), "{ALERTS}:{start_line}: empty expr");
        out.push((start_line, expr));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Unit tests of the extractors
// ---------------------------------------------------------------------------------------------

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[track_caller]
fn check(expr: &str, metrics: &[&str], labels: &[&str]) {
    let got = promql_names(expr);
    assert_eq!(got, PromNames { metrics: set(metrics), labels: set(labels) }, "{expr}");
}

#[test]
fn extractor_promql() {
    check(
        r#"sum by (route) (rate(http_requests_total{instance=~"$instance", code=~"5.."}[$__rate_interval]))"#,
        &["http_requests_total"],
        &["code", "instance", "route"],
    );
    check(
        "histogram_quantile(0.99, sum by (le, route) (rate(http_request_duration_seconds_bucket[5m])))",
        &["http_request_duration_seconds_bucket"],
        &["le", "route"],
    );
    check(
        "segment_allocated_bytes / on (instance, segment) group_left() segment_total_capacity_bytes > 0.9",
        &["segment_allocated_bytes", "segment_total_capacity_bytes"],
        &["instance", "segment"],
    );
    check(
        "master_client_oldest_heartbeat_age_seconds > 0.5 * master_client_ttl_seconds",
        &["master_client_oldest_heartbeat_age_seconds", "master_client_ttl_seconds"],
        &[],
    );
    check("increase(master_expired_clients_total[10m]) > 0", &["master_expired_clients_total"], &[]);
    // Strings (with escapes), label_replace arguments, Grafana `${...}` and `[[...]]` variables.
    check(
        r#"label_replace(rate(a_total{x="}{\"by(q)"}[1m:30s]), "class", "${1}xx", 'code', `(.)..`) + b[[interval]]"#,
        &["a_total", "b"],
        &["x"],
    );
    // Keywords in any case, offset durations, `bool`, numbers, comments, `@` modifiers.
    check(
        "sum without(instance) (x offset 1h30m) UNLESS y AND on() z == bool 1e-3 + 0x1F - Inf # not_a_metric\n + w @ start()",
        &["w", "x", "y", "z"],
        &["instance"],
    );
    check("topk(5, count_values(\"v\", up)) or vector(NaN) or .5", &["up"], &[]);
    check("sum(x) by (job) / ignoring(le) group_right(route) y", &["x", "y"], &["job", "le", "route"]);
    check("rate(a:b:rate5m[5m]) > $threshold", &["a:b:rate5m"], &[]);
}

#[test]
fn extractor_variable_queries() {
    assert_eq!(
        variable_query_promql("label_values(master_key_count{job=~\"a,b\"}, instance)"),
        (Some("master_key_count{job=~\"a,b\"}".into()), Some("instance".into()))
    );
    assert_eq!(variable_query_promql("label_values(job)"), (None, Some("job".into())));
    assert_eq!(variable_query_promql(" query_result(sum(x)) "), (Some("sum(x)".into()), None));
    assert_eq!(variable_query_promql("metrics(master_.*)"), (None, None));
}

#[test]
fn extractor_yaml() {
    let text = r#"
groups:
  - name: g
    rules:
      - alert: A
        expr: up == 0 # trailing comment
        for: 1m
      - alert: B
        expr: |
          sum(rate(a_total[5m]))
            /
          sum(rate(b_total[5m]))

        for: 5m
      - alert: C
        expr: >-
          c_one
          > 1
        labels: {}
      - expr: "d{x=\"y\"} > 0"
        record: r
      - alert: E
        expr: 'e{x=''y''}'
      - alert: F
        expr: f
          + g
"#;
    let got: Vec<String> = yaml_exprs(text).into_iter().map(|(_, e)| e).collect();
    assert_eq!(
        got,
        [
            "up == 0",
            "sum(rate(a_total[5m]))\n/\nsum(rate(b_total[5m]))",
            "c_one\n> 1",
            r#"d{x="y"} > 0"#,
            "e{x='y'}",
            "f + g",
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Structure of the files
// ---------------------------------------------------------------------------------------------

#[test]
fn dashboard_is_importable() {
    let dash: Value = serde_json::from_str(&read(DASHBOARD)).expect("dashboard is JSON");
    let inputs = dash["__inputs"].as_array().expect("__inputs");
    assert!(
        inputs
            .iter()
            .any(|i| i["name"] == "DS_PROMETHEUS" && i["type"] == "datasource" && i["pluginId"] == "prometheus"),
        "__inputs must declare the DS_PROMETHEUS data source: {inputs:?}"
    );
    assert!(dash["schemaVersion"].as_u64().is_some_and(|v| v >= 36), "schemaVersion");
    assert!(dash["uid"].is_string() && dash["title"].is_string());
    assert!(dash["id"].is_null(), "an exported dashboard has id null");
    let vars = dash["templating"]["list"].as_array().expect("templating.list");
    let var = |name: &str| vars.iter().find(|v| v["name"] == name).unwrap_or_else(|| panic!("no variable {name}"));
    let ds = var("datasource");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    assert_eq!(ds["current"]["value"], "${DS_PROMETHEUS}", "the data source variable defaults to the import input");
    assert_eq!(var("instance")["type"], "query");

    // Every panel (rows' nested panels included): unique id, a grid position, the data source
    // variable; every target a refId unique in its panel, and a filter on $instance.
    let mut panels = Vec::new();
    for p in dash["panels"].as_array().expect("panels") {
        panels.push(p);
        panels.extend(p["panels"].as_array().into_iter().flatten());
    }
    let mut ids = BTreeSet::new();
    let mut with_targets = 0;
    for p in panels {
        let title = p["title"].as_str().unwrap_or("?");
        assert!(ids.insert(p["id"].as_u64().expect("panel id")), "duplicate panel id in {title}");
        for k in ["h", "w", "x", "y"] {
            assert!(p["gridPos"][k].is_u64(), "{title}: gridPos.{k}");
        }
        assert!(p["gridPos"]["x"].as_u64().unwrap() + p["gridPos"]["w"].as_u64().unwrap() <= 24, "{title}: width");
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}: panel data source");
        let targets = p["targets"].as_array().unwrap_or_else(|| panic!("{title}: no targets"));
        assert!(!targets.is_empty(), "{title}: no targets");
        with_targets += 1;
        let mut refs = BTreeSet::new();
        for t in targets {
            assert!(refs.insert(t["refId"].as_str().expect("refId")), "{title}: duplicate refId");
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}: target data source");
            let expr = t["expr"].as_str().unwrap_or_else(|| panic!("{title}: target without expr"));
            assert!(expr.contains(r#"instance=~"$instance""#), "{title}: {expr} does not filter on $instance");
        }
    }
    assert!(with_targets >= 20, "only {with_targets} panels with queries");
}

#[test]
fn alert_rules_are_complete() {
    let text = read(ALERTS);
    let blocks: Vec<&str> = text.split("- alert:").skip(1).collect();
    assert!(blocks.len() >= 7, "only {} alerts", blocks.len());
    assert_eq!(yaml_exprs(&text).len(), blocks.len(), "one expr per alert");
    let mut names = BTreeSet::new();
    for b in &blocks {
        let name = b.lines().next().unwrap_or_default().trim();
        assert!(names.insert(name.to_string()), "duplicate alert {name}");
        for key in ["expr:", "for:", "labels:", "severity:", "annotations:", "summary:", "description:"] {
            assert!(b.contains(key), "alert {name} has no {key}");
        }
        let severity = b.lines().find_map(|l| l.trim().strip_prefix("severity:")).unwrap().trim();
        assert!(["critical", "warning", "info"].contains(&severity), "alert {name}: severity {severity}");
    }
    for want in [
        "McMasterDown",
        "McMasterNodeMemoryHigh",
        "McMasterStoreMemoryHigh",
        "McMasterEvictionsRising",
        "McMasterHigh5xxRate",
        "McMasterClientAboutToExpire",
        "McMasterClientExpired",
    ] {
        assert!(names.contains(want), "no alert {want}");
    }
    // Every alert is described in the README.
    let readme = read("docs/monitoring/README.md");
    for name in &names {
        assert!(readme.contains(name.as_str()), "docs/monitoring/README.md does not describe {name}");
    }
}

// ---------------------------------------------------------------------------------------------
// Every name the queries use is served
// ---------------------------------------------------------------------------------------------

/// Metric names and label names a running server serves after some traffic.
fn served(s: &Server) -> (BTreeSet<String>, BTreeSet<String>) {
    s.mount(16 * MIB);
    for i in 0..5 {
        s.put(&format!("mon-key-{i}"), &"v".repeat(100 * (i + 1)));
    }
    assert_eq!(s.get_value("mon-key-0").status, 200);
    assert_eq!(s.get_value("mon-missing").status, 404);
    assert_eq!(s.get("/no/such/page").status, 404);
    assert!(s.exists("mon-key-1"));
    assert_eq!(s.remove("mon-key-2").status, 200);
    assert_eq!(s.get("/health").status, 200);
    let _ = s.metrics();
    let m = s.metrics();
    let mut metrics = BTreeSet::new();
    for (fam, types) in &m.types {
        assert_eq!(types.len(), 1, "{fam}: several # TYPE lines");
        if types[0] == "histogram" || types[0] == "summary" {
            for suffix in ["_bucket", "_sum", "_count"] {
                metrics.insert(format!("{fam}{suffix}"));
            }
        } else {
            metrics.insert(fam.clone());
        }
    }
    let labels = m.lines.iter().flat_map(|(_, l, _)| l.iter().map(|(k, _)| k.clone())).collect();
    (metrics, labels)
}

#[test]
fn queries_use_only_served_metrics() {
    let dash: Value = serde_json::from_str(&read(DASHBOARD)).expect("dashboard is JSON");
    let (dash_exprs, listed_labels) = dashboard_exprs(&dash);
    assert!(dash_exprs.len() >= 20, "only {} dashboard expressions found", dash_exprs.len());
    let rules = yaml_exprs(&read(ALERTS));
    let mut exprs: Vec<(String, String)> =
        dash_exprs.into_iter().map(|(at, e)| (format!("{DASHBOARD}: {at}"), e)).collect();
    exprs.extend(rules.into_iter().map(|(line, e)| (format!("{ALERTS}:{line}"), e)));

    // name → where it is used
    let mut used_metrics: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut used_labels: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (at, e) in &exprs {
        let names = promql_names(e);
        assert!(!names.metrics.is_empty(), "{at}: no metric name in {e:?}");
        for m in names.metrics {
            used_metrics.entry(m).or_default().push(at.clone());
        }
        for l in names.labels {
            used_labels.entry(l).or_default().push(at.clone());
        }
    }
    for l in listed_labels {
        used_labels.entry(l).or_default().push(format!("{DASHBOARD}: variable query"));
    }

    for_each_runtime(|rt| {
        let s = Server::start(&[]);
        let (metrics, labels) = served(&s);
        let missing: Vec<String> = used_metrics
            .iter()
            .filter(|(m, _)| !metrics.contains(*m) && !PROMETHEUS_OWN.contains(&m.as_str()))
            .map(|(m, at)| format!("  {m} (used by {})", at.join("; ")))
            .collect();
        assert!(missing.is_empty(), "[{rt}] queries use metrics /metrics does not serve:\n{}", missing.join("\n"));
        let missing: Vec<String> = used_labels
            .iter()
            .filter(|(l, _)| !labels.contains(*l) && !TARGET_LABELS.contains(&l.as_str()) && l.as_str() != "__name__")
            .map(|(l, at)| format!("  {l} (used by {})", at.join("; ")))
            .collect();
        assert!(missing.is_empty(), "[{rt}] queries use labels no served series has:\n{}", missing.join("\n"));
        let unused: Vec<&String> = metrics.iter().filter(|m| !used_metrics.contains_key(*m)).collect();
        if !unused.is_empty() {
            eprintln!("[{rt}] served but not queried by the dashboard or the rules: {unused:?}");
        }
        eprintln!(
            "[{rt}] {} expressions, {} metric names and {} label names checked against {} served names",
            exprs.len(),
            used_metrics.len(),
            used_labels.len(),
            metrics.len()
        );
    });
}

// ---------------------------------------------------------------------------------------------
// promtool
// ---------------------------------------------------------------------------------------------

/// Runs `promtool args...` in the repository root; None (after a skip line) when promtool is
/// not installed, unless CI is set.
fn promtool(args: &[&str]) -> Option<std::process::Output> {
    let bin = std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".to_string());
    match Command::new(&bin).args(args).current_dir(env!("CARGO_MANIFEST_DIR")).output() {
        Ok(out) => Some(out),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(std::env::var_os("CI").is_none(), "CI is set but {bin} is not installed (apt install prometheus)");
            eprintln!("skipped: {bin} not installed (apt install prometheus, or set PROMTOOL)");
            None
        }
        Err(e) => panic!("running {bin}: {e}"),
    }
}

#[track_caller]
fn assert_promtool_ok(args: &[&str]) {
    if let Some(out) = promtool(args) {
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "promtool {} failed ({}):\n{text}", args.join(" "), out.status);
        eprintln!("promtool {}:\n{text}", args.join(" "));
    }
}

#[test]
fn promtool_check_rules() {
    assert_promtool_ok(&["check", "rules", ALERTS]);
}

#[test]
fn promtool_test_rules() {
    assert_promtool_ok(&["test", "rules", ALERTS_TEST]);
}
