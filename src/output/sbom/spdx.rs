//! The SBOM as SPDX 2.3 JSON (<https://spdx.github.io/spdx-spec/v2.3/>): the disk is the package
//! the document describes; it is GENERATED_FROM the source image and CONTAINS the distribution,
//! every package of its databases and each part c2vm put on it. What is not known is
//! NOASSERTION, never a guess.
use super::parts::{Part, Role};
use super::{package_purl, Facts};
use anyhow::{Context, Result};
use serde::Serialize;

const NOASSERTION: &str = "NOASSERTION";
const DOCUMENT: &str = "SPDXRef-DOCUMENT";
const DISK: &str = "SPDXRef-disk";

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Document {
    spdx_version: &'static str,
    data_license: &'static str,
    #[serde(rename = "SPDXID")]
    spdx_id: &'static str,
    name: String,
    document_namespace: String,
    creation_info: CreationInfo,
    #[serde(skip_serializing_if = "Option::is_none")]
    comment: Option<String>,
    document_describes: Vec<String>,
    packages: Vec<Package>,
    relationships: Vec<Relationship>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CreationInfo {
    created: String,
    creators: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Package {
    #[serde(rename = "SPDXID")]
    spdx_id: String,
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    version_info: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    package_file_name: Option<String>,
    download_location: &'static str,
    files_analyzed: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    checksums: Vec<Checksum>,
    license_concluded: &'static str,
    license_declared: &'static str,
    copyright_text: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    source_info: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    comment: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    external_refs: Vec<ExternalRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    primary_package_purpose: Option<&'static str>,
}

impl Package {
    /// A package of which only the name is known yet.
    fn named(spdx_id: String, name: &str) -> Package {
        Package {
            spdx_id,
            name: name.to_string(),
            version_info: None,
            package_file_name: None,
            download_location: NOASSERTION,
            files_analyzed: false,
            checksums: Vec::new(),
            license_concluded: NOASSERTION,
            license_declared: NOASSERTION,
            copyright_text: NOASSERTION,
            source_info: None,
            comment: None,
            external_refs: Vec::new(),
            primary_package_purpose: None,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Checksum {
    algorithm: &'static str,
    checksum_value: String,
}

fn sha256(value: &str) -> Vec<Checksum> {
    vec![Checksum {
        algorithm: "SHA256",
        checksum_value: value.to_string(),
    }]
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExternalRef {
    reference_category: &'static str,
    reference_type: &'static str,
    reference_locator: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Relationship {
    spdx_element_id: String,
    relationship_type: &'static str,
    related_spdx_element: String,
}

fn relation(from: &str, kind: &'static str, to: &str) -> Relationship {
    Relationship {
        spdx_element_id: from.to_string(),
        relationship_type: kind,
        related_spdx_element: to.to_string(),
    }
}

pub fn document(facts: &Facts) -> Result<String> {
    let mut packages = vec![disk(facts)];
    let mut relationships = vec![relation(DOCUMENT, "DESCRIBES", DISK)];
    if !facts.source.is_empty() {
        let mut image = Package::named("SPDXRef-source-image".to_string(), facts.source);
        image.primary_package_purpose = Some("CONTAINER");
        image.comment = (!facts.source_id.is_empty()).then(|| {
            format!(
                "The container image the disk was made from; its ID is {}.",
                facts.source_id
            )
        });
        relationships.push(relation(DISK, "GENERATED_FROM", &image.spdx_id));
        packages.push(image);
    }
    let mut contained = Vec::new();
    if let Some(os) = &facts.inventory.os {
        let mut p = Package::named("SPDXRef-distribution".to_string(), &os.id);
        p.version_info = Some(os.version_id.clone()).filter(|v| !v.is_empty());
        p.comment = Some(os.pretty_name.clone()).filter(|v| !v.is_empty());
        p.primary_package_purpose = Some("OPERATING-SYSTEM");
        contained.push(p);
    }
    let os = facts.inventory.os.as_ref();
    for (i, pkg) in facts.inventory.packages.iter().enumerate() {
        let mut p = Package::named(id("package", i, &pkg.name), &pkg.name);
        p.version_info = Some(pkg.version.clone());
        // No primaryPackagePurpose: the database does not say library or application.
        p.source_info = pkg.source.as_ref().map(|s| match &pkg.source_version {
            Some(v) => format!("built from the source package {s} {v}"),
            None => format!("built from the source package {s}"),
        });
        p.comment = Some(match &pkg.license {
            Some(l) => format!(
                "Architecture {}; installed by {} (license field: {l})",
                pkg.arch,
                pkg.manager.database()
            ),
            None => format!(
                "Architecture {}; installed by {}",
                pkg.arch,
                pkg.manager.database()
            ),
        });
        p.external_refs = package_purl(pkg, os)
            .map(|purl| ExternalRef {
                reference_category: "PACKAGE-MANAGER",
                reference_type: "purl",
                reference_locator: purl,
            })
            .into_iter()
            .collect();
        contained.push(p);
    }
    contained.extend(
        facts
            .parts
            .iter()
            .enumerate()
            .map(|(i, part)| c2vm_part(i, part)),
    );
    for p in &contained {
        relationships.push(relation(DISK, "CONTAINS", &p.spdx_id));
    }
    packages.extend(contained);
    let doc = Document {
        spdx_version: "SPDX-2.3",
        data_license: "CC0-1.0",
        spdx_id: DOCUMENT,
        name: format!("c2vm disk {}", facts.disk.name),
        document_namespace: format!("https://c2vm.invalid/spdxdocs/disk-{}", facts.uuid),
        creation_info: CreationInfo {
            created: facts.created.clone(),
            creators: vec![format!("Tool: c2vm-{}", env!("CARGO_PKG_VERSION"))],
        },
        comment: databases_comment(facts),
        document_describes: vec![DISK.to_string()],
        packages,
        relationships,
    };
    let mut text = serde_json::to_string_pretty(&doc).context("serialising the SPDX document")?;
    text.push('\n');
    Ok(text)
}

/// The disk: its file's name and digest, its format and machine.
fn disk(facts: &Facts) -> Package {
    let d = &facts.disk;
    let mut p = Package::named(DISK.to_string(), &d.name);
    p.package_file_name = Some(d.name.clone());
    p.checksums = sha256(&d.sha256);
    p.primary_package_purpose = Some("FILE");
    p.comment = Some(format!(
        "A bootable {} disk image for {}, made by c2vm {}.",
        super::format_name(d.format),
        d.arch,
        env!("CARGO_PKG_VERSION")
    ));
    p.source_info = Some(match facts.source_id.is_empty() {
        true => format!("made from {}", facts.source),
        false => format!("made from {} ({})", facts.source, facts.source_id),
    });
    p
}

/// What c2vm put on the disk, as a package of its own.
fn c2vm_part(i: usize, part: &Part) -> Package {
    let mut p = Package::named(id("c2vm", i, &part.name), &part.name);
    p.version_info = part.version.clone();
    p.package_file_name = part.path.clone();
    p.checksums = part.sha256.as_deref().map(sha256).unwrap_or_default();
    p.source_info = Some(part.origin.clone());
    p.primary_package_purpose = Some(match part.role {
        Role::Kernel => "OPERATING-SYSTEM",
        Role::Loader | Role::Init => "APPLICATION",
        Role::Setup => "FILE",
    });
    if !part.files.is_empty() {
        p.comment = Some(format!("Files: {}", part.files.join(", ")));
    }
    p
}

/// Which databases were read, and which not and why.
fn databases_comment(facts: &Facts) -> Option<String> {
    let inv = &facts.inventory;
    let mut lines = Vec::new();
    if !inv.read.is_empty() {
        lines.push(format!("Package databases read: {}.", inv.read.join(", ")));
    }
    for note in &inv.unread {
        lines.push(format!("Not listed: {note}."));
    }
    (!lines.is_empty()).then(|| lines.join(" "))
}

/// An SPDX identifier: `SPDXRef-` and letters, digits, `.` and `-` only.
fn id(kind: &str, i: usize, name: &str) -> String {
    let name: String = name
        .chars()
        .map(
            |c| match c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                true => c,
                false => '-',
            },
        )
        .collect();
    format!("SPDXRef-{kind}-{i}-{name}")
}
