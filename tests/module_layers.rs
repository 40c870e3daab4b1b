//! The module layering (ARCHITECTURE.md, issue 11): no dependency cycle between top-level
//! modules of the library. The test scans `src/` for `crate::<module>` paths (including the
//! brace form `use crate::{a, b::c}` over several lines), builds the graph of top-level
//! modules, and fails with the cycle it finds.
//!
//! [`ALLOWED`] lists edges that a change in progress still needs; the cycles through them are
//! tolerated here and nowhere else. It is empty: the network code now lives in `net/`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Edges that close a cycle or go against the layers and are tolerated while a change is in
/// progress, each (from, to). Empty since the shared client moved into `src/net/` (issue 11).
const ALLOWED: &[(&str, &str)] = &[];

/// The top-level module of a file under `src/` (`src/a.rs` and `src/a/b.rs` are both `a`);
/// `None` for the crate roots.
fn module_of(rel: &Path) -> Option<String> {
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib" && name != "main").then(|| name.to_owned())
}

/// Source text without comments, so that a doc comment naming `crate::x` is no edge.
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let b = text.as_bytes();
    let mut i = 0;
    let mut in_str = false;
    while i < b.len() {
        let c = b[i];
        if in_str {
            out.push(c as char);
            if c == b'\\' && i + 1 < b.len() {
                out.push(b[i + 1] as char);
                i += 2;
                continue;
            }
            in_str = c != b'"';
            i += 1;
        } else if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            i += 2;
            while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                i += 1;
            }
            i += 2;
        } else {
            // A char literal '"' must not open a string.
            if c == b'\'' && b.get(i + 2) == Some(&b'\'') {
                out.push_str(&text[i..i + 3]);
                i += 3;
                continue;
            }
            in_str = c == b'"';
            out.push(c as char);
            i += 1;
        }
    }
    out
}

/// The top-level modules a source text names through `crate::`.
fn modules_used(text: &str) -> BTreeSet<String> {
    let code = strip_comments(text);
    let ident =
        |s: &str| -> String { s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect() };
    let mut used = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        // `foo_crate::x` or `$crate::x` is not this crate's path.
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        let after = rest.trim_start();
        if let Some(group) = after.strip_prefix('{') {
            // `crate::{a, b::{c, d}, e}`: the first identifier of each top-level item.
            let mut depth = 0usize;
            let mut item_start = true;
            for (i, ch) in group.char_indices() {
                match ch {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if c.is_whitespace() => {}
                    _ if item_start && depth == 0 => {
                        let name = ident(&group[i..]);
                        if !name.is_empty() {
                            used.insert(name);
                        }
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            let name = ident(after);
            if !name.is_empty() {
                used.insert(name);
            }
        }
    }
    used
}

/// Every edge `from → to` between distinct top-level modules, with one file that makes it.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut graph: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).expect("under src");
            let Some(from) = module_of(rel) else { continue };
            let text = std::fs::read_to_string(&path).expect("read source");
            for to in modules_used(&text) {
                if to != from && to != "self" && to != "super" {
                    graph
                        .entry(from.clone())
                        .or_default()
                        .entry(to)
                        .or_insert_with(|| rel.display().to_string());
                }
            }
        }
    }
    graph
}

/// A cycle in the graph as a list of modules (first = last), if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeMap<String, String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeMap<String, String>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_owned(), 1);
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flat_map(|m| m.keys()) {
            match state.get(next.as_str()).copied().unwrap_or(0) {
                1 => {
                    let start = path.iter().position(|p| p == next).unwrap_or(0);
                    let mut cycle = path[start..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(next, graph, state, path) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        path.pop();
        state.insert(node.to_owned(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        if state.get(node.as_str()).copied().unwrap_or(0) == 0 {
            if let Some(c) = visit(node, graph, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

fn describe(cycle: &[String], graph: &BTreeMap<String, BTreeMap<String, String>>) -> String {
    cycle
        .windows(2)
        .map(|w| format!("  {} -> {}   (e.g. src/{})", w[0], w[1], graph[&w[0]][&w[1]]))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn no_cycle_between_top_level_modules() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph = module_graph(&src);
    for (from, to) in ALLOWED {
        let removed = graph.get_mut(*from).and_then(|m| m.remove(*to));
        assert!(removed.is_some(), "allowed edge {from} -> {to} is gone: remove it from ALLOWED");
    }
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "dependency cycle between modules (see ARCHITECTURE.md, layering):\n{}",
            describe(&cycle, &graph)
        );
    }
}

/// The layering itself, lowest first: a module may import only modules listed before it, so
/// the rule is checked edge by edge, not only as "no cycle". Modules in one entry are peers
/// that do not import each other.
///
/// `net` (the shared HTTP server, client and TLS, being built in parallel) is placed where
/// issue 11 puts it: above the event and protocol types, below `telemetry`, which exports
/// through it.
const LAYERS: &[&[&str]] = &[
    &["units", "event", "metrics", "redact"],
    &["otlp", "loggen", "filter"],
    &["net", "s3"],
    &["telemetry"],
    &["keys"],
    &["segment", "api"],
    &["component"],
    &["config"],
    &["topology"],
    &["sources", "transforms", "sinks"],
    &["components"],
    &["exit_codes"],
    &["lambda"],
    &["commands"],
    &["cli"],
];

#[test]
fn lower_layers_never_import_higher_ones() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = module_graph(&src);
    let layer_of = |m: &str| LAYERS.iter().position(|l| l.contains(&m));
    let mut wrong = Vec::new();
    for (from, tos) in &graph {
        let Some(lf) = layer_of(from) else {
            wrong.push(format!("module `{from}` is in no layer: add it to LAYERS and ARCHITECTURE.md"));
            continue;
        };
        for (to, file) in tos {
            if ALLOWED.contains(&(from.as_str(), to.as_str())) {
                continue;
            }
            match layer_of(to) {
                Some(lt) if lt < lf => {}
                Some(_) => wrong.push(format!("{from} -> {to} goes up or sideways (src/{file})")),
                None => wrong.push(format!("module `{to}` is in no layer (used in src/{file})")),
            }
        }
    }
    assert!(wrong.is_empty(), "layering violations (see ARCHITECTURE.md):\n{}", wrong.join("\n"));
}

/// The scanner finds every form of path, and the cycle finder reports a cycle that exists:
/// the two tests above cannot pass by finding nothing.
#[test]
fn the_scanner_sees_every_form_and_finds_cycles() {
    let text = "use crate::{\n    a::X,\n    b::{c, d},\n    e,\n};\n// crate::comment\nfn f() { crate::g::h(); let s = \"crate::in_string\"; }\n";
    let used = modules_used(text);
    let names: Vec<&str> = used.iter().map(String::as_str).collect();
    assert_eq!(names, ["a", "b", "e", "g", "in_string"]);

    let mut graph: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    graph.entry("config".into()).or_default().insert("sinks".into(), "config/mod.rs".into());
    graph.entry("sinks".into()).or_default().insert("topology".into(), "sinks/x.rs".into());
    graph.entry("topology".into()).or_default().insert("config".into(), "topology/mod.rs".into());
    let cycle = find_cycle(&graph).expect("a cycle");
    assert_eq!(cycle.first(), cycle.last());
    assert_eq!(cycle.len(), 4);
    graph.get_mut("topology").unwrap().clear();
    assert!(find_cycle(&graph).is_none());
}
