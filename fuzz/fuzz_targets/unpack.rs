//! The staging path (stream edit, then unpacker) and the unpacker alone against arbitrary bytes: it may refuse an archive, but it must not panic, and it
//! must never create or change anything outside the staging tree it was given.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

/// Every name under `dir`, recursively, without following symlinks.
fn names(dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        out.push(path.to_string_lossy().into_owned());
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            names(&path, out);
        }
    }
}

/// A fixed directory outside every staging tree, so that seeds (scripts/fuzz) can aim absolute
/// symlinks and hardlinks at it.
const FIXED_CANARY: &str = "/tmp/c2vm-fuzz-canary";

fuzz_target!(|data: &[u8]| {
    let fixed = Path::new(FIXED_CANARY);
    if !fixed.join("file").exists() {
        std::fs::create_dir_all(fixed).expect("fixed canary dir");
        std::fs::write(fixed.join("file"), b"canary").expect("fixed canary file");
    }
    // base/ holds the staging root and a canary beside it (seeds aim at ../canary):
    // base/ must look the same afterwards, and so must the fixed canary.
    let base = tempfile::tempdir().expect("temp dir");
    let root = base.path().join("root");
    std::fs::create_dir(&root).expect("staging root");
    let canary_dir = base.path().join("canary");
    std::fs::create_dir(&canary_dir).expect("canary dir");
    std::fs::write(canary_dir.join("file"), b"canary").expect("canary file");
    // Both lines of defence: the stream edit then the unpacker (the staging path), and the
    // unpacker alone on the raw bytes, each into a fresh root.
    let _ = c2vm::fuzzing::unpack(data, &root);
    let raw_root = base.path().join("raw-root");
    std::fs::create_dir(&raw_root).expect("second staging root");
    let _ = c2vm::fuzzing::unpack_raw(data, &raw_root);
    let mut outside = Vec::new();
    names(base.path(), &mut outside);
    outside.retain(|n| !Path::new(n).starts_with(&root) && !Path::new(n).starts_with(&raw_root));
    outside.sort();
    let expected = vec![
        canary_dir.to_string_lossy().into_owned(),
        canary_dir.join("file").to_string_lossy().into_owned(),
    ];
    assert_eq!(outside, expected, "the unpacker wrote outside the staging tree");
    assert_eq!(std::fs::read(canary_dir.join("file")).expect("canary"), b"canary");
    let mut fixed_names = Vec::new();
    names(fixed, &mut fixed_names);
    assert_eq!(fixed_names, vec![format!("{FIXED_CANARY}/file")], "the unpacker wrote into {FIXED_CANARY}");
    assert_eq!(std::fs::read(fixed.join("file")).expect("canary"), b"canary");
});
