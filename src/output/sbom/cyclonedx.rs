//! The SBOM as CycloneDX 1.6 JSON (<https://cyclonedx.org/docs/1.6/json/>): the disk is the
//! metadata's component, the source image its pedigree's ancestor; the components are the
//! distribution, every package of its databases and each part c2vm put on the disk. c2vm's own
//! facts (paths, origins, what was not read) are properties named `c2vm:…`.
use super::parts::{Part, Role};
use super::{package_purl, Facts};
use anyhow::{Context, Result};
use serde::Serialize;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Bom {
    bom_format: &'static str,
    spec_version: &'static str,
    serial_number: String,
    version: u32,
    metadata: Metadata,
    components: Vec<Component>,
}

#[derive(Serialize)]
struct Metadata {
    timestamp: String,
    tools: Tools,
    component: Component,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    properties: Vec<Property>,
}

#[derive(Serialize)]
struct Tools {
    components: Vec<Component>,
}

#[derive(Serialize, Default)]
struct Component {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(rename = "bom-ref", skip_serializing_if = "Option::is_none")]
    bom_ref: Option<String>,
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    hashes: Vec<Hash>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    licenses: Vec<License>,
    #[serde(skip_serializing_if = "Option::is_none")]
    purl: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pedigree: Option<Pedigree>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    properties: Vec<Property>,
}

impl Component {
    fn new(kind: &'static str, bom_ref: String, name: &str) -> Component {
        Component {
            kind,
            bom_ref: Some(bom_ref),
            name: name.to_string(),
            ..Component::default()
        }
    }
}

#[derive(Serialize)]
struct Hash {
    alg: &'static str,
    content: String,
}

fn sha256(value: &str) -> Vec<Hash> {
    vec![Hash {
        alg: "SHA-256",
        content: value.to_string(),
    }]
}

/// A license as the database writes it: a name, since apk's field is not always a valid SPDX
/// expression.
#[derive(Serialize)]
struct License {
    license: LicenseName,
}

#[derive(Serialize)]
struct LicenseName {
    name: String,
}

#[derive(Serialize)]
struct Pedigree {
    ancestors: Vec<Component>,
}

#[derive(Serialize)]
struct Property {
    name: &'static str,
    value: String,
}

fn property(name: &'static str, value: impl Into<String>) -> Property {
    Property {
        name,
        value: value.into(),
    }
}

pub fn document(facts: &Facts) -> Result<String> {
    let mut components = Vec::new();
    if let Some(os) = &facts.inventory.os {
        let mut c = Component::new("operating-system", "distribution".to_string(), &os.id);
        c.version = Some(os.version_id.clone()).filter(|v| !v.is_empty());
        c.description = Some(os.pretty_name.clone()).filter(|v| !v.is_empty());
        components.push(c);
    }
    let os = facts.inventory.os.as_ref();
    for (i, pkg) in facts.inventory.packages.iter().enumerate() {
        let mut c = Component::new("library", format!("package-{i}-{}", pkg.name), &pkg.name);
        c.version = Some(pkg.version.clone());
        c.purl = package_purl(pkg, os);
        c.licenses = pkg
            .license
            .iter()
            .map(|l| License {
                license: LicenseName { name: l.clone() },
            })
            .collect();
        c.properties.push(property("c2vm:architecture", &pkg.arch));
        c.properties
            .push(property("c2vm:database", pkg.manager.database()));
        if let Some(source) = &pkg.source {
            c.properties.push(property("c2vm:source-package", source));
        }
        if let Some(version) = &pkg.source_version {
            c.properties.push(property("c2vm:source-version", version));
        }
        components.push(c);
    }
    components.extend(
        facts
            .parts
            .iter()
            .enumerate()
            .map(|(i, part)| c2vm_part(i, part)),
    );
    let inv = &facts.inventory;
    let mut properties: Vec<Property> = (inv.read.iter())
        .map(|db| property("c2vm:package-database-read", *db))
        .collect();
    properties
        .extend((inv.unread.iter()).map(|note| property("c2vm:package-database-not-read", note)));
    let bom = Bom {
        bom_format: "CycloneDX",
        spec_version: "1.6",
        serial_number: format!("urn:uuid:{}", facts.uuid),
        version: 1,
        metadata: Metadata {
            timestamp: facts.created.clone(),
            tools: Tools {
                components: vec![Component {
                    version: Some(env!("CARGO_PKG_VERSION").to_string()),
                    ..Component::new("application", "c2vm".to_string(), "c2vm")
                }],
            },
            component: disk(facts),
            properties,
        },
        components,
    };
    let mut text = serde_json::to_string_pretty(&bom).context("serialising the CycloneDX BOM")?;
    text.push('\n');
    Ok(text)
}

/// The disk: its file's name and digest, its format and machine, and the image it came from.
fn disk(facts: &Facts) -> Component {
    let d = &facts.disk;
    let mut c = Component::new("file", "disk".to_string(), &d.name);
    c.hashes = sha256(&d.sha256);
    c.description = Some(format!(
        "A bootable {} disk image for {}, made by c2vm",
        super::format_name(d.format),
        d.arch
    ));
    c.properties = vec![
        property("c2vm:disk-format", super::format_name(d.format)),
        property("c2vm:architecture", d.arch.to_string()),
    ];
    if !facts.source.is_empty() {
        let mut image = Component::new("container", "source-image".to_string(), facts.source);
        image.hashes = facts.source_sha256.map(sha256).unwrap_or_default();
        if !facts.source_id.is_empty() {
            image
                .properties
                .push(property("c2vm:image-id", facts.source_id));
        }
        c.pedigree = Some(Pedigree {
            ancestors: vec![image],
        });
    }
    c
}

/// What c2vm put on the disk, as a component of its own.
fn c2vm_part(i: usize, part: &Part) -> Component {
    let kind = match part.role {
        Role::Kernel => "operating-system",
        Role::Loader | Role::Init => "application",
        Role::Setup => "data",
    };
    let mut c = Component::new(
        kind,
        format!("c2vm-{i}-{}", part.name.replace(' ', "-")),
        &part.name,
    );
    c.version = part.version.clone();
    c.hashes = part.sha256.as_deref().map(sha256).unwrap_or_default();
    c.description = Some(format!("Put on the disk by c2vm: {}", part.origin));
    if let Some(path) = &part.path {
        c.properties.push(property("c2vm:path", path));
    }
    if let Some((name, version)) = &part.package {
        c.properties.push(property("c2vm:package", name));
        c.properties.push(property("c2vm:package-version", version));
    }
    c.properties
        .extend(part.files.iter().map(|f| property("c2vm:file", f)));
    c
}
