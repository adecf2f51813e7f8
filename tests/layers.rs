//! The layers run one way (ARCHITECTURE.md): every `crate::x` a file under `src/` names must
//! be a module its own module may use. The table below is the rule; a new module or a new
//! edge is added here on purpose, in review, or this test fails.
//!
//! Read from the source text (`crate::module` paths and `use crate::{a, b}` groups), so it
//! needs no tool beyond cargo.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each top-level module and the modules it may use. Lower layers first.
const ALLOWED: &[(&str, &[&str])] = &[
    // Leaves: wire-value escaping, panic and task health.
    ("logsafe", &[]),
    ("health", &["logsafe"]),
    // Plain data shared by the pivot client and the callflow runtime: nodes, call facts,
    // digit collections, and the traits through which pivot serves the runtime.
    ("flow", &["logsafe"]),
    ("config", &["flow", "logsafe"]),
    // The open-files budget reads max_calls and the port range.
    ("fdlimit", &["config"]),
    ("sip", &["config", "logsafe", "health"]),
    ("media", &["config", "logsafe", "health"]),
    ("store", &["config", "flow", "logsafe"]),
    // Lamps and SUBSCRIBE/NOTIFY, beside the registrar and below the runtime: admission runs
    // the registrar's digest check on a SUBSCRIBE, then hands it over; the runtime sets lamps
    // through `presence::PresenceControl`, the call layer through `presence::Presence`.
    (
        "presence",
        &["flow", "config", "sip", "store", "logsafe", "health"],
    ),
    ("pivot", &["flow", "config", "media", "store", "logsafe"]),
    // The runtime and its modules; the `pivot` module node and the TwiML executor drive the
    // pivot client (never the other way round).
    (
        "callflow",
        &[
            "flow", "config", "media", "pivot", "store", "presence", "logsafe",
        ],
    ),
    ("routing", &["flow", "config", "logsafe"]),
    // `pivotd call`: a SIP caller on the endpoint and the media code; the server's side of the
    // call only over its HTTP API, never through the call, runtime, API or store internals.
    ("dialer", &["config", "sip", "media", "logsafe", "health"]),
    // Devices, digest authentication and bindings: REGISTER's answers, INVITE's credentials.
    ("registrar", &["config", "sip", "store", "logsafe"]),
    (
        "call",
        &[
            "flow",
            "config",
            "sip",
            "media",
            "store",
            "callflow",
            "routing",
            "registrar",
            "presence",
            "logsafe",
            "health",
        ],
    ),
    (
        "api",
        &[
            "flow",
            "config",
            "sip",
            "media",
            "store",
            "callflow",
            "pivot",
            "routing",
            "registrar",
            "presence",
            "call",
            "logsafe",
            "health",
        ],
    ),
    (
        "server",
        &[
            "flow",
            "config",
            "sip",
            "media",
            "store",
            "callflow",
            "pivot",
            "routing",
            "registrar",
            "presence",
            "call",
            "api",
            "logsafe",
            "health",
            "fdlimit",
        ],
    ),
    // The fuzz and mutation harness (`tests/mutation.rs`, `fuzz/`) drives every layer.
    (
        "fuzzing",
        &[
            "flow",
            "config",
            "sip",
            "media",
            "store",
            "callflow",
            "pivot",
            "routing",
            "registrar",
            "presence",
            "call",
            "api",
            "server",
            "logsafe",
            "health",
        ],
    ),
];

fn top_module(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib" && name != "main").then(|| name.to_string())
}

/// The top-level modules a file names through `crate::`.
fn used_modules(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `use crate::{a::X, b, c::{d, e}}`: the first segment of each top-level item.
            let mut depth = 0;
            let mut item_start = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && (c.is_ascii_alphabetic() || c == '_') => {
                        out.insert(ident(&group[j..]));
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn every_module_uses_only_the_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let allowed: BTreeMap<&str, BTreeSet<&str>> = ALLOWED
        .iter()
        .map(|(m, deps)| (*m, deps.iter().copied().collect()))
        .collect();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut problems = Vec::new();
    for f in &files {
        let Some(module) = top_module(&src, f) else {
            continue;
        };
        let Some(may) = allowed.get(module.as_str()) else {
            problems.push(format!(
                "{}: module `{module}` is not in the layer table",
                f.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(f).unwrap();
        let rel = f.strip_prefix(&src).unwrap().to_string_lossy().into_owned();
        for used in used_modules(&text) {
            if used != module && !may.contains(used.as_str()) {
                problems.push(format!("{rel}: `{module}` uses `crate::{used}`"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "upward or sideways imports:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_layer_table_has_no_cycle() {
    let deps: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    // Each module may only use modules listed before it: the table is its own topological order.
    let order: Vec<&str> = ALLOWED.iter().map(|(m, _)| *m).collect();
    for (i, m) in order.iter().enumerate() {
        for d in deps[m] {
            let at = order.iter().position(|x| x == d);
            assert!(
                at.is_some_and(|at| at < i),
                "`{m}` may use `{d}`, which is not listed before it"
            );
        }
    }
}

#[test]
fn the_reader_sees_grouped_and_nested_imports() {
    let text = "use crate::{a::X, b, c::{d, e}};\nlet x = crate::f::g();\n// crate::{h}";
    let got: Vec<String> = used_modules(text).into_iter().collect();
    assert_eq!(got, ["a", "b", "c", "f", "h"]);
}
