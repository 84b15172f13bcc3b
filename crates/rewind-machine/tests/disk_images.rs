//! The block layer against Debian's `qemu-img` and `qemu-io` (qemu-utils): qcow2 images made
//! by QEMU read as `qemu-img convert -O raw` does, images written here pass `qemu-img check`,
//! and images that cannot be used are refused with what to do.

mod common;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{pattern, TempDir};
use rewind_machine::block::qcow2::{is_qcow2, MAGIC};
use rewind_machine::block::{BlockBackend, DiskImage, Overlay};

/// The host offset in an L1 or a standard L2 entry (qcow2 specification).
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// In L1 and L2 entries: the cluster's refcount is 1.
const COPIED: u64 = 1 << 63;

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

/// `len` bytes of the file at `offset`; what lies past its end reads as zeros.
fn read_file(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    let file = File::open(path).unwrap();
    let mut done = 0;
    while done < len {
        match file
            .read_at(&mut buf[done..], offset + done as u64)
            .unwrap()
        {
            0 => break,
            n => done += n,
        }
    }
    buf
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} (Debian's qemu-utils): {e}"))
}

/// Runs qemu-img, which must succeed.
fn qemu_img(args: &[&str]) -> Output {
    let out = run("qemu-img", args);
    assert!(
        out.status.success(),
        "qemu-img {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// An empty qcow2 image at `path`, of `size` (as qemu-img takes it), with options `opts`.
fn create_qcow2(path: &str, opts: &str, size: &str) {
    qemu_img(&["create", "-f", "qcow2", "-o", opts, path, size]);
}

/// The raw image at `raw` converted to a qcow2 image at `img`, with options `opts`.
fn convert_to_qcow2(raw: &str, img: &str, opts: &str) {
    qemu_img(&["convert", "-O", "qcow2", "-o", opts, raw, img]);
}

fn qemu_io(path: &Path, commands: &[&str]) {
    let mut args = Vec::new();
    for c in commands {
        args.extend(["-c", c]);
    }
    let path = path.to_str().unwrap();
    args.push(path);
    let out = run("qemu-io", &args);
    assert!(out.status.success(), "qemu-io {args:?} failed");
}

/// `qemu-img check` finds neither errors nor leaks.
fn assert_clean(path: &Path) {
    let out = run("qemu-img", &["check", path.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("No errors were found"),
        "qemu-img check: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// xorshift64*: reproducible test inputs.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

/// Opens `path` as qcow2 (writing through if `writable`).
fn open(path: &Path, writable: bool) -> Result<DiskImage, String> {
    let image = DiskImage::open(path, Some("qcow2"), !writable, writable)?;
    assert_eq!(image.format_name(), "qcow2");
    Ok(image)
}

fn open_err(path: &Path, writable: bool) -> String {
    match open(path, writable) {
        Ok(_) => panic!("{} opened", path.display()),
        Err(e) => e,
    }
}

/// The cluster size in the header of the image at `path`.
fn cluster_size(path: &Path) -> u64 {
    1 << be32(&read_file(path, 0, 24), 20)
}

fn mib(n: u64) -> u64 {
    n << 20
}

/// Ranges worth looking at for a disk of `size` with `cs`-byte clusters: starts, ends,
/// cluster and L2 boundaries.
fn interesting(size: u64, cs: u64) -> Vec<(u64, usize)> {
    let l2_span = cs * (cs / 8);
    let mut ranges = vec![
        (0, 5000),
        (cs - 100, 200),
        (mib(1) + 3, 200_000),
        (3 * cs - 10, 2 * cs as usize + 20),
        (size - 70_000, 70_000),
    ];
    if l2_span < size {
        ranges.push((l2_span - 3000, 6000));
    }
    ranges
}

/// Reads of `image` equal reads of the raw file `raw` around `ranges`, at random places
/// and across cluster boundaries: sector-aligned ones (what virtio-blk asks) and others.
fn assert_reads_match(image: &DiskImage, raw: &Path, ranges: &[(u64, usize)], cs: u64) {
    let size = image.size();
    let mut rng = Rng::new(size ^ cs);
    let mut reads: Vec<(u64, usize)> = ranges
        .iter()
        .map(|&(at, len)| {
            let start = at.saturating_sub(cs + 7);
            let end = (at + len as u64 + cs + 7).min(size);
            (start, (end - start) as usize)
        })
        .collect();
    for _ in 0..200 {
        let len = 1 + rng.below(3 * cs) as usize;
        reads.push((rng.below(size - len as u64), len));
    }
    for _ in 0..100 {
        let len = 512 * (1 + rng.below(3 * cs / 512)) as usize;
        reads.push((rng.below((size - len as u64) / 512) * 512, len));
    }
    for _ in 0..50 {
        let boundary = (1 + rng.below(size / cs - 1)) * cs;
        reads.push((boundary - 1, 2));
    }
    for (at, len) in reads {
        let mut got = vec![0xeeu8; len];
        image.read_at(&mut got, at).unwrap();
        assert!(
            got == read_file(raw, at, len),
            "{len} bytes at {at:#x} differ from the raw image"
        );
    }
}

/// A sparse raw disk of `size` bytes with data in `ranges`.
fn make_raw(path: &Path, size: u64, ranges: &[(u64, usize)]) {
    let file = File::create(path).unwrap();
    file.set_len(size).unwrap();
    for &(at, len) in ranges {
        file.write_all_at(&pattern(7, at, len), at).unwrap();
    }
}

/// Converts a raw disk with data around the interesting places to qcow2 with `args`, and
/// reads it back.
fn reads_match_qemu_img_convert(args: &[&str], size: u64, cs: u64, version: u32) {
    let dir = TempDir::new("qcow2-read");
    let (raw, img) = (dir.file("disk.raw"), dir.file("disk.qcow2"));
    let ranges = interesting(size, cs);
    make_raw(&raw, size, &ranges);
    let mut all = vec!["convert", "-f", "raw", "-O", "qcow2"];
    all.extend(args);
    all.extend([raw.to_str().unwrap(), img.to_str().unwrap()]);
    qemu_img(&all);
    let header = read_file(&img, 0, 24);
    assert_eq!((be32(&header, 4), cluster_size(&img)), (version, cs));
    let image = open(&img, false).unwrap();
    assert_eq!(image.size(), size);
    assert_reads_match(&image, &raw, &ranges, cs);
    // Past the end is an error, not a panic.
    assert!(image.read_at(&mut [0u8; 2], size - 1).is_err());
    assert!(image.read_at(&mut [0u8; 1], u64::MAX).is_err());
    assert!(image.write_at(&[0u8; 1], 0).is_err(), "opened read-only");
}

#[test]
fn reads_match_qemu_img_convert_v2() {
    reads_match_qemu_img_convert(&["-o", "compat=0.10"], mib(1024), 65536, 2);
}

#[test]
fn reads_match_qemu_img_convert_v3() {
    reads_match_qemu_img_convert(&[], mib(1024), 65536, 3);
}

#[test]
fn reads_match_qemu_img_convert_4k_clusters() {
    reads_match_qemu_img_convert(&["-o", "cluster_size=4096"], mib(64), 4096, 3);
}

#[test]
fn reads_match_qemu_img_convert_512_byte_clusters() {
    reads_match_qemu_img_convert(&["-o", "cluster_size=512,compat=0.10"], mib(16), 512, 2);
}

#[test]
fn compressed_images_read_like_qemu_img_convert() {
    reads_match_qemu_img_convert(&["-c"], mib(64), 65536, 3);
    reads_match_qemu_img_convert(&["-c", "-o", "cluster_size=4096"], mib(16), 4096, 3);
}

#[test]
fn an_empty_image_reads_as_zeros() {
    let dir = TempDir::new("qcow2-empty");
    let img = dir.file("empty.qcow2");
    qemu_img(&["create", "-f", "qcow2", img.to_str().unwrap(), "64M"]);
    let image = open(&img, false).unwrap();
    let mut buf = vec![0xffu8; mib(1) as usize];
    for at in (0..mib(64)).step_by(mib(1) as usize) {
        image.read_at(&mut buf, at).unwrap();
        assert!(buf.iter().all(|&b| b == 0));
    }
}

/// The expected disk: a raw conversion of the image before the writes, with the writes.
struct Model {
    before: PathBuf,
    writes: Vec<(u64, Vec<u8>)>,
}

impl Model {
    fn expected(&self, at: u64, len: usize) -> Vec<u8> {
        let mut buf = read_file(&self.before, at, len);
        for (w, data) in &self.writes {
            let from = at.max(*w);
            let to = (at + len as u64).min(w + data.len() as u64);
            if from < to {
                buf[(from - at) as usize..(to - at) as usize]
                    .copy_from_slice(&data[(from - w) as usize..(to - w) as usize]);
            }
        }
        buf
    }
}

/// Writes `ops` (offset, length) through a `DiskImage` writing through to `img`, then
/// checks it with `qemu-img check` and compares `qemu-img convert -O raw` of it (and our
/// reads) with what was written.
fn check_writes(dir: &TempDir, img: &Path, ops: &[(u64, usize)]) {
    let (before, after) = (dir.file("before.raw"), dir.file("after.raw"));
    let img_s = img.to_str().unwrap();
    qemu_img(&["convert", "-O", "raw", img_s, before.to_str().unwrap()]);
    let mut model = Model {
        before,
        writes: Vec::new(),
    };
    let image = open(img, true).unwrap();
    let (size, cs) = (image.size(), cluster_size(img));
    for (i, &(at, len)) in ops.iter().enumerate() {
        let data = pattern(100 + i as u64, at, len);
        image.write_at(&data, at).unwrap();
        model.writes.push((at, data));
    }
    image.flush().unwrap();
    drop(image);
    assert_clean(img);
    qemu_img(&["convert", "-O", "raw", img_s, after.to_str().unwrap()]);
    let image = open(img, false).unwrap();
    let mut rng = Rng::new(size ^ 0x55);
    let mut reads: Vec<(u64, usize)> = model
        .writes
        .iter()
        .map(|(at, data)| {
            let start = at.saturating_sub(cs + 3);
            (
                start,
                ((at + data.len() as u64 + cs + 3).min(size) - start) as usize,
            )
        })
        .collect();
    for _ in 0..100 {
        let len = 1 + rng.below(2 * cs) as usize;
        reads.push((rng.below(size - len as u64), len));
    }
    for (at, len) in reads {
        let expected = model.expected(at, len);
        assert!(
            read_file(&after, at, len) == expected,
            "qemu-img sees other data in {len} bytes at {at:#x}"
        );
        let mut got = vec![0u8; len];
        image.read_at(&mut got, at).unwrap();
        assert!(
            got == expected,
            "we read other data in {len} bytes at {at:#x}"
        );
    }
}

/// Writes: sector-aligned (as virtio-blk issues them) and not, partial clusters, across
/// clusters and L2 tables, over earlier writes, the end.
fn write_ops(size: u64, cs: u64) -> Vec<(u64, usize)> {
    let l2_span = cs * (cs / 8);
    let mut ops = vec![
        (1024, 3072),
        (cs - 512, 1024),
        (1000, 3000),
        (cs - 700, 1400),
        (3 * cs - 10, 2 * cs as usize + 20),
        (1536, 512),
        (1500, 100),
        (size - 512, 512),
        (size / 2 + 17, 1),
    ];
    if l2_span < size {
        ops.push((l2_span - 5120, 10_240));
    }
    ops
}

fn writes_pass_qemu_img_check(opts: &str, size: u64, cs: u64) {
    let dir = TempDir::new("qcow2-write");
    let img = dir.file("disk.qcow2");
    let size_s = size.to_string();
    let img_s = img.to_str().unwrap();
    create_qcow2(img_s, opts, &size_s);
    check_writes(&dir, &img, &write_ops(size, cs));
}

#[test]
fn writes_pass_qemu_img_check_v2() {
    writes_pass_qemu_img_check("compat=0.10", mib(1024), 65536);
}

#[test]
fn writes_pass_qemu_img_check_v3() {
    writes_pass_qemu_img_check("compat=1.1", mib(1024), 65536);
}

#[test]
fn writes_with_other_refcount_widths_pass_qemu_img_check() {
    writes_pass_qemu_img_check("refcount_bits=1,cluster_size=4096", mib(64), 4096);
    writes_pass_qemu_img_check("refcount_bits=64", mib(64), 65536);
}

#[test]
fn writes_needing_new_refcount_blocks_and_tables_pass_qemu_img_check() {
    // 4 KiB clusters: a refcount block counts 2048 clusters (8 MiB), so 12 MiB of new data
    // needs a second block.
    let dir = TempDir::new("qcow2-refblock");
    let img = dir.file("disk.qcow2");
    let img_s = img.to_str().unwrap();
    let opts = "cluster_size=4096";
    create_qcow2(img_s, opts, "64M");
    let mut ops = write_ops(mib(64), 4096);
    ops.push((mib(20) + 5, mib(12) as usize));
    check_writes(&dir, &img, &ops);

    // 512-byte clusters: the one-cluster refcount table counts 8 MiB of file, so 16 MiB of
    // data needs a larger table.
    let img = dir.file("small.qcow2");
    let img_s = img.to_str().unwrap();
    create_qcow2(img_s, "cluster_size=512", "64M");
    let ops: Vec<(u64, usize)> = (0..16).map(|i| (i * mib(1) + 3, mib(1) as usize)).collect();
    check_writes(&dir, &img, &ops);

    // With the file ending just before the last cluster of the second refcount block's
    // range, the first allocation needs that block, which lands in the third range.
    let img = dir.file("far.qcow2");
    let img_s = img.to_str().unwrap();
    create_qcow2(img_s, "cluster_size=512", "16M");
    let file = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    file.set_len(2 * 256 * 512 - 512).unwrap();
    drop(file);
    check_writes(&dir, &img, &[(0, 1000), (mib(8), 3000)]);
}

#[test]
fn writes_into_images_written_by_qemu_pass_qemu_img_check() {
    let dir = TempDir::new("qcow2-rewrite");
    // Data, a zero cluster with its cluster kept, a zero cluster without one.
    let img = dir.file("zero.qcow2");
    let img_s = img.to_str().unwrap();
    qemu_img(&["create", "-f", "qcow2", img_s, "16M"]);
    qemu_io(
        &img,
        &[
            "write -P 0xaa 0 256k",
            "write -z 64k 64k",
            "write -z 512k 64k",
        ],
    );
    let image = open(&img, false).unwrap();
    let mut buf = vec![0u8; 3 * 65536];
    image.read_at(&mut buf, 0).unwrap();
    assert!(buf[..65536].iter().all(|&b| b == 0xaa));
    assert!(buf[65536..131072].iter().all(|&b| b == 0));
    assert!(buf[131072..].iter().all(|&b| b == 0xaa));
    drop(image);
    let ops = [
        (65536 + 100, 200),
        (524288 + 65000, 1000),
        (200_000, 100_000),
    ];
    check_writes(&dir, &img, &ops);

    // Every cluster allocated up front: written in place.
    let img = dir.file("prealloc.qcow2");
    let img_s = img.to_str().unwrap();
    let opts = "preallocation=metadata";
    create_qcow2(img_s, opts, "16M");
    let len = std::fs::metadata(&img).unwrap().len();
    check_writes(&dir, &img, &write_ops(mib(16), 65536));
    assert_eq!(std::fs::metadata(&img).unwrap().len(), len);

    // Compressed clusters, rewritten.
    let raw = dir.file("data.raw");
    make_raw(&raw, mib(4), &[(0, mib(2) as usize)]);
    let img = dir.file("compressed.qcow2");
    let img_s = img.to_str().unwrap();
    qemu_img(&["convert", "-c", "-O", "qcow2", raw.to_str().unwrap(), img_s]);
    check_writes(&dir, &img, &write_ops(mib(4), 65536));
}

#[test]
fn writes_to_an_image_with_a_snapshot_keep_the_snapshot() {
    let dir = TempDir::new("qcow2-snapshot");
    let img = dir.file("snap.qcow2");
    let img_s = img.to_str().unwrap();
    qemu_img(&["create", "-f", "qcow2", img_s, "16M"]);
    qemu_io(&img, &["write -P 0xaa 0 1M", "write -P 0xbb 8M 64k"]);
    let (then, now) = (dir.file("then.raw"), dir.file("now.raw"));
    qemu_img(&["convert", "-O", "raw", img_s, then.to_str().unwrap()]);
    qemu_img(&["snapshot", "-c", "one", img_s]);

    // Shared clusters are copied before they are written.
    check_writes(&dir, &img, &write_ops(mib(16), 65536));
    let args = ["convert", "-l", "snapshot.name=one", "-O", "raw", img_s];
    qemu_img(&[&args[..], &[now.to_str().unwrap()]].concat());
    assert!(std::fs::read(&now).unwrap() == std::fs::read(&then).unwrap());
}

/// Sets bits in the big-endian u64 at `at` of the file.
fn patch_or(path: &Path, at: u64, bits: u64) {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 8];
    file.read_exact_at(&mut b, at).unwrap();
    file.write_all_at(&(u64::from_be_bytes(b) | bits).to_be_bytes(), at)
        .unwrap();
}

#[test]
fn unsupported_images_are_refused_with_what_to_do() {
    let dir = TempDir::new("qcow2-refuse");
    let base = dir.file("base.qcow2");
    let top = dir.file("top.qcow2");
    let (base_s, top_s) = (base.to_str().unwrap(), top.to_str().unwrap());
    let convert = |p: &str| format!("`qemu-img convert -O qcow2 {p} out.qcow2`");
    qemu_img(&["create", "-f", "qcow2", base_s, "16M"]);
    qemu_img(&["create", "-f", "qcow2", "-b", base_s, "-F", "qcow2", top_s]);
    let before = std::fs::read(&top).unwrap();
    for writable in [false, true] {
        let e = open_err(&top, writable);
        assert!(
            e.contains("backing file") && e.contains("base.qcow2"),
            "{e}"
        );
        assert!(e.ends_with(&convert(top_s)), "{e}");
    }
    assert!(
        std::fs::read(&top).unwrap() == before,
        "refused, yet written"
    );

    let data = dir.file("data.qcow2");
    let data_s = data.to_str().unwrap();
    let opts = format!("data_file={}", dir.file("data.raw").display());
    create_qcow2(data_s, &opts, "16M");
    let e = open_err(&data, true);
    assert!(
        e.contains("external data file") && e.ends_with(&convert(data_s)),
        "{e}"
    );

    let aes = dir.file("aes.qcow2");
    let aes_s = aes.to_str().unwrap();
    let (secret, opts) = (
        "secret,id=s,data=x",
        "encrypt.format=aes,encrypt.key-secret=s",
    );
    qemu_img(&[
        "create", "-f", "qcow2", "--object", secret, "-o", opts, aes_s, "16M",
    ]);
    let e = open_err(&aes, false);
    assert!(
        e.contains("encrypted") && e.contains(&convert(aes_s)),
        "{e}"
    );

    // What imago refuses: its message, and a qemu-img command.
    let img = dir.file("img.qcow2");
    let img_s = img.to_str().unwrap();
    for opts in ["extended_l2=on", "compression_type=zstd"] {
        create_qcow2(img_s, opts, "16M");
        let e = open_err(&img, false);
        assert!(e.starts_with(&format!("disk image {img_s}: ")), "{e}");
        assert!(e.contains(&convert(img_s)), "{e}");
    }
    // Header bits: dirty and corrupt (offset 72), an unknown one, the version (4).
    let repair = format!("run `qemu-img check -r all {img_s}`");
    for (at, bits, hint) in [
        (72, 1, &repair),
        (72, 2, &repair),
        (72, 1 << 40, &convert(img_s)),
        (0, 4, &convert(img_s)),
    ] {
        qemu_img(&["create", "-f", "qcow2", img_s, "16M"]);
        patch_or(&img, at, bits);
        let e = open_err(&img, true);
        assert!(e.starts_with(&format!("disk image {img_s}: ")), "{e}");
        assert!(e.contains(hint.as_str()), "{e}");
    }
}

/// Opens `path` read-only and writable, and reads all of it (the first 8 MiB, and at random
/// places): errors are fine, panics are not. Returns how many times it opened.
fn use_all_of(path: &Path, rng: &mut Rng) -> u32 {
    let mut opened = 0;
    for writable in [false, true] {
        let Ok(image) = open(path, writable) else {
            continue;
        };
        opened += 1;
        let readable = image.size().min(mib(8));
        let mut buf = vec![0u8; 65536];
        for at in (0..readable).step_by(buf.len()) {
            let n = (readable - at).min(buf.len() as u64) as usize;
            let _ = image.read_at(&mut buf[..n], at);
        }
        for _ in 0..10 {
            let len = 512 * (1 + rng.below(20)) as usize;
            let at = rng.below(image.size().saturating_sub(len as u64) / 512) * 512;
            let _ = image.read_at(&mut buf[..len], at);
        }
        let _ = image.flush();
    }
    opened
}

#[test]
fn truncated_and_garbage_images_give_errors_not_panics() {
    let dir = TempDir::new("qcow2-trunc");
    let raw = dir.file("data.raw");
    let ranges = interesting(mib(8), 4096);
    make_raw(&raw, mib(8), &ranges);
    let img = dir.file("disk.qcow2");
    let opts = "cluster_size=4096";
    convert_to_qcow2(raw.to_str().unwrap(), img.to_str().unwrap(), opts);
    let bytes = std::fs::read(&img).unwrap();
    let cut = dir.file("cut.qcow2");
    let mut lens: Vec<usize> = vec![0, 3, 4, 50, 72, 100, 103, 104];
    lens.extend((4096..bytes.len()).step_by(4096 * 7));
    let mut rng = Rng::new(5);
    let mut opened = 0;
    for len in lens {
        std::fs::write(&cut, &bytes[..len]).unwrap();
        let file = File::open(&cut).unwrap();
        assert_eq!(is_qcow2(&file).unwrap(), len >= 4);
        if len < 4 {
            assert!(open(&cut, false)
                .unwrap_err()
                .contains("is not a qcow2 image"));
            continue;
        }
        opened += use_all_of(&cut, &mut rng);
    }
    assert!(
        opened > 0,
        "no truncated image opened (past the end reads as zeros)"
    );

    let mut rng = Rng::new(3);
    for header in [&b"QFI\xfb"[..], b"QFI\xfb\0\0\0\x03", b"QFI\xfb\0\0\0\x02"] {
        for _ in 0..20 {
            let mut garbage = header.to_vec();
            garbage.extend((0..rng.below(5000)).map(|_| rng.next() as u8));
            std::fs::write(&cut, &garbage).unwrap();
            assert_eq!(use_all_of(&cut, &mut rng), 0, "garbage opened");
        }
    }
}

/// Corrupts metadata at random: reads give errors, not panics, and so do writes where the
/// image still opens for writing (the first 100 such images, each written in a child
/// process so that an abort shows), which keep the header.
#[test]
fn random_corruptions_give_errors_not_panics() {
    let dir = TempDir::new("qcow2-fuzz");
    let raw = dir.file("data.raw");
    let size = mib(4);
    let ranges = interesting(size, 4096);
    make_raw(&raw, size, &ranges);
    let img = dir.file("disk.qcow2");
    let opts = "cluster_size=4096";
    convert_to_qcow2(raw.to_str().unwrap(), img.to_str().unwrap(), opts);
    let good = std::fs::read(&img).unwrap();
    // Where the metadata is: header, L1 table, the first L2 table, the refcount table and
    // its first block.
    let l1 = be64(&good, 40) as usize;
    let l2 = (be64(&good, l1) & 0x00ff_ffff_ffff_fe00) as usize;
    let reftable = be64(&good, 48) as usize;
    let refblock = be64(&good, reftable) as usize;
    let regions = [
        (0, 112),
        (l1, 8),
        (l2, 4096),
        (reftable, 64),
        (refblock, 4096),
    ];
    let bad = dir.file("bad.qcow2");
    let mut rng = Rng::new(11);
    let (mut opened, mut written) = (0, 0);
    for case in 0..1000 {
        let mut bytes = good.clone();
        for _ in 0..1 + rng.below(4) {
            let (start, len) = regions[rng.below(regions.len() as u64) as usize];
            let at = start + rng.below(len as u64) as usize;
            if rng.below(2) == 0 {
                bytes[at] ^= 1 << rng.below(8);
            } else {
                bytes[at] = rng.next() as u8;
            }
        }
        std::fs::write(&bad, &bytes).unwrap();
        opened += use_all_of(&bad, &mut rng);
        // Writes, where the image opens for writing, in a child process: an abort (as
        // imago's stack overflow was) must not take this process with it.
        if written < 100 && open(&bad, true).is_ok() {
            written += 1;
            let out = Command::new(std::env::current_exe().unwrap())
                .args([CHILD_TEST, "--exact", "--nocapture", "--test-threads=1"])
                .env(CHILD_ENV, &bad)
                .output()
                .unwrap();
            let ran = String::from_utf8_lossy(&out.stdout).contains("1 passed");
            let header_kept = read_file(&bad, 0, 4) == MAGIC;
            if !(out.status.success() && ran && header_kept) {
                let keep =
                    std::env::temp_dir().join(format!("rewind-qcow2-corruption-{case}.qcow2"));
                std::fs::write(&keep, &bytes).unwrap();
                let status = match std::os::unix::process::ExitStatusExt::signal(&out.status) {
                    Some(signal) => format!("killed by signal {signal}"),
                    None => out.status.to_string(),
                };
                panic!(
                    "writing to corruption {case} (kept as {}): {status}, ran: {ran}, header \
                     kept: {header_kept}; {}",
                    keep.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
    assert!(opened > 100, "only {opened} corrupted images opened");
    assert!(
        written >= 50,
        "only {written} corrupted images opened for writing"
    );
}

/// The environment variable that names the image [`CHILD_TEST`] writes to.
const CHILD_ENV: &str = "REWIND_QCOW2_WRITE_TO";
/// The test run in a child process by `random_corruptions_give_errors_not_panics`.
const CHILD_TEST: &str = "writes_to_the_image_in_the_environment_do_not_panic";

/// Without [`CHILD_ENV`], nothing; with it, opens that image writable and writes to it:
/// sectors at the start, across clusters, in the middle, at the end; errors are fine.
#[test]
fn writes_to_the_image_in_the_environment_do_not_panic() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let Ok(image) = open(Path::new(&path), true) else {
        return;
    };
    let size = image.size();
    let mut rng = Rng::new(size);
    let mut ops = vec![(0, 512), (4096 - 512, 1024), (size / 2, 512)];
    ops.push((size.saturating_sub(512), 512));
    for _ in 0..4 {
        ops.push((
            rng.below(size / 512) * 512,
            512 * (1 + rng.below(16) as usize),
        ));
    }
    for (i, (at, len)) in ops.into_iter().enumerate() {
        let _ = image.write_at(&pattern(i as u64, at, len), at);
    }
    let _ = image.flush();
}

/// An empty 4 MiB image with 4 KiB clusters, as qemu-img makes it (header, refcount table,
/// refcount block, L1 table: 12 KiB).
fn small_image(dir: &TempDir) -> PathBuf {
    let img = dir.file("small.qcow2");
    let opts = "cluster_size=4096";
    create_qcow2(img.to_str().unwrap(), opts, "4M");
    img
}

/// Opening `path` writable is refused as inconsistent, with `what` in the message and the
/// qemu-img command that repairs it, and the file is left as it was; opening it read-only
/// works.
fn assert_refused_for_writing(path: &Path, what: &str) {
    let before = std::fs::read(path).unwrap();
    let p = path.to_str().unwrap();
    let e = open_err(path, true);
    assert!(
        e.starts_with(&format!(
            "disk image {p}: its qcow2 metadata is inconsistent ("
        )) && e.contains(what),
        "{e}"
    );
    assert!(
        e.ends_with(&format!(
            ": repair it with `qemu-img check -r all {p}`, or use it read-only (readonly=on)"
        )),
        "{e}"
    );
    assert!(
        std::fs::read(path).unwrap() == before,
        "refused, yet written"
    );
    let image = open(path, false).unwrap();
    let mut buf = vec![0u8; 4096];
    let _ = image.read_at(&mut buf, 0);
}

// imago 0.2.6 trusts the refcounts when it allocates: writing to these two images (found
// when writes were part of the corruption tests above) overflowed its stack (the process
// aborted) after writing a refcount block over the header, and wrote an L2 entry over the
// header. The check before a writable open refuses them.

#[test]
fn writing_to_an_image_missing_a_refcount_block_is_refused() {
    let dir = TempDir::new("qcow2-no-refblock");
    let img = small_image(&dir);
    let reftable = be64(&read_file(&img, 0, 56), 48);
    let file = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    file.write_all_at(&[0; 8], reftable).unwrap();
    drop(file);
    assert_refused_for_writing(&img, "cluster 0x0 (the header) has no refcount block");
    // What the message says to do makes it writable.
    qemu_img(&["check", "-r", "all", img.to_str().unwrap()]);
    check_writes(&dir, &img, &write_ops(mib(4), 4096));
}

#[test]
fn writing_to_a_truncated_image_is_refused() {
    let dir = TempDir::new("qcow2-cut-refblock");
    let img = small_image(&dir);
    let file = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    file.set_len(8192).unwrap();
    drop(file);
    assert_refused_for_writing(
        &img,
        "refcount block 0 (4096 bytes at 0x2000) ends past the end of the file (8192 bytes)",
    );
}

/// The header fields the tests below patch around: cluster bits, refcount order.
fn header_of(path: &Path) -> (u32, u32, Vec<u8>) {
    let h = read_file(path, 0, 104);
    let order = if be32(&h, 4) == 3 { be32(&h, 96) } else { 4 };
    (be32(&h, 20), order, h)
}

/// Where the refcount of the cluster at host offset `host` is: its byte and, for refcounts
/// narrower than a byte, its shift in it (QEMU's layout: little-endian bit order in bytes,
/// big-endian bytes).
fn refcount_place(path: &Path, host: u64) -> (u64, u32, u32) {
    let (cb, order, h) = header_of(path);
    let rb_bits = cb + 3 - order;
    let cluster = host >> cb;
    let entry = be64(
        &read_file(path, be64(&h, 48) + 8 * (cluster >> rb_bits), 8),
        0,
    );
    let bit = (cluster & ((1 << rb_bits) - 1)) << order;
    (entry + bit / 8, (bit % 8) as u32, 1 << order)
}

/// Sets the refcount of the cluster at host offset `host` to `value`.
fn set_refcount(path: &Path, host: u64, value: u64) {
    let (at, shift, bits) = refcount_place(path, host);
    let bytes = if bits < 8 {
        let mask = ((1u8 << bits) - 1) << shift;
        let old = read_file(path, at, 1)[0];
        vec![old & !mask | (value as u8) << shift & mask]
    } else {
        value.to_be_bytes()[8 - bits as usize / 8..].to_vec()
    };
    patch(path, at, &bytes);
}

fn patch(path: &Path, at: u64, bytes: &[u8]) {
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(bytes, at).unwrap();
}

/// Where the L2 entry of guest offset `guest` is (in the image's tables), and its value.
fn l2_entry(path: &Path, guest: u64) -> (u64, u64) {
    let (cb, _, h) = header_of(path);
    let l1 = be64(
        &read_file(path, be64(&h, 40) + 8 * (guest >> (2 * cb - 3)), 8),
        0,
    );
    let at = (l1 & OFFSET_MASK) + 8 * ((guest >> cb) & ((1 << (cb - 3)) - 1));
    (at, be64(&read_file(path, at, 8), 0))
}

#[test]
fn images_whose_refcounts_do_not_count_their_clusters_are_refused_for_writing() {
    let dir = TempDir::new("qcow2-inconsistent");
    let img = dir.file("disk.qcow2");
    let img_s = img.to_str().unwrap();
    let good = dir.file("good.qcow2");
    let restore = || std::fs::copy(&good, &img).unwrap();
    // Every refcount width: a cluster written after a snapshot (refcount 1, marked
    // unshared) and one shared with the snapshot (refcount 2, used twice).
    for bits in [1, 2, 4, 8, 16, 32, 64] {
        let opts = format!("cluster_size=4096,refcount_bits={bits}");
        create_qcow2(img_s, &opts, "4M");
        qemu_io(&img, &["write -P 0xaa 0 64k"]);
        if bits > 1 {
            qemu_img(&["snapshot", "-c", "one", img_s]);
        }
        qemu_io(&img, &["write -P 0xbb 1M 4k"]);
        std::fs::copy(&img, &good).unwrap();
        drop(open(&img, true).unwrap());
        let (_, entry) = l2_entry(&img, mib(1));
        assert_ne!(entry & COPIED, 0);
        let host = entry & OFFSET_MASK;
        let what = format!("cluster {host:#x} (data of guest offset 0x100000)");
        set_refcount(&img, host, 0);
        assert_refused_for_writing(&img, &format!("{what} has refcount 0"));
        if bits == 1 {
            continue;
        }
        restore();
        set_refcount(&img, host, 2);
        let e = format!("{what} is marked unshared (COPIED) but has refcount 2");
        assert_refused_for_writing(&img, &e);
        restore();
        let shared = l2_entry(&img, 0).1 & OFFSET_MASK;
        set_refcount(&img, shared, 1);
        let e = format!("cluster {shared:#x} (data of guest offset 0x0) has refcount 1 but 2 uses");
        assert_refused_for_writing(&img, &e);
    }

    // The snapshot's L1 table is counted.
    restore();
    let snapshots = be64(&read_file(&img, 64, 8), 0);
    let l1 = be64(&read_file(&img, snapshots, 8), 0);
    set_refcount(&img, l1, 0);
    let e = format!("cluster {l1:#x} (the L1 table of snapshot 1) has refcount 0");
    assert_refused_for_writing(&img, &e);

    // Data in metadata, data in two places at once, data past the end of the file.
    create_qcow2(img_s, "cluster_size=4096", "4M");
    qemu_io(&img, &["write -P 0xaa 1M 4k"]);
    std::fs::copy(&img, &good).unwrap();
    let (at, entry) = l2_entry(&img, mib(1));
    let next = at + 8;
    let l1 = be64(&read_file(&img, 40, 8), 0);
    patch(&img, next, &(COPIED | l1).to_be_bytes());
    let e = format!("cluster {l1:#x} (data of guest offset 0x101000) is also the L1 table");
    assert_refused_for_writing(&img, &e);
    restore();
    patch(&img, next, &entry.to_be_bytes());
    let e = format!(
        "cluster {:#x} (data of guest offset 0x101000) has refcount 1 but 2 uses",
        entry & OFFSET_MASK
    );
    assert_refused_for_writing(&img, &e);
    restore();
    let len = std::fs::metadata(&img).unwrap().len();
    let past = len.next_multiple_of(4096) + 4096;
    patch(&img, next, &(COPIED | past).to_be_bytes());
    let e = format!(
        "cluster {past:#x} (data of guest offset 0x101000) is past the end of the file \
         ({len} bytes)"
    );
    assert_refused_for_writing(&img, &e);

    // A disk size the L1 table does not cover (QEMU does not open such an image).
    restore();
    patch(&img, 24, &mib(5).to_be_bytes());
    let e = "the L1 table (2 entries) is too small for the disk size (5242880 bytes)";
    assert_refused_for_writing(&img, e);
}

fn open_any_err(path: &Path, format: Option<&str>) -> String {
    match DiskImage::open(path, format, false, true) {
        Ok(image) => panic!("opened as {}", image.format_name()),
        Err(e) => e,
    }
}

#[test]
fn open_detects_and_checks_the_format() {
    let dir = TempDir::new("blk-open");
    let raw = dir.file("disk.raw");
    std::fs::write(&raw, pattern(1, 0, 8192)).unwrap();
    let img = dir.file("disk.qcow2");
    let img_s = img.to_str().unwrap();
    qemu_img(&["create", "-f", "qcow2", img_s, "32M"]);
    let file_len = std::fs::metadata(&img).unwrap().len();

    let image = DiskImage::open(&raw, None, false, false).unwrap();
    assert_eq!((image.format_name(), image.size()), ("raw", 8192));
    let image = DiskImage::open(&img, None, true, false).unwrap();
    assert_eq!((image.format_name(), image.size()), ("qcow2", 32 << 20));
    let image = DiskImage::open(&img, Some("qcow2"), false, true).unwrap();
    assert_eq!(image.format_name(), "qcow2");
    // A qcow2 file taken as raw is its bytes, as in QEMU.
    let image = DiskImage::open(&img, Some("raw"), false, false).unwrap();
    assert_eq!((image.format_name(), image.size()), ("raw", file_len));

    assert!(open_any_err(&raw, Some("qcow2")).contains("is not a qcow2 image"));
    assert!(open_any_err(&raw, Some("vmdk")).contains("unknown format \"vmdk\""));
    assert!(open_any_err(&dir.file("missing"), None).contains("cannot open disk image"));

    let top = dir.file("top.qcow2");
    let top_s = top.to_str().unwrap();
    qemu_img(&["create", "-f", "qcow2", "-b", img_s, "-F", "qcow2", top_s]);
    let e = open_any_err(&top, None);
    assert!(e.starts_with(&format!("disk image {top_s}: qcow2 with a backing file")));
    assert!(e.ends_with(&format!(
        "is not supported: convert it with `qemu-img convert -O qcow2 {top_s} out.qcow2`"
    )));

    let mut garbage = b"QFI\xfb\0\0\0\x03".to_vec();
    garbage.resize(200, 0xff);
    let bad = dir.file("bad.img");
    std::fs::write(&bad, &garbage).unwrap();
    assert!(open_any_err(&bad, None).contains("give its format as raw"));
    assert_eq!(
        DiskImage::open(&bad, Some("raw"), false, false)
            .unwrap()
            .size(),
        200
    );
}

#[test]
fn a_qcow2_disk_writes_to_the_overlay_or_through_to_the_image() {
    let dir = TempDir::new("blk-qcow2");
    let img = dir.file("disk.qcow2");
    let img_s = img.to_str().unwrap();
    qemu_img(&["create", "-f", "qcow2", img_s, "8M"]);
    let data = pattern(5, 70_000, 100_000);

    // Recording: the image stays as it was, the overlay holds the write.
    let before = std::fs::read(&img).unwrap();
    let mut disk = Overlay::new(DiskImage::open(&img, None, false, false).unwrap());
    disk.write_at(&data, 70_000).unwrap();
    assert!(!disk.state().is_empty());
    let mut got = vec![0u8; data.len()];
    disk.read_at(&mut got, 70_000).unwrap();
    assert!(got == data);
    let saved = dir.file("saved.raw");
    disk.save_to(&saved).unwrap();
    let bytes = std::fs::read(&saved).unwrap();
    assert_eq!(bytes.len(), 8 << 20);
    assert!(bytes[70_000..170_000] == data[..] && bytes[..70_000].iter().all(|&b| b == 0));
    assert!(std::fs::read(&img).unwrap() == before);

    // Read-only: not even a plain run writes.
    let image = DiskImage::open(&img, None, true, true).unwrap();
    assert!(image.write_at(&data, 0).is_err());

    // A plain run: the image itself.
    let mut disk = Overlay::new(DiskImage::open(&img, None, false, true).unwrap());
    disk.write_at(&data, 70_000).unwrap();
    assert!(disk.state().is_empty());
    disk.flush().unwrap();
    drop(disk);
    let out = qemu_img(&["check", img_s]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("No errors were found"));
    let disk = Overlay::new(DiskImage::open(&img, None, true, false).unwrap());
    let mut got = vec![0u8; data.len()];
    disk.read_at(&mut got, 70_000).unwrap();
    assert!(got == data);
}
