//! QMP, QEMU's machine protocol, on a socket (`--qmp unix:PATH` or `tcp:HOST:PORT` on
//! loopback): one JSON object per line each way. Connections are served on threads; every
//! command is carried to the live loop, which answers it between two runs of the machine, so
//! whatever a command does to the guest happens at an exact instruction count.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::mpsc::{self, Receiver, Sender};

use serde_json::{json, Value};

/// A command for the live loop, and where its answer goes.
pub struct Request {
    pub command: String,
    pub arguments: Value,
    pub reply: Sender<Value>,
    /// Says when the answer has been written to the client (so `quit` can answer before the
    /// process ends).
    pub written: Receiver<()>,
}

impl Request {
    /// Answers, and waits (briefly) until the client has the answer.
    pub fn answer_and_wait(self, answer: Value) {
        if self.reply.send(answer).is_ok() {
            let _ = self.written.recv_timeout(std::time::Duration::from_secs(2));
        }
    }
}

/// The evdev events of an `input-send-event` command (`events`: key, btn, abs and rel
/// events as QEMU takes them), or what is wrong with it.
pub fn input_events(arguments: &Value) -> Result<Vec<rewind_machine::EvdevEvent>, String> {
    use rewind_machine::devices::virtio::input::{button_code, qcode_to_key, ABS_MAX};
    use rewind_machine::EvdevEvent;
    let events = arguments
        .get("events")
        .and_then(Value::as_array)
        .ok_or("input-send-event needs 'events', an array")?;
    let axis = |data: &Value, kind: &str| -> Result<u16, String> {
        match data.get("axis").and_then(Value::as_str) {
            Some("x") => Ok(0),
            Some("y") => Ok(1),
            Some("wheel") if kind == "rel" => Ok(8),
            other => Err(format!("unknown {kind} axis {other:?}")),
        }
    };
    let mut out = Vec::new();
    for event in events {
        let data = &event["data"];
        let down = data.get("down").and_then(Value::as_bool);
        let value = data.get("value").and_then(Value::as_i64);
        out.push(match event.get("type").and_then(Value::as_str) {
            Some("key") => {
                let key = &data["key"];
                let code = match key.get("type").and_then(Value::as_str) {
                    Some("qcode") => key["data"].as_str().and_then(qcode_to_key),
                    Some("number") => key["data"].as_u64().and_then(|n| u16::try_from(n).ok()),
                    _ => None,
                }
                .ok_or_else(|| format!("unknown key {key}"))?;
                EvdevEvent::key(code, down.ok_or("a key event needs 'down'")?)
            }
            Some("btn") => {
                let name = data["button"].as_str().unwrap_or_default();
                let code = button_code(name).ok_or_else(|| format!("unknown button '{name}'"))?;
                EvdevEvent::key(code, down.ok_or("a btn event needs 'down'")?)
            }
            Some("abs") => {
                let v = value.ok_or("an abs event needs 'value'")?;
                EvdevEvent::abs(axis(data, "abs")?, v.clamp(0, ABS_MAX as i64) as i32)
            }
            Some("rel") => {
                let v = value.ok_or("a rel event needs 'value'")?;
                EvdevEvent::rel(
                    axis(data, "rel")?,
                    v.clamp(i32::MIN as i64, i32::MAX as i64) as i32,
                )
            }
            other => return Err(format!("unknown input event type {other:?}")),
        });
    }
    Ok(out)
}

/// The commands Rewind answers.
pub const COMMANDS: [&str; 10] = [
    "input-send-event",
    "system_powerdown",
    "qmp_capabilities",
    "query-status",
    "stop",
    "cont",
    "quit",
    "query-replay",
    "query-version",
    "query-commands",
];

/// KEY_POWER, the key `system_powerdown` presses.
const KEY_POWER: u16 = 116;

/// What a command asks of the machine beyond its answer.
pub enum Action {
    None,
    Quit,
    /// Host input for the guest (recorded like all input): batches, each ended by a SYN.
    Input(Vec<Vec<rewind_machine::EvdevEvent>>),
}

/// The machine as QMP sees it.
pub struct Status<'a> {
    /// `record`, `play` or `none`, as QEMU's `query-replay` says.
    pub mode: &'a str,
    pub icount: u64,
    /// Stopped by `stop` (until `cont`).
    pub stopped: &'a mut bool,
    /// Whether a virtio-keyboard is there to press the power button on.
    pub has_keyboard: bool,
}

/// Answers a command; the caller carries out the action at the instruction count it is at.
pub fn execute(request: &Request, status: Status) -> (Value, Action) {
    let ok = json!({"return": {}});
    let command = request.command.as_str();
    let known = COMMANDS.contains(&command);
    if !known {
        return (
            error(
                "CommandNotFound",
                format!("The command {command} has not been found"),
            ),
            Action::None,
        );
    }
    let inputs = status.mode != "play";
    if command == "input-send-event" {
        if !inputs {
            return (
                error(
                    "GenericError",
                    "a replay takes its input from the recording",
                ),
                Action::None,
            );
        }
        return match input_events(&request.arguments) {
            Ok(events) => (ok, Action::Input(vec![events])),
            Err(message) => (error("GenericError", message), Action::None),
        };
    }
    // None of the other commands takes arguments, as in QEMU.
    if let Some(name) = request.arguments.as_object().and_then(|a| a.keys().next()) {
        return (
            error("GenericError", format!("Parameter '{name}' is unexpected")),
            Action::None,
        );
    }
    let answer = match command {
        "system_powerdown" if !inputs => {
            error("GenericError", "a replay takes its input from the recording")
        }
        // `virt` has no power button of its own; the keyboard's KEY_POWER is the one a guest
        // can act on (as a desktop's power key).
        "system_powerdown" if !status.has_keyboard => error(
            "GenericError",
            "this machine has no power button: add --device virtio-keyboard, on which              system_powerdown presses KEY_POWER",
        ),
        "system_powerdown" => {
            let key = |down| vec![rewind_machine::EvdevEvent::key(KEY_POWER, down)];
            return (ok, Action::Input(vec![key(true), key(false)]));
        }
        "query-status" => json!({"return": {
            "status": if *status.stopped { "paused" } else { "running" },
            "running": !*status.stopped,
            "singlestep": false}}),
        "stop" => {
            *status.stopped = true;
            ok
        }
        "cont" => {
            *status.stopped = false;
            ok
        }
        "quit" => return (ok, Action::Quit),
        "query-replay" => json!({"return": {"mode": status.mode, "icount": status.icount}}),
        "query-version" => json!({ "return": version() }),
        "query-commands" => {
            let names: Vec<Value> = COMMANDS.iter().map(|n| json!({ "name": n })).collect();
            json!({ "return": names })
        }
        _ => ok, // qmp_capabilities again: the connection already negotiated
    };
    (answer, Action::None)
}

/// The version QMP reports: the commands above behave as QEMU 10.0's do (the reference
/// machine Rewind is tested against), and the package names Rewind itself.
fn version() -> Value {
    json!({"qemu": {"major": 10, "minor": 0, "micro": 0},
           "package": concat!("rewind ", env!("CARGO_PKG_VERSION"))})
}

/// An error answer, in QMP's form.
pub fn error(class: &str, desc: impl Into<String>) -> Value {
    json!({"error": {"class": class, "desc": desc.into()}})
}

/// Starts listening on `spec` (`unix:PATH` or `tcp:HOST:PORT`, loopback only); commands
/// arrive on the returned channel.
pub fn listen(spec: &str) -> Result<Receiver<Request>, String> {
    let (tx, rx) = mpsc::channel();
    if let Some(path) = spec.strip_prefix("unix:") {
        let path = path.split(',').next().unwrap_or(path);
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)
            .map_err(|e| format!("cannot listen on {path} for QMP: {e}"))?;
        std::thread::spawn(move || serve_each(listener.incoming(), UnixStream::try_clone, tx));
    } else if let Some(address) = spec.strip_prefix("tcp:") {
        let address = address.split(',').next().unwrap_or(address);
        let listener = TcpListener::bind(address)
            .map_err(|e| format!("cannot listen on {address} for QMP: {e}"))?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        if !local.ip().is_loopback() {
            return Err(format!(
                "QMP listens on loopback only; {address} is not (use 127.0.0.1)"
            ));
        }
        std::thread::spawn(move || serve_each(listener.incoming(), TcpStream::try_clone, tx));
    } else {
        return Err(format!(
            "--qmp {spec}: give unix:PATH or tcp:HOST:PORT (on loopback)"
        ));
    }
    Ok(rx)
}

/// One client: the greeting, capabilities negotiation, then commands.
/// Serves each client that connects, on a thread of its own.
fn serve_each<S: Read + Write + Send + 'static>(
    clients: impl Iterator<Item = std::io::Result<S>>,
    try_clone: fn(&S) -> std::io::Result<S>,
    tx: Sender<Request>,
) {
    for stream in clients.flatten() {
        let tx = tx.clone();
        let writer = try_clone(&stream);
        std::thread::spawn(move || {
            if let Ok(writer) = writer {
                serve(BufReader::new(stream), writer, tx);
            }
        });
    }
}

fn serve(reader: impl BufRead, mut writer: impl Write, tx: Sender<Request>) {
    let greeting = json!({"QMP": {"version": version(), "capabilities": []}});
    if writeln!(writer, "{greeting}").is_err() {
        return;
    }
    let mut negotiated = false;
    for line in reader.lines() {
        let Ok(line) = line else { return };
        if line.trim().is_empty() {
            continue;
        }
        let (done, written) = mpsc::channel();
        let answer = match serde_json::from_str::<Value>(&line) {
            Err(e) => error("GenericError", format!("JSON parse error, {e}")),
            Ok(request) => answer(&request, &mut negotiated, &tx, written),
        };
        // One write for the whole line, so that a client never sees half an answer.
        if writer
            .write_all(format!("{answer}\n").as_bytes())
            .and_then(|()| writer.flush())
            .is_err()
        {
            return;
        }
        let _ = done.send(());
    }
}

fn answer(
    request: &Value,
    negotiated: &mut bool,
    tx: &Sender<Request>,
    written: Receiver<()>,
) -> Value {
    let id = request.get("id").cloned();
    let with_id = |mut v: Value| {
        if let (Some(id), Some(obj)) = (&id, v.as_object_mut()) {
            obj.insert("id".into(), id.clone());
        }
        v
    };
    let Some(command) = request.get("execute").and_then(Value::as_str) else {
        return with_id(error(
            "GenericError",
            "QMP input must be an object with an 'execute' member",
        ));
    };
    if command == "qmp_capabilities" {
        *negotiated = true;
        return with_id(json!({"return": {}}));
    }
    if !*negotiated {
        return with_id(error(
            "CommandNotFound",
            "Expecting capabilities negotiation with 'qmp_capabilities'",
        ));
    }
    let arguments = request.get("arguments").cloned().unwrap_or(json!({}));
    if !arguments.is_object() {
        return with_id(error("GenericError", "'arguments' must be an object"));
    }
    let (reply, answer) = mpsc::channel();
    let sent = tx.send(Request {
        command: command.to_string(),
        arguments,
        reply,
        written,
    });
    let value = match sent.ok().and_then(|()| answer.recv().ok()) {
        Some(value) => value,
        None => error("GenericError", "the machine has stopped"),
    };
    with_id(value)
}
