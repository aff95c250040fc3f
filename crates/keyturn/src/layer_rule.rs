//! The layer rule, checked: imports point down only, so no two modules import each other.
//!
//! From the top: `app` (the wiring: configuration to wired service), `lambda` (serving
//! events under the runtime), `config` (the environment parsed into the domain's types),
//! `aws` (adapters implementing the domain's traits), `lease` and `rotation` (the domain:
//! decisions and the traits they need; `lease` reads admin secrets through `rotation`'s
//! secret store), `backend` (one interface per engine and the database backends), and the
//! leaves `password`, `contract`, `telemetry`, `metrics` and `time`. A module may name (`crate::x`)
//! only modules below it. The test reads the source, comments left out, so a new upward
//! import fails CI.
//!
//! Inside a module the same holds between its children: siblings (`lease::role` and
//! `lease::decide`, `lease::kind::database` and `lease::kind::aws_sts`) may import each
//! other one way only, so the graph of sibling imports has no circle. A child may use its
//! parent's own items (`super::Lease`), and a parent its children.

use std::path::{Path, PathBuf};

/// Each top-level module's layer: higher may import lower, never the reverse.
const LAYERS: &[(&str, u8)] = &[
    ("app", 7),
    ("lambda", 6),
    ("config", 5),
    ("aws", 4),
    ("lease", 3),
    ("rotation", 2),
    ("backend", 1),
    ("password", 0),
    ("contract", 0),
    ("telemetry", 0),
    ("metrics", 0),
    ("time", 0),
];

fn layer(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(name, _)| *name == module).map(|(_, layer)| *layer)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every (file, module named) pair where a file names a module of a higher layer.
fn upward_imports(src: &Path) -> Vec<(String, String)> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut found = Vec::new();
    for file in files {
        let relative = file.strip_prefix(src).expect("under src").to_string_lossy().replace('\\', "/");
        let own = relative.split('/').next().unwrap_or_default().trim_end_matches(".rs").to_owned();
        let Some(own_layer) = layer(&own) else { continue };
        let text = std::fs::read_to_string(&file).expect("read a source file");
        for line in text.lines().map(str::trim_start).filter(|l| !l.starts_with("//")) {
            for (_, rest) in line.match_indices("crate::").map(|(i, _)| ((), &line[i + "crate::".len()..])) {
                let named: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                if named != own && layer(&named).is_some_and(|l| l > own_layer) {
                    found.push((relative.clone(), named));
                }
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

#[test]
fn imports_point_down_only() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = upward_imports(&src);
    assert!(found.is_empty(), "imports that point up a layer (see {}): {found:?}", file!());
}

/// A source file's module path (`lease/kind/mod.rs` is `["lease", "kind"]`).
fn module_path(relative: &str) -> Vec<String> {
    let mut path: Vec<String> = relative.trim_end_matches(".rs").split('/').map(str::to_owned).collect();
    if path.last().is_some_and(|l| l == "mod" || l == "lib") {
        path.pop();
    }
    path
}

/// The paths a line names, resolved from `crate::` or `super::` (one level of `{...}`
/// groups read: `super::{a, b::c}` names `a` and `b`).
fn named_paths(line: &str, own: &[String]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let starts: Vec<usize> = line
        .match_indices("crate::")
        .map(|(i, _)| i)
        .chain(line.match_indices("super::").map(|(i, _)| i).filter(|&i| !line[..i].ends_with("super::")))
        .filter(|&i| i == 0 || !line.as_bytes()[i - 1].is_ascii_alphanumeric() && line.as_bytes()[i - 1] != b'_')
        .collect();
    for start in starts {
        let mut rest = &line[start..];
        let mut base: Vec<String> = Vec::new();
        if let Some(r) = rest.strip_prefix("crate::") {
            rest = r;
        } else {
            // A file's module is itself; `super` is its parent (a mod.rs file is its
            // directory's module, so the same rule holds).
            base = own.to_vec();
            while let Some(r) = rest.strip_prefix("super::") {
                base.pop();
                rest = r;
            }
        }
        let segment =
            |s: &str| -> String { s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect() };
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.push([base.clone(), vec![segment(item.trim())]].concat());
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            if !item.trim().is_empty() {
                out.push([base.clone(), vec![segment(item.trim())]].concat());
            }
        } else {
            let mut path = base;
            let mut r = rest;
            loop {
                let s = segment(r);
                if s.is_empty() {
                    break;
                }
                r = &r[s.len()..];
                path.push(s);
                match r.strip_prefix("::") {
                    Some(next) if !next.starts_with('{') => r = next,
                    _ => break,
                }
            }
            out.push(path);
        }
    }
    out
}

/// Every (parent, importer, imported) where a module's child names another child of the
/// same parent; only modules that exist count. Test code (`tests.rs`, `fakes.rs`, a
/// file's `mod tests`) may use anything and is left out.
fn sibling_imports(src: &Path) -> Vec<(String, String, String)> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let relatives: Vec<String> =
        files.iter().map(|f| f.strip_prefix(src).expect("under src").to_string_lossy().replace('\\', "/")).collect();
    let modules: std::collections::BTreeSet<Vec<String>> = relatives.iter().map(|r| module_path(r)).collect();
    let mut edges = Vec::new();
    for (file, relative) in files.iter().zip(&relatives) {
        let own = module_path(relative);
        if own.last().is_some_and(|m| m == "tests" || m == "fakes") {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("read a source file");
        let code = text.lines().map(str::trim_start).take_while(|l| !l.starts_with("mod tests"));
        for line in code.filter(|l| !l.starts_with("//")) {
            for named in named_paths(line, &own) {
                let common = own.iter().zip(&named).take_while(|(a, b)| a == b).count();
                if common == 0 || common >= own.len() || common >= named.len() {
                    continue; // across the top level (the layers' rule), or parent and child
                }
                let (from, to) = (&own[common], &named[common]);
                let sibling: Vec<String> = [&own[..common], std::slice::from_ref(to)].concat();
                if modules.contains(&sibling) && from != to {
                    edges.push((own[..common].join("::"), from.clone(), to.clone()));
                }
            }
        }
    }
    edges.sort();
    edges.dedup();
    edges
}

#[test]
fn no_two_sibling_modules_import_each_other() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let edges = sibling_imports(&src);
    assert!(
        edges.iter().any(|(p, f, t)| p == "lease" && f == "role" && t == "kind"),
        "the reader sees imports: {edges:?}"
    );
    // A circle is a path from a module back to itself; depth-first from each.
    for (parent, start, _) in &edges {
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        while let Some((at, path)) = stack.pop() {
            for (_, _, next) in edges.iter().filter(|(p, f, _)| p == parent && *f == at) {
                assert!(next != start, "{parent}: a circle of imports: {} -> {next}", path.join(" -> "));
                if !path.contains(next) {
                    stack.push((next.clone(), [path.clone(), vec![next.clone()]].concat()));
                }
            }
        }
    }
}

#[test]
fn every_top_level_module_has_a_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for entry in std::fs::read_dir(&src).expect("read src") {
        let name = entry.expect("entry").file_name().to_string_lossy().trim_end_matches(".rs").to_owned();
        if name != "lib" && name != "layer_rule" {
            assert!(layer(&name).is_some(), "module {name} has no layer in LAYERS");
        }
    }
}
