//! The device tree Rewind hands the guest (`rewind run --dump-dtb`): its structure, and
//! agreement with the one QEMU 10 builds for `-M virt` (`dumpdtb`) on the nodes both have.
//!
//! Parses DTBs with a small flattened-device-tree reader defined here (std only).
//! The QEMU comparison needs `qemu-system-riscv64` (Debian: qemu-system-misc) and fails
//! without it.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// A flattened-device-tree reader.
// ---------------------------------------------------------------------------------------------

const FDT_MAGIC: u32 = 0xd00d_feed;
const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_NOP: u32 = 4;
const FDT_END: u32 = 9;
const HEADER_LEN: usize = 40;

/// One node: its properties as raw bytes, by name.
#[derive(Debug, Default)]
struct Node {
    props: BTreeMap<String, Vec<u8>>,
}

/// A parsed device tree: nodes by full path (`/`, `/soc`, `/soc/serial@10000000`).
#[derive(Debug)]
struct Tree {
    nodes: BTreeMap<String, Node>,
}

fn be32(bytes: &[u8], at: usize) -> Result<u32, String> {
    at.checked_add(4)
        .and_then(|end| bytes.get(at..end))
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| {
            format!(
                "reading 4 bytes at {at:#x} runs past the end ({:#x})",
                bytes.len()
            )
        })
}

/// The NUL-terminated string at `at` in `block`, as UTF-8.
fn c_string(block: &[u8], at: usize, what: &str) -> Result<String, String> {
    let rest = block.get(at..).ok_or_else(|| {
        format!(
            "{what} at {at:#x} lies outside its block ({:#x} bytes)",
            block.len()
        )
    })?;
    let len = rest
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| format!("{what} at {at:#x} has no terminating NUL"))?;
    String::from_utf8(rest[..len].to_vec()).map_err(|_| format!("{what} at {at:#x} is not UTF-8"))
}

fn align4(v: usize) -> Option<usize> {
    v.checked_add(3).map(|v| v & !3)
}

/// A region of `blob` given by header fields, checked against the blob's total size.
fn block<'a>(blob: &'a [u8], off: u32, size: u32, what: &str) -> Result<&'a [u8], String> {
    let (off, size) = (off as usize, size as usize);
    off.checked_add(size)
        .and_then(|end| blob.get(off..end))
        .ok_or_else(|| {
            format!(
                "{what} block {off:#x}+{size:#x} lies outside the {:#x}-byte blob",
                blob.len()
            )
        })
}

impl Tree {
    fn parse(data: &[u8]) -> Result<Tree, String> {
        if data.len() < HEADER_LEN {
            return Err(format!(
                "{} bytes is too short for an FDT header",
                data.len()
            ));
        }
        let magic = be32(data, 0)?;
        if magic != FDT_MAGIC {
            return Err(format!("bad magic {magic:#010x} (want {FDT_MAGIC:#010x})"));
        }
        let total = be32(data, 4)? as usize;
        let blob = data.get(..total).ok_or_else(|| {
            format!(
                "totalsize {total:#x} exceeds the {:#x} bytes given",
                data.len()
            )
        })?;
        if total < HEADER_LEN {
            return Err(format!("totalsize {total:#x} is smaller than the header"));
        }
        let (off_struct, off_strings) = (be32(blob, 8)?, be32(blob, 12)?);
        let version = be32(blob, 20)?;
        if version < 17 {
            return Err(format!(
                "version {version} is too old (need 17, which has size_dt_struct)"
            ));
        }
        let (size_strings, size_struct) = (be32(blob, 32)?, be32(blob, 36)?);
        let structure = block(blob, off_struct, size_struct, "structure")?;
        let strings = block(blob, off_strings, size_strings, "strings")?;

        let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
        let mut stack: Vec<String> = Vec::new();
        let mut root_done = false;
        let mut at = 0usize;
        loop {
            let token =
                be32(structure, at).map_err(|e| format!("structure block: {e} (no FDT_END)"))?;
            let token_at = at;
            at += 4;
            match token {
                FDT_BEGIN_NODE => {
                    let name = c_string(structure, at, "node name")?;
                    at = align4(at + name.len() + 1).ok_or("node name offset overflows")?;
                    let path = match stack.last() {
                        None if root_done => {
                            return Err(format!("a second root node at {token_at:#x}"))
                        }
                        None if !name.is_empty() => {
                            return Err(format!("the root node is named `{name}` (want empty)"))
                        }
                        None => "/".to_string(),
                        Some(_) if name.is_empty() || name.contains('/') => {
                            return Err(format!("bad node name `{name}` at {token_at:#x}"))
                        }
                        Some(parent) if parent == "/" => format!("/{name}"),
                        Some(parent) => format!("{parent}/{name}"),
                    };
                    if nodes.insert(path.clone(), Node::default()).is_some() {
                        return Err(format!("node {path} appears twice"));
                    }
                    stack.push(path);
                }
                FDT_END_NODE => {
                    stack.pop().ok_or_else(|| {
                        format!("FDT_END_NODE at {token_at:#x} with no open node")
                    })?;
                    root_done |= stack.is_empty();
                }
                FDT_PROP => {
                    let len = be32(structure, at)? as usize;
                    let name_off = be32(structure, at + 4)? as usize;
                    at += 8;
                    let value = at
                        .checked_add(len)
                        .and_then(|end| structure.get(at..end))
                        .ok_or_else(|| format!("property value at {at:#x} ({len} bytes) runs past the structure block"))?
                        .to_vec();
                    at = align4(at + len).ok_or("property offset overflows")?;
                    let name = c_string(strings, name_off, "property name")?;
                    let path = stack.last().ok_or_else(|| {
                        format!("property `{name}` at {token_at:#x} is outside any node")
                    })?;
                    let node = nodes.get_mut(path).expect("open nodes are in the map");
                    if node.props.insert(name.clone(), value).is_some() {
                        return Err(format!("property `{name}` appears twice in {path}"));
                    }
                }
                FDT_NOP => {}
                FDT_END => {
                    if let Some(open) = stack.last() {
                        return Err(format!("FDT_END while node {open} is still open"));
                    }
                    if !root_done {
                        return Err("the structure block has no root node".into());
                    }
                    return Ok(Tree { nodes });
                }
                other => return Err(format!("unknown token {other:#x} at {token_at:#x}")),
            }
        }
    }

    fn node(&self, path: &str) -> &Node {
        self.nodes.get(path).unwrap_or_else(|| {
            panic!(
                "the device tree has no node {path}; it has: {:?}",
                self.nodes.keys().collect::<Vec<_>>()
            )
        })
    }

    fn prop(&self, path: &str, name: &str) -> &[u8] {
        self.node(path)
            .props
            .get(name)
            .unwrap_or_else(|| panic!("{path} has no property `{name}`"))
    }

    fn cells(&self, path: &str, name: &str) -> Vec<u32> {
        let raw = self.prop(path, name);
        to_cells(raw).unwrap_or_else(|e| panic!("{path} `{name}`: {e}"))
    }

    fn u32(&self, path: &str, name: &str) -> u32 {
        match self.cells(path, name)[..] {
            [v] => v,
            ref other => panic!("{path} `{name}` should be one cell, is {other:x?}"),
        }
    }

    fn strings(&self, path: &str, name: &str) -> Vec<String> {
        to_strings(self.prop(path, name)).unwrap_or_else(|e| panic!("{path} `{name}`: {e}"))
    }

    fn string(&self, path: &str, name: &str) -> String {
        match &self.strings(path, name)[..] {
            [s] => s.clone(),
            other => panic!("{path} `{name}` should be one string, is {other:?}"),
        }
    }

    /// The path of the node whose `phandle` is `phandle`.
    fn phandle_path(&self, phandle: u32) -> Result<&str, String> {
        let found: Vec<&str> = self
            .nodes
            .iter()
            .filter(|(_, n)| {
                ["phandle", "linux,phandle"]
                    .iter()
                    .any(|p| n.props.get(*p).and_then(|v| to_cells(v).ok()) == Some(vec![phandle]))
            })
            .map(|(path, _)| path.as_str())
            .collect();
        match found[..] {
            [path] => Ok(path),
            [] => Err(format!("no node has phandle {phandle:#x}")),
            _ => Err(format!(
                "several nodes have phandle {phandle:#x}: {found:?}"
            )),
        }
    }

    fn parent_of(path: &str) -> Option<&str> {
        match path.rfind('/') {
            Some(0) if path.len() > 1 => Some("/"),
            Some(0) | None => None,
            Some(i) => Some(&path[..i]),
        }
    }

    /// `interrupts-extended` as (controller path, specifier cells) pairs, using each
    /// controller's `#interrupt-cells`.
    fn interrupts_extended(&self, path: &str) -> Result<Vec<(String, Vec<u32>)>, String> {
        let cells = to_cells(self.prop(path, "interrupts-extended"))?;
        let mut out = Vec::new();
        let mut i = 0;
        while i < cells.len() {
            let target = self.phandle_path(cells[i])?;
            let n = self
                .nodes
                .get(target)
                .and_then(|t| t.props.get("#interrupt-cells"))
                .and_then(|v| to_cells(v).ok())
                .and_then(|v| v.first().copied())
                .ok_or_else(|| format!("{target} (referenced by {path}) has no #interrupt-cells"))?
                as usize;
            let spec = cells
                .get(i + 1..i + 1 + n)
                .ok_or_else(|| format!("{path} interrupts-extended is cut short: {cells:x?}"))?;
            out.push((target.to_string(), spec.to_vec()));
            i += 1 + n;
        }
        Ok(out)
    }
}

fn to_cells(raw: &[u8]) -> Result<Vec<u32>, String> {
    if raw.len() & 3 != 0 {
        return Err(format!(
            "{} bytes is not a whole number of cells: {raw:02x?}",
            raw.len()
        ));
    }
    Ok(raw
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

fn to_strings(raw: &[u8]) -> Result<Vec<String>, String> {
    let body = raw
        .strip_suffix(&[0])
        .ok_or_else(|| format!("not a NUL-terminated string list: {raw:02x?}"))?;
    body.split(|&b| b == 0)
        .map(|s| String::from_utf8(s.to_vec()).map_err(|_| format!("not UTF-8: {raw:02x?}")))
        .collect()
}

#[cfg(test)]
mod parser_tests {
    use super::*;

    /// A minimal FDT writer, to feed the reader known input.
    #[derive(Default)]
    struct Writer {
        structure: Vec<u8>,
        strings: Vec<u8>,
    }

    impl Writer {
        fn token(&mut self, t: u32) -> &mut Self {
            self.structure.extend_from_slice(&t.to_be_bytes());
            self
        }
        fn pad(&mut self) {
            while self.structure.len() & 3 != 0 {
                self.structure.push(0);
            }
        }
        fn begin(&mut self, name: &str) -> &mut Self {
            self.token(FDT_BEGIN_NODE);
            self.structure.extend_from_slice(name.as_bytes());
            self.structure.push(0);
            self.pad();
            self
        }
        fn end(&mut self) -> &mut Self {
            self.token(FDT_END_NODE)
        }
        fn prop(&mut self, name: &str, value: &[u8]) -> &mut Self {
            let off = self.strings.len() as u32;
            self.strings.extend_from_slice(name.as_bytes());
            self.strings.push(0);
            self.token(FDT_PROP).token(value.len() as u32).token(off);
            self.structure.extend_from_slice(value);
            self.pad();
            self
        }
        fn finish(&mut self) -> Vec<u8> {
            let reserve = HEADER_LEN + 8; // header, then an empty reserve map (16 bytes) at 40
            let off_struct = reserve + 8;
            let off_strings = off_struct + self.structure.len();
            let total = off_strings + self.strings.len();
            let mut out = Vec::new();
            for v in [
                FDT_MAGIC,
                total as u32,
                off_struct as u32,
                off_strings as u32,
                HEADER_LEN as u32,
                17,
                16,
                0,
                self.strings.len() as u32,
                self.structure.len() as u32,
            ] {
                out.extend_from_slice(&v.to_be_bytes());
            }
            out.resize(off_struct, 0);
            out.extend_from_slice(&self.structure);
            out.extend_from_slice(&self.strings);
            out
        }
    }

    fn sample() -> Vec<u8> {
        let mut w = Writer::default();
        w.begin("")
            .prop("#address-cells", &2u32.to_be_bytes())
            .token(FDT_NOP)
            .begin("soc")
            .begin("serial@10000000")
            .prop("compatible", b"ns16550a\0")
            .prop("empty", b"")
            .prop("odd", b"abc")
            .end()
            .end()
            .begin("chosen")
            .end()
            .end()
            .token(FDT_END);
        w.finish()
    }

    #[test]
    fn parses_nested_nodes_and_properties() {
        let tree = Tree::parse(&sample()).expect("the sample parses");
        let paths: Vec<&str> = tree.nodes.keys().map(String::as_str).collect();
        assert_eq!(paths, ["/", "/chosen", "/soc", "/soc/serial@10000000"]);
        assert_eq!(tree.u32("/", "#address-cells"), 2);
        assert_eq!(
            tree.string("/soc/serial@10000000", "compatible"),
            "ns16550a"
        );
        assert_eq!(tree.prop("/soc/serial@10000000", "empty"), b"");
        assert_eq!(tree.prop("/soc/serial@10000000", "odd"), b"abc");
        assert_eq!(Tree::parent_of("/soc/serial@10000000"), Some("/soc"));
        assert_eq!(Tree::parent_of("/soc"), Some("/"));
        assert_eq!(Tree::parent_of("/"), None);
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let good = sample();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", vec![]),
            ("bad magic", {
                let mut b = good.clone();
                b[0] = 0;
                b
            }),
            ("totalsize past the end", {
                let mut b = good.clone();
                b[4..8].copy_from_slice(&(good.len() as u32 + 4).to_be_bytes());
                b
            }),
            ("structure past the end", {
                let mut b = good.clone();
                b[8..12].copy_from_slice(&0xffff_fff0u32.to_be_bytes());
                b
            }),
            ("no FDT_END", {
                let mut w = Writer::default();
                w.begin("").end();
                w.finish()
            }),
            ("unbalanced FDT_END_NODE", {
                let mut w = Writer::default();
                w.begin("").end().end().token(FDT_END);
                w.finish()
            }),
            ("node left open", {
                let mut w = Writer::default();
                w.begin("").begin("a").end().token(FDT_END);
                w.finish()
            }),
            ("unknown token", {
                let mut w = Writer::default();
                w.begin("").token(7).end().token(FDT_END);
                w.finish()
            }),
            ("property outside a node", {
                let mut w = Writer::default();
                w.prop("x", b"1").begin("").end().token(FDT_END);
                w.finish()
            }),
            ("property name past the strings", {
                let mut w = Writer::default();
                w.begin("")
                    .token(FDT_PROP)
                    .token(0)
                    .token(999)
                    .end()
                    .token(FDT_END);
                w.finish()
            }),
            ("property value past the structure", {
                let mut w = Writer::default();
                w.begin("")
                    .prop("x", b"")
                    .token(FDT_PROP)
                    .token(0xffff_ffff)
                    .token(0);
                w.finish()
            }),
            ("two roots", {
                let mut w = Writer::default();
                w.begin("").end().begin("").end().token(FDT_END);
                w.finish()
            }),
        ];
        for (what, bytes) in cases {
            assert!(Tree::parse(&bytes).is_err(), "{what}: parsed as valid");
        }
        // Every truncation and every single-byte corruption: any result, but no panic.
        for len in 0..good.len() {
            let _ = Tree::parse(&good[..len]);
        }
        for i in 0..good.len() {
            for v in [0x00, 0x01, 0x03, 0x09, 0x7f, 0xff] {
                let mut b = good.clone();
                b[i] = v;
                let _ = Tree::parse(&b);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Getting the device trees.
// ---------------------------------------------------------------------------------------------

const SERIAL: &str = "/soc/serial@10000000";
const RTC: &str = "/soc/rtc@101000";
const PLIC: &str = "/soc/plic@c000000";
const CLINT: &str = "/soc/clint@2000000";
const TEST: &str = "/soc/test@100000";
const MEMORY: &str = "/memory@80000000";
const CPU0: &str = "/cpus/cpu@0";
const CPU0_INTC: &str = "/cpus/cpu@0/interrupt-controller";
const BOOTARGS: &str = "console=ttyS0";

/// A scratch file path, unique to this process and `name`; callers remove it once done (it is
/// left behind when a test fails, for inspection).
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("device_tree");
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir.join(format!("{}-{name}", std::process::id()))
}

/// A minimal RV64 ELF: one PT_LOAD segment at 0x8000_0000 holding `j .`.
fn tiny_kernel() -> Vec<u8> {
    const BASE: u64 = 0x8000_0000;
    let code = 0x0000_006fu32.to_le_bytes(); // jal x0, 0
    let mut elf = Vec::new();
    elf.extend_from_slice(b"\x7fELF\x02\x01\x01\x00"); // 64-bit, little-endian, version 1
    elf.extend_from_slice(&[0; 8]);
    elf.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf.extend_from_slice(&243u16.to_le_bytes()); // EM_RISCV
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&BASE.to_le_bytes()); // e_entry
    elf.extend_from_slice(&64u64.to_le_bytes()); // e_phoff
    elf.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    elf.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    for v in [64u16, 56, 1, 0, 0, 0] {
        // e_ehsize, e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx
        elf.extend_from_slice(&v.to_le_bytes());
    }
    elf.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    elf.extend_from_slice(&5u32.to_le_bytes()); // R+X
    for v in [120u64, BASE, BASE, 4, 4, 4] {
        // p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align
        elf.extend_from_slice(&v.to_le_bytes());
    }
    elf.extend_from_slice(&code);
    elf
}

fn rewind_dtb_file(append: Option<&str>) -> Tree {
    let name = if append.is_some() {
        "rewind-append"
    } else {
        "rewind"
    };
    let args: Vec<&str> = append.map(|a| vec!["--append", a]).unwrap_or_default();
    rewind_dtb_with(name, &args)
}

/// Rewind's device tree for a `run` with `args`; `name` keeps its files apart.
fn rewind_dtb_with(name: &str, args: &[&str]) -> Tree {
    let kernel = scratch(&format!("{name}.elf"));
    fs::write(&kernel, tiny_kernel())
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", kernel.display()));
    let out = scratch(&format!("{name}.dtb"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rewind"));
    cmd.arg("run")
        .arg("--dump-dtb")
        .arg(&out)
        .args(["--memory", "512M", "--bios", "none", "--kernel"])
        .arg(&kernel)
        .args(args);
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run rewind: {e}"));
    assert!(
        output.status.success(),
        "`rewind run --dump-dtb` failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let bytes =
        fs::read(&out).unwrap_or_else(|e| panic!("rewind wrote no DTB at {}: {e}", out.display()));
    let tree = Tree::parse(&bytes)
        .unwrap_or_else(|e| panic!("Rewind's DTB ({}) does not parse: {e}", out.display()));
    let _ = fs::remove_file(&kernel);
    let _ = fs::remove_file(&out);
    tree
}

/// Rewind's device tree with no `--append`.
fn rewind() -> &'static Tree {
    static TREE: OnceLock<Tree> = OnceLock::new();
    TREE.get_or_init(|| rewind_dtb_file(None))
}

/// Rewind's device tree with `--append console=ttyS0`.
fn rewind_with_append() -> &'static Tree {
    static TREE: OnceLock<Tree> = OnceLock::new();
    TREE.get_or_init(|| rewind_dtb_file(Some(BOOTARGS)))
}

fn qemu() -> Tree {
    qemu_with(&["-m", "512M"])
}

/// QEMU's device tree for `-M virt` with `args`.
fn qemu_with(args: &[&str]) -> Tree {
    // Tests run in parallel: each dump has its own file.
    static DUMPS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = DUMPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let out = scratch(&format!("qemu-{n}.dtb"));
    let child = Command::new("qemu-system-riscv64")
        .arg("-M")
        .arg(format!("virt,dumpdtb={}", out.display()))
        .args(args)
        .args(["-display", "none"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => panic!(
            "cannot run qemu-system-riscv64 ({e}): the QEMU comparison needs it; install \
             qemu-system-misc (Debian/Ubuntu: apt-get install qemu-system-misc)"
        ),
    };
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for QEMU") {
            break status;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("qemu-system-riscv64 did not exit within 60 s of dumping its DTB");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        use std::io::Read;
        let _ = pipe.read_to_string(&mut stderr);
    }
    assert!(
        status.success(),
        "qemu-system-riscv64 dumpdtb failed ({status}):\n{stderr}"
    );
    let bytes =
        fs::read(&out).unwrap_or_else(|e| panic!("QEMU wrote no DTB at {}: {e}", out.display()));
    let tree = Tree::parse(&bytes)
        .unwrap_or_else(|e| panic!("QEMU's DTB ({}) does not parse: {e}", out.display()));
    let _ = fs::remove_file(&out);
    tree
}

// ---------------------------------------------------------------------------------------------
// The structure of Rewind's device tree.
// ---------------------------------------------------------------------------------------------

fn has_compatible(tree: &Tree, path: &str, want: &str) {
    let list = tree.strings(path, "compatible");
    assert!(
        list.iter().any(|c| c == want),
        "{path} compatible {list:?} should include `{want}`"
    );
}

fn assert_reg(tree: &Tree, path: &str, base: u64, size: u64) {
    let raw = tree.prop(path, "reg");
    let mut want = base.to_be_bytes().to_vec();
    want.extend_from_slice(&size.to_be_bytes());
    assert_eq!(
        raw,
        &want[..],
        "{path} reg should be <{base:#x} {size:#x}> as two 64-bit big-endian values, is {raw:02x?}"
    );
}

fn assert_intc_pairs(tree: &Tree, path: &str, want: &[u32]) {
    let got = tree
        .interrupts_extended(path)
        .unwrap_or_else(|e| panic!("{path} interrupts-extended: {e}"));
    let want: Vec<(String, Vec<u32>)> = want
        .iter()
        .map(|&irq| (CPU0_INTC.to_string(), vec![irq]))
        .collect();
    assert_eq!(
        got, want,
        "{path} interrupts-extended should be hart 0's cpu-intc with {want:?}"
    );
}

#[test]
fn root_and_memory() {
    let t = rewind();
    assert_eq!(
        t.strings("/", "compatible"),
        ["riscv-virtio"],
        "root compatible"
    );
    assert_eq!(t.u32("/", "#address-cells"), 2, "root #address-cells");
    assert_eq!(t.u32("/", "#size-cells"), 2, "root #size-cells");
    assert_eq!(t.string(MEMORY, "device_type"), "memory");
    assert_reg(t, MEMORY, 0x8000_0000, 512 << 20);
}

#[test]
fn cpus() {
    let t = rewind();
    assert_eq!(
        t.u32("/cpus", "timebase-frequency"),
        10_000_000,
        "/cpus timebase-frequency"
    );
    let isa = t.string(CPU0, "riscv,isa");
    assert!(
        isa.starts_with("rv64imafdc"),
        "{CPU0} riscv,isa `{isa}` should start with rv64imafdc"
    );
    let mmu = t.string(CPU0, "mmu-type");
    assert!(
        mmu == "riscv,sv39" || mmu == "riscv,sv48",
        "{CPU0} mmu-type `{mmu}` should be riscv,sv39 or riscv,sv48"
    );
    has_compatible(t, CPU0_INTC, "riscv,cpu-intc");
    assert!(
        t.node(CPU0_INTC).props.contains_key("interrupt-controller"),
        "{CPU0_INTC} lacks the interrupt-controller property"
    );
    assert_eq!(
        t.u32(CPU0_INTC, "#interrupt-cells"),
        1,
        "{CPU0_INTC} #interrupt-cells"
    );
}

#[test]
fn serial_and_rtc() {
    let t = rewind();
    assert_eq!(
        t.strings(SERIAL, "compatible"),
        ["ns16550a"],
        "{SERIAL} compatible"
    );
    assert_reg(t, SERIAL, 0x1000_0000, 0x100);
    assert_eq!(t.cells(SERIAL, "interrupts"), [10], "{SERIAL} interrupts");
    has_compatible(t, RTC, "google,goldfish-rtc");
    assert_eq!(t.cells(RTC, "interrupts"), [11], "{RTC} interrupts");
}

#[test]
fn plic_and_clint() {
    let t = rewind();
    has_compatible(t, PLIC, "riscv,plic0");
    assert_eq!(t.u32(PLIC, "riscv,ndev"), 95, "{PLIC} riscv,ndev");
    assert_eq!(
        t.u32(PLIC, "#interrupt-cells"),
        1,
        "{PLIC} #interrupt-cells"
    );
    assert!(
        t.node(PLIC).props.contains_key("interrupt-controller"),
        "{PLIC} lacks the interrupt-controller property"
    );
    assert_intc_pairs(t, PLIC, &[11, 9]);
    has_compatible(t, CLINT, "riscv,clint0");
    assert_intc_pairs(t, CLINT, &[3, 7]);
}

#[test]
fn test_device_poweroff_and_reboot() {
    let t = rewind();
    has_compatible(t, TEST, "sifive,test0");
    has_compatible(t, TEST, "syscon");
    for (path, value) in [("/poweroff", 0x5555), ("/reboot", 0x7777)] {
        let compatible = format!("syscon-{}", &path[1..]);
        has_compatible(t, path, &compatible);
        assert_eq!(t.u32(path, "value"), value, "{path} value");
        assert_eq!(t.u32(path, "offset"), 0, "{path} offset");
        let regmap = t.u32(path, "regmap");
        assert_eq!(
            t.phandle_path(regmap),
            Ok(TEST),
            "{path} regmap {regmap:#x} should refer to the test device"
        );
    }
}

#[test]
fn virtio_mmio_slots() {
    let t = rewind();
    for n in 1..=8u64 {
        let path = format!("/soc/virtio_mmio@1000{n}000");
        has_compatible(t, &path, "virtio,mmio");
        assert_eq!(
            t.cells(&path, "interrupts"),
            [n as u32],
            "{path} interrupts"
        );
        assert_reg(t, &path, 0x1000_0000 + n * 0x1000, 0x1000);
    }
    let count = t
        .nodes
        .keys()
        .filter(|p| p.starts_with("/soc/virtio_mmio@"))
        .count();
    assert_eq!(count, 8, "there should be exactly eight virtio_mmio nodes");
}

#[test]
fn chosen() {
    for (t, bootargs) in [(rewind(), None), (rewind_with_append(), Some(BOOTARGS))] {
        let stdout = t.string("/chosen", "stdout-path");
        let target = stdout.split(':').next().unwrap_or_default();
        assert_eq!(
            target, SERIAL,
            "/chosen stdout-path `{stdout}` should name the serial node"
        );
        let seed = t.prop("/chosen", "rng-seed");
        assert!(!seed.is_empty(), "/chosen rng-seed is empty");
        match bootargs {
            Some(args) => assert_eq!(
                t.string("/chosen", "bootargs"),
                args,
                "/chosen bootargs with --append"
            ),
            None => assert!(
                !t.node("/chosen").props.contains_key("bootargs"),
                "/chosen has bootargs although no --append was given"
            ),
        }
    }
}

#[test]
fn interrupt_parents_are_the_plic() {
    let t = rewind();
    let mut checked = 0;
    for (path, node) in &t.nodes {
        if let Some(raw) = node.props.get("interrupt-parent") {
            let cells = to_cells(raw).unwrap_or_else(|e| panic!("{path} interrupt-parent: {e}"));
            assert_eq!(
                cells.len(),
                1,
                "{path} interrupt-parent should be one phandle"
            );
            assert_eq!(
                t.phandle_path(cells[0]),
                Ok(PLIC),
                "{path} interrupt-parent {:#x} should refer to the PLIC",
                cells[0]
            );
            checked += 1;
        }
        if node.props.contains_key("interrupts") {
            let mut at = Some(path.as_str());
            while let Some(p) = at {
                if t.node(p).props.contains_key("interrupt-parent") {
                    break;
                }
                at = Tree::parent_of(p);
            }
            assert!(
                at.is_some(),
                "{path} has interrupts but no interrupt-parent on it or above it"
            );
        }
    }
    assert!(
        checked >= 10,
        "only {checked} nodes have an interrupt-parent (serial, rtc, 8 virtio)"
    );
}

/// The initrd lies where QEMU 10 puts it (kernel + min(RAM / 2, 512 MiB)), whatever the RAM.
#[test]
fn the_initrd_is_where_qemu_places_it() {
    // A raw kernel (QEMU loads any file it cannot parse as raw bytes) and a binary initrd.
    let kernel = scratch("initrd-kernel.bin");
    fs::write(&kernel, [0x6f, 0, 0, 0].repeat(1024)).unwrap();
    let initrd = scratch("initrd.img");
    fs::write(&initrd, [0u8, 1, 2, 0xff].repeat(300)).unwrap();
    let files = [kernel.to_str().unwrap(), initrd.to_str().unwrap()];
    let placed = |tree: &Tree| {
        ["linux,initrd-start", "linux,initrd-end"].map(|name| tree.cells("/chosen", name))
    };
    for memory in ["128M", "512M", "1G", "2G"] {
        let out = scratch(&format!("initrd-{memory}.dtb"));
        let status = Command::new(env!("CARGO_BIN_EXE_rewind"))
            .args([
                "run", "--memory", memory, "--bios", "none", "--kernel", files[0],
            ])
            .args(["--initrd", files[1], "--dump-dtb", out.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(status.success());
        let ours = Tree::parse(&fs::read(&out).unwrap()).unwrap();
        let theirs = qemu_with(&[
            "-m", memory, "-bios", "none", "-kernel", files[0], "-initrd", files[1],
        ]);
        assert_eq!(placed(&ours), placed(&theirs), "with {memory} of RAM");
    }
}

// ---------------------------------------------------------------------------------------------
// Agreement with QEMU 10.
// ---------------------------------------------------------------------------------------------

/// Properties compared on every node both trees have.
const COMPARED: &[&str] = &[
    "compatible",
    "reg",
    "interrupts",
    "interrupts-extended",
    "interrupt-parent",
    "#address-cells",
    "#size-cells",
    "#interrupt-cells",
    "riscv,ndev",
    "timebase-frequency",
    "device_type",
    "value",
    "offset",
    "regmap",
    "clock-frequency",
    "cpu",
];

/// Nodes that must be in both trees, so the comparison cannot pass vacuously.
const REQUIRED_IN_BOTH: &[&str] = &[
    SERIAL,
    PLIC,
    CLINT,
    RTC,
    TEST,
    "/soc/virtio_mmio@10001000",
    MEMORY,
    CPU0,
    "/poweroff",
    "/reboot",
];

/// A property in a form comparable across trees: phandles replaced by the paths they name.
fn normalised(tree: &Tree, path: &str, name: &str) -> Result<String, String> {
    let raw = tree.prop(path, name);
    match name {
        "interrupt-parent" | "regmap" | "cpu" => {
            let cells = to_cells(raw)?;
            let paths: Result<Vec<&str>, String> =
                cells.iter().map(|&p| tree.phandle_path(p)).collect();
            Ok(format!("{:?}", paths?))
        }
        "interrupts-extended" => Ok(format!("{:?}", tree.interrupts_extended(path)?)),
        _ => Ok(format!("{raw:02x?}")),
    }
}

#[test]
fn agrees_with_qemu() {
    assert_agree(rewind(), &qemu(), REQUIRED_IN_BOTH, 40);
}

/// With several harts: every hart's cpu node and interrupt controller, the cpu-map, and the
/// PLIC's and CLINT's per-hart contexts, against QEMU 10's `-smp N`.
#[test]
fn every_hart_is_described_as_qemu_describes_it() {
    for harts in [1u32, 2, 4, 8] {
        let n = harts.to_string();
        let ours = rewind_dtb_with(&format!("smp{n}"), &["--smp", &n]);
        let theirs = qemu_with(&["-m", "512M", "-smp", &n]);
        let mut required = vec![PLIC.to_string(), CLINT.to_string()];
        for hart in 0..harts {
            required.push(format!("/cpus/cpu@{hart}"));
            required.push(format!("/cpus/cpu@{hart}/interrupt-controller"));
            required.push(format!("/cpus/cpu-map/cluster0/core{hart}"));
        }
        let cpus = |t: &Tree| -> Vec<String> {
            let nodes = t.nodes.keys().filter(|p| p.starts_with("/cpus/cpu@"));
            nodes
                .filter(|p| !p.ends_with("interrupt-controller"))
                .cloned()
                .collect()
        };
        assert_eq!(cpus(&ours), cpus(&theirs), "--smp {n}: the cpu nodes");
        let required: Vec<&str> = required.iter().map(String::as_str).collect();
        // Per hart: compatible, reg, device_type, #interrupt-cells and interrupts-extended of
        // the controllers; cpu of each core.
        let properties = 5 * harts as usize + 2;
        assert_agree(&ours, &theirs, &required, properties);
    }
}

/// The nodes `required` are in both trees, and every property of [`COMPARED`] agrees on every
/// node both have; at least `at_least` were compared.
fn assert_agree(ours: &Tree, theirs: &Tree, required: &[&str], at_least: usize) {
    let missing: Vec<&str> = required
        .iter()
        .copied()
        .filter(|p| !ours.nodes.contains_key(*p) || !theirs.nodes.contains_key(*p))
        .collect();
    assert!(
        missing.is_empty(),
        "nodes missing from Rewind's or QEMU's tree: {missing:?}"
    );

    let mut differences = Vec::new();
    let mut compared = 0;
    for (path, node) in &ours.nodes {
        let Some(other) = theirs.nodes.get(path) else {
            continue;
        };
        for &name in COMPARED {
            let (a, b) = (
                node.props.contains_key(name),
                other.props.contains_key(name),
            );
            if !a && !b {
                continue;
            }
            if a != b {
                let side = if a { "only Rewind" } else { "only QEMU" };
                differences.push(format!("{path} `{name}`: {side} has it"));
                continue;
            }
            compared += 1;
            let show = |r: Result<String, String>| r.unwrap_or_else(|e| format!("<invalid: {e}>"));
            let (x, y) = (
                show(normalised(ours, path, name)),
                show(normalised(theirs, path, name)),
            );
            if x == y {
                continue;
            }
            differences.push(format!("{path} `{name}`: Rewind {x}, QEMU {y}"));
        }
    }
    assert!(
        compared >= at_least,
        "only {compared} properties were compared"
    );
    assert!(
        differences.is_empty(),
        "Rewind's device tree differs from QEMU 10's:\n  {}",
        differences.join("\n  ")
    );
}
