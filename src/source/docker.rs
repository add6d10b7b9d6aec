//! Images from the Docker Engine API (crate `bollard`), connecting the way the docker CLI does
//! (`DOCKER_HOST`, else the local socket). Pulls with per-layer progress, reads the image's config
//! and `/etc/os-release` without running it, builds images from in-memory contexts, and streams
//! `export` straight into the unpacker. Every container c2vm creates is removed again, on success,
//! error and Ctrl-C alike.
use super::{ImageDetails, PullPolicy};
use crate::arch::Arch;
use crate::image::ImageConfig;
use crate::progress::{ProgressReader, Stage};
use anyhow::{anyhow, bail, Context, Result};
use bollard::query_parameters as q;
use bollard::Docker;
use futures_util::{Stream, StreamExt};
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::time::Duration;

/// A connection to a Docker Engine API (Docker or Podman), made once per command.
pub struct Engine {
    docker: Docker,
    runtime: tokio::runtime::Runtime,
    address: String,
}

/// Poll a stream, giving up with `Interrupted` when the user presses Ctrl-C.
async fn next_or_interrupt<S: Stream + Unpin>(stream: &mut S) -> Result<Option<S::Item>> {
    loop {
        crate::interrupt::check()?;
        if let Ok(item) = tokio::time::timeout(Duration::from_millis(200), stream.next()).await {
            return Ok(item);
        }
    }
}

/// The oldest Engine API c2vm uses (Docker 19.03): platform-aware pulls and builds.
const MIN_API: (u32, u32) = (1, 40);

fn parse_api(text: &str) -> Option<(u32, u32)> {
    let (major, minor) = text.trim().split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// Versions are negotiated down, never up: a daemon too old for c2vm, or one whose oldest
/// accepted API is newer than c2vm speaks, is named with what to upgrade.
fn check_api_version(address: &str, version: &bollard::models::SystemVersion) -> Result<()> {
    let engine = version.version.as_deref().unwrap_or("unknown");
    let api = version.api_version.as_deref().unwrap_or("");
    let Some(server_max) = parse_api(api) else {
        bail!("the Docker daemon at {address} (version {engine}) reports no usable API version ({api:?}); is it a Docker Engine?");
    };
    if server_max < MIN_API {
        bail!(
            "the Docker daemon at {address} is Docker {engine} with API {api}; c2vm needs API {}.{} (Docker 19.03) or newer: upgrade Docker",
            MIN_API.0,
            MIN_API.1
        );
    }
    let client = bollard::API_DEFAULT_VERSION;
    let client = (client.major_version as u32, client.minor_version as u32);
    if let Some(server_min) = version.min_api_version.as_deref().and_then(parse_api) {
        if server_min > client {
            bail!(
                "the Docker daemon at {address} (Docker {engine}) accepts API {}.{} and newer only, and this c2vm speaks up to {}.{}: upgrade c2vm, or use an older daemon",
                server_min.0,
                server_min.1,
                client.0,
                client.1
            );
        }
    }
    Ok(())
}

fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

impl Engine {
    /// Connect to `DOCKER_HOST` (or the default socket) and agree on an API version.
    pub fn connect() -> Result<Engine> {
        let address = std::env::var("DOCKER_HOST")
            .unwrap_or_else(|_| "unix:///var/run/docker.sock".to_string());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        let how_to_start = "start one (`sudo systemctl start docker`, or `podman system service`) and point DOCKER_HOST at it, or convert with no engine from oci:, oci-archive:, docker-archive: or docker://";
        let docker = Docker::connect_with_defaults().map_err(|e| {
            anyhow!("no Docker or Podman engine answers at {address} ({e}); {how_to_start}")
        })?;
        let version = runtime
            .block_on(async {
                tokio::time::timeout(Duration::from_secs(15), docker.version())
                    .await?
                    .map_err(anyhow::Error::from)
            })
            .map_err(|e| {
                anyhow!("no Docker or Podman engine answers at {address} ({e}); {how_to_start}")
            })?;
        check_api_version(&address, &version)?;
        let docker = runtime
            .block_on(async {
                let docker =
                    tokio::time::timeout(Duration::from_secs(15), docker.negotiate_version())
                        .await??;
                tokio::time::timeout(Duration::from_secs(15), docker.ping()).await??;
                Ok::<_, anyhow::Error>(docker)
            })
            .map_err(|e| anyhow!("the engine at {address} answered, then failed: {e}"))?;
        log::debug!(
            "connected to Docker at {address}, API {:?}",
            docker.client_version()
        );
        Ok(Engine {
            docker,
            runtime,
            address,
        })
    }

    /// Inspect `reference`, pulling it first as `policy` says. `platform` (`--platform`): an
    /// image of another architecture under that name counts as missing, as with `docker pull
    /// --platform`; pulls without it take the host's.
    pub fn ensure_image(
        &self,
        reference: &str,
        policy: PullPolicy,
        platform: Option<Arch>,
    ) -> Result<ImageDetails> {
        let local = self.inspect(reference)?.filter(|found| {
            policy == PullPolicy::Never
                || platform.is_none_or(|p| Arch::from_oci(&found.architecture) == Some(p))
        });
        let platform = platform.unwrap_or_else(Arch::host_or_default).platform();
        match (policy, local) {
            (PullPolicy::Never, None) => bail!(
                "image {reference} is not in the engine at {} and --pull never forbids pulling it; pull or build it first",
                self.address
            ),
            (PullPolicy::Missing, Some(found)) | (PullPolicy::Never, Some(found)) => Ok(found),
            _ => {
                self.pull(reference, &platform)?;
                self.inspect(reference)?
                    .ok_or_else(|| anyhow!("image {reference} was pulled but the daemon does not show it"))
            }
        }
    }

    pub fn inspect(&self, reference: &str) -> Result<Option<ImageDetails>> {
        let result = self.runtime.block_on(self.docker.inspect_image(reference));
        let inspect = match result {
            Ok(i) => i,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("inspecting image {reference}")),
        };
        let config = inspect.config.unwrap_or_default();
        let sorted = |mut v: Vec<String>| {
            v.sort(); // the API's maps come in no fixed order
            v
        };
        Ok(Some(ImageDetails {
            id: inspect.id.unwrap_or_default(),
            os: inspect.os.unwrap_or_default(),
            architecture: inspect.architecture.unwrap_or_default(),
            size: inspect.size.unwrap_or(0).max(0) as u64,
            diff_ids: inspect.root_fs.and_then(|r| r.layers).unwrap_or_default(),
            config: ImageConfig {
                env: config.env.unwrap_or_default(),
                entrypoint: config.entrypoint.unwrap_or_default(),
                cmd: config.cmd.unwrap_or_default(),
                user: config.user.unwrap_or_default(),
                working_dir: config.working_dir.unwrap_or_default(),
                exposed_ports: sorted(config.exposed_ports.unwrap_or_default()),
                volumes: sorted(config.volumes.unwrap_or_default()),
                stop_signal: config.stop_signal.unwrap_or_default(),
            },
        }))
    }

    /// Pull with a bar that sums every layer's download.
    fn pull(&self, reference: &str, platform: &str) -> Result<()> {
        let stage = Stage::bytes(&format!("Pulling {reference}"), 0);
        let options = q::CreateImageOptionsBuilder::default()
            .from_image(reference)
            .platform(platform)
            .build();
        self.runtime.block_on(async {
            let mut stream = self.docker.create_image(Some(options), None, None);
            let mut layers: HashMap<String, (u64, u64)> = HashMap::new();
            while let Some(item) = next_or_interrupt(&mut stream).await? {
                let info = item.map_err(|e| anyhow!("pulling {reference} failed: {e}; check the name, your network and registry login (`docker login`)"))?;
                if let Some(detail) = info.error_detail {
                    bail!("pulling {reference} failed: {}", detail.message.unwrap_or_default());
                }
                if let (Some(id), Some(p)) = (info.id, info.progress_detail) {
                    if let (Some(cur), Some(total)) = (p.current, p.total) {
                        if info.status.as_deref() == Some("Downloading") {
                            layers.insert(id, (cur.max(0) as u64, total.max(0) as u64));
                            stage.set_length(layers.values().map(|l| l.1).sum());
                            stage.set_position(layers.values().map(|l| l.0).sum());
                        }
                    }
                }
            }
            Ok(())
        })?;
        stage.done();
        Ok(())
    }

    /// Create (never start) a container of `image`; removed when the guard drops.
    pub fn create_container(&self, image: &str) -> Result<ContainerGuard<'_>> {
        let body = bollard::models::ContainerCreateBody {
            image: Some(image.to_string()),
            // Images without CMD cannot be created without one; it is never run.
            cmd: Some(vec!["/c2vm-never-runs".to_string()]),
            entrypoint: Some(vec![]),
            network_disabled: Some(true),
            ..Default::default()
        };
        let created = self
            .runtime
            .block_on(self.docker.create_container(None, body))
            .with_context(|| format!("creating a container of {image}"))?;
        Ok(ContainerGuard {
            engine: self,
            id: created.id,
        })
    }

    /// Read one file of an image through the archive endpoint, following symlinks
    /// (`/etc/os-release -> ../usr/lib/os-release`). `None` if it does not exist.
    pub fn read_file(&self, container: &ContainerGuard, path: &str) -> Result<Option<Vec<u8>>> {
        match self.resolve(container, path)? {
            Some(path) => self.download(container, &path, None).map(Some),
            None => Ok(None),
        }
    }

    /// The first `len` bytes (fewer if the file is shorter) of one file of an image, as
    /// [`Engine::read_file`]; only the start of the archive is read.
    pub fn read_head(
        &self,
        container: &ContainerGuard,
        path: &str,
        len: usize,
    ) -> Result<Option<Vec<u8>>> {
        match self.resolve(container, path)? {
            Some(path) => self.download(container, &path, Some(len)).map(Some),
            None => Ok(None),
        }
    }

    /// `path` with its symlinks followed, as the engine resolves them in the image; `None` if
    /// it does not exist.
    fn resolve(&self, container: &ContainerGuard, path: &str) -> Result<Option<String>> {
        let mut path = path.to_string();
        for _ in 0..8 {
            let options = q::ContainerArchiveInfoOptionsBuilder::default()
                .path(&path)
                .build();
            let info = match self.runtime.block_on(
                self.docker
                    .get_container_archive_info(&container.id, Some(options)),
            ) {
                Ok(i) => i,
                Err(e) if is_not_found(&e) => return Ok(None),
                Err(e) => return Err(e).with_context(|| format!("looking up {path} in the image")),
            };
            // Follow symlinks only, by Go's `os.ModeSymlink` bit in the mode: Podman fills
            // `linkTarget` for every path (a regular file's is its own path), Docker for links
            // only. Both give the target resolved and absolute.
            const GO_MODE_SYMLINK: u32 = 1 << 27;
            if info.file_mode & GO_MODE_SYMLINK != 0 && !info.link_target.is_empty() {
                let target = Path::new(&path)
                    .parent()
                    .unwrap_or(Path::new("/"))
                    .join(&info.link_target);
                path = target.to_string_lossy().into_owned();
                continue;
            }
            return Ok(Some(path));
        }
        bail!("too many symlinks while reading {path} from the image")
    }

    /// The file at `path` (no symlink), whole or its first `limit` bytes.
    fn download(
        &self,
        container: &ContainerGuard,
        path: &str,
        limit: Option<usize>,
    ) -> Result<Vec<u8>> {
        // The archive's headers (a PAX or GNU long name, then the file's own) come first.
        const HEADERS: usize = 8 * 1024;
        let enough = limit.map(|l| l + HEADERS);
        let options = q::DownloadFromContainerOptionsBuilder::default()
            .path(path)
            .build();
        let bytes = self.runtime.block_on(async {
            let mut stream = self
                .docker
                .download_from_container(&container.id, Some(options));
            let mut all = Vec::new();
            while let Some(chunk) = next_or_interrupt(&mut stream).await? {
                all.extend_from_slice(
                    &chunk.with_context(|| format!("reading {path} from the image"))?,
                );
                if enough.is_some_and(|e| all.len() >= e) {
                    break; // dropping the stream ends the download
                }
            }
            Ok::<_, anyhow::Error>(all)
        })?;
        let mut archive = tar::Archive::new(bytes.as_slice());
        let mut entries = archive
            .entries()
            .context("reading the archive Docker sent")?;
        let entry = entries
            .next()
            .context("Docker sent an empty archive")?
            .context("reading the archive Docker sent")?;
        let mut data = Vec::new();
        let limit = limit.map_or(u64::MAX, |l| l as u64);
        entry
            .take(limit)
            .read_to_end(&mut data)
            .with_context(|| format!("reading {path} from the archive Docker sent"))?;
        Ok(data)
    }

    /// Build an image from a Dockerfile and an in-memory context, tagged `tag`; for `platform`
    /// where given (another architecture's build runs under the host's binfmt_misc emulation).
    pub fn build(
        &self,
        context_tar: Vec<u8>,
        dockerfile: &str,
        tag: &str,
        build_args: &HashMap<String, String>,
        platform: Option<Arch>,
        label: &str,
    ) -> Result<()> {
        let stage = Stage::spinner(label);
        let mut options = q::BuildImageOptionsBuilder::default()
            .dockerfile(dockerfile)
            .t(tag)
            .rm(true)
            // Without forcerm a failed build leaves its intermediate container behind.
            .forcerm(true)
            .buildargs(build_args);
        if let Some(arch) = platform {
            options = options.platform(&arch.platform());
        }
        let options = options.build();
        let verbose = log::log_enabled!(log::Level::Debug);
        let mut log = BuildLog::default();
        self.runtime.block_on(async {
            let body = bollard::body_full(context_tar.into());
            let mut stream = self.docker.build_image(options, None, Some(body));
            // Whether the daemon has said the image exists (its ID, then "Successfully tagged").
            let mut built = false;
            while let Some(item) = next_or_interrupt(&mut stream).await? {
                let info = match item {
                    Ok(i) => i,
                    // The daemon's reply sometimes ends in a fragment that the JSON-lines
                    // decoder refuses ("bytes remaining on stream") after a complete build:
                    // what counts then is whether the image is there (checked below).
                    Err(e) if built => {
                        log::debug!("{label}: the build's output ended badly after success: {e}");
                        break;
                    }
                    // Docker's stream error for a failed RUN repeats the whole command, as its
                    // error detail does: both say the step, its status and its own last words.
                    Err(e) => bail!(
                        "{label} failed{}: {}{}",
                        log.step(),
                        exit_status(&e.to_string()),
                        log.cause()
                    ),
                };
                built |= info.aux.is_some();
                if let Some(text) = info.stream {
                    built |= text.starts_with("Successfully tagged");
                    for line in text.lines().filter(|l| !l.trim().is_empty()) {
                        if verbose {
                            stage.println(line);
                        }
                        let line = log.push(line);
                        stage.message(line.chars().take(70).collect::<String>().as_str());
                    }
                }
                if let Some(detail) = info.error_detail {
                    bail!(
                        "{label} failed{}: {}{}",
                        log.step(),
                        exit_status(&detail.message.unwrap_or_default()),
                        log.cause()
                    );
                }
            }
            Ok::<_, anyhow::Error>(())
        })?;
        if self.inspect(tag)?.is_none() {
            bail!("{label} ended without an image tagged {tag}{}", log.cause());
        }
        stage.done();
        Ok(())
    }

    /// `c2vm build`: build the Dockerfile in `context` (a directory) with `build_args`
    /// (`KEY=VALUE`); returns the tag of the result, named after the context's hash.
    pub fn build_dir(
        &self,
        context: &Path,
        dockerfile: Option<&Path>,
        build_args: &[String],
        platform: Option<Arch>,
    ) -> Result<String> {
        let mut args = HashMap::new();
        for kv in build_args {
            let (k, v) = kv
                .split_once('=')
                .with_context(|| format!("--build-arg {kv}: expected KEY=VALUE"))?;
            args.insert(k.to_string(), v.to_string());
        }
        let dockerfile = dockerfile.unwrap_or(Path::new("Dockerfile"));
        if !context.join(dockerfile).is_file() {
            bail!(
                "{} does not exist; give the Dockerfile with -f (relative to the context)",
                context.join(dockerfile).display()
            );
        }
        let tar = context_from_dir(context)?;
        use sha2::Digest;
        let digest = sha2::Sha256::digest(&tar);
        let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
        let tag = match platform {
            Some(arch) => format!("c2vm-build:{hex}-{arch}"),
            None => format!("c2vm-build:{hex}"),
        };
        self.build(
            tar,
            &dockerfile.to_string_lossy(),
            &tag,
            &args,
            platform,
            &format!("Building {}", context.display()),
        )?;
        Ok(tag)
    }

    /// `docker export` of a container of `image`, as a stream (no tar file on disk). The
    /// container is removed by [`ExportStream::finish`], or when the stream is dropped.
    pub fn export(&self, image: &ImageDetails) -> Result<ExportStream<'_>> {
        let container = self.create_container(&image.id)?;
        let stage = Stage::bytes("Exporting the image into the disk", image.size);
        let (tx, rx) = std::sync::mpsc::sync_channel::<std::io::Result<bytes::Bytes>>(64);
        let docker = self.docker.clone();
        let id = container.id.clone();
        let pump = self.runtime.spawn(async move {
            let mut stream = docker.export_container(&id);
            while let Some(chunk) = stream.next().await {
                let item =
                    chunk.map_err(|e| std::io::Error::other(format!("Docker export failed: {e}")));
                let failed = item.is_err();
                if tx.send(item).is_err() || failed {
                    break; // the reader stopped (error or Ctrl-C)
                }
            }
        });
        let reader = super::ChannelReader::new(rx);
        Ok(ExportStream {
            reader: std::io::BufReader::with_capacity(1 << 20, stage.reader(reader)),
            stage,
            _pump: AbortOnDrop(pump),
            container,
        })
    }

    /// `docker load` of the image archive at `path` (what `docker save` writes), streamed.
    pub fn load(&self, path: &Path, what: &str) -> Result<()> {
        let file =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let stage = Stage::spinner(&format!("Loading {what} into the engine"));
        let options = q::ImportImageOptionsBuilder::default().quiet(true).build();
        self.runtime.block_on(async {
            let body = tokio_util::io::ReaderStream::with_capacity(
                tokio::fs::File::from_std(file),
                1 << 20,
            );
            let mut stream = self.docker.import_image_stream(options, body, None);
            while let Some(item) = next_or_interrupt(&mut stream).await? {
                let info =
                    item.map_err(|e| anyhow!("loading {what} into the engine failed: {e}"))?;
                if let Some(detail) = info.error_detail {
                    bail!(
                        "loading {what} into the engine failed: {}",
                        detail.message.unwrap_or_default()
                    );
                }
            }
            Ok(())
        })?;
        stage.done();
        Ok(())
    }

    pub fn remove_container(&self, id: &str) -> Result<()> {
        let options = q::RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match self
            .runtime
            .block_on(self.docker.remove_container(id, Some(options)))
        {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing container {id}")),
        }
    }
}

/// A container c2vm created; removed on drop (errors and Ctrl-C included).
pub struct ContainerGuard<'a> {
    engine: &'a Engine,
    pub id: String,
}

impl ContainerGuard<'_> {
    /// Remove now, reporting failure.
    pub fn remove(mut self) -> Result<()> {
        let id = std::mem::take(&mut self.id);
        self.engine.remove_container(&id)
    }
}

impl Drop for ContainerGuard<'_> {
    fn drop(&mut self) {
        if !self.id.is_empty() {
            if let Err(e) = self.engine.remove_container(&self.id) {
                log::warn!("could not remove container {}: {e:#}", self.id);
            }
        }
    }
}

/// The tar stream of an export; holds the container until finished.
pub struct ExportStream<'a> {
    reader: std::io::BufReader<ProgressReader<super::ChannelReader>>,
    stage: Stage,
    _pump: AbortOnDrop,
    container: ContainerGuard<'a>,
}

impl super::TarStream for ExportStream<'_> {
    /// The whole stream was read: end the progress line and remove the container.
    fn finish(self: Box<Self>) -> Result<()> {
        self.stage.done();
        self.container.remove()
    }
}

impl Read for ExportStream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.reader.read(buf)
    }
}

/// Stops the export task when the stream goes away early (an unpack error or Ctrl-C).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A build's output, kept to say in one line why it failed: the step that failed and its own
/// last error lines (apt's `E:` lines where there are some), free of terminal escapes and of
/// the builder's bookkeeping. The whole output is shown live with `-v`.
#[derive(Default)]
struct BuildLog {
    /// `RUN …` of the step running now, shortened.
    step: Option<String>,
    /// That step's output lines.
    lines: Vec<String>,
}

impl BuildLog {
    /// Keeps a line (cleaned) and returns it.
    fn push(&mut self, raw: &str) -> String {
        let line = strip_escapes(raw).trim_end().to_string();
        // Docker's classic builder says `Step 2/3 : RUN …`, Podman's `STEP 2/3: RUN …`.
        let step = line
            .strip_prefix("Step ")
            .or_else(|| line.strip_prefix("STEP "))
            .and_then(|rest| rest.split_once(':'))
            .filter(|(count, _)| count.trim().contains('/'))
            .map(|(_, instruction)| instruction.trim());
        if let Some(instruction) = step {
            let instruction = instruction.split_whitespace().collect::<Vec<_>>().join(" ");
            let mut short: String = instruction.chars().take(60).collect();
            if short.len() < instruction.len() {
                short.push('…');
            }
            self.step = Some(short);
            self.lines.clear();
        } else if !is_builder_bookkeeping(&line) {
            self.lines.push(line.clone());
            if self.lines.len() > 200 {
                self.lines.remove(0);
            }
        }
        line
    }

    /// ` at RUN …`, or nothing before the first step.
    fn step(&self) -> String {
        self.step
            .as_ref()
            .map(|s| format!(" at `{s}`"))
            .unwrap_or_default()
    }

    /// `; apt said: E: …`, or the step's last lines; nothing when it printed none.
    fn cause(&self) -> String {
        let errors: Vec<&str> = self
            .lines
            .iter()
            .map(String::as_str)
            .filter(|l| l.starts_with("E: "))
            .collect();
        let quoted: Vec<&str> = match errors.is_empty() {
            false => errors.into_iter().rev().take(2).rev().collect(),
            true => {
                let n = self.lines.len();
                self.lines[n.saturating_sub(3)..]
                    .iter()
                    .map(String::as_str)
                    .collect()
            }
        };
        match quoted.is_empty() {
            true => String::new(),
            false => format!("; it said: {}", quoted.join(" | ")),
        }
    }
}

/// The builder's own lines, which say nothing about the failure.
fn is_builder_bookkeeping(line: &str) -> bool {
    let line = line.trim();
    line.is_empty()
        || line.starts_with("---> ")
        || line.starts_with("Removing intermediate container")
        || line.starts_with("Running in ")
        || line.starts_with("Successfully ")
}

/// The daemon's message for a failed RUN repeats the whole command: keep its exit status.
fn exit_status(message: &str) -> String {
    match message.rsplit_once("returned a non-zero code: ") {
        Some((_, code)) => format!("exit status {}", code.trim()),
        None => strip_escapes(message)
            .lines()
            .next()
            .unwrap_or("")
            .to_string(),
    }
}

/// Terminal escapes (colours, cursor moves) and carriage returns out of a line.
fn strip_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                // CSI: ESC [ parameters… final byte (a letter).
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for c in chars.by_ref() {
                        if c.is_ascii_alphabetic() {
                            break;
                        }
                    }
                }
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// A tar of in-memory files (name, text), the build context for a rendered Dockerfile.
pub fn context_of_files(files: &[(&str, &str)]) -> Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, text) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(text.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_cksum();
        builder.append_data(&mut header, name, text.as_bytes())?;
    }
    Ok(builder.into_inner()?)
}

/// A tar of a build context directory (symlinks kept as symlinks).
pub fn context_from_dir(dir: &Path) -> Result<Vec<u8>> {
    if !dir.is_dir() {
        bail!("the build context {} is not a directory", dir.display());
    }
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    // Files with holes (a linker's output often has them) as plain files: dockerd refuses GNU
    // sparse entries ("unhandled tar header type 83"), and the docker CLI never writes them.
    builder.sparse(false);
    builder
        .append_dir_all(".", dir)
        .with_context(|| format!("packing the build context {}", dir.display()))?;
    Ok(builder.into_inner()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_context_with_a_sparse_file_packs_it_as_a_plain_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::File::create(dir.path().join("app")).unwrap();
        file.set_len(1 << 20).unwrap(); // all hole
        std::io::Write::write_all(&mut &file, b"ELF").unwrap();
        drop(file);
        let tar = context_from_dir(dir.path()).unwrap();
        let mut archive = tar::Archive::new(tar.as_slice());
        let kinds: Vec<(String, tar::EntryType, u64)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let name = e.path().unwrap().display().to_string();
                (name, e.header().entry_type(), e.header().size().unwrap())
            })
            .collect();
        assert!(
            kinds.contains(&("app".to_string(), tar::EntryType::Regular, 1 << 20)),
            "{kinds:?}"
        );
    }

    #[test]
    fn a_failed_build_says_its_step_and_apt_s_error_in_one_line() {
        let output = "Step 1/2 : FROM sha256:0123\n ---> 0123\n\
            Step 2/2 : RUN set -eux;     apt-get update;     apt-get install -y --no-install-recommends linux-image-amd64 zstd\n \
            ---> Running in 4567\n+ apt-get update\n\
            \x1b[91mW: Some index files failed to download.\r\n\x1b[0m\
            Reading package lists...\nE: Unable to locate package linux-image-amd64\n\
            E: Unable to locate package zstd\nRemoving intermediate container 4567\n";
        let mut log = BuildLog::default();
        for line in output.lines() {
            log.push(line);
        }
        let message = format!(
            "failed{}: {}{}",
            log.step(),
            exit_status(
                "The command '/bin/sh -c set -eux;\n apt-get update' returned a non-zero code: 100"
            ),
            log.cause()
        );
        assert_eq!(
            message,
            "failed at `RUN set -eux; apt-get update; apt-get install -y --no-instal…`: \
             exit status 100; it said: E: Unable to locate package linux-image-amd64 | \
             E: Unable to locate package zstd"
        );
        assert!(!message.contains('\n') && !message.contains('\x1b'));
    }

    #[test]
    fn without_apt_errors_the_step_s_last_lines_are_quoted() {
        let mut log = BuildLog::default();
        for line in [
            "STEP 2/2: RUN make",
            "cc -o x x.c",
            "x.c:1: error: oops",
            "make: *** [x] Error 1",
        ] {
            log.push(line);
        }
        assert_eq!(log.step(), " at `RUN make`");
        assert_eq!(
            log.cause(),
            "; it said: cc -o x x.c | x.c:1: error: oops | make: *** [x] Error 1"
        );
        assert_eq!(strip_escapes("\x1b[1;31mred\x1b[0m\r"), "red");
    }
}
