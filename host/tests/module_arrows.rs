//! One-way arrows, enforced: no two top-level modules of the host import each other,
//! directly or round a longer circle, and neither do the files of one directory
//! (`core/gruu.rs` and `core/proxy.rs`, say). An import is any `crate::…` path (and,
//! inside a directory, `super::…` and `self::…`) in code outside unit tests and
//! comments.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The code of `path` that imports: unit tests and comments left out.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = text.split("#[cfg(test)]").next().unwrap();
    text.lines()
        .map(|l| l.split("//").next().unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The identifiers that follow `prefix` in `code` (`crate::` → `sip`, `core`, ...),
/// with what follows them (`core::gruu::x` → ("core", "gruu")).
fn paths_after<'a>(code: &'a str, prefix: &str) -> Vec<(&'a str, &'a str)> {
    let ident = |s: &'a str| {
        let end = s
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(s.len());
        &s[..end]
    };
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(prefix) {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + prefix.len()..];
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let first = ident(rest);
        let after = &rest[first.len()..];
        let second = after.strip_prefix("::").map(ident).unwrap_or("");
        out.push((first, second));
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs")
            && path.file_name().is_some_and(|n| n != "tests.rs")
        {
            out.push(path);
        }
    }
}

/// The module a file belongs to at the top (`core/gruu.rs` → `core`, `driver.rs` →
/// `driver`), and its name inside its directory (`gruu`; `None` for a top-level file
/// or a `mod.rs`).
fn place(src: &Path, path: &Path) -> (String, Option<String>) {
    let rel = path.strip_prefix(src).unwrap();
    let parts: Vec<&str> = rel.iter().map(|p| p.to_str().unwrap()).collect();
    let stem = |s: &str| s.trim_end_matches(".rs").to_string();
    match parts[..] {
        [file] => (stem(file), None),
        [dir, "mod.rs"] => (dir.to_string(), None),
        [dir, file] => (dir.to_string(), Some(stem(file))),
        _ => (parts[0].to_string(), None),
    }
}

/// The circles of `edges` (strongly connected sets of more than one node), each
/// sorted.
fn circles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let nodes: BTreeSet<&String> = edges
        .keys()
        .chain(edges.values().flat_map(|s| s.iter()))
        .collect();
    let reach = |from: &String| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.clone()];
        while let Some(n) = todo.pop() {
            for m in edges.get(&n).into_iter().flatten() {
                if seen.insert(m.clone()) {
                    todo.push(m.clone());
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&String, BTreeSet<String>> =
        nodes.iter().map(|n| (*n, reach(n))).collect();
    let mut out: Vec<Vec<String>> = Vec::new();
    for n in &nodes {
        let mut circle: Vec<String> = nodes
            .iter()
            .filter(|m| reaches[*n].contains(**m) && reaches[*m].contains(*n))
            .map(|m| (*m).clone())
            .collect();
        circle.sort();
        if circle.len() > 1 && !out.contains(&circle) {
            out.push(circle);
        }
    }
    out
}

#[test]
fn modules_import_one_way_only() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let dirs: BTreeSet<String> = files
        .iter()
        .filter_map(|f| match place(&src, f) {
            (dir, Some(_)) => Some(dir),
            (dir, None) if f.ends_with("mod.rs") => Some(dir),
            _ => None,
        })
        .collect();
    let files_of: BTreeMap<String, BTreeSet<String>> = dirs
        .iter()
        .map(|d| {
            let names = files
                .iter()
                .filter_map(|f| match place(&src, f) {
                    (dir, Some(name)) if &dir == d => Some(name),
                    _ => None,
                })
                .collect();
            (d.clone(), names)
        })
        .collect();
    // Top-level modules, and the files of each directory.
    let mut top: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut within: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for f in &files {
        let (module, name) = place(&src, f);
        if module == "lib" || module == "main" {
            continue;
        }
        let code = code(f);
        // Sibling files `name` imports: through `crate::dir::file`, or `super::file`.
        let mut siblings: Vec<&str> = Vec::new();
        for (first, second) in paths_after(&code, "crate::") {
            if first != module && !first.is_empty() {
                top.entry(module.clone())
                    .or_default()
                    .insert(first.to_string());
            } else {
                siblings.push(second);
            }
        }
        if let Some(name) = &name {
            siblings.extend(paths_after(&code, "super::").into_iter().map(|(f, _)| f));
            for s in siblings {
                if files_of[&module].contains(s) && s != name {
                    within
                        .entry(module.clone())
                        .or_default()
                        .entry(name.clone())
                        .or_default()
                        .insert(s.to_string());
                }
            }
        }
    }
    let mut found: Vec<String> = circles(&top).iter().map(|c| c.join(" ↔ ")).collect();
    for (dir, edges) in &within {
        for c in circles(edges) {
            let names: Vec<String> = c.iter().map(|n| format!("{dir}/{n}.rs")).collect();
            found.push(names.join(" ↔ "));
        }
    }
    assert!(
        found.is_empty(),
        "modules that import each other (directly or round a circle): {found:?}"
    );
}
