//! `--provenance FILE`: how the disk was made, as an in-toto Statement v1 whose predicate is
//! SLSA Provenance v1 (<https://slsa.dev/spec/v1.0/provenance>): the disk (its name and sha256)
//! is the subject; the image reference and the options that shape the disk, never a secret, are
//! the external parameters; the image and the kernel layer or bundle, by digest, the resolved
//! dependencies; c2vm and its version the builder. With `--sign-key` the statement is wrapped in
//! a signed DSSE envelope (`dsse`). Written under a temporary name beside the disk and renamed
//! once the disk is in place, like the SBOM.
mod dsse;

use super::{check_output_path, PendingOutput};
use crate::arch::Arch;
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use dsse::SigningKey;

/// What a c2vm provenance's buildDefinition means: `c2vm convert` or `c2vm build` made the
/// subject from the image in externalParameters.source with the options beside it (docs/provenance.md).
const BUILD_TYPE: &str = "https://github.com/c2vm/c2vm/convert@v1";
/// Who made it: the c2vm program on the machine that ran it (its version in `builder.version`).
const BUILDER_ID: &str = "https://github.com/c2vm/c2vm";
const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
const PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";

/// `--provenance` (and `--sign-key`), checked before any work.
#[derive(Debug)]
pub struct ProvenanceTarget {
    pub path: PathBuf,
    /// `--sign-key`, read once the secrets are (`DiskPlan::prepare`).
    key: Option<SigningKey>,
    /// When the conversion started (seconds since 1970), for `startedOn`.
    started: u64,
    parameters: Parameters,
}

impl ProvenanceTarget {
    /// Not the disk's nor the SBOM's name; writable; not there unless `--force`.
    pub fn check(
        path: &Path,
        disk: &Path,
        sbom: Option<&Path>,
        force: bool,
        parameters: Parameters,
    ) -> Result<ProvenanceTarget> {
        if same_path(path, disk) {
            bail!(
                "--provenance {} is the disk's own name; give the provenance another",
                path.display()
            );
        }
        if sbom.is_some_and(|sbom| same_path(path, sbom)) {
            bail!(
                "--provenance {} is the SBOM's name too; give each its own",
                path.display()
            );
        }
        check_output_path(path, force)?;
        Ok(ProvenanceTarget {
            path: path.to_path_buf(),
            key: None,
            started: crate::units::unix_now(),
            parameters,
        })
    }

    /// `--sign-key`: the provenance becomes a DSSE envelope signed with it.
    pub fn sign_with(&mut self, key: SigningKey) {
        self.key = Some(key);
    }
}

/// The same file name, however it was spelled (`./d.img`, `d.img`).
fn same_path(a: &Path, b: &Path) -> bool {
    match (std::path::absolute(a), std::path::absolute(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// A secret's place in the parameters: whether it was given, never what it is.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct IsSet {
    pub set: bool,
}

/// The options that shape the disk, as the user gave them (values in the command line's
/// spelling). How the image was fetched (`--pull`, `--creds`, `--tls-verify`, `--cert-dir`)
/// and where files go are not here; secrets only as [`IsSet`].
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Parameters {
    pub format: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compress: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vmdk_subformat: Option<String>,
    pub size: String,
    pub esp_size: String,
    pub bootloader: String,
    pub secure_boot: String,
    pub append_cmdline: String,
    pub kernel: String,
    pub kernel_flavour: String,
    pub kernel_image: Option<String>,
    pub cloud_init: bool,
    pub init: String,
    pub restart: String,
    pub stop_timeout: Option<u64>,
    pub app: String,
    pub hostname: String,
    pub dns: Vec<String>,
    pub root_password: IsSet,
    pub ssh_key: IsSet,
    /// The root is LUKS2 (`--luks-passphrase-file`/`-stdin`); the passphrase is never recorded.
    pub encrypted: bool,
    pub containerdisk: Option<String>,
    pub source_date_epoch: Option<i64>,
}

/// What the provenance is made from, once the disk is complete under its temporary name.
pub struct Inputs<'a> {
    /// The disk's final file name, and its sha256 (hex).
    pub name: String,
    pub sha256: &'a str,
    /// The image as the user named it, its ID (`sha256:…`, empty where unknown) and its
    /// layers' diff IDs.
    pub source: &'a str,
    pub source_id: &'a str,
    pub diff_ids: &'a [String],
    pub arch: Arch,
    /// The kernel's image, where it was not the source's: c2vm's template layers or a bundle.
    pub kernel: Option<Dependency>,
    /// SOURCE_DATE_EPOCH: the times, and a derived invocation ID.
    pub epoch: Option<i64>,
}

/// An image the disk was made from besides the source.
pub struct Dependency {
    pub name: String,
    /// Its image ID, `sha256:…`.
    pub id: String,
}

/// A provenance written under its temporary name, to be renamed after the disk.
pub struct Written {
    pending: PendingOutput,
    summary: Summary,
}

impl Written {
    /// The provenance as a referrer of the containerDisk: a DSSE envelope when signed (as
    /// `cosign attest` stores one), else the bare in-toto statement.
    pub fn attachment(&self) -> super::containerdisk::Attachment {
        super::containerdisk::Attachment {
            path: self.pending.path().to_path_buf(),
            media_type: match self.summary.signed {
                true => "application/vnd.dsse.envelope.v1+json",
                false => "application/vnd.in-toto+json",
            },
            title: (self.summary.path.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        }
    }

    /// Rename it into place, once the disk is there.
    pub fn commit(self, force: bool) -> Result<Summary> {
        self.pending.commit(force)?;
        Ok(self.summary)
    }
}

/// What the report and `--json` say of the provenance.
#[derive(serde::Serialize)]
pub struct Summary {
    pub path: PathBuf,
    pub signed: bool,
    /// The signing key's ID, with `--sign-key`.
    #[serde(skip)]
    pub keyid: Option<String>,
}

/// Write the provenance beside its final name; the caller renames it once the disk is in place.
pub fn write(target: &ProvenanceTarget, inputs: &Inputs) -> Result<Written> {
    let statement = statement(target, inputs);
    let text = match &target.key {
        None => serde_json::to_string_pretty(&statement),
        Some(key) => {
            let payload = serde_json::to_vec(&statement).context("serialising the provenance")?;
            Ok(dsse::envelope(&payload, key)?)
        }
    }
    .context("serialising the provenance")?;
    let pending = PendingOutput::new(&target.path)?;
    std::fs::write(pending.path(), text + "\n")
        .with_context(|| format!("writing the provenance {}", pending.path().display()))?;
    Ok(Written {
        pending,
        summary: Summary {
            path: target.path.clone(),
            signed: target.key.is_some(),
            keyid: target.key.as_ref().map(|k| k.keyid().to_string()),
        },
    })
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Statement<'a> {
    #[serde(rename = "_type")]
    type_: &'static str,
    subject: Vec<Resource>,
    predicate_type: &'static str,
    predicate: Predicate<'a>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Predicate<'a> {
    build_definition: BuildDefinition<'a>,
    run_details: RunDetails,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct BuildDefinition<'a> {
    build_type: &'static str,
    external_parameters: External<'a>,
    resolved_dependencies: Vec<Resource>,
}

/// The image reference and the disk's platform, then the options.
#[derive(serde::Serialize)]
struct External<'a> {
    source: &'a str,
    platform: String,
    #[serde(flatten)]
    options: &'a Parameters,
}

/// An in-toto ResourceDescriptor.
#[derive(serde::Serialize)]
struct Resource {
    name: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    digest: BTreeMap<&'static str, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<serde_json::Value>,
}

#[derive(serde::Serialize)]
struct RunDetails {
    builder: Builder,
    metadata: Metadata,
}

#[derive(serde::Serialize)]
struct Builder {
    id: &'static str,
    version: BTreeMap<&'static str, &'static str>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Metadata {
    invocation_id: String,
    started_on: String,
    finished_on: String,
}

fn statement<'a>(target: &'a ProvenanceTarget, inputs: &'a Inputs) -> Statement<'a> {
    let subject = Resource {
        name: inputs.name.clone(),
        digest: BTreeMap::from([("sha256", inputs.sha256.to_string())]),
        annotations: None,
    };
    let source = Resource {
        name: inputs.source.to_string(),
        digest: sha256_of_id(inputs.source_id),
        // An image's ID is its config's digest, not its manifest's; its layers say what it holds.
        annotations: (!inputs.diff_ids.is_empty()).then(|| {
            serde_json::json!({ "digestOf": "the image's config (its image ID)", "diffIds": inputs.diff_ids })
        }),
    };
    let kernel = inputs.kernel.as_ref().map(|k| Resource {
        name: k.name.clone(),
        digest: sha256_of_id(&k.id),
        annotations: None,
    });
    let (started, finished) = match inputs.epoch {
        Some(epoch) => (epoch.max(0) as u64, epoch.max(0) as u64),
        None => (target.started, crate::units::unix_now()),
    };
    Statement {
        type_: STATEMENT_TYPE,
        subject: vec![subject],
        predicate_type: PREDICATE_TYPE,
        predicate: Predicate {
            build_definition: BuildDefinition {
                build_type: BUILD_TYPE,
                external_parameters: External {
                    source: inputs.source,
                    platform: inputs.arch.platform(),
                    options: &target.parameters,
                },
                resolved_dependencies: std::iter::once(source).chain(kernel).collect(),
            },
            run_details: RunDetails {
                builder: Builder {
                    id: BUILDER_ID,
                    version: BTreeMap::from([("c2vm", env!("CARGO_PKG_VERSION"))]),
                },
                metadata: Metadata {
                    invocation_id: invocation_id(target, inputs),
                    started_on: crate::units::rfc3339(started),
                    finished_on: crate::units::rfc3339(finished),
                },
            },
        },
    }
}

/// `{"sha256": HEX}` of an ID `sha256:HEX`; empty where the ID is none.
fn sha256_of_id(id: &str) -> BTreeMap<&'static str, String> {
    id.strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(|hex| BTreeMap::from([("sha256", hex.to_ascii_lowercase())]))
        .unwrap_or_default()
}

/// Under SOURCE_DATE_EPOCH derived from what the disk is, so the same inputs give the same
/// bytes; else random, as each run is its own.
fn invocation_id(target: &ProvenanceTarget, inputs: &Inputs) -> String {
    if inputs.epoch.is_none() {
        return format!("urn:uuid:{}", uuid::Uuid::new_v4());
    }
    let parameters = serde_json::to_string(&target.parameters).unwrap_or_default();
    let seed = format!(
        "c2vm {} provenance\n{}\n{}\n{}\n{}\n{parameters}",
        env!("CARGO_PKG_VERSION"),
        inputs.sha256,
        inputs.name,
        inputs.source,
        inputs.source_id,
    );
    let digest = Sha256::digest(seed.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    format!(
        "urn:uuid:{}",
        uuid::Builder::from_custom_bytes(bytes).into_uuid()
    )
}

#[cfg(test)]
pub mod tests {
    use super::*;

    const DISK: &str = "5f8d1b7c2b6e9a0d3c4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4";
    const IMAGE: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

    pub fn parameters() -> Parameters {
        Parameters {
            format: "qcow2".into(),
            compress: Some("zstd".into()),
            vmdk_subformat: None,
            size: "auto".into(),
            esp_size: "256M".into(),
            bootloader: "syslinux".into(),
            secure_boot: "auto".into(),
            append_cmdline: "quiet".into(),
            kernel: "auto".into(),
            kernel_flavour: "standard".into(),
            kernel_image: None,
            cloud_init: false,
            init: "auto".into(),
            restart: "no".into(),
            stop_timeout: None,
            app: "auto".into(),
            hostname: "vm".into(),
            dns: Vec::new(),
            root_password: IsSet { set: true },
            ssh_key: IsSet { set: false },
            encrypted: true,
            containerdisk: None,
            source_date_epoch: Some(1_700_000_000),
        }
    }

    /// The provenance of a test disk, as written (under its temporary name).
    pub fn write_one(
        dir: &Path,
        parameters: Parameters,
        key: Option<SigningKey>,
        epoch: Option<i64>,
    ) -> (String, Written) {
        let mut target = ProvenanceTarget::check(
            &dir.join("d.intoto.json"),
            &dir.join("d.qcow2"),
            None,
            false,
            parameters,
        )
        .unwrap();
        if let Some(key) = key {
            target.sign_with(key);
        }
        let diff_ids = vec![IMAGE.replace('1', "2")];
        let inputs = Inputs {
            name: "d.qcow2".into(),
            sha256: DISK,
            source: "debian:trixie",
            source_id: IMAGE,
            diff_ids: &diff_ids,
            arch: Arch::Amd64,
            kernel: Some(Dependency {
                name: "c2vm's generic kernel bundle".into(),
                id: IMAGE.replace('1', "3"),
            }),
            epoch,
        };
        let written = write(&target, &inputs).unwrap();
        let text = std::fs::read_to_string(written.pending.path()).unwrap();
        (text, written)
    }

    #[test]
    fn the_statement_is_slsa_provenance_of_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let (text, written) = write_one(dir.path(), parameters(), None, Some(1_700_000_000));
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(doc["_type"], STATEMENT_TYPE);
        assert_eq!(doc["predicateType"], PREDICATE_TYPE);
        assert_eq!(
            doc["subject"],
            serde_json::json!([{"name": "d.qcow2", "digest": {"sha256": DISK}}])
        );
        let build = &doc["predicate"]["buildDefinition"];
        assert_eq!(build["buildType"], BUILD_TYPE);
        let external = &build["externalParameters"];
        assert_eq!(external["source"], "debian:trixie");
        assert_eq!(external["platform"], "linux/amd64");
        assert_eq!(external["format"], "qcow2");
        assert_eq!(external["rootPassword"], serde_json::json!({"set": true}));
        assert_eq!(external["encrypted"], true);
        assert!(external.get("vmdkSubformat").is_none());
        let deps = build["resolvedDependencies"].as_array().unwrap();
        assert_eq!(deps[0]["name"], "debian:trixie");
        assert_eq!(deps[0]["digest"]["sha256"], &IMAGE[7..]);
        assert_eq!(deps[1]["digest"]["sha256"], IMAGE[7..].replace('1', "3"));
        let run = &doc["predicate"]["runDetails"];
        assert_eq!(run["builder"]["id"], BUILDER_ID);
        assert_eq!(run["builder"]["version"]["c2vm"], env!("CARGO_PKG_VERSION"));
        assert_eq!(run["metadata"]["startedOn"], "2023-11-14T22:13:20Z");
        assert_eq!(run["metadata"]["finishedOn"], "2023-11-14T22:13:20Z");
        assert!(run["metadata"]["invocationId"]
            .as_str()
            .unwrap()
            .starts_with("urn:uuid:"));
        // Beside the disk under a temporary name until it is committed.
        assert!(!dir.path().join("d.intoto.json").exists());
        let summary = written.commit(false).unwrap();
        assert!(dir.path().join("d.intoto.json").exists() && !summary.signed);
    }

    #[test]
    fn the_same_inputs_under_an_epoch_give_the_same_bytes() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let epoch = Some(1_700_000_000);
        let (first, _) = write_one(a.path(), parameters(), None, epoch);
        let (second, _) = write_one(b.path(), parameters(), None, epoch);
        assert_eq!(first, second);
        // Without an epoch each run is its own invocation.
        let (third, _) = write_one(a.path(), parameters(), None, None);
        let (fourth, _) = write_one(b.path(), parameters(), None, None);
        let id = |t: &str| {
            serde_json::from_str::<serde_json::Value>(t).unwrap()["predicate"]["runDetails"]
                ["metadata"]["invocationId"]
                .clone()
        };
        assert_ne!(id(&third), id(&fourth));
    }

    #[test]
    fn its_path_is_refused_where_it_is_the_disks_or_the_sboms_or_exists() {
        let dir = tempfile::tempdir().unwrap();
        let (disk, sbom) = (dir.path().join("d.img"), dir.path().join("d.spdx.json"));
        let check = |path: &Path| {
            ProvenanceTarget::check(path, &disk, Some(&sbom), false, parameters())
                .map(drop)
                .map_err(|e| e.to_string())
        };
        assert!(check(&disk).unwrap_err().contains("the disk's own name"));
        assert!(check(&sbom).unwrap_err().contains("the SBOM's name"));
        let there = dir.path().join("p.json");
        std::fs::write(&there, "{}").unwrap();
        assert!(check(&there).unwrap_err().contains("use --force"));
        assert!(check(&dir.path().join("q.json")).is_ok());
    }
}
