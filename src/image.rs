//! What a container image says about itself: the parts of its config (as in the OCI image spec's
//! `config` object) that decide what the VM runs. Sources fill it in; guest setup reads it.
/// ENTRYPOINT, CMD and the rest of the process and storage settings of an image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// `KEY=VALUE`, in the image's order.
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// USER as written in the image: `name`, `uid`, `name:group`, `uid:gid`, or empty for root.
    pub user: String,
    /// WORKDIR; empty means `/`.
    pub working_dir: String,
    /// EXPOSE, as docker writes it: `80/tcp`.
    pub exposed_ports: Vec<String>,
    /// VOLUME directories.
    pub volumes: Vec<String>,
    /// The signal `docker stop` sends (STOPSIGNAL); empty for the default SIGTERM.
    pub stop_signal: String,
}

impl ImageConfig {
    /// ENTRYPOINT followed by CMD: the argv `docker run IMAGE` starts.
    pub fn argv(&self) -> Vec<String> {
        self.entrypoint.iter().chain(&self.cmd).cloned().collect()
    }
}
