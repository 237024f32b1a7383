//! The agent's source layout stays readable: its top-level modules import only the layers below
//! them (docs/design.md, "The agent's layers"), no source file grows past 900 lines, and the
//! crate root stays small. A `crate::` import scan of the non-test code, the same a reader
//! would do by hand.

use conntrack_tests::repo_root;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The agent's top-level modules, lowest layer first; a module may import those of its own
/// layer or lower ones (docs/design.md has the same table).
const LAYERS: &[&[&str]] = &[
    &["util"],
    &["datapath", "capture", "logs"],
    &["core"],
    &["capabilities"],
    &["export"],
    &["config"],
    &["cli"],
    &["commands"],
];

/// The one upward import the design allows: the config file's command-line tables are checked
/// against clap's definitions.
const ALLOWED_UPWARD: &[(&str, &str)] = &[("config", "cli")];

const MAX_LINES: usize = 900;
const MAX_ROOT_FILES: usize = 8;

fn src() -> PathBuf {
    repo_root().join("conntrack-agent/src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The text without `#[cfg(test)]` items (a `mod x;` line or a braced block) and `//` comments.
fn non_test_code(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let item = &rest[at..];
        let mut depth = 0usize;
        let mut end = item.len();
        for (i, c) in item.char_indices() {
            match c {
                ';' if depth == 0 => {
                    end = i + 1;
                    break;
                }
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &item[end..];
    }
    out.push_str(rest);
    out.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Files that only tests compile: declared with `#[cfg(test)] mod name;`.
fn test_only_files(files: &[PathBuf]) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    for f in files {
        let text = std::fs::read_to_string(f).unwrap();
        let mut lines = text.lines().peekable();
        while let Some(line) = lines.next() {
            if line.trim() != "#[cfg(test)]" {
                continue;
            }
            let Some(next) = lines.peek() else { break };
            let next = next.trim().trim_start_matches("pub ");
            let Some(name) = next.strip_prefix("mod ").and_then(|n| n.strip_suffix(';')) else {
                continue;
            };
            let dir = f.parent().unwrap();
            let stem = f.file_stem().unwrap().to_str().unwrap();
            let base = if matches!(stem, "main" | "mod" | "lib") {
                dir.to_path_buf()
            } else {
                dir.join(stem)
            };
            out.insert(base.join(format!("{name}.rs")));
            let folder = base.join(name);
            if folder.is_dir() {
                let mut inner = Vec::new();
                rust_files(&folder, &mut inner);
                out.extend(inner);
            }
        }
    }
    out
}

fn top_module(path: &Path) -> String {
    let rel = path.strip_prefix(src()).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_str()
        .unwrap();
    first.trim_end_matches(".rs").to_string()
}

/// Top-level module -> the top-level modules its non-test code names with `crate::`.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let tests = test_only_files(&files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files.iter().filter(|f| !tests.contains(*f)) {
        let from = top_module(f);
        if from == "main" {
            continue;
        }
        let code = non_test_code(&std::fs::read_to_string(f).unwrap());
        let targets = graph.entry(from.clone()).or_default();
        for (at, _) in code.match_indices("crate::") {
            let name: String = code[at + 7..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && name != from {
                targets.insert(name);
            }
        }
    }
    graph
}

fn layer_of(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|l| l.contains(&module))
        .unwrap_or_else(|| {
            panic!(
                "top-level module `{module}` is in no layer: add it to LAYERS and docs/design.md"
            )
        })
}

#[test]
fn modules_import_only_lower_layers() {
    let mut upward = Vec::new();
    for (from, targets) in imports() {
        for to in targets {
            if layer_of(&to) > layer_of(&from) && !ALLOWED_UPWARD.contains(&(&from, &to)) {
                upward.push(format!("{from} -> {to}"));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports from a lower layer into a higher one (docs/design.md): {upward:?}"
    );
}

#[test]
fn no_source_file_is_longer_than_900_lines() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    rust_files(&repo_root().join("conntrack-common/src"), &mut files);
    rust_files(&repo_root().join("conntrack-ebpf/src"), &mut files);
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let n = std::fs::read_to_string(f).unwrap().lines().count();
            (n > MAX_LINES).then(|| format!("{} ({n} lines)", f.display()))
        })
        .collect();
    assert!(long.is_empty(), "split these by concern: {long:?}");
}

#[test]
fn the_crate_root_holds_only_a_few_files() {
    let root_files: Vec<String> = std::fs::read_dir(src())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        root_files.len() <= MAX_ROOT_FILES,
        "conntrack-agent/src has {} files at its root ({root_files:?}); put them in the folder of their role",
        root_files.len()
    );
}

#[test]
fn the_scan_sees_the_known_imports() {
    // Guards the scan itself: an edge every layout has must be found.
    let graph = imports();
    assert!(graph["commands"].contains("core"), "{graph:?}");
    assert!(graph["core"].contains("datapath"), "{graph:?}");
}
