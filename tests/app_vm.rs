//! Application images become VMs that run the application: the image's ENTRYPOINT/CMD is a boot
//! service with its Env, WorkingDir and User, and its EXPOSEd port is reachable from the host
//! through `c2vm run --publish`. Real daemon, real builds, real boots under TCG.
mod common;
use common::*;
use std::io::{Read, Write};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// `c2vm build CONTEXT -o OUT`, which must succeed and leave no container; returns its stderr.
fn build(ctx: &Path, out: &Path, pw: &Path) -> String {
    let _lock = host_lock();
    let before = containers();
    let o = run(c2vm()
        .arg("build")
        .arg(ctx)
        .arg("-o")
        .arg(out)
        .arg("--password-file")
        .arg(pw));
    assert!(o.status.success(), "build failed: {}", stderr(&o));
    assert_eq!(containers(), before, "c2vm build left a container behind");
    stderr(&o)
}

/// One HTTP GET of `/` on 127.0.0.1:port; the whole response, or None if nothing answers yet.
fn http_get(port: u16) -> Option<String> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    (!response.is_empty()).then_some(response)
}

#[test]
#[ignore = "needs root, dockerd with debian:latest, the Debian mirror and QEMU; scripts/test runs it"]
fn web_server_image_serves_its_page_on_the_published_port() {
    const PAGE: &str = "c2vm-app-page-7f3a91";
    const HOST_PORT: u16 = 18080;
    let dir = scratch();
    let ctx = build_context(
        dir.path(),
        &format!(
            "FROM debian:latest\n\
             RUN apt-get update && apt-get install -y --no-install-recommends nginx \
                 && rm -rf /var/lib/apt/lists/*\n\
             RUN echo '{PAGE}' > /var/www/html/index.html\n\
             EXPOSE 80\n\
             STOPSIGNAL SIGQUIT\n\
             CMD [\"nginx\", \"-g\", \"daemon off;\"]\n"
        ),
    );
    let disk = dir.path().join("web.qcow2");
    let pw = password_file(dir.path());
    let log = build(&ctx, &disk, &pw);
    assert!(
        log.contains(
            "runs the image's command as the service c2vm-app, as root: nginx -g 'daemon off;'"
        ),
        "{log}"
    );
    assert!(
        log.contains("exposes 80/tcp") && log.contains("--publish 8080:80"),
        "{log}"
    );
    // Debian's nginx package enables its own nginx.service; two nginx would fight over port 80.
    assert!(log.contains("Disabled nginx.service"), "{log}");

    let console_log = dir.path().join("console.log");
    // Killed if the test fails before it stops the VM.
    let mut vm = killed_on_drop(
        c2vm()
            .args(["run", "--direct-kernel", "--cpus", "1", "--timeout", "600"])
            .args(["--publish", &format!("{HOST_PORT}:80")])
            .args(["--expect", "c2vm-test-pattern-that-never-shows"])
            .arg(&disk)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&console_log).unwrap())
            .spawn()
            .expect("starting c2vm run"),
    );
    let started = Instant::now();
    let mut page = None;
    while started.elapsed() < Duration::from_secs(400) {
        if let Some(response) = http_get(HOST_PORT) {
            if response.contains(PAGE) {
                page = Some(response);
                break;
            }
        }
        if let Ok(Some(status)) = vm.try_wait() {
            panic!(
                "c2vm run ended early ({status}):\n{}",
                std::fs::read_to_string(&console_log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    let console = std::fs::read_to_string(&console_log).unwrap_or_default();
    let tail: String = console
        .lines()
        .rev()
        .take(40)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    let page =
        page.unwrap_or_else(|| panic!("no page on port {HOST_PORT} after 400 s; console:\n{tail}"));
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    eprintln!(
        "page served {:.0} s after `c2vm run` started",
        started.elapsed().as_secs_f64()
    );

    // SIGTERM stops the VM promptly and takes QEMU with it.
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(vm.id() as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let status = wait_exit(&mut vm, Duration::from_secs(10), "c2vm run after SIGTERM");
    assert_eq!(status.code(), Some(130), "exit code after SIGTERM");
    let said = std::fs::read_to_string(&console_log).unwrap_or_default();
    let lines: Vec<&str> = said.lines().collect();
    assert!(says_interrupted(&lines), "{said}");
    std::thread::sleep(Duration::from_millis(500));
    let after = std::net::TcpStream::connect(("127.0.0.1", HOST_PORT));
    assert!(
        matches!(&after, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused),
        "QEMU still forwards port {HOST_PORT} after c2vm run ended: {after:?}"
    );
}

#[test]
#[ignore = "needs root, dockerd with debian:latest, the Debian mirror and QEMU; scripts/test runs it"]
fn user_workdir_env_and_exact_argv_reach_the_service() {
    let dir = scratch();
    // The last argument holds what a unit file or a shell would otherwise expand or split.
    let ctx = build_context(
        dir.path(),
        r#"FROM debian:latest
RUN apt-get update && apt-get install -y --no-install-recommends jq && rm -rf /var/lib/apt/lists/*
COPY marker.txt /etc/c2vm-marker
RUN useradd --uid 1234 --create-home appuser \
    && mkdir -p /srv/work /srv/data && chown appuser:appuser /srv/work /srv/data && chmod 700 /srv/data
USER appuser
WORKDIR /srv/work
ENV GREETING="hello world"
VOLUME ["/srv/data", "/srv/cache"]
CMD ["sh", "-c", "echo c2vm-app-says-hi; { id -u; id -g; pwd; echo \"$GREETING\"; printf '%s\\n' \"$1\"; } > result.tmp && mv result.tmp result", "sh", "a b $HOME %n \"q\" it's"]
"#,
    );
    // `c2vm build` with a file from the context and a package from the mirror: both in the VM.
    std::fs::write(ctx.join("marker.txt"), "made-by-c2vm-build\n").unwrap();
    let disk = dir.path().join("user.img");
    let pw = password_file(dir.path());
    let log = build(&ctx, &disk, &pw);
    assert!(
        log.contains("runs the image's command as the service c2vm-app, as appuser"),
        "{log}"
    );

    // -v echoes the console to stderr: the service's output must show there as well.
    let said_hi = "journalctl -b -u c2vm-app -o cat | grep -c c2vm-app-says-hi";
    let script = format!(
        "for i in $(seq 120); do [ -e /srv/work/result ] && break; sleep 1; done\n\
         for i in $(seq 30); do {said_hi} >/dev/null && break; sleep 1; done\n{}",
        facts_script(&[
            ("result", "cat /srv/work/result"),
            ("service", "systemctl show -p Result --value c2vm-app"),
            ("said_hi", said_hi),
            ("data", "stat -c '%U %a' /srv/data"),
            ("cache", "stat -c '%U %a' /srv/cache"),
            ("marker", "cat /etc/c2vm-marker"),
            ("jq", "echo '{\"a\":41}' | jq .a"),
        ])
    );
    let out = run(c2vm()
        .args([
            "-v",
            "run",
            "--direct-kernel",
            "--cpus",
            "1",
            "--timeout",
            "420",
            "--login",
            "root",
        ])
        .arg("--password-file")
        .arg(&pw)
        .arg("--exec")
        .arg(&script)
        .arg(&disk));
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let facts = Facts::parse(&stdout(&out));
    assert_eq!(
        [
            &facts["result"],
            &facts["service"],
            &facts["said_hi"],
            &facts["data"],
            &facts["cache"],
            &facts["marker"],
            &facts["jq"]
        ],
        [
            "1234\n1234\n/srv/work\nhello world\na b $HOME %n \"q\" it's",
            "success",
            "1",
            "appuser 700",
            "root 755",
            "made-by-c2vm-build",
            "41"
        ]
    );
    assert!(
        stderr(&out).contains("c2vm-app-says-hi"),
        "the service's output did not reach the serial console"
    );
    assert!(
        !stderr(&out).contains(PASSWORD),
        "the login password shows in the -v console log"
    );
}

#[test]
#[ignore = "needs root, dockerd with debian:latest and debugfs; scripts/test runs it"]
fn app_flags_and_bare_shell_images() {
    // debian:latest's CMD is `bash`: no service unless asked; --app on an image without a
    // command is a clear error. (No boot: the service itself is booted by the tests above.)
    let dir = scratch();
    let out = dir.path().join("x.img");
    let _lock = host_lock();
    let o = Convert::new("debian:latest", &out)
        .args(["--app", "--no-app"])
        .output();
    assert_eq!(
        o.status.code(),
        Some(2),
        "--app with --no-app is a usage error"
    );
    assert!(
        stderr(&o).contains("'--app' cannot be used with '--no-app'"),
        "{}",
        stderr(&o)
    );
    let o = Convert::new("debian:latest", &out).output();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("c2vm-app"), "{}", stderr(&o));
    // No credential and no cloud-init: the disk cannot be logged into as it is, and says so.
    assert!(
        stderr(&o).contains("Warning: no way to log in is in this disk"),
        "{}",
        stderr(&o)
    );
    let root = format!("{}?offset={}", out.display(), partition_offset(&out, 2));
    let units = tool("debugfs", &["-R", "ls /etc/systemd/system", &root]);
    assert!(units.contains("multi-user.target.wants"), "{units}");
    assert!(!units.contains("c2vm-app"), "{units}");
    std::fs::remove_file(&out).unwrap();

    let o = Convert::new("debian:latest", &out).arg("--app").output();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("runs the image's command as the service c2vm-app, as root: bash"),
        "{}",
        stderr(&o)
    );
    let root = format!("{}?offset={}", out.display(), partition_offset(&out, 2));
    let unit = tool(
        "debugfs",
        &["-R", "cat /etc/systemd/system/c2vm-app.service", &root],
    );
    assert!(
        unit.contains("ExecStart=\"/usr/bin/bash\"") || unit.contains("ExecStart=\"/bin/bash\""),
        "{unit}"
    );
}
