//! `docker://REGISTRY/NAME[:TAG|@DIGEST]`: an image straight from a registry, no engine. The
//! distribution protocol (token and basic auth, manifests, blobs) is the `oci-client` crate's,
//! the maintained Rust client of the ORAS project; c2vm adds what users of docker and skopeo
//! expect around it: their credential files, `--cert-dir`, the localhost rule for plain HTTP,
//! and its own check of every digest.
use super::layers::{BlobStore, LayeredImage};
use super::oci::{self, Fetch, Wanted, JSON_LIMIT};
use anyhow::{anyhow, bail, Context, Result};
use futures_util::StreamExt;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How to reach registries: `--creds`, `--tls-verify`, `--cert-dir`. How an image is fetched
/// never shapes the disk, so none of this is in the identifiers' seed.
#[derive(Clone, Default)]
pub struct Access {
    /// `USER` and password, from `--creds`.
    pub creds: Option<(String, String)>,
    /// `--tls-verify=false`: no certificate checks, and plain HTTP allowed.
    pub insecure: bool,
    /// `--cert-dir`: CA certificates (`*.crt`) to trust.
    pub cert_dir: Option<PathBuf>,
}

/// The password never shows, whatever prints an `Access` (`-vv`, a panic, a test's assertion).
impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field(
                "creds",
                &self
                    .creds
                    .as_ref()
                    .map(|(user, _)| (user, crate::secret::REDACTED)),
            )
            .field("insecure", &self.insecure)
            .field("cert_dir", &self.cert_dir)
            .finish()
    }
}

const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// A registry connection for one image reference.
struct Registry {
    client: Client,
    reference: Reference,
    runtime: Arc<tokio::runtime::Runtime>,
    name: String,
}

/// `docker://…` → the image, its config read and its layers listed (not yet downloaded).
pub fn image(text: &str, access: &Access, wanted: Wanted) -> Result<LayeredImage> {
    let (registry, auth) = connect(text, access)?;
    let name = registry.name.clone();
    let (json, digest) = registry
        .runtime
        .block_on(
            registry
                .client
                .pull_manifest_raw(&registry.reference, &auth, MANIFEST_TYPES),
        )
        .map_err(|e| explain(e, &registry.reference, &auth))?;
    if let Some(pinned) = registry.reference.digest() {
        oci::verify(&json, pinned, &format!("the manifest of {name}"))?;
    }
    log::debug!("{name}: manifest {digest}");
    let registry = Arc::new(registry);
    oci::resolve(&RegistryFetch(registry), &json, wanted, &name)
}

/// A client for the registry of `text` (a reference without `docker://`), its scheme probed,
/// and the credentials to use there.
fn connect(text: &str, access: &Access) -> Result<(Registry, RegistryAuth)> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let reference: Reference = text
        .parse()
        .map_err(|e| anyhow!("docker://{text} is not an image reference ({e}); e.g. docker://registry.example:5000/team/app:1.0"))?;
    let name = format!("docker://{text}");
    let host = reference.resolve_registry().to_string();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let certs = certificates(&host, access.cert_dir.as_deref())?;
    let scheme = runtime.block_on(probe(&host, &certs, access.insecure))?;
    let config = ClientConfig {
        protocol: scheme,
        accept_invalid_certificates: access.insecure,
        extra_root_certificates: certs,
        platform_resolver: None,
        connect_timeout: Some(Duration::from_secs(30)),
        read_timeout: Some(Duration::from_secs(120)),
        ..Default::default()
    };
    let registry = Registry {
        client: Client::new(config),
        reference,
        runtime: Arc::new(runtime),
        name,
    };
    let auth = credentials(&registry.reference, access)?;
    registry.runtime.block_on(async {
        registry
            .client
            .store_auth_if_needed(registry.reference.resolve_registry(), &auth)
            .await
    });
    Ok((registry, auth))
}

/// An image to push: its manifest (OCI JSON), config, and layers as files with their digests;
/// and artifacts that refer to it (its SBOM, its provenance).
pub struct Upload<'a> {
    pub manifest: &'a [u8],
    pub config: (&'a [u8], &'a str),
    pub layers: &'a [(&'a Path, &'a str)],
    pub referrers: Vec<ReferrerUpload<'a>>,
}

/// Push `upload` to `docker://text`, then its referrers; returns the manifest's digest.
pub fn push(text: &str, access: &Access, upload: &Upload) -> Result<String> {
    use oci_client::RegistryOperation;
    let (registry, auth) = connect(text, access)?;
    let r = &registry;
    r.runtime
        .block_on(r.client.auth(&r.reference, &auth, RegistryOperation::Push))
        .map_err(|e| explain(e, &r.reference, &auth))?;
    for (path, digest) in upload.layers {
        let file =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let size = file.metadata()?.len();
        let stream = futures_util::stream::iter(FileChunks(file))
            .map(|chunk| chunk.map_err(OciDistributionError::from));
        r.runtime
            .block_on(
                r.client
                    .push_blob_stream(&r.reference, stream, digest, Some(size)),
            )
            .map_err(|e| explain(e, &r.reference, &auth))
            .with_context(|| format!("pushing the layer {digest}"))?;
    }
    r.runtime
        .block_on(
            r.client
                .push_blob(&r.reference, upload.config.0.to_vec(), upload.config.1),
        )
        .map_err(|e| explain(e, &r.reference, &auth))
        .context("pushing the config")?;
    r.runtime
        .block_on(r.client.push_manifest_raw(
            &r.reference,
            upload.manifest.to_vec(),
            reqwest::header::HeaderValue::from_static("application/vnd.oci.image.manifest.v1+json"),
        ))
        .map_err(|e| explain(e, &r.reference, &auth))
        .context("pushing the manifest")?;
    let digest = oci::digest_of(upload.manifest);
    if !upload.referrers.is_empty() {
        push_referrers(r, &auth, &digest, &upload.referrers)?;
    }
    Ok(digest)
}

/// An artifact that refers to an image already pushed (OCI 1.1's `subject`): its manifest, and
/// the small blobs it names (the empty config, the artifact's file).
pub struct ReferrerUpload<'a> {
    pub manifest: &'a [u8],
    pub blobs: Vec<(&'a [u8], String)>,
    pub artifact_type: &'a str,
}

const INDEX_TYPE: &str = "application/vnd.oci.image.index.v1+json";
const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// Push `referrers` of the image `subject` (a manifest digest) to the registry's repository,
/// each manifest by its digest. A registry with the referrers API (distribution 3, most
/// clouds') lists them from their `subject`; for one without (distribution 2.8, Debian's), the
/// OCI distribution spec's fallback is kept too: the index tagged `sha256-HEX` of the subject
/// lists them, as `oras attach` and `cosign attest` keep it.
fn push_referrers(
    r: &Registry,
    auth: &RegistryAuth,
    subject: &str,
    referrers: &[ReferrerUpload],
) -> Result<()> {
    let on_error = |e| explain(e, &r.reference, auth);
    let mut listed = Vec::new();
    for referrer in referrers {
        for (data, digest) in &referrer.blobs {
            r.runtime
                .block_on(r.client.push_blob(&r.reference, data.to_vec(), digest))
                .map_err(on_error)
                .with_context(|| format!("pushing the blob {digest}"))?;
        }
        let digest = oci::digest_of(referrer.manifest);
        let by_digest = r.reference.clone_with_digest(digest.clone());
        r.runtime
            .block_on(r.client.push_manifest_raw(
                &by_digest,
                referrer.manifest.to_vec(),
                reqwest::header::HeaderValue::from_static(MANIFEST_TYPE),
            ))
            .map_err(on_error)
            .with_context(|| format!("pushing the {} artifact", referrer.artifact_type))?;
        listed.push(serde_json::json!({
            "mediaType": MANIFEST_TYPE,
            "digest": digest,
            "size": referrer.manifest.len(),
            "artifactType": referrer.artifact_type,
        }));
    }
    let tag = format!("sha256-{}", subject.trim_start_matches("sha256:"));
    let tagged = Reference::with_tag(
        r.reference.registry().to_string(),
        r.reference.repository().to_string(),
        tag,
    );
    // What the tag lists already (other tools' referrers of the same image) stays.
    let mut index =
        match r
            .runtime
            .block_on(r.client.pull_manifest_raw(&tagged, auth, &[INDEX_TYPE]))
        {
            Ok((bytes, _)) => serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
            Err(_) => serde_json::Value::Null,
        };
    if !index["manifests"].is_array() {
        index = serde_json::json!({ "schemaVersion": 2, "mediaType": INDEX_TYPE, "manifests": [] });
    }
    if let Some(manifests) = index["manifests"].as_array_mut() {
        manifests.retain(|m| !listed.iter().any(|l| l["digest"] == m["digest"]));
        manifests.extend(listed);
    }
    r.runtime
        .block_on(r.client.push_manifest_raw(
            &tagged,
            serde_json::to_vec(&index)?,
            reqwest::header::HeaderValue::from_static(INDEX_TYPE),
        ))
        .map_err(on_error)
        .context("pushing the referrers' index")?;
    Ok(())
}

/// A file as 1 MiB chunks, for a streamed upload.
struct FileChunks(std::fs::File);

impl Iterator for FileChunks {
    type Item = std::io::Result<bytes::Bytes>;
    fn next(&mut self) -> Option<Self::Item> {
        let mut buf = vec![0u8; 1 << 20];
        match self.0.read(&mut buf) {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some(Ok(bytes::Bytes::from(buf)))
            }
            Err(e) => Some(Err(e)),
        }
    }
}

/// Which scheme the registry speaks. HTTPS always comes first; plain HTTP only where docker
/// allows it without configuration (localhost, 127.0.0.0/8) or with `--tls-verify=false`, and
/// only when the server does not speak TLS at all: a certificate c2vm cannot trust is an error,
/// never a reason to drop TLS.
async fn probe(host: &str, certs: &[Certificate], insecure: bool) -> Result<ClientProtocol> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        .timeout(Duration::from_secs(60))
        .danger_accept_invalid_certs(insecure);
    for cert in certs {
        builder = builder.add_root_certificate(
            reqwest::Certificate::from_pem(&cert.data)
                .context("reading a --cert-dir certificate")?,
        );
    }
    let client = builder.build().context("setting up HTTPS")?;
    let tls_error = match client.get(format!("https://{host}/v2/")).send().await {
        Ok(_) => return Ok(ClientProtocol::Https),
        Err(e) => e,
    };
    if insecure || is_loopback(host) {
        if let Ok(answer) = client.get(format!("http://{host}/v2/")).send().await {
            let registry = answer
                .headers()
                .contains_key("docker-distribution-api-version")
                || matches!(answer.status().as_u16(), 200 | 401);
            if registry {
                crate::progress::note(&format!("Note: registry {host} speaks plain HTTP only, so c2vm reads it without TLS (allowed for loopback hosts and with --tls-verify=false)"));
                return Ok(ClientProtocol::Http);
            }
        }
    }
    let detail = error_chain(&tls_error);
    // The text is the fallback for a rustls of another version than c2vm's (reqwest's own,
    // should the two ever part): its error is another type, and only its words say what it is.
    if certificate_rejected(&tls_error)
        || detail.contains("certificate")
        || detail.contains("UnknownIssuer")
    {
        bail!("the TLS certificate of registry {host} is not trusted ({detail}); give its CA with --cert-dir DIR (a directory holding ca.crt), put it in /etc/containers/certs.d/{host}/, or use --tls-verify=false");
    }
    bail!("cannot reach registry {host} over HTTPS ({detail}); check the name and your network")
}

/// Whether a connection failed because c2vm does not trust the server's certificate: a
/// `rustls::Error` about certificates somewhere in the error's sources. rustls's error reaches
/// reqwest inside an `io::Error`, whose `source()` skips the error it wraps, so each
/// `io::Error` is opened with `get_ref()`.
fn certificate_rejected(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return matches!(
                tls,
                rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented
            );
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            if certificate_rejected(inner) {
                return true;
            }
        }
        next = e.source();
    }
    false
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    parts.join(": ")
}

fn is_loopback(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((n, port)) if port.bytes().all(|b| b.is_ascii_digit()) => n,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// CA certificates: `--cert-dir`, else where docker and podman keep a registry's
/// (`/etc/docker/certs.d/HOST/`, `/etc/containers/certs.d/HOST/`).
fn certificates(host: &str, cert_dir: Option<&Path>) -> Result<Vec<Certificate>> {
    let dirs: Vec<PathBuf> = match cert_dir {
        Some(d) => {
            if !d.is_dir() {
                bail!(
                    "--cert-dir {} is not a directory; give the directory that holds ca.crt",
                    d.display()
                );
            }
            vec![d.to_path_buf()]
        }
        None => ["/etc/containers/certs.d", "/etc/docker/certs.d"]
            .iter()
            .map(|base| Path::new(base).join(host))
            .filter(|d| d.is_dir())
            .collect(),
    };
    let mut certs = Vec::new();
    for dir in dirs {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "crt") {
                certs.push(Certificate {
                    encoding: CertificateEncoding::Pem,
                    data: std::fs::read(&path)
                        .with_context(|| format!("reading {}", path.display()))?,
                });
            }
        }
    }
    Ok(certs)
}

/// `--creds`, else the first credential file that has the registry: `REGISTRY_AUTH_FILE` (or
/// podman's `$XDG_RUNTIME_DIR/containers/auth.json`), then docker's `config.json` (with its
/// credential helpers); else anonymous.
fn credentials(reference: &Reference, access: &Access) -> Result<RegistryAuth> {
    if let Some((user, password)) = &access.creds {
        return Ok(RegistryAuth::Basic(user.clone(), password.clone()));
    }
    let registry = reference.resolve_registry();
    // Docker Hub's key in credential files is its old v1 address.
    let keys: Vec<String> = match registry {
        "index.docker.io" | "docker.io" | "registry-1.docker.io" => {
            vec![
                "https://index.docker.io/v1/".into(),
                "docker.io".into(),
                "index.docker.io".into(),
            ]
        }
        r => vec![r.to_string()],
    };
    let auth_file = std::env::var_os("REGISTRY_AUTH_FILE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_RUNTIME_DIR").map(|d| Path::new(&d).join("containers/auth.json"))
        });
    let to_auth = |c: docker_credential::DockerCredential| match c {
        docker_credential::DockerCredential::UsernamePassword(u, p) => RegistryAuth::Basic(u, p),
        docker_credential::DockerCredential::IdentityToken(t) => RegistryAuth::Bearer(t),
    };
    if let Some(file) = auth_file.filter(|f| f.is_file()) {
        for key in &keys {
            let reader = std::fs::File::open(&file)
                .with_context(|| format!("opening {}", file.display()))?;
            if let Ok(c) = docker_credential::get_credential_from_reader(reader, key) {
                log::info!("credentials for {registry} from {}", file.display());
                return Ok(to_auth(c));
            }
        }
    }
    for key in &keys {
        if let Ok(c) = docker_credential::get_credential(key) {
            log::info!("credentials for {registry} from docker's config.json");
            return Ok(to_auth(c));
        }
    }
    Ok(RegistryAuth::Anonymous)
}

/// A registry's refusal, said as what to do.
fn explain(e: OciDistributionError, reference: &Reference, auth: &RegistryAuth) -> anyhow::Error {
    let registry = reference.resolve_registry();
    let text = error_chain(&e);
    match refusal(&e) {
        Refusal::Credentials => match auth {
            RegistryAuth::Anonymous => anyhow!("registry {registry} needs credentials for {reference} ({text}): give --creds USER (the password on stdin), or log in (`docker login {registry}`)"),
            _ => anyhow!("registry {registry} refused the credentials for {reference} ({text}): check --creds, REGISTRY_AUTH_FILE or `docker login {registry}`"),
        },
        Refusal::NoImage => anyhow!(
            "registry {registry} has no image {reference} ({text}); check the name and tag"
        ),
        Refusal::Other => anyhow!("reading {reference} from registry {registry} failed: {text}"),
    }
}

/// What a registry's error means for the user.
#[derive(Debug)]
enum Refusal {
    /// Who asks is not let in: no credentials, wrong ones, or not enough rights.
    Credentials,
    /// No such repository, tag or digest.
    NoImage,
    /// Anything else: quoted as it is.
    Other,
}

/// Sorts an error by its kind: the HTTP status oci-client kept, or the registry's own error
/// codes (the OCI distribution spec's `{"errors":[{"code":…}]}`).
fn refusal(e: &OciDistributionError) -> Refusal {
    use oci_client::errors::OciErrorCode as Code;
    let status = |code: u16| match code {
        401 | 403 => Refusal::Credentials,
        404 => Refusal::NoImage,
        _ => Refusal::Other,
    };
    match e {
        // A 401 answer, or the token server turning the credentials down.
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => Refusal::Credentials,
        OciDistributionError::ImageManifestNotFoundError(_) => Refusal::NoImage,
        OciDistributionError::ServerError { code, .. } => status(*code),
        OciDistributionError::RequestError(e) => {
            e.status().map_or(Refusal::Other, |s| status(s.as_u16()))
        }
        OciDistributionError::RegistryError { envelope, .. } => {
            let has = |wanted: &[Code]| envelope.errors.iter().any(|e| wanted.contains(&e.code));
            if has(&[Code::Unauthorized, Code::Denied]) {
                Refusal::Credentials
            } else if has(&[Code::NameUnknown, Code::ManifestUnknown, Code::NotFound]) {
                Refusal::NoImage
            } else {
                Refusal::Other
            }
        }
        _ => Refusal::Other,
    }
}

struct RegistryFetch(Arc<Registry>);

impl Fetch for RegistryFetch {
    fn manifest(&self, digest: &str) -> Result<Vec<u8>> {
        let r = &self.0;
        let by_digest = r.reference.clone_with_digest(digest.to_string());
        let (json, _) = r
            .runtime
            .block_on(r.client.pull_manifest_raw(
                &by_digest,
                &RegistryAuth::Anonymous,
                MANIFEST_TYPES,
            ))
            .map_err(|e| explain(e, &by_digest, &RegistryAuth::Anonymous))?;
        oci::verify(
            &json,
            digest,
            &format!("the manifest {digest} of {}", r.name),
        )?;
        Ok(json.to_vec())
    }

    fn blob(&self, digest: &str) -> Result<Vec<u8>> {
        let mut data = Vec::new();
        BlobStore::open(self.0.as_ref(), digest)?
            .take(JSON_LIMIT + 1)
            .read_to_end(&mut data)
            .with_context(|| format!("reading {digest} from {}", self.0.name))?;
        if data.len() as u64 > JSON_LIMIT {
            bail!(
                "{digest} of {} is too large to be an image config",
                self.0.name
            );
        }
        oci::verify(
            &data,
            digest,
            &format!("the config {digest} of {}", self.0.name),
        )?;
        Ok(data)
    }

    fn store(&self) -> Arc<dyn BlobStore> {
        self.0.clone()
    }

    fn layer_location(&self, digest: &str) -> String {
        digest.to_string()
    }
}

impl BlobStore for Registry {
    /// A blob as a blocking reader: a task streams it over a bounded channel (the stream edit
    /// and the merge are synchronous).
    fn open(&self, digest: &str) -> Result<Box<dyn Read + Send>> {
        let stream = self
            .runtime
            .block_on(self.client.pull_blob_stream(&self.reference, digest))
            .map_err(|e| explain(e, &self.reference, &RegistryAuth::Anonymous))
            .with_context(|| format!("downloading {digest}"))?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<std::io::Result<bytes::Bytes>>(16);
        let mut stream = stream.stream;
        self.runtime.spawn(async move {
            while let Some(chunk) = stream.next().await {
                let chunk =
                    chunk.map_err(|e| std::io::Error::other(format!("the download failed: {e}")));
                let failed = chunk.is_err();
                if tx.send(chunk).is_err() || failed {
                    break;
                }
            }
        });
        Ok(Box::new(super::ChannelReader::new(rx)))
    }

    fn name(&self) -> String {
        self.name.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_client::errors::{OciEnvelope, OciError, OciErrorCode};

    #[test]
    fn plain_http_is_for_loopback_hosts_only() {
        assert!(is_loopback("localhost:5000"));
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("127.8.9.1"));
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("registry.example:5000"));
        assert!(!is_loopback("10.0.0.1:5000"));
    }

    const URL: &str = "https://registry.example/v2/team/app/manifests/1";

    /// `explain`'s message for `e`, reading `docker://registry.example/team/app:1`.
    fn said(e: OciDistributionError, auth: &RegistryAuth) -> String {
        let reference: Reference = "registry.example/team/app:1".parse().unwrap();
        explain(e, &reference, auth).to_string()
    }

    fn registry_error<const N: usize>(codes: [OciErrorCode; N]) -> OciDistributionError {
        let errors = codes
            .into_iter()
            .map(|code| OciError {
                code,
                message: "from the registry".into(),
                detail: serde_json::Value::Null,
            })
            .collect();
        OciDistributionError::RegistryError {
            envelope: OciEnvelope { errors },
            url: URL.into(),
        }
    }

    fn server_error(code: u16, message: &str) -> OciDistributionError {
        OciDistributionError::ServerError {
            code,
            url: URL.into(),
            message: message.into(),
        }
    }

    #[test]
    fn a_refusal_is_told_by_its_kind_and_the_credentials_given() {
        let anonymous = RegistryAuth::Anonymous;
        let basic = RegistryAuth::Basic("u".into(), "p".into());
        let unauthorized = || OciDistributionError::UnauthorizedError { url: URL.into() };
        let needs = "registry registry.example needs credentials for registry.example/team/app:1";
        let refused = "registry registry.example refused the credentials for";
        assert!(said(unauthorized(), &anonymous).starts_with(needs));
        assert!(said(unauthorized(), &anonymous).contains("--creds USER"));
        assert!(said(unauthorized(), &basic).starts_with(refused));
        let token = OciDistributionError::AuthenticationFailure("bad password".into());
        assert!(said(token, &basic).starts_with(refused));
        for code in [OciErrorCode::Unauthorized, OciErrorCode::Denied] {
            assert!(said(registry_error([code]), &anonymous).starts_with(needs));
        }
        for code in [401, 403] {
            assert!(said(server_error(code, ""), &basic).starts_with(refused));
        }
        // Rights come first: registries hide what one may not see, so a denial with a missing
        // name is about the credentials.
        let both = registry_error([OciErrorCode::NameUnknown, OciErrorCode::Denied]);
        assert!(said(both, &basic).starts_with(refused));
    }

    #[test]
    fn a_missing_image_is_told_by_the_registry_error_code_or_a_404() {
        let anonymous = RegistryAuth::Anonymous;
        let none = "registry registry.example has no image registry.example/team/app:1";
        for code in [
            OciErrorCode::NameUnknown,
            OciErrorCode::ManifestUnknown,
            OciErrorCode::NotFound,
        ] {
            let message = said(registry_error([code]), &anonymous);
            assert!(message.starts_with(none), "{message}");
            assert!(message.ends_with("check the name and tag"), "{message}");
        }
        assert!(said(server_error(404, "not here"), &anonymous).starts_with(none));
        let index = OciDistributionError::ImageManifestNotFoundError("no such platform".into());
        assert!(said(index, &anonymous).starts_with(none));
    }

    #[test]
    fn other_errors_are_quoted_whatever_words_they_hold() {
        let anonymous = RegistryAuth::Anonymous;
        let failed = "reading registry.example/team/app:1 from registry registry.example failed: ";
        // The words the text matching used to look for, in errors that mean something else.
        for e in [
            server_error(
                500,
                "permission denied: 401 authentication backend not found",
            ),
            server_error(502, "bad gateway"),
            registry_error([OciErrorCode::Toomanyrequests]),
            registry_error([OciErrorCode::BlobUnknown]),
            registry_error([OciErrorCode::Other("ACCESS_DENIED_404".into())]),
            OciDistributionError::GenericError(Some("authentication not found".into())),
        ] {
            let message = said(e, &anonymous);
            assert!(message.starts_with(failed), "{message}");
        }
    }

    /// A self-signed certificate (and its key) for 127.0.0.1 and localhost, valid until 2126,
    /// which no trust store holds: made for these tests with `openssl req -x509 -newkey ec`.
    const UNTRUSTED_CERT: &str = "\
-----BEGIN CERTIFICATE-----\n\
MIIBmzCCAUGgAwIBAgIUat/gF9jV2PJ0PZ+/BaJRarPz4tUwCgYIKoZIzj0EAwIw\n\
FDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTI2MTIwMjE0MTkyNloYDzIxMjYxMTA4\n\
MTQxOTI2WjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjO\n\
PQMBBwNCAASWJOAkXWtfeS+6pLSB7f1v53WnNLEOOEQPGUy9pW/MJ+mjuVQKIu1t\n\
bnlG2+6tdmOuiN/oKHiYqHAweyU4HQgVo28wbTAdBgNVHQ4EFgQU93DUNqoYn0PW\n\
lokQ3ijHV3xHeKEwHwYDVR0jBBgwFoAU93DUNqoYn0PWlokQ3ijHV3xHeKEwDwYD\n\
VR0TAQH/BAUwAwEB/zAaBgNVHREEEzARhwR/AAABgglsb2NhbGhvc3QwCgYIKoZI\n\
zj0EAwIDSAAwRQIgEz+PsHZYGcI0AXoGzKjWqUIiWoM36nWLp6lXMKBm5IwCIQDd\n\
x15MD5yP7xiEn6B5ebnxm49vJULlWo2WoYda9wdEBA==\n\
-----END CERTIFICATE-----\n\
";
    const UNTRUSTED_KEY: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg8EBQPhZf2tMBoiwX\n\
DLAjXkhWQ27tKrlq0xNqHYbsbkahRANCAASWJOAkXWtfeS+6pLSB7f1v53WnNLEO\n\
OEQPGUy9pW/MJ+mjuVQKIu1tbnlG2+6tdmOuiN/oKHiYqHAweyU4HQgV\n\
-----END PRIVATE KEY-----\n\
";

    /// A TLS server on 127.0.0.1 that shows `UNTRUSTED_CERT` to every client; its address.
    fn untrusted_tls_server() -> String {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from_pem_slice(UNTRUSTED_CERT.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(UNTRUSTED_KEY.as_bytes()).unwrap(),
            )
            .unwrap();
        let config = Arc::new(config);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let host = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                let mut tls = rustls::ServerConnection::new(config.clone()).unwrap();
                // Until the client hangs up on the certificate (or speaks no TLS).
                while tls.is_handshaking() && tls.complete_io(&mut stream).is_ok() {}
            }
        });
        host
    }

    #[test]
    fn an_untrusted_certificate_is_found_by_its_type_in_the_error_sources() {
        let host = untrusted_tls_server();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = reqwest::Client::builder().build().unwrap();
        let get = |url: String| runtime.block_on(client.get(url).send()).unwrap_err();
        let e = get(format!("https://{host}/v2/"));
        assert!(certificate_rejected(&e), "{}", error_chain(&e));
        // Nothing listening: a connection error, not a certificate.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let e = get(format!("https://{closed}/v2/"));
        assert!(!certificate_rejected(&e), "{}", error_chain(&e));
        // The probe says what to do (loopback: it tries plain HTTP too, which fails here).
        let said = runtime.block_on(probe(&host, &[], false)).unwrap_err();
        let said = said.to_string();
        assert!(
            said.starts_with(&format!(
                "the TLS certificate of registry {host} is not trusted"
            )),
            "{said}"
        );
        assert!(said.contains("--cert-dir DIR"), "{said}");
    }
}
