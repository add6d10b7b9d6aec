//! The layer merge against arbitrary layers: whiteouts, opaque directories and hardlinks across
//! layers, plain or compressed. It may refuse the layers, but it must not panic, and where every
//! layer reads as a tar archive, what it merges must read as one too (the stream edit reads it
//! next).
#![no_main]
use libfuzzer_sys::fuzz_target;

/// Between two layers of an input, bottom layer first. The seeds (scripts/fuzz) are real layer
/// tars joined by it, and `fuzz/merge.dict` offers it to the mutator.
const SEPARATOR: &[u8] = b"C2VM-NEXT-LAYER\n";
/// More layers add little but time.
const MAX_LAYERS: usize = 8;

fn split(data: &[u8]) -> Vec<Vec<u8>> {
    let mut layers = Vec::new();
    let mut rest = data;
    while let Some(i) = rest.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
        layers.push(rest[..i].to_vec());
        rest = &rest[i + SEPARATOR.len()..];
    }
    layers.push(rest.to_vec());
    layers
}

/// Whether the archive's entries and their data all read, as the stream edit reads them.
fn reads(archive: &[u8]) -> std::io::Result<()> {
    let mut archive = tar::Archive::new(archive);
    for entry in archive.entries()? {
        let mut entry = entry?;
        if let Some(records) = entry.pax_extensions()? {
            for record in records {
                record?;
            }
        }
        std::io::copy(&mut entry, &mut std::io::sink())?;
    }
    Ok(())
}

/// A plain tar layer (a compressed one is left to the merge alone).
fn plain(layer: &[u8]) -> bool {
    !layer.starts_with(&[0x1f, 0x8b]) && !layer.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
}

fuzz_target!(|data: &[u8]| {
    let layers = split(data);
    if layers.len() > MAX_LAYERS {
        return;
    }
    let all_read = layers.iter().all(|l| plain(l) && reads(l).is_ok());
    let Ok(merged) = c2vm::fuzzing::merge(layers) else {
        return;
    };
    if all_read {
        if let Err(e) = reads(&merged) {
            panic!("layers that read as tar merged into a stream that does not: {e}");
        }
    }
    // Whole records, ending with the end-of-archive blocks.
    assert!(
        merged.len() >= 1024 && merged.len() % 512 == 0 && merged.ends_with(&[0; 1024]),
        "a merged stream of {} bytes",
        merged.len()
    );
});
