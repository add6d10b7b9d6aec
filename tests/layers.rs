//! The crate's imports point down the layers that src/lib.rs declares, never up or across: every
//! `use crate::…` and `super::…` in src/ is read and checked against that list.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The declared layers: a module path prefix → its layer (1 is the top; the crate root is 0).
struct Layers {
    rank: BTreeMap<String, usize>,
    /// The helpers' layer, whose members may use each other.
    helpers: usize,
}

impl Layers {
    /// The numbered list in a `//!` header: `//! N. `a`, `b::c`` (a line may go on, indented).
    fn parse(header: &str) -> Layers {
        let mut rank = BTreeMap::new();
        let mut current = None;
        let mut helpers = 0;
        for line in header.lines() {
            let Some(text) = line.strip_prefix("//!") else {
                continue;
            };
            let text = text.trim();
            let number = text
                .split_once(". ")
                .and_then(|(n, _)| n.parse::<usize>().ok());
            match number {
                Some(n) => current = Some(n),
                None if line.starts_with("//!   ") && current.is_some() => {}
                None => {
                    current = None;
                    continue;
                }
            }
            let n = current.unwrap();
            if text.contains("helpers") {
                helpers = n;
            }
            for name in text.split('`').skip(1).step_by(2) {
                rank.insert(name.to_string(), n);
            }
        }
        assert!(
            rank.len() > 10 && helpers > 0,
            "src/lib.rs declares no layers"
        );
        Layers { rank, helpers }
    }

    /// The layer entry a module path belongs to: its longest declared prefix.
    fn entry(&self, module: &[String]) -> Option<(String, usize)> {
        if module.is_empty() {
            return Some((String::new(), 0));
        }
        (1..=module.len()).rev().find_map(|n| {
            let name = module[..n].join("::");
            self.rank.get(&name).map(|r| (name, *r))
        })
    }

    /// Why `from` may not import `to`, if it may not.
    fn violation(&self, from: &[String], to: &[String]) -> Option<String> {
        let (from_name, from_rank) = self.entry(from)?;
        let (to_name, to_rank) = self.entry(to)?;
        let fine = from_name == to_name
            || to_rank > from_rank
            || (from_rank == self.helpers && to_rank == self.helpers);
        (!fine).then(|| {
            format!("`{from_name}` (layer {from_rank}) imports `{to_name}` (layer {to_rank})")
        })
    }
}

/// The module path of a file under src/.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// Every module path `text` (a file of module `me`) imports, with its line, outside tests.
fn imports(me: &[String], text: &str) -> Vec<(usize, Vec<String>)> {
    // The test module at the end may use what it likes.
    let code = text
        .split("\n#[cfg(test)]\nmod tests")
        .next()
        .unwrap_or(text);
    let mut found = Vec::new();
    for (i, line) in code.lines().enumerate() {
        if line.trim_start().starts_with("//") {
            continue;
        }
        for (head, rest) in paths(line) {
            let mut path: Vec<String> = match head {
                "crate" => Vec::new(),
                // `super` of a module is its parent (`me` names a/mod.rs as `a`).
                _ => {
                    let ups = head.matches("super").count();
                    me[..me.len().saturating_sub(ups)].to_vec()
                }
            };
            path.extend(rest);
            found.push((i + 1, path));
        }
    }
    found
}

/// `crate::a::b` and `super::a` (`super::super::a`) paths in a line, split at `::`.
fn paths(line: &str) -> Vec<(&'static str, Vec<String>)> {
    let mut out = Vec::new();
    for (head, marker) in [("crate", "crate::"), ("super", "super::")] {
        let mut from = 0;
        while let Some(at) = line[from..].find(marker) {
            let start = from + at;
            from = start + marker.len();
            let before = line[..start].chars().last();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue; // part of a longer path (`super::super::` is read from its start)
            }
            let mut supers = "super";
            let mut rest = &line[from..];
            if head == "super" {
                while let Some(r) = rest.strip_prefix("super::") {
                    rest = r;
                    supers = "super::super";
                }
            }
            let names: Vec<String> = rest
                .split("::")
                .map(|s| {
                    s.chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect::<String>()
                })
                .take_while(|s| !s.is_empty() && s.chars().next().is_some_and(|c| c.is_lowercase()))
                .collect();
            let head = if head == "crate" { "crate" } else { supers };
            out.push((head, names));
        }
    }
    out
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

fn violations(src: &Path, layers: &Layers, extra: Option<(&str, &str)>) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let mut text = std::fs::read_to_string(&file).unwrap();
        let rel = file
            .strip_prefix(src)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if let Some((target, line)) = extra {
            if rel == target {
                text = format!("{line}\n{text}");
            }
        }
        let me = module_of(src, &file);
        for (line, to) in imports(&me, &text) {
            if let Some(why) = layers.violation(&me, &to) {
                out.push(format!("src/{rel}:{line}: {why}"));
            }
        }
    }
    out
}

fn declared() -> (PathBuf, Layers) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let header = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    (src, Layers::parse(&header))
}

#[test]
fn imports_point_down_the_declared_layers() {
    let (src, layers) = declared();
    let found = violations(&src, &layers, None);
    assert!(
        found.is_empty(),
        "imports against the layers src/lib.rs declares:\n{}",
        found.join("\n")
    );
}

#[test]
fn every_module_is_in_a_declared_layer() {
    let (src, layers) = declared();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    for file in files {
        let module = module_of(&src, &file);
        if module.is_empty() || module == ["main"] {
            continue;
        }
        assert!(
            layers.entry(&module).is_some(),
            "{} is in no layer of src/lib.rs's list",
            file.display()
        );
    }
}

#[test]
fn a_planted_wrong_import_fails() {
    let (src, layers) = declared();
    // A stage reaching up into the commands, a helper into a stage, and across the commands.
    for (file, line, expected) in [
        (
            "disk/ext4.rs",
            "use crate::convert::plan::DiskPlan;",
            "`disk` (layer 11) imports `convert::plan`",
        ),
        (
            "units.rs",
            "use crate::rootfs::tree::GuestTree;",
            "`units` (layer 15) imports `rootfs`",
        ),
        (
            "run/mod.rs",
            "use crate::convert::pipeline;",
            "`run` (layer 2) imports `convert::pipeline`",
        ),
        (
            "convert/choose.rs",
            "use super::plan::DiskPlan;",
            "`convert::choose` (layer 8) imports `convert::plan`",
        ),
    ] {
        let found = violations(&src, &layers, Some((file, line)));
        assert!(
            found.iter().any(|v| v.contains(expected)),
            "{line} in {file} was not caught: {found:?}"
        );
    }
}
