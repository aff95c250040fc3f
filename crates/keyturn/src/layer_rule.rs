//! The layer rule, checked: imports point down only, so no two modules import each other.
//!
//! From the top: `app` (the wiring: configuration to wired service), `lambda` (serving
//! events under the runtime), `config` (the environment parsed into the domain's types),
//! `aws` (adapters implementing the domain's traits), `lease` and `rotation` (the domain:
//! decisions and the traits they need; `lease` reads admin secrets through `rotation`'s
//! secret store), `backend` (one interface per engine and the database backends), and the
//! leaves `password`, `contract` and `telemetry`. A module may name (`crate::x`) only
//! modules below it. The test reads the source, comments left out, so a new upward import
//! fails CI; the known exceptions are listed, and the test fails too once one is gone, so
//! the list only shrinks.

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
];

/// Upward imports not yet moved (file under src/, module it names). To be fixed: the IAM
/// error type and the expiry policy document belong in `backend::aws` itself.
const KNOWN_UPWARD: &[(&str, &str)] = &[("backend/aws.rs", "rotation"), ("backend/aws.rs", "lease")];

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
    let new: Vec<_> = found.iter().filter(|(f, m)| !KNOWN_UPWARD.contains(&(f.as_str(), m.as_str()))).collect();
    assert!(new.is_empty(), "imports that point up a layer (see {}): {new:?}", file!());
    for (file, module) in KNOWN_UPWARD {
        assert!(
            found.iter().any(|(f, m)| f == file && m == module),
            "{file} no longer names crate::{module}: take it off KNOWN_UPWARD"
        );
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
