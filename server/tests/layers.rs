//! The server's layers point down only: no module imports from a layer
//! above its own, and top-level modules of one layer do not import each
//! other, so there is no cycle between top-level modules. The order is the
//! one `src/lib.rs` documents; a new top-level module must be placed here.
//! `metrics` is the bottom: every layer may record, and it imports nothing.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Each top-level module's layer, bottom up.
const LAYERS: &[(&str, u32)] = &[
    ("metrics", 0),
    ("state", 1),
    ("tls", 1),
    ("listen", 2),
    ("config", 2),
    ("consensus", 3),
    ("liveness", 4),
    ("api", 5),
    ("peer", 5),
    ("admin", 5),
    ("node", 6),
    ("lib", 7),
    ("main", 7),
];

fn layer(module: &str) -> Option<u32> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a source file belongs to.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src");
    let first = rel.components().next().expect("a component");
    first
        .as_os_str()
        .to_string_lossy()
        .trim_end_matches(".rs")
        .to_string()
}

/// The top-level modules a line of code names through `crate::`.
fn crate_refs(line: &str) -> Vec<String> {
    line.match_indices("crate::")
        .filter(|(i, _)| !line[..*i].ends_with(|c: char| c.is_alphanumeric() || c == '_'))
        .map(|(i, m)| {
            line[i + m.len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

#[test]
fn layers_point_down_and_top_level_modules_form_no_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut violations = BTreeSet::new();
    for file in &files {
        let from = module_of(&src, file);
        let from_layer =
            layer(&from).unwrap_or_else(|| panic!("top-level module {from} has no layer in LAYERS"));
        let text = std::fs::read_to_string(file).expect("read source");
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for to in crate_refs(line) {
                if to == from || to.is_empty() {
                    continue;
                }
                let Some(to_layer) = layer(&to) else { continue };
                if to_layer >= from_layer {
                    violations.insert(format!(
                        "{}:{}: {from} (layer {from_layer}) uses {to} (layer {to_layer})",
                        file.display(),
                        n + 1
                    ));
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "imports that point up or sideways:\n{}",
        violations.into_iter().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn the_check_sees_an_upward_import() {
    assert_eq!(
        crate_refs("use crate::api::service::X; // crate::peer"),
        vec!["api", "peer"]
    );
    assert_eq!(crate_refs("ensemble_crate::x"), Vec::<String>::new());
    assert!(layer("state") < layer("consensus"));
    assert!(LAYERS
        .iter()
        .all(|(m, l)| *m == "metrics" || layer("metrics") < Some(*l)));
}
