//! virtio-net on the Debian guest: user-mode networking (DHCP, DNS, a download from a server on
//! the host, a forwarded port into the guest), recorded in one session with every other
//! device and replayed with the network gone; and QEMU's stream framing, spoken between a
//! Rewind guest and a QEMU guest.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

mod common;
use common::{rewind, scratch, Console, PROMPT};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A minimal HTTP/1.0 server on host loopback that serves `body` for every request, until
/// dropped.
struct HttpServer {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HttpServer {
    fn start(body: Vec<u8>) -> HttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                let Ok((mut stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                stream.set_nonblocking(false).unwrap();
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request);
                let header = format!(
                    "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\n\r\n",
                    body.len()
                );
                let _ = stream
                    .write_all(header.as_bytes())
                    .and_then(|()| stream.write_all(&body));
            }
        });
        HttpServer {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A port on host loopback that nothing listens on (as far as one can tell beforehand).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Qmp {
    reader: std::io::BufReader<std::os::unix::net::UnixStream>,
    writer: std::os::unix::net::UnixStream,
}

impl Qmp {
    fn connect(path: &Path) -> Qmp {
        let stream = std::os::unix::net::UnixStream::connect(path).expect("QMP socket");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut qmp = Qmp {
            reader: std::io::BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        };
        qmp.read();
        assert_eq!(
            qmp.send(json!({"execute": "qmp_capabilities"})),
            json!({"return": {}})
        );
        qmp
    }

    fn read(&mut self) -> Value {
        use std::io::BufRead;
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("a QMP line");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}"))
    }

    fn send(&mut self, command: Value) -> Value {
        writeln!(self.writer, "{command}").unwrap();
        self.read()
    }
}

/// Everything that enters the guest in one recorded session: a download from a server on the
/// host over user-mode networking (DHCP and DNS too), a connection from the host into the
/// guest through hostfwd, a disk read and written, bytes from virtio-rng and a key pressed
/// over QMP. The replay, with the server stopped and no network at all, prints the same
/// console bytes; a replay on another disk image is refused.
#[test]
fn every_device_is_recorded_in_one_session_and_replays_without_the_network() {
    common::require_default_guest();
    let dir = scratch("network-session");
    let body: Vec<u8> = (0..3u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let body_hash = hex(&Sha256::digest(&body));
    let server = HttpServer::start(body);
    let disk = dir.join("disk.img");
    let content: Vec<u8> = (0..4u32 << 20).map(|i| (i * 13 + 1) as u8).collect();
    std::fs::write(&disk, &content).unwrap();
    let first_mib = hex(&Sha256::digest(&content[..1 << 20]));
    let recording = dir.join("session.rwd");
    let socket = dir.join("qmp.sock");
    let forwarded = free_port();
    let mut console = Console::start(&[
        "record",
        "-o",
        recording.to_str().unwrap(),
        "--drive",
        disk.to_str().unwrap(),
        "--device",
        "virtio-rng",
        "--device",
        "virtio-keyboard",
        "--netdev",
        &format!("user,hostfwd=tcp:127.0.0.1:{forwarded}-:80"),
        "--qmp",
        &format!("unix:{}", socket.display()),
    ]);
    console.wait_for(0, PROMPT, Duration::from_secs(180));

    // Network: DHCP gives QEMU's address; DNS answers; a download from the host.
    let dhcp = console.command("ifconfig eth0 up; udhcpc -i eth0 -n -q -s /bin/true");
    assert!(dhcp.contains("lease of 10.0.2.15 obtained"), "{dhcp}");
    console.command("ifconfig eth0 10.0.2.15 netmask 255.255.255.0");
    console.command("route add default gw 10.0.2.2");
    let dns = console.command("nslookup rewind.invalid 10.0.2.3");
    assert!(dns.contains("Server:") && dns.contains("10.0.2.3"), "{dns}");
    let url = format!("http://10.0.2.2:{}/file", server.port);
    console.command(&format!("wget -q -O /tmp/f {url}"));
    let fetched = console.command("sha256sum /tmp/f");
    assert!(fetched.contains(&body_hash), "{fetched} (want {body_hash})");

    // hostfwd: the host connects into the guest's web server.
    console.command("mkdir /tmp/w; echo page-from-guest > /tmp/w/i.html");
    console.command("httpd -p 80 -h /tmp/w");
    let mut stream = TcpStream::connect(("127.0.0.1", forwarded)).expect("hostfwd port");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(b"GET /i.html HTTP/1.0\r\n\r\n").unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(
        answer.starts_with("HTTP/1.") && answer.contains("page-from-guest"),
        "{answer}"
    );

    // Disk, entropy and keyboard in the same session.
    let read = console.command("dd if=/dev/vda bs=1M count=1 2>/dev/null | sha256sum");
    assert!(read.contains(&first_mib), "{read}");
    console.command("echo written-here | dd of=/dev/vda seek=9 conv=notrunc");
    console.command("sync; echo 3 > /proc/sys/vm/drop_caches");
    let back = console.command("dd if=/dev/vda skip=9 count=1 2>/dev/null | head -c 12");
    assert_eq!(back.trim(), "written-here");
    let hwrng = console.command("head -c 32 /dev/hwrng | od -x");
    assert_eq!(hwrng.lines().count(), 3, "{hwrng}");
    console.type_text("head -c 48 /dev/input/event0 | od -An -tx2 > /tmp/ev &\n");
    std::thread::sleep(Duration::from_millis(1000));
    let mut qmp = Qmp::connect(&socket);
    let key = json!({"execute": "input-send-event", "arguments": {"events": [
        {"type": "key", "data": {"down": true, "key": {"type": "qcode", "data": "b"}}}]}});
    assert_eq!(qmp.send(key), json!({"return": {}}));
    std::thread::sleep(Duration::from_millis(1000));
    let events = console.command("cat /tmp/ev");
    assert!(events.contains("0001 0030 0001 0000"), "KEY_B: {events}");
    console.type_text("poweroff -f\n");
    assert_eq!(console.wait_exit(Duration::from_secs(60)).code(), Some(0));
    let recorded = console.bytes.clone();
    drop(console);
    assert_eq!(
        std::fs::read(&disk).unwrap(),
        content,
        "recording wrote to the disk"
    );

    // The server is gone, and nothing listens on the forwarded port: the replay needs neither.
    drop(server);
    let replay = common::replay_ok(&[recording.to_str().unwrap(), "--state-hash"]);
    assert_eq!(replay.stdout, recorded, "the replay printed other bytes");
    assert!(TcpStream::connect(("127.0.0.1", forwarded)).is_err());
    let again = rewind(&["replay", recording.to_str().unwrap(), "--state-hash"]);
    assert_eq!(again.stdout, recorded);
    let hash = |o: &Output| {
        String::from_utf8_lossy(&o.stderr)
            .lines()
            .find(|l| l.starts_with("state hash:"))
            .map(str::to_string)
    };
    assert!(hash(&replay).is_some());
    assert_eq!(
        hash(&replay),
        hash(&again),
        "two replays ended in different states"
    );

    let inspect = rewind(&["inspect", "--json", recording.to_str().unwrap()]);
    let info: Value = serde_json::from_slice(&inspect.stdout).unwrap();
    let net_events = info["events"]["net"].as_u64().unwrap_or(0);
    // 3 MiB arrive in frames of at most 1514 bytes.
    assert!(net_events > 2000, "{}", info["events"]);
    for kind in ["console", "rng", "input"] {
        assert!(
            info["events"][kind].as_u64().unwrap_or(0) > 0,
            "{kind}: {}",
            info["events"]
        );
    }

    // Another base image is refused before anything runs.
    let other = dir.join("other.img");
    let mut changed = content;
    changed[1 << 20] ^= 0x80;
    std::fs::write(&other, &changed).unwrap();
    common::assert_other_drive_refused(&recording, &other);
}

/// QEMU's `-netdev stream` framing: a Rewind guest listens, a QEMU guest (Debian's
/// qemu-system-riscv64, the same Debian kernel) connects, and the two ping each other.
#[test]
fn a_rewind_guest_and_a_qemu_guest_talk_over_a_stream_netdev() {
    let guest = common::default_guest_dir();
    let port = free_port();
    let mut ours = Console::start(&[
        "run",
        "--netdev",
        &format!("stream,server=on,addr.type=inet,addr.host=127.0.0.1,addr.port={port}"),
    ]);
    ours.wait_for(0, PROMPT, Duration::from_secs(180));
    let mut qemu = Command::new("qemu-system-riscv64");
    qemu.args(["-M", "virt", "-m", "512M", "-nographic"])
        .args(["-global", "virtio-mmio.force-legacy=false"])
        .arg("-bios")
        .arg(guest.join("fw_dynamic.bin"))
        .arg("-kernel")
        .arg(guest.join("Image"))
        .arg("-initrd")
        .arg(guest.join("initramfs.cpio.gz"))
        .args([
            "-append",
            "console=ttyS0 rdinit=/init quiet cryptomgr.notests",
        ])
        .args([
            "-netdev",
            &format!("stream,id=n0,server=off,addr.type=inet,addr.host=127.0.0.1,addr.port={port}"),
            "-device",
            "virtio-net-device,netdev=n0,mac=52:54:00:12:34:99",
        ]);
    let mut theirs = Console::start_command(qemu);
    theirs.wait_for(0, PROMPT, Duration::from_secs(180));
    ours.command("ifconfig eth0 192.168.76.1 netmask 255.255.255.0 up");
    theirs.command("ifconfig eth0 192.168.76.2 netmask 255.255.255.0 up");
    let from_ours = ours.command("ping -c 3 -W 5 192.168.76.2");
    assert!(from_ours.contains("3 packets received"), "{from_ours}");
    let from_theirs = theirs.command("ping -c 3 -W 5 192.168.76.1");
    assert!(from_theirs.contains("3 packets received"), "{from_theirs}");
    for console in [&mut ours, &mut theirs] {
        console.type_text("poweroff -f\n");
        assert_eq!(console.wait_exit(Duration::from_secs(60)).code(), Some(0));
    }
}

/// Bad --netdev options and a forwarded port already in use are errors before the guest
/// starts, with exit status 1.
#[test]
fn bad_netdev_options_are_refused_before_the_guest_starts() {
    let kernel = common::guest_program("loop");
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    for (netdev, says) in [
        ("tap,ifname=tap0", "unknown netdev type"),
        ("user,hostfwd=tcp:5555:22", "hostfwd="),
        (
            "stream,server=off,addr.type=inet,addr.host=127.0.0.1,addr.port=1",
            "cannot connect",
        ),
        (
            &format!("user,hostfwd=tcp:127.0.0.1:{port}-:22") as &str,
            "in use",
        ),
    ] {
        let out = rewind(&[
            "run",
            "--bios",
            "none",
            "--kernel",
            kernel.to_str().unwrap(),
            "--max-insns",
            "1000",
            "--netdev",
            netdev,
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{netdev}");
        assert!(err.contains(says), "{netdev}: {err}");
        assert!(out.stdout.is_empty());
    }
}

/// The Internet checksum of `data`.
fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|p| u16::from_be_bytes([p[0], *p.get(1).unwrap_or(&0)]) as u32)
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A test peer on `-netdev dgram` (one Ethernet frame per UDP datagram): it answers the
/// guest's ARP request for 192.168.77.2 and its ICMP echo requests, as a host there would.
/// Returns how many echo requests it answered.
fn answer_pings(socket: &std::net::UdpSocket, peer_mac: [u8; 6], until_echoes: usize) -> usize {
    let mut echoes = 0;
    let mut buf = [0u8; 2048];
    while echoes < until_echoes {
        let Ok((n, from)) = socket.recv_from(&mut buf) else {
            break;
        };
        let frame = &buf[..n];
        if n < 42 {
            continue;
        }
        let guest_mac = &frame[6..12];
        let mut reply = Vec::new();
        reply.extend_from_slice(guest_mac);
        reply.extend_from_slice(&peer_mac);
        match u16::from_be_bytes([frame[12], frame[13]]) {
            // ARP request for our address: reply with our MAC.
            0x0806 if frame[21] == 1 && frame[38..42] == [192, 168, 77, 2] => {
                reply.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 2]);
                reply.extend_from_slice(&peer_mac);
                reply.extend_from_slice(&frame[38..42]);
                reply.extend_from_slice(&frame[22..32]); // the guest's MAC and address
            }
            // IPv4 ICMP echo request: the same packet back as an echo reply.
            0x0800 if frame[23] == 1 && frame[34] == 8 => {
                let ihl = (frame[14] & 0x0f) as usize * 4;
                let mut ip = frame[14..].to_vec();
                let (src, dst) = (ip[12..16].to_vec(), ip[16..20].to_vec());
                ip[12..16].copy_from_slice(&dst);
                ip[16..20].copy_from_slice(&src);
                ip[ihl] = 0;
                ip[ihl + 2..ihl + 4].copy_from_slice(&[0, 0]);
                let sum = internet_checksum(&ip[ihl..]);
                ip[ihl + 2..ihl + 4].copy_from_slice(&sum.to_be_bytes());
                reply.extend_from_slice(&[0x08, 0x00]);
                reply.extend_from_slice(&ip);
                echoes += 1;
            }
            _ => continue,
        }
        socket.send_to(&reply, from).unwrap();
    }
    echoes
}

/// `-netdev dgram` with a peer written in the test: the guest resolves the peer's address by
/// ARP and pings it; the recording of that replays with no peer at all.
#[test]
fn a_guest_pings_a_test_peer_over_a_dgram_netdev_and_the_recording_replays() {
    common::require_default_guest();
    let dir = scratch("network-dgram");
    let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let peer_port = peer.local_addr().unwrap().port();
    let guest_port = free_port();
    let recording = dir.join("dgram.rwd");
    let mut console = Console::start(&[
        "record",
        "-o",
        recording.to_str().unwrap(),
        "--netdev",
        &format!(
            "dgram,remote.type=inet,remote.host=127.0.0.1,remote.port={peer_port},\
             local.type=inet,local.host=127.0.0.1,local.port={guest_port}"
        ),
    ]);
    console.wait_for(0, PROMPT, Duration::from_secs(180));
    let responder = std::thread::spawn(move || answer_pings(&peer, [0x02, 0, 0, 0, 0, 0x77], 3));
    console.command("ifconfig eth0 192.168.77.1 netmask 255.255.255.0 up");
    let ping = console.command("ping -c 3 -W 5 192.168.77.2");
    assert!(ping.contains("3 packets received"), "{ping}");
    assert_eq!(responder.join().unwrap(), 3);
    console.type_text("poweroff -f\n");
    assert_eq!(console.wait_exit(Duration::from_secs(60)).code(), Some(0));
    let recorded = console.bytes.clone();
    drop(console);
    let replay = common::replay_ok(&[recording.to_str().unwrap()]);
    assert_eq!(replay.stdout, recorded);
}
