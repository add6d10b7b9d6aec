//! The protocol as a client sees it: request JSON in, response JSON out, no virtio port.
use super::*;
use base64::{engine::general_purpose::STANDARD as B64, Engine};

fn agent() -> Agent {
    Agent::new(Mode::Service)
}

/// One request, its response parsed (the bytes must end in a newline).
fn call(agent: &Agent, request: Value) -> Value {
    let out = agent.respond(request.to_string().as_bytes());
    assert_eq!(out.last(), Some(&b'\n'), "{out:?}");
    serde_json::from_slice(&out).unwrap()
}

fn ok(agent: &Agent, execute: &str, arguments: Value) -> Value {
    let reply = call(agent, json!({ "execute": execute, "arguments": arguments }));
    reply
        .get("return")
        .cloned()
        .unwrap_or_else(|| panic!("{execute}: {reply}"))
}

fn desc(agent: &Agent, execute: &str, arguments: Value) -> String {
    let reply = call(agent, json!({ "execute": execute, "arguments": arguments }));
    reply["error"]["desc"].as_str().unwrap().to_string()
}

fn b64(v: &Value) -> Vec<u8> {
    B64.decode(v.as_str().unwrap()).unwrap()
}

#[test]
fn sync_delimited_writes_0xff_first_and_echoes_the_id() {
    let a = agent();
    let out = a.respond(br#"{"execute":"guest-sync-delimited","arguments":{"id":1234}}"#);
    assert_eq!(out[0], 0xFF);
    assert_eq!(&out[1..], b"{\"return\":1234}\n");
    let reply = call(
        &a,
        json!({"execute": "guest-sync", "arguments": {"id": 5}, "id": "x"}),
    );
    assert_eq!(reply, json!({"return": 5, "id": "x"}));
}

#[test]
fn ping_info_and_unknown_command() {
    let a = agent();
    assert_eq!(
        call(&a, json!({"execute": "guest-ping", "id": 7})),
        json!({"return": {}, "id": 7})
    );
    let reply = call(&a, json!({"execute": "guest-frobnicate"}));
    assert_eq!(reply["error"]["class"], "CommandNotFound");
    let info = ok(&a, "guest-info", json!({}));
    assert!(info["version"].as_str().unwrap().starts_with("c2vm-init "));
    let commands = info["supported_commands"].as_array().unwrap();
    let shutdown = commands
        .iter()
        .find(|c| c["name"] == "guest-shutdown")
        .unwrap();
    assert_eq!(shutdown["success-response"], false);
    assert!(commands.iter().any(|c| c["name"] == "c2vm-exec-read"));
    let bad = call(&a, json!({"execute": "guest-exec", "arguments": {}}));
    assert_eq!(bad["error"]["class"], "GenericError");
}

#[test]
fn framer_splits_a_stream_and_resets_on_0xff() {
    let mut framer = Framer::default();
    let input = b"  {\"a\":\"}{\\\"\"}\n{\"b\":[{}]}{\"half\xff{\"c\":1}";
    let requests: Vec<Vec<u8>> = input.iter().filter_map(|&b| framer.feed(b)).collect();
    assert_eq!(
        requests,
        vec![
            b"{\"a\":\"}{\\\"\"}".to_vec(),
            b"{\"b\":[{}]}".to_vec(),
            b"{\"c\":1}".to_vec()
        ]
    );
}

/// Poll guest-exec-status until it says exited.
fn exec_status(a: &Agent, pid: &Value) -> Value {
    for _ in 0..500 {
        let status = ok(a, "guest-exec-status", json!({ "pid": pid }));
        if status["exited"] == true {
            return status;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("process {pid} did not end");
}

#[test]
fn guest_exec_captures_output_and_exit_code() {
    let a = agent();
    let started = ok(
        &a,
        "guest-exec",
        json!({"path": "sh", "arg": ["-c", "echo hi; echo err >&2; exit 3"],
               "capture-output": true}),
    );
    let pid = &started["pid"];
    let status = exec_status(&a, pid);
    assert_eq!(status["exitcode"], 3);
    assert_eq!(b64(&status["out-data"]), b"hi\n");
    assert_eq!(b64(&status["err-data"]), b"err\n");
    // Forgotten once its end was told.
    assert!(desc(&a, "guest-exec-status", json!({ "pid": pid })).contains("no process"));
}

#[test]
fn guest_exec_with_input_and_a_signal_death() {
    let a = agent();
    let started = ok(
        &a,
        "guest-exec",
        json!({"path": "/bin/cat", "input-data": B64.encode("in"), "capture-output": true}),
    );
    let status = exec_status(&a, &started["pid"]);
    assert_eq!(b64(&status["out-data"]), b"in");
    let started = ok(
        &a,
        "guest-exec",
        json!({"path": "sh", "arg": ["-c", "kill -9 $$"]}),
    );
    let status = exec_status(&a, &started["pid"]);
    assert_eq!(status["signal"], 9);
    assert!(status.get("exitcode").is_none());
    assert!(status.get("out-data").is_none());
}

/// Read a c2vm-exec process to its end: (stdout, stderr, last reply).
fn drain(a: &Agent, pid: &Value, bound: usize) -> (Vec<u8>, Vec<u8>, Value) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    for _ in 0..10_000 {
        assert!(a.procs.buffered(pid.as_i64().unwrap() as i32) <= bound);
        let reply = ok(a, "c2vm-exec-read", json!({"pid": pid, "wait-ms": 200}));
        out.extend(b64(&reply["out-data"]));
        err.extend(b64(&reply["err-data"]));
        if reply["exited"] == true {
            return (out, err, reply);
        }
    }
    panic!("process {pid} did not end");
}

#[test]
fn c2vm_exec_streams_3_mb_in_bounded_buffers() {
    let a = agent();
    let started = ok(
        &a,
        "c2vm-exec",
        json!({"path": "sh", "arg": ["-c", "head -c 3000000 /dev/zero; echo done >&2; exit 5"]}),
    );
    let pid = started["pid"].clone();
    // Give the process time to fill the buffers: it must block, not the agent's memory grow.
    std::thread::sleep(Duration::from_millis(300));
    let (out, err, last) = drain(&a, &pid, 2 * exec::STREAM_CAP);
    assert_eq!(out.len(), 3_000_000);
    assert_eq!(err, b"done\n");
    assert_eq!(last["exitcode"], 5);
    assert!(desc(&a, "c2vm-exec-read", json!({"pid": pid})).contains("no process"));
}

#[test]
fn c2vm_exec_passes_stdin_env_and_workdir() {
    let a = agent();
    let started = ok(&a, "c2vm-exec", json!({"path": "cat", "stdin": true}));
    let pid = &started["pid"];
    ok(
        &a,
        "c2vm-exec-write",
        json!({"pid": pid, "data": B64.encode("abc")}),
    );
    ok(&a, "c2vm-exec-write", json!({"pid": pid, "eof": true}));
    let (out, _, last) = drain(&a, pid, usize::MAX);
    assert_eq!(out, b"abc");
    assert_eq!(last["exitcode"], 0);

    let started = ok(
        &a,
        "c2vm-exec",
        json!({"path": "sh", "arg": ["-c", "echo $FOO $TERM $(pwd)"], "env": ["FOO=bar"],
               "workdir": "/tmp"}),
    );
    let (out, _, _) = drain(&a, &started["pid"], usize::MAX);
    assert_eq!(out, b"bar dumb /tmp\n");
}

#[test]
fn c2vm_exec_with_a_terminal_types_input_sizes_it_and_ends_on_eof() {
    let a = agent();
    let script = "tty; stty size; [ -t 2 ] && echo err-is-tty; read x; echo got=$x; stty size; cat";
    let started = ok(
        &a,
        "c2vm-exec",
        json!({"path": "sh", "arg": ["-c", script], "tty": {"rows": 33, "cols": 101}}),
    );
    let pid = &started["pid"];
    let mut out = String::new();
    let mut read_until = |want: &str| {
        for _ in 0..100 {
            if out.contains(want) {
                return out.clone();
            }
            let reply = ok(&a, "c2vm-exec-read", json!({"pid": pid, "wait-ms": 100}));
            assert!(b64(&reply["err-data"]).is_empty(), "{reply}");
            out.push_str(&String::from_utf8_lossy(&b64(&reply["out-data"])));
        }
        panic!("no {want:?} in {out:?}");
    };
    // Lines end in CR LF, as a terminal writes them.
    let said = read_until("33 101\r\n");
    assert!(said.contains("/dev/pts/"), "{said}");
    ok(
        &a,
        "c2vm-exec-resize",
        json!({"pid": pid, "rows": 40, "cols": 120}),
    );
    ok(
        &a,
        "c2vm-exec-write",
        json!({"pid": pid, "data": B64.encode("hi\n")}),
    );
    // What was typed is echoed, then read.
    let said = read_until("40 120\r\n");
    assert!(said.contains("err-is-tty\r\nhi\r\ngot=hi\r\n"), "{said}");
    // The end of the input is ^D typed at the terminal: `cat` ends, and so does the shell.
    ok(&a, "c2vm-exec-write", json!({"pid": pid, "eof": true}));
    let (_, err, last) = drain(&a, pid, usize::MAX);
    assert!(err.is_empty());
    assert_eq!(last["exitcode"], 0);
    let pipe = ok(&a, "c2vm-exec", json!({"path": "true"}));
    let refused = desc(
        &a,
        "c2vm-exec-resize",
        json!({"pid": pipe["pid"], "rows": 1, "cols": 1}),
    );
    assert!(refused.contains("has no terminal"), "{refused}");
}

#[test]
fn c2vm_exec_kill_and_missing_program() {
    let a = agent();
    let started = ok(&a, "c2vm-exec", json!({"path": "sleep", "arg": ["30"]}));
    let pid = &started["pid"];
    ok(&a, "c2vm-exec-kill", json!({"pid": pid, "signal": 15}));
    let (_, _, last) = drain(&a, pid, usize::MAX);
    assert_eq!(last["signal"], 15);
    assert_eq!(
        desc(&a, "c2vm-exec", json!({"path": "/no/such/program"})),
        "c2vm-exec: /no/such/program: not found"
    );
    assert_eq!(
        desc(&a, "guest-exec", json!({"path": "/no/such/program"})),
        "guest-exec: /no/such/program: No such file or directory"
    );
    assert_eq!(
        desc(&a, "c2vm-exec", json!({"path": "no-such-program-c2vm"})),
        "c2vm-exec: no-such-program-c2vm: not found"
    );
}

#[test]
fn users_are_looked_up_as_docker_does() {
    let passwd = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n";
    let group = "root:x:0:\nwheel:x:10:app,other\napp:x:1000:\n";
    let app = exec::User::from_files("app", passwd, group).unwrap();
    assert_eq!(
        format!("{app:?}"),
        r#"User { uid: 1000, gid: 1000, groups: [1000, 10], home: "/home/app" }"#
    );
    let numeric = exec::User::from_files("4242:wheel", passwd, group).unwrap();
    assert_eq!(
        format!("{numeric:?}"),
        r#"User { uid: 4242, gid: 10, groups: [10], home: "/" }"#
    );
    assert!(exec::User::from_files("nobody", passwd, group).is_err());
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("c2vm-agent-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn file_round_trip() {
    let a = agent();
    let dir = temp_dir("files");
    let path = dir.join("f").to_string_lossy().into_owned();
    let h = ok(&a, "guest-file-open", json!({"path": path, "mode": "w"}));
    let written = ok(
        &a,
        "guest-file-write",
        json!({"handle": h, "buf-b64": B64.encode(b"hello\xff")}),
    );
    assert_eq!(written, json!({"count": 6, "eof": false}));
    assert_eq!(ok(&a, "guest-file-close", json!({"handle": h})), json!({}));
    let h = ok(&a, "guest-file-open", json!({"path": path}));
    let read = ok(&a, "guest-file-read", json!({"handle": h, "count": 4}));
    assert_eq!(
        (read["count"].clone(), read["eof"].clone()),
        (json!(4), json!(false))
    );
    assert_eq!(b64(&read["buf-b64"]), b"hell");
    let read = ok(&a, "guest-file-read", json!({"handle": h}));
    assert_eq!(b64(&read["buf-b64"]), b"o\xff");
    assert_eq!(read["eof"], true);
    ok(&a, "guest-file-close", json!({"handle": h}));
    assert!(desc(&a, "guest-file-read", json!({"handle": h})).contains("no open file"));
    let missing = dir.join("missing").to_string_lossy().into_owned();
    assert_eq!(
        desc(&a, "guest-file-open", json!({ "path": missing })),
        format!("{missing}: No such file or directory")
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn stat_mkdir_symlink_chmod() {
    let a = agent();
    let dir = temp_dir("stat");
    let d = |name: &str| dir.join(name).to_string_lossy().into_owned();
    std::fs::write(dir.join("file"), b"12345").unwrap();
    ok(&a, "c2vm-mkdir", json!({"path": d("sub"), "mode": 0o750}));
    ok(&a, "c2vm-mkdir", json!({"path": d("sub"), "mode": 0o1777}));
    ok(
        &a,
        "c2vm-symlink",
        json!({"target": "file", "path": d("link")}),
    );
    ok(
        &a,
        "c2vm-chmod",
        json!({"path": d("file"), "mode": 0o4755, "uid": 0, "gid": 0}),
    );

    let top = ok(&a, "c2vm-stat", json!({"path": d("")}));
    assert_eq!(top["type"], "dir");
    assert_eq!(top["entries"], json!(["file", "link", "sub"]));
    let file = ok(&a, "c2vm-stat", json!({"path": d("file")}));
    assert_eq!(
        (
            file["type"].clone(),
            file["mode"].clone(),
            file["size"].clone()
        ),
        (json!("file"), json!(0o4755), json!(5))
    );
    assert!(file.get("entries").is_none() && file.get("target").is_none());
    let link = ok(&a, "c2vm-stat", json!({"path": d("link")}));
    assert_eq!(
        (link["type"].clone(), link["target"].clone()),
        (json!("symlink"), json!("file"))
    );
    let followed = ok(&a, "c2vm-stat", json!({"path": d("link"), "follow": true}));
    assert_eq!(followed["type"], "file");
    let sub = ok(&a, "c2vm-stat", json!({"path": d("sub")}));
    assert_eq!(
        (sub["mode"].clone(), sub["entries"].clone()),
        (json!(0o1777), json!([]))
    );
    assert_eq!(
        desc(&a, "c2vm-stat", json!({"path": d("nope")})),
        format!("{}: No such file or directory", d("nope"))
    );
    assert!(desc(&a, "c2vm-mkdir", json!({"path": d("file"), "mode": 0o755})).contains("exists"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn osinfo_and_interfaces() {
    let info = info::os_release("NAME=\"Debian GNU/Linux\"\nID=debian\nVERSION_ID=\"13\"\n# x\n");
    assert_eq!(
        Value::Object(info),
        json!({"name": "Debian GNU/Linux", "id": "debian", "version-id": "13"})
    );
    let a = agent();
    assert!(ok(&a, "guest-get-osinfo", json!({}))["kernel-release"].is_string());
    let interfaces = ok(&a, "guest-network-get-interfaces", json!({}));
    let lo = interfaces
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "lo")
        .expect("lo");
    assert!(lo["ip-addresses"]
        .as_array()
        .unwrap()
        .iter()
        .any(|ip| ip["ip-address"] == "127.0.0.1" && ip["prefix"] == 8));
}

#[test]
fn a_proc_file_reads_and_closes() {
    // c2vm wait --port reads /proc/net/tcp this way: procfs cannot be synced (EINVAL).
    let a = agent();
    let h = ok(&a, "guest-file-open", json!({"path": "/proc/self/stat"}));
    let read = ok(&a, "guest-file-read", json!({"handle": h, "count": 65536}));
    assert!(read["count"].as_i64().unwrap() > 0, "{read}");
    assert_eq!(ok(&a, "guest-file-close", json!({"handle": h})), json!({}));
}
