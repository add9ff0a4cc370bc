//! The module layers of `src/` point one way (DESIGN §3, docs/ARCHITECTURE.md):
//!
//! `cli → app → (api, console) → orchestrator → runtime → state → mcp → (ai, egress, ops) →
//! telemetry → auth → store → config`
//!
//! A module may name (`crate::…`, `super::…` from a top-level file) only modules of a
//! lower layer. Modules of the same layer do not name each other. A new top-level module
//! must be given its layer here, so this test fails until someone decides where it sits.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Top-level modules of `src/` and their layer; higher layers may import lower ones.
const LAYERS: &[(&str, u32)] = &[
    ("cli", 11),
    ("app", 10),
    ("api", 9),
    ("console", 9),
    ("orchestrator", 8),
    ("runtime", 7),
    ("state", 6),
    // The MCP client: the runtime and the API use it, `state` holds its pool; the `/mcp`
    // server endpoint is part of `api`.
    ("mcp", 5),
    ("ai", 4),
    ("egress", 4),
    ("ops", 4),
    ("telemetry", 3),
    ("auth", 2),
    ("store", 1),
    ("config", 0),
];

fn layer(module: &str) -> Option<u32> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

/// The source text without `//` comments (doc links do not make a dependency).
fn strip_comments(src: &str) -> String {
    src.lines()
        .map(|line| {
            let mut in_str = false;
            let bytes = line.as_bytes();
            let mut cut = line.len();
            let mut i = 0;
            while i < bytes.len() {
                match bytes[i] {
                    b'\\' if in_str => i += 1,
                    b'"' => in_str = !in_str,
                    b'/' if !in_str && bytes.get(i + 1) == Some(&b'/') => {
                        cut = i;
                        break;
                    }
                    _ => {}
                }
                i += 1;
            }
            &line[..cut]
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The first path segment of each item of a `{a::b, c, d::{e, f}}` group.
fn group_heads(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut expect_head = true;
    for (i, c) in s.char_indices() {
        match c {
            '{' => {
                depth += 1;
                if depth == 1 {
                    expect_head = true;
                }
            }
            '}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            ',' if depth == 1 => expect_head = true,
            c if depth == 1 && expect_head && (c.is_ascii_alphabetic() || c == '_') => {
                out.push(ident_at(&s[i..]).to_string());
                expect_head = false;
            }
            _ => {}
        }
    }
    out
}

/// Top-level modules named through `prefix` (`crate::`, or `super::` where that is the
/// crate root).
fn named_through(src: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in src.match_indices(prefix) {
        // `foo_crate::x` or `self::super::` are not what we look for.
        let before = src[..i].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let rest = &src[i + prefix.len()..];
        if rest.starts_with('{') {
            out.extend(group_heads(rest));
        } else {
            let id = ident_at(rest);
            if !id.is_empty() {
                out.insert(id.to_string());
            }
        }
    }
    out
}

/// The top-level modules a file of module `own` depends on, given its source and whether
/// the file is the module's root (`src/x.rs` or `src/x/mod.rs`, where `super` is the
/// crate root).
fn dependencies(own: &str, src: &str, is_module_root: bool) -> BTreeSet<String> {
    let code = strip_comments(src);
    let mut deps = named_through(&code, "crate::");
    if is_module_root {
        // `super::x` in an inline `mod tests` of a root file names the module's own
        // items: only names of top-level modules count.
        deps.extend(
            named_through(&code, "super::")
                .into_iter()
                .filter(|m| layer(m).is_some()),
        );
    }
    deps.remove(own);
    deps
}

/// Every layering violation in one file, as text.
fn violations(own: &str, src: &str, is_module_root: bool) -> Vec<String> {
    let Some(own_layer) = layer(own) else {
        return vec![format!(
            "module `{own}` has no layer: add it to LAYERS in tests/architecture.rs"
        )];
    };
    dependencies(own, src, is_module_root)
        .into_iter()
        .filter_map(|dep| match layer(&dep) {
            // Items of the crate root (`crate::SomeType`), if any: not a module layer.
            None if !dep.chars().next().is_some_and(|c| c.is_ascii_lowercase()) => None,
            None => Some(format!(
                "`{own}` names `{dep}`, which has no layer in tests/architecture.rs"
            )),
            Some(l) if l >= own_layer => Some(format!(
                "`{own}` (layer {own_layer}) imports `{dep}` (layer {l}): imports must point down"
            )),
            Some(_) => None,
        })
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn imports_between_top_level_modules_point_down() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    assert!(files.len() > 20, "found only {} files in src/", files.len());
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap_or(f);
        let parts: Vec<_> = rel.iter().map(|c| c.to_string_lossy()).collect();
        let (own, is_root) = match parts.as_slice() {
            [file] if file == "lib.rs" || file == "main.rs" => continue,
            [file] => (file.trim_end_matches(".rs").to_string(), true),
            [dir, file] => (dir.to_string(), file == "mod.rs"),
            [dir, ..] => (dir.to_string(), false),
            [] => continue,
        };
        seen.insert(own.clone());
        let text = std::fs::read_to_string(f).unwrap_or_default();
        for v in violations(&own, &text, is_root) {
            problems.push(format!("{}: {v}", rel.display()));
        }
    }
    for (m, _) in LAYERS {
        // The table may name layers that do not exist yet (console, mcp); the rest must.
        if !["console", "mcp"].contains(m) {
            assert!(
                seen.contains(*m),
                "LAYERS names `{m}` but src/ has no such module"
            );
        }
    }
    problems.sort();
    problems.dedup();
    assert!(
        problems.is_empty(),
        "layering violations:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_scanner_sees_every_way_of_naming_a_module() {
    let src = r#"
        use crate::store::{Task, now};
        use crate::{api::tasks::TaskView, telemetry};
        // use crate::cli::Nothing; (a comment is no dependency)
        fn f() { let _ = crate::app::shutdown_signal(); let s = "http://x"; }
        /// [`crate::console`] in a doc comment is no dependency either.
        fn g() -> other_crate::Thing { todo!() }
    "#;
    let deps = dependencies("orchestrator", src, false);
    let names: Vec<_> = deps.iter().map(String::as_str).collect();
    assert_eq!(names, ["api", "app", "store", "telemetry"]);
    let v = violations("orchestrator", src, false);
    assert_eq!(v.len(), 2, "{v:?}");
    assert!(v.iter().any(|m| m.contains("imports `api`")), "{v:?}");
    assert!(v.iter().any(|m| m.contains("imports `app`")), "{v:?}");
    // `super::` from a module root is the crate root.
    assert_eq!(
        violations("store", "use super::ai::Thing;", true),
        ["`store` (layer 1) imports `ai` (layer 4): imports must point down"]
    );
    assert!(violations("store", "use super::models::Task;", false).is_empty());
    // Siblings of one layer do not import each other.
    assert_eq!(
        violations("mcp", "use crate::api::error::ApiError;", false).len(),
        1
    );
    // A module without a layer is reported.
    assert_eq!(violations("misc", "", true).len(), 1);
}
