//! The host side of virtio-net (`--netdev`): backends that take the frames the guest sends
//! and produce the frames that enter it.
//!
//! - `user`: QEMU's user-mode network through libslirp (guest 10.0.2.15, gateway and host
//!   10.0.2.2, DNS 10.0.2.3, DHCP, `hostfwd=`).
//! - `stream`: frames on a TCP or Unix stream socket, each behind a 4-byte big-endian length, as
//!   QEMU's `-netdev stream` (and `socket`) sends them.
//! - `dgram`: one frame per UDP datagram, as QEMU's `-netdev dgram`.
//!
//! Every backend runs on its own thread and hands received frames to the live loop as
//! [`HostEvent::Frame`], on the channel that also carries the console, so a sleeping guest
//! wakes for them. The live loop injects them as input events: that is what gets recorded, so
//! a replay opens no backend at all.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::mpsc::{self, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::HostEvent;

/// The guest's address on the user-mode network, as QEMU's.
const GUEST_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);

/// A port forwarded from the host into the guest (`hostfwd=tcp:HOSTADDR:HOSTPORT-GUESTADDR:GUESTPORT`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostFwd {
    pub udp: bool,
    pub host_addr: Ipv4Addr,
    pub host_port: u16,
    pub guest_addr: Ipv4Addr,
    pub guest_port: u16,
}

/// Where a stream or datagram backend talks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    Inet(String, u16),
    Unix(PathBuf),
}

/// A `--netdev` option.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetdevSpec {
    User {
        hostfwd: Vec<HostFwd>,
    },
    Stream {
        server: bool,
        addr: Address,
    },
    Dgram {
        remote: Address,
        local: Option<Address>,
    },
}

const NETDEV_HELP: &str = "use `user[,hostfwd=tcp::HOSTPORT-:GUESTPORT]`, \
     `stream,server=on|off,addr.type=inet,addr.host=HOST,addr.port=PORT` (or \
     addr.type=unix,addr.path=PATH), or \
     `dgram,remote.type=inet,remote.host=HOST,remote.port=PORT[,local.type=inet,local.host=HOST,local.port=PORT]`";

/// Parses QEMU's `-netdev` syntax for the backends Rewind has.
pub fn parse_netdev(text: &str) -> Result<NetdevSpec, String> {
    let mut parts = text.split(',');
    let kind = parts.next().unwrap_or_default();
    if !matches!(kind, "user" | "stream" | "dgram") {
        return Err(format!("unknown netdev type `{kind}`: {NETDEV_HELP}"));
    }
    let mut hostfwd = Vec::new();
    let mut server = false;
    let mut fields: Vec<(String, String)> = Vec::new();
    for part in parts {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| format!("netdev option `{part}` has no value: {NETDEV_HELP}"))?;
        match (kind, key) {
            (_, "id") => {}
            ("user", "hostfwd") => hostfwd.push(parse_hostfwd(value)?),
            ("user", "net") if value == "10.0.2.0/24" => {}
            ("stream", "server") => {
                server = match value {
                    "on" | "true" | "yes" => true,
                    "off" | "false" | "no" => false,
                    _ => return Err(format!("server={value}: use on or off")),
                }
            }
            ("stream" | "dgram", _) if key.contains('.') => {
                fields.push((key.to_string(), value.to_string()))
            }
            _ => {
                return Err(format!(
                    "netdev `{kind}` has no option `{key}` here: {NETDEV_HELP}"
                ))
            }
        }
    }
    let address = |prefix: &str| -> Result<Option<Address>, String> {
        let get = |name: &str| {
            fields
                .iter()
                .find(|(k, _)| k == &format!("{prefix}.{name}"))
                .map(|(_, v)| v.as_str())
        };
        match get("type") {
            None => Ok(None),
            Some("inet") => {
                let host = get("host").unwrap_or("127.0.0.1").to_string();
                let port = get("port")
                    .ok_or_else(|| format!("{prefix}.port is missing"))?
                    .parse()
                    .map_err(|_| format!("{prefix}.port is not a port number"))?;
                Ok(Some(Address::Inet(host, port)))
            }
            Some("unix") => Ok(Some(Address::Unix(
                get("path")
                    .ok_or_else(|| format!("{prefix}.path is missing"))?
                    .into(),
            ))),
            Some(other) => Err(format!("{prefix}.type={other}: use inet or unix")),
        }
    };
    match kind {
        "user" => Ok(NetdevSpec::User { hostfwd }),
        "stream" => Ok(NetdevSpec::Stream {
            server,
            addr: address("addr")?.ok_or("a stream netdev needs addr.type=…")?,
        }),
        "dgram" => Ok(NetdevSpec::Dgram {
            remote: address("remote")?.ok_or("a dgram netdev needs remote.type=…")?,
            local: address("local")?,
        }),
        other => Err(format!("unknown netdev type `{other}`: {NETDEV_HELP}")),
    }
}

/// `tcp:HOSTADDR:HOSTPORT-GUESTADDR:GUESTPORT`, where the protocol and both addresses may be
/// left out.
fn parse_hostfwd(text: &str) -> Result<HostFwd, String> {
    let bad = || format!("hostfwd={text}: use tcp::HOSTPORT-:GUESTPORT (or udp:…)");
    let (proto, rest) = match text.split_once(':') {
        Some(("tcp" | "", rest)) => (false, rest),
        Some(("udp", rest)) => (true, rest),
        _ => return Err(bad()),
    };
    let (host, guest) = rest.split_once('-').ok_or_else(bad)?;
    let endpoint = |s: &str, default: Ipv4Addr| -> Result<(Ipv4Addr, u16), String> {
        let (addr, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let addr = if addr.is_empty() {
            default
        } else {
            addr.parse().map_err(|_| bad())?
        };
        Ok((addr, port.parse().map_err(|_| bad())?))
    };
    let (host_addr, host_port) = endpoint(host, Ipv4Addr::UNSPECIFIED)?;
    let (guest_addr, guest_port) = endpoint(guest, GUEST_ADDR)?;
    Ok(HostFwd {
        udp: proto,
        host_addr,
        host_port,
        guest_addr,
        guest_port,
    })
}

/// A running backend; frames for it go through [`Backend::send`].
pub enum Backend {
    /// The slirp thread's queue and the socket that wakes it.
    User {
        frames: Sender<Vec<u8>>,
        wake: UnixStream,
    },
    /// The connected stream, once there is one.
    Stream(Arc<Mutex<Option<Box<dyn Write + Send>>>>),
    Dgram(UdpSocket, SocketAddr),
}

impl Backend {
    /// Starts the backend for NIC `nic`; frames it receives go to `events`.
    pub fn start(
        spec: &NetdevSpec,
        nic: usize,
        events: Sender<HostEvent>,
    ) -> Result<Backend, String> {
        match spec {
            NetdevSpec::User { hostfwd } => start_user(hostfwd.clone(), nic, events),
            NetdevSpec::Stream { server, addr } => start_stream(*server, addr, nic, events),
            NetdevSpec::Dgram { remote, local } => start_dgram(remote, local.as_ref(), nic, events),
        }
    }

    /// Sends a frame the guest wrote. A peer that is gone loses the frame, as a cable pulled
    /// out would.
    pub fn send(&mut self, frame: Vec<u8>) {
        match self {
            Backend::User { frames, wake } => {
                if frames.send(frame).is_ok() {
                    // A full socket already holds a wake-up.
                    let _ = wake.write(&[1]);
                }
            }
            Backend::Stream(peer) => {
                let mut peer = peer.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(stream) = peer.as_mut() {
                    let mut packet = (frame.len() as u32).to_be_bytes().to_vec();
                    packet.extend_from_slice(&frame);
                    if stream.write_all(&packet).is_err() {
                        *peer = None;
                    }
                }
            }
            Backend::Dgram(socket, remote) => {
                let _ = socket.send_to(&frame, *remote);
            }
        }
    }
}

fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    (host, port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("cannot resolve {host}:{port}"))
}

/// Reads length-prefixed frames from a stream until it ends.
fn read_frames(mut stream: impl Read, nic: usize, events: &Sender<HostEvent>) {
    let mut len = [0u8; 4];
    while stream.read_exact(&mut len).is_ok() {
        let n = u32::from_be_bytes(len) as usize;
        if n > rewind_machine::devices::virtio::net::MAX_FRAME {
            return; // not QEMU's framing: drop the connection
        }
        let mut frame = vec![0u8; n];
        if stream.read_exact(&mut frame).is_err() {
            return;
        }
        if events.send(HostEvent::Frame { nic, frame }).is_err() {
            return;
        }
    }
}

fn start_stream(
    server: bool,
    addr: &Address,
    nic: usize,
    events: Sender<HostEvent>,
) -> Result<Backend, String> {
    let peer: Arc<Mutex<Option<Box<dyn Write + Send>>>> = Arc::new(Mutex::new(None));
    let shared = peer.clone();
    let set_peer = move |w: Box<dyn Write + Send>| {
        *shared.lock().unwrap_or_else(|e| e.into_inner()) = Some(w);
    };
    let describe = match addr {
        Address::Inet(h, p) => format!("{h}:{p}"),
        Address::Unix(p) => p.display().to_string(),
    };
    let err =
        |what: &str, e: std::io::Error| format!("netdev stream: cannot {what} {describe}: {e}");
    match (server, addr) {
        (false, Address::Inet(host, port)) => {
            let stream =
                TcpStream::connect(resolve(host, *port)?).map_err(|e| err("connect to", e))?;
            let _ = stream.set_nodelay(true);
            set_peer(Box::new(stream.try_clone().map_err(|e| err("use", e))?));
            std::thread::spawn(move || read_frames(stream, nic, &events));
        }
        (false, Address::Unix(path)) => {
            let stream = UnixStream::connect(path).map_err(|e| err("connect to", e))?;
            set_peer(Box::new(stream.try_clone().map_err(|e| err("use", e))?));
            std::thread::spawn(move || read_frames(stream, nic, &events));
        }
        // A server takes one peer at a time; frames sent while none is connected are lost.
        (true, Address::Inet(host, port)) => {
            let listener =
                TcpListener::bind(resolve(host, *port)?).map_err(|e| err("listen on", e))?;
            std::thread::spawn(move || {
                for stream in listener.incoming().flatten() {
                    let _ = stream.set_nodelay(true);
                    if let Ok(w) = stream.try_clone() {
                        set_peer(Box::new(w));
                    }
                    read_frames(stream, nic, &events);
                }
            });
        }
        (true, Address::Unix(path)) => {
            let listener = UnixListener::bind(path).map_err(|e| err("listen on", e))?;
            std::thread::spawn(move || {
                for stream in listener.incoming().flatten() {
                    if let Ok(w) = stream.try_clone() {
                        set_peer(Box::new(w));
                    }
                    read_frames(stream, nic, &events);
                }
            });
        }
    }
    Ok(Backend::Stream(peer))
}

fn start_dgram(
    remote: &Address,
    local: Option<&Address>,
    nic: usize,
    events: Sender<HostEvent>,
) -> Result<Backend, String> {
    let inet = |a: &Address| match a {
        Address::Inet(h, p) => resolve(h, *p),
        Address::Unix(_) => Err("netdev dgram: this Rewind has inet addresses only".into()),
    };
    let remote = inet(remote)?;
    let local = match local {
        Some(a) => inet(a)?,
        None => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
    };
    let socket =
        UdpSocket::bind(local).map_err(|e| format!("netdev dgram: cannot bind {local}: {e}"))?;
    let reader = socket
        .try_clone()
        .map_err(|e| format!("netdev dgram: {e}"))?;
    std::thread::spawn(move || {
        let mut buf = vec![0u8; rewind_machine::devices::virtio::net::MAX_FRAME];
        while let Ok(n) = reader.recv(&mut buf) {
            if events
                .send(HostEvent::Frame {
                    nic,
                    frame: buf[..n].to_vec(),
                })
                .is_err()
            {
                return;
            }
        }
    });
    Ok(Backend::Dgram(socket, remote))
}

/// A slirp timer: when it fires (ms on the slirp clock), and what it calls.
type SlirpTimer = (Option<i64>, Option<Box<dyn FnMut()>>);

/// The slirp callbacks' side: the clock, timers, and where its frames go.
struct SlirpHost {
    start: Instant,
    nic: usize,
    events: Sender<HostEvent>,
    /// Timers by index: when each fires (ms on the slirp clock) and what it calls.
    timers: Vec<SlirpTimer>,
}

impl libslirp::Handler for SlirpHost {
    type Timer = usize;

    fn clock_get_ns(&mut self) -> i64 {
        self.start.elapsed().as_nanos() as i64
    }

    fn send_packet(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = self.events.send(HostEvent::Frame {
            nic: self.nic,
            frame: buf.to_vec(),
        });
        Ok(buf.len())
    }

    fn register_poll_fd(&mut self, _fd: i32) {}

    fn unregister_poll_fd(&mut self, _fd: i32) {}

    fn guest_error(&mut self, msg: &str) {
        eprintln!("rewind: netdev user: {msg}");
    }

    fn notify(&mut self) {}

    fn timer_new(&mut self, func: Box<dyn FnMut()>) -> Box<usize> {
        self.timers.push((None, Some(func)));
        Box::new(self.timers.len() - 1)
    }

    fn timer_mod(&mut self, timer: &mut Box<usize>, expire_time: i64) {
        if let Some(t) = self.timers.get_mut(**timer) {
            t.0 = Some(expire_time);
        }
    }

    fn timer_free(&mut self, timer: Box<usize>) {
        if let Some(t) = self.timers.get_mut(*timer) {
            *t = (None, None);
        }
    }
}

fn to_poll_events(slirp: libslirp::PollEvents) -> libc::c_short {
    let mut events = 0;
    for (has, flag) in [
        (slirp.has_in(), libc::POLLIN),
        (slirp.has_out(), libc::POLLOUT),
        (slirp.has_pri(), libc::POLLPRI),
        (slirp.has_err(), libc::POLLERR),
        (slirp.has_hup(), libc::POLLHUP),
    ] {
        if has {
            events |= flag;
        }
    }
    events
}

fn from_poll_events(revents: libc::c_short) -> libslirp::PollEvents {
    let mut events = libslirp::PollEvents::empty();
    for (flag, slirp) in [
        (libc::POLLIN, libslirp::PollEvents::poll_in()),
        (libc::POLLOUT, libslirp::PollEvents::poll_out()),
        (libc::POLLPRI, libslirp::PollEvents::poll_pri()),
        (libc::POLLERR, libslirp::PollEvents::poll_err()),
        (libc::POLLHUP, libslirp::PollEvents::poll_hup()),
    ] {
        if revents & flag != 0 {
            events |= slirp;
        }
    }
    events
}

/// Starts libslirp on its own thread (its context cannot leave the thread that made it).
fn start_user(
    hostfwd: Vec<HostFwd>,
    nic: usize,
    events: Sender<HostEvent>,
) -> Result<Backend, String> {
    let (frames_tx, frames_rx) = mpsc::channel::<Vec<u8>>();
    let (wake_tx, wake_rx) =
        UnixStream::pair().map_err(|e| format!("netdev user: cannot make a socket pair: {e}"))?;
    wake_tx
        .set_nonblocking(true)
        .and_then(|()| wake_rx.set_nonblocking(true))
        .map_err(|e| format!("netdev user: {e}"))?;
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    std::thread::spawn(move || {
        let host = Rc::new(RefCell::new(SlirpHost {
            start: Instant::now(),
            nic,
            events,
            timers: Vec::new(),
        }));
        let context = libslirp::Context::new(
            false,
            true,
            Ipv4Addr::new(10, 0, 2, 0),
            Ipv4Addr::new(255, 255, 255, 0),
            Ipv4Addr::new(10, 0, 2, 2),
            false,
            "fec0::".parse().unwrap_or(std::net::Ipv6Addr::UNSPECIFIED),
            64,
            "fec0::2".parse().unwrap_or(std::net::Ipv6Addr::UNSPECIFIED),
            None,
            None,
            None,
            None,
            GUEST_ADDR,
            Ipv4Addr::new(10, 0, 2, 3),
            "fec0::3".parse().unwrap_or(std::net::Ipv6Addr::UNSPECIFIED),
            Vec::new(),
            None,
            host.clone(),
        );
        for fwd in &hostfwd {
            // SAFETY: the context is alive (owned by this thread) and the arguments are plain
            // values; libslirp copies what it keeps.
            let failed = unsafe {
                libslirp_sys::slirp_add_hostfwd(
                    context.inner.context,
                    fwd.udp as i32,
                    fwd.host_addr.into(),
                    fwd.host_port as i32,
                    fwd.guest_addr.into(),
                    fwd.guest_port as i32,
                )
            } < 0;
            if failed {
                let _ = ready_tx.send(Err(format!(
                    "netdev user: cannot forward host port {}:{} (is it in use?)",
                    fwd.host_addr, fwd.host_port
                )));
                return;
            }
        }
        let _ = ready_tx.send(Ok(()));
        slirp_loop(&context, &host, &frames_rx, &wake_rx);
    });
    ready_rx
        .recv()
        .map_err(|_| "netdev user: libslirp did not start".to_string())??;
    Ok(Backend::User {
        frames: frames_tx,
        wake: wake_tx,
    })
}

/// Polls slirp's sockets and the wake-up socket, feeds it the guest's frames and runs its
/// timers, until the live run drops its end.
fn slirp_loop(
    context: &libslirp::Context<Rc<RefCell<SlirpHost>>>,
    host: &Rc<RefCell<SlirpHost>>,
    frames: &mpsc::Receiver<Vec<u8>>,
    mut wake: &UnixStream,
) {
    loop {
        let mut timeout: u32 = 1000;
        let mut fds = vec![libc::pollfd {
            fd: wake.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        context.pollfds_fill(&mut timeout, |fd, events| {
            fds.push(libc::pollfd {
                fd,
                events: to_poll_events(events),
                revents: 0,
            });
            (fds.len() - 1) as i32
        });
        let now_ms = host.borrow().start.elapsed().as_millis() as i64;
        if let Some(next) = host.borrow().timers.iter().filter_map(|t| t.0).min() {
            timeout = timeout.min(next.saturating_sub(now_ms).clamp(0, 1000) as u32);
        }
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structures.
        let ready =
            unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout as i32) };
        context.pollfds_poll(ready < 0, |idx| {
            fds.get(idx as usize)
                .map_or(libslirp::PollEvents::empty(), |p| {
                    from_poll_events(p.revents)
                })
        });
        if fds[0].revents & libc::POLLIN != 0 {
            let mut drain = [0u8; 256];
            while matches!(wake.read(&mut drain), Ok(n) if n > 0) {}
        }
        loop {
            match frames.try_recv() {
                Ok(frame) => context.input(&frame),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            }
        }
        // Timers that are due: each is taken out while it runs, as it may call back in.
        let now_ms = host.borrow().start.elapsed().as_millis() as i64;
        let due: Vec<usize> = host
            .borrow()
            .timers
            .iter()
            .enumerate()
            .filter(|(_, t)| t.0.is_some_and(|at| at <= now_ms))
            .map(|(i, _)| i)
            .collect();
        for i in due {
            let func = {
                let mut h = host.borrow_mut();
                h.timers[i].0 = None;
                h.timers[i].1.take()
            };
            if let Some(mut func) = func {
                func();
                let mut h = host.borrow_mut();
                if h.timers[i].1.is_none() {
                    h.timers[i].1 = Some(func);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_netdev_options_parse() {
        assert_eq!(
            parse_netdev("user,id=n0,hostfwd=tcp::5555-:22").unwrap(),
            NetdevSpec::User {
                hostfwd: vec![HostFwd {
                    udp: false,
                    host_addr: Ipv4Addr::UNSPECIFIED,
                    host_port: 5555,
                    guest_addr: GUEST_ADDR,
                    guest_port: 22
                }]
            }
        );
        assert_eq!(
            parse_netdev("user,hostfwd=udp:127.0.0.1:6000-10.0.2.15:7").unwrap(),
            NetdevSpec::User {
                hostfwd: vec![HostFwd {
                    udp: true,
                    host_addr: Ipv4Addr::LOCALHOST,
                    host_port: 6000,
                    guest_addr: GUEST_ADDR,
                    guest_port: 7
                }]
            }
        );
        assert_eq!(
            parse_netdev("stream,id=s,server=on,addr.type=inet,addr.host=127.0.0.1,addr.port=1234")
                .unwrap(),
            NetdevSpec::Stream {
                server: true,
                addr: Address::Inet("127.0.0.1".into(), 1234)
            }
        );
        assert_eq!(
            parse_netdev("dgram,remote.type=inet,remote.host=127.0.0.1,remote.port=9,local.type=inet,local.port=8")
                .unwrap(),
            NetdevSpec::Dgram {
                remote: Address::Inet("127.0.0.1".into(), 9),
                local: Some(Address::Inet("127.0.0.1".into(), 8)),
            }
        );
        for bad in [
            "tap",
            "user,hostfwd=tcp:5555:22",
            "user,hostfwd=sctp::1-:2",
            "user,smb=/tmp",
            "stream,server=maybe,addr.type=inet,addr.port=1",
            "stream,addr.type=inet",
            "stream",
            "dgram,remote.type=vsock,remote.cid=3",
        ] {
            let err = parse_netdev(bad).unwrap_err();
            assert!(!err.is_empty(), "{bad}");
        }
    }
}
