//! QMP on a live run, spoken as QEMU's clients speak it: greeting, capabilities negotiation,
//! status, stop (guest time stands still), cont, replay information, errors, quit.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;

struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    fn connect(path: &Path) -> Client {
        let deadline = Instant::now() + Duration::from_secs(30);
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Err(e) => panic!("no QMP socket at {}: {e}", path.display()),
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Client {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        }
    }

    fn read(&mut self) -> Value {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("a QMP line");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}"))
    }

    fn send_raw(&mut self, text: &str) -> Value {
        writeln!(self.writer, "{text}").unwrap();
        self.read()
    }

    fn execute(&mut self, command: &str) -> Value {
        self.send_raw(&json!({ "execute": command }).to_string())
    }
}

#[test]
fn qmp_controls_a_live_recorded_run() {
    let program = common::guest_program("loop");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("qmp");
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("qmp.sock");
    let recording = dir.join("loop.rwd");
    let mut child = Command::new(env!("CARGO_BIN_EXE_rewind"))
        .args([
            "record",
            "-o",
            recording.to_str().unwrap(),
            "--bios",
            "none",
        ])
        .arg("--kernel")
        .arg(&program)
        .arg("--qmp")
        .arg(format!("unix:{}", socket.display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut qmp = Client::connect(&socket);
    let greeting = qmp.read();
    assert_eq!(
        greeting["QMP"]["version"]["qemu"]["major"], 10,
        "{greeting}"
    );
    assert!(
        greeting["QMP"]["version"]["package"]
            .as_str()
            .is_some_and(|p| p.starts_with("rewind ")),
        "{greeting}"
    );
    let early = qmp.execute("query-status");
    assert_eq!(early["error"]["class"], "CommandNotFound", "{early}");
    assert_eq!(qmp.execute("qmp_capabilities"), json!({"return": {}}));
    let status = qmp.execute("query-status");
    assert_eq!(status["return"]["status"], "running", "{status}");

    assert_eq!(qmp.execute("stop"), json!({"return": {}}));
    assert_eq!(qmp.execute("query-status")["return"]["running"], false);
    let at = qmp.execute("query-replay");
    assert_eq!(at["return"]["mode"], "record", "{at}");
    std::thread::sleep(Duration::from_millis(300));
    let later = qmp.execute("query-replay");
    assert_eq!(
        at["return"]["icount"], later["return"]["icount"],
        "time moved while stopped"
    );
    assert_eq!(qmp.execute("cont"), json!({"return": {}}));
    std::thread::sleep(Duration::from_millis(300));
    let moved = qmp.execute("query-replay");
    assert!(
        moved["return"]["icount"].as_u64() > at["return"]["icount"].as_u64(),
        "{moved} after {at}"
    );

    // Malformed input gets errors and the connection goes on.
    assert_eq!(qmp.send_raw("{not json")["error"]["class"], "GenericError");
    assert_eq!(qmp.send_raw("[1, 2]")["error"]["class"], "GenericError");
    assert_eq!(
        qmp.execute("frobnicate")["error"]["class"],
        "CommandNotFound"
    );
    let with_args = qmp.send_raw(r#"{"execute": "stop", "arguments": {"now": true}}"#);
    assert_eq!(with_args["error"]["class"], "GenericError", "{with_args}");
    let with_id = qmp.send_raw(r#"{"execute": "query-status", "id": "x1"}"#);
    assert_eq!(with_id["id"], "x1");

    assert_eq!(qmp.execute("quit"), json!({"return": {}}));
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "quit did not end the run");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
    // The recording is complete and replays.
    common::replay_ok(&[recording.to_str().unwrap()]);
}

/// A key pressed over QMP reaches the Debian guest's /dev/input/event0 through
/// virtio-keyboard, and the recording replays it byte for byte.
#[test]
fn a_key_sent_over_qmp_arrives_in_the_guest_and_replays() {
    common::require_default_guest();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("qmp-keyboard");
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("qmp.sock");
    let recording = dir.join("keyboard.rwd");
    let mut console = common::Console::start(&[
        "record",
        "-o",
        recording.to_str().unwrap(),
        "--device",
        "virtio-keyboard",
        "--device",
        "virtio-tablet",
        "--qmp",
        &format!("unix:{}", socket.display()),
    ]);
    console.wait_for(0, common::PROMPT, Duration::from_secs(180));
    // Two events (key and SYN) of 24 bytes each: wait for them in the background.
    std::thread::sleep(Duration::from_millis(300));
    // The key, then the power key system_powerdown presses and releases: 6 events.
    console.type_text("head -c 144 /dev/input/event0 | od -An -tx2 > /tmp/ev &\n");
    std::thread::sleep(Duration::from_millis(1000));
    let mut qmp = Client::connect(&socket);
    qmp.read();
    qmp.execute("qmp_capabilities");
    let press = r#"{"execute": "input-send-event", "arguments": {"events": [
        {"type": "key", "data": {"down": true, "key": {"type": "qcode", "data": "a"}}}]}}"#;
    assert_eq!(
        qmp.send_raw(&press.replace('\n', " ")),
        json!({"return": {}})
    );
    let tablet = r#"{"execute": "input-send-event", "arguments": {"events": [
        {"type": "abs", "data": {"axis": "x", "value": 100}}]}}"#;
    assert_eq!(
        qmp.send_raw(&tablet.replace('\n', " ")),
        json!({"return": {}})
    );
    let bad = r#"{"execute": "input-send-event", "arguments": {"events": [{"type": "key"}]}}"#;
    assert_eq!(qmp.send_raw(bad)["error"]["class"], "GenericError");
    assert_eq!(qmp.execute("system_powerdown"), json!({"return": {}}));
    std::thread::sleep(Duration::from_millis(1000));
    let events = console.command("cat /tmp/ev");
    // type 1 (EV_KEY), code 0x1e (KEY_A), value 1.
    assert!(events.contains("0001 001e 0001 0000"), "{events}");
    // KEY_POWER (0x74) pressed and released.
    assert!(events.contains("0001 0074 0001 0000"), "{events}");
    assert!(events.contains("0001 0074 0000 0000"), "{events}");
    console.type_text("poweroff -f\n");
    assert_eq!(console.wait_exit(Duration::from_secs(60)).code(), Some(0));
    let recorded = console.bytes.clone();
    drop(console);
    let replay = common::replay_ok(&[recording.to_str().unwrap()]);
    assert_eq!(replay.stdout, recorded);

    // QMP on the replay: stopped, time stands still; input is refused (it comes from the
    // recording); quit ends it early. Then a replay that is stopped and continued completes.
    let replay_socket = dir.join("replay.sock");
    let start_replay = || {
        Command::new(env!("CARGO_BIN_EXE_rewind"))
            .args(["replay", recording.to_str().unwrap(), "--qmp"])
            .arg(format!("unix:{}", replay_socket.display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let _ = std::fs::remove_file(&replay_socket);
    let child = start_replay();
    let mut qmp = Client::connect(&replay_socket);
    qmp.read();
    qmp.execute("qmp_capabilities");
    assert_eq!(qmp.execute("stop"), json!({"return": {}}));
    let at = qmp.execute("query-replay");
    assert_eq!(at["return"]["mode"], "play", "{at}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        qmp.execute("query-replay"),
        at,
        "the replay moved while stopped"
    );
    assert_eq!(qmp.execute("query-status")["return"]["status"], "paused");
    assert_eq!(
        qmp.send_raw(&press.replace('\n', " "))["error"]["class"],
        "GenericError"
    );
    assert_eq!(
        qmp.execute("system_powerdown")["error"]["class"],
        "GenericError"
    );
    assert_eq!(qmp.execute("quit"), json!({"return": {}}));
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ended by QMP quit"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(recorded.starts_with(&out.stdout) && out.stdout.len() < recorded.len());

    let _ = std::fs::remove_file(&replay_socket);
    let child = start_replay();
    let mut qmp = Client::connect(&replay_socket);
    qmp.read();
    qmp.execute("qmp_capabilities");
    assert_eq!(qmp.execute("stop"), json!({"return": {}}));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(qmp.execute("cont"), json!({"return": {}}));
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stdout, recorded);
}
