//! Placing firmware, kernel, initrd and device tree in RAM the way QEMU's `virt` does, and the
//! reset ROM's hand-over (`a0` = hart id, `a1` = device tree, `a2` = `fw_dynamic` info).

use rewind_cpu::Ram;

use crate::loader;
use crate::MachineError;

/// Where QEMU's reset vector puts the `fw_dynamic` information, passed in `a2`.
pub const FW_DYNAMIC_INFO: u64 = crate::memmap::ROM.base + 0x28;

const FW_DYNAMIC_MAGIC: u64 = 0x4942_534f; // "OSBI"
const FW_DYNAMIC_VERSION: u64 = 2;
const FW_DYNAMIC_NEXT_MODE_S: u64 = 1;

/// Offset of the `RSC\x05` magic in a RISC-V Linux `Image` header.
const IMAGE_MAGIC2_OFFSET: usize = 0x38;
const IMAGE_MAGIC2: &[u8; 4] = b"RSC\x05";

/// The images a machine starts from. `bios: None` means `--bios none`.
#[derive(Clone, Debug, Default)]
pub struct BootImages {
    pub bios: Option<Vec<u8>>,
    pub kernel: Option<Vec<u8>>,
    pub initrd: Option<Vec<u8>>,
    /// A device tree to hand over instead of the one the board describes (QEMU's `-dtb`);
    /// replays use the recorded one.
    pub dtb: Option<Vec<u8>>,
    /// Disk images, one per [`crate::DeviceKind::VirtioBlk`] in the configuration, in order.
    pub disks: Vec<crate::block::DiskImage>,
}

/// Where things went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BootLayout {
    /// First instruction the hart runs (after the reset ROM's hand-over).
    pub entry: u64,
    /// Kernel entry passed to the firmware.
    pub kernel_entry: Option<u64>,
    /// Initrd start and end.
    pub initrd: Option<(u64, u64)>,
}

fn is_elf(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\x7fELF")
}

/// Whether `bytes` is a RISC-V Linux `Image` (Debian's EFI-stub images included).
pub fn is_riscv_image(bytes: &[u8]) -> bool {
    bytes.get(IMAGE_MAGIC2_OFFSET..IMAGE_MAGIC2_OFFSET + 4) == Some(IMAGE_MAGIC2)
}

fn align_up(v: u64, align: u64) -> u64 {
    v.div_ceil(align) * align
}

/// Refuses images that are recognisably not programs for this machine: PE files that are not
/// RISC-V Linux images, compressed files, text. (Foreign ELF machines are refused by the
/// ELF loader.)
fn check_raw(bytes: &[u8], what: &str) -> Result<(), MachineError> {
    let bad = |reason: &str| MachineError::BadImage {
        what: what.to_string(),
        reason: reason.to_string(),
    };
    if bytes.is_empty() {
        return Err(bad("the file is empty"));
    }
    if bytes.starts_with(b"MZ") && !is_riscv_image(bytes) {
        return Err(bad(
            "it is a PE/EFI file without a RISC-V Linux image header",
        ));
    }
    // Raw binaries are loaded as they are, as QEMU does; these never run as they are.
    const COMPRESSED: &[(&[u8], &str)] = &[
        (b"\x1f\x8b", "gzip"),
        (b"\xfd7zXZ\0", "xz"),
        (b"\x28\xb5\x2f\xfd", "zstd"),
        (b"BZh", "bzip2"),
    ];
    if let Some((_, format)) = COMPRESSED
        .iter()
        .find(|(magic, _)| bytes.starts_with(magic))
    {
        return Err(bad(&format!(
            "it is {format}-compressed: decompress it first (a raw binary, an ELF or a RISC-V \
             Linux Image runs)"
        )));
    }
    if bytes
        .iter()
        .all(|&b| b.is_ascii_graphic() || b.is_ascii_whitespace())
    {
        return Err(bad(
            "it is a text file, not a program (an ELF, a RISC-V Linux Image or a raw binary)",
        ));
    }
    Ok(())
}

/// Loads `image` (an ELF, or raw bytes at `raw_at`) and returns (entry, end of what it loaded).
fn load_image(
    ram: &mut Ram,
    image: &[u8],
    raw_at: u64,
    what: &str,
) -> Result<(u64, u64), MachineError> {
    if is_elf(image) {
        let (entry, end) = loader::load_elf_extent(ram, image, what)?;
        return Ok((entry, end));
    }
    check_raw(image, what)?;
    let end = raw_at + image.len() as u64;
    if ram.write(raw_at, image).is_none() {
        return Err(MachineError::DoesNotFit {
            what: what.to_string(),
            size: image.len() as u64,
            at: raw_at,
        });
    }
    Ok((raw_at, end))
}

/// Loads the images like QEMU 10's `virt`: firmware at the start of RAM; the kernel (an ELF,
/// a RISC-V Linux `Image`, or any raw binary) at the next 2 MiB boundary after it; the initrd
/// at kernel + min(RAM / 2, `initrd_max_offset`) (512 MiB in QEMU 10, 128 MiB in QEMU 7.2).
pub fn load(
    ram: &mut Ram,
    images: &BootImages,
    initrd_max_offset: u64,
) -> Result<BootLayout, MachineError> {
    let base = ram.base();
    let mut layout = BootLayout::default();
    let mut kernel_floor = base;
    if let Some(bios) = &images.bios {
        let (entry, end) = load_image(ram, bios, base, "firmware (--bios)")?;
        layout.entry = entry;
        kernel_floor = align_up(end, 2 << 20);
    }
    if let Some(kernel) = &images.kernel {
        let (entry, _) = load_image(ram, kernel, kernel_floor, "kernel (--kernel)")?;
        layout.kernel_entry = Some(entry);
        if images.bios.is_none() {
            layout.entry = entry;
        }
        if let Some(initrd) = &images.initrd {
            let start = entry + (ram.size() / 2).min(initrd_max_offset);
            let end = start + initrd.len() as u64;
            if ram.write(start, initrd).is_none() {
                return Err(MachineError::DoesNotFit {
                    what: "initrd (--initrd)".into(),
                    size: initrd.len() as u64,
                    at: start,
                });
            }
            layout.initrd = Some((start, end));
        }
    } else if images.initrd.is_some() {
        return Err(MachineError::BadImage {
            what: "initrd (--initrd)".into(),
            reason: "an initrd needs a --kernel".into(),
        });
    }
    if images.bios.is_none() && images.kernel.is_none() {
        return Err(MachineError::NothingToRun);
    }
    Ok(layout)
}

/// Contents of the reset ROM: QEMU's reset vector, the addresses it loads, and the
/// `fw_dynamic` information block that OpenSBI reads through `a2`.
pub fn rom_image(start: u64, dtb: u64, kernel_entry: Option<u64>) -> Vec<u8> {
    let mut rom = Vec::new();
    for insn in [
        0x0000_0297u32, // auipc t0, 0
        0x0282_8613,    // addi a2, t0, 40
        0xf140_2573,    // csrr a0, mhartid
        0x0202_b583,    // ld a1, 32(t0)
        0x0182_b283,    // ld t0, 24(t0)
        0x0002_8067,    // jr t0
    ] {
        rom.extend_from_slice(&insn.to_le_bytes());
    }
    rom.extend_from_slice(&start.to_le_bytes());
    rom.extend_from_slice(&dtb.to_le_bytes());
    for word in [
        FW_DYNAMIC_MAGIC,
        FW_DYNAMIC_VERSION,
        kernel_entry.unwrap_or(0),
        FW_DYNAMIC_NEXT_MODE_S,
        0, // options
        0, // boot hart
    ] {
        rom.extend_from_slice(&word.to_le_bytes());
    }
    rom
}

#[cfg(test)]
mod tests {
    use super::*;

    const QEMU10_INITRD: u64 = 512 << 20;

    #[test]
    fn rom_hands_over_like_qemu() {
        let rom = rom_image(0x8000_0000, 0x87e0_0000, Some(0x8020_0000));
        assert_eq!(
            rom.len() as u64,
            FW_DYNAMIC_INFO - crate::memmap::ROM.base + 48
        );
        let word = |off: usize| u64::from_le_bytes(rom[off..off + 8].try_into().unwrap());
        assert_eq!(word(24), 0x8000_0000);
        assert_eq!(word(32), 0x87e0_0000);
        assert_eq!(word(40), FW_DYNAMIC_MAGIC);
        assert_eq!(word(56), 0x8020_0000);
    }

    #[test]
    fn kernel_goes_after_firmware_on_a_2mib_boundary_and_the_initrd_half_ram_above_it() {
        let mut kernel = vec![0u8; 4096];
        kernel[0x38..0x3c].copy_from_slice(IMAGE_MAGIC2);
        let images = BootImages {
            bios: Some(vec![0x13; 300_000]),
            kernel: Some(kernel),
            initrd: Some(vec![1; 1000]),
            dtb: None,
            disks: Vec::new(),
        };
        // (RAM, the initrd's cap, where QEMU puts the initrd): QEMU 10 caps the distance at
        // 512 MiB, QEMU 7.2 (older recordings) at 128 MiB.
        for (ram_size, cap, initrd) in [
            (256 << 20, QEMU10_INITRD, 0x8820_0000),
            (128 << 20, QEMU10_INITRD, 0x8420_0000),
            (1 << 30, QEMU10_INITRD, 0xa020_0000),
            (1 << 30, 128 << 20, 0x8820_0000),
        ] {
            let mut ram = Ram::new(0x8000_0000, ram_size);
            let layout = load(&mut ram, &images, cap).unwrap();
            assert_eq!(layout.entry, 0x8000_0000);
            assert_eq!(layout.kernel_entry, Some(0x8020_0000));
            assert_eq!(layout.initrd, Some((initrd, initrd + 1000)));
        }
    }

    #[test]
    fn refuses_what_is_not_riscv() {
        let mut ram = Ram::new(0x8000_0000, 64 << 20);
        let err = load(
            &mut ram,
            &BootImages {
                bios: None,
                kernel: Some(b"MZ not a kernel".to_vec()),
                initrd: None,
                dtb: None,
                disks: Vec::new(),
            },
            QEMU10_INITRD,
        )
        .unwrap_err();
        assert!(err.to_string().contains("RISC-V"), "{err}");
        let err = load(
            &mut ram,
            &BootImages {
                bios: None,
                kernel: None,
                initrd: Some(vec![0; 10]),
                dtb: None,
                disks: Vec::new(),
            },
            QEMU10_INITRD,
        )
        .unwrap_err();
        assert!(err.to_string().contains("needs a --kernel"), "{err}");
    }

    #[test]
    fn a_raw_binary_kernel_loads_at_the_kernel_address_but_text_and_archives_do_not() {
        let images = |kernel: &[u8]| BootImages {
            bios: Some(vec![0x13, 0, 0, 0]),
            kernel: Some(kernel.to_vec()),
            initrd: None,
            dtb: None,
            disks: Vec::new(),
        };
        let mut ram = Ram::new(0x8000_0000, 64 << 20);
        // `li a0, 42` and `j .`: no header of any kind.
        let raw = [0x13, 0x05, 0xa0, 0x02, 0x6f, 0x00, 0x00, 0x00];
        let layout = load(&mut ram, &images(&raw), QEMU10_INITRD).unwrap();
        assert_eq!(layout.kernel_entry, Some(0x8020_0000));
        let mut loaded = [0u8; 8];
        ram.read(0x8020_0000, &mut loaded).unwrap();
        assert_eq!(loaded, raw);
        for (bytes, why) in [
            (&b"console=ttyS0\n"[..], "text"),
            (&b"\x1f\x8b\x08\0\0\0"[..], "gzip"),
            (&b"\xfd7zXZ\0\0"[..], "xz"),
        ] {
            let err = load(&mut ram, &images(bytes), QEMU10_INITRD).unwrap_err();
            assert!(err.to_string().contains(why), "{err}");
        }
    }

    #[test]
    fn initrd_that_does_not_fit_is_refused() {
        let mut ram = Ram::new(0x8000_0000, 8 << 20);
        let mut kernel = vec![0u8; 4096];
        kernel[0x38..0x3c].copy_from_slice(IMAGE_MAGIC2);
        let err = load(
            &mut ram,
            &BootImages {
                bios: None,
                kernel: Some(kernel),
                initrd: Some(vec![0; 8 << 20]),
                dtb: None,
                disks: Vec::new(),
            },
            QEMU10_INITRD,
        )
        .unwrap_err();
        assert!(err.to_string().contains("initrd"), "{err}");
    }
}

#[cfg(test)]
mod hand_over_tests {
    use crate::{BootImages, Machine, MachineConfig, MachineStop};

    /// `sw zero, 0(t0)` to the ROM, `j .`: a firmware that tries to overwrite the reset vector.
    const FIRMWARE: [u32; 3] = [0x0002_a023, 0x0000_006f, 0];

    #[test]
    fn reset_rom_hands_over_to_the_firmware() {
        let bios: Vec<u8> = FIRMWARE.iter().flat_map(|w| w.to_le_bytes()).collect();
        let mut machine = Machine::new(
            MachineConfig::default(),
            &BootImages {
                bios: Some(bios),
                kernel: None,
                initrd: None,
                dtb: None,
                disks: Vec::new(),
            },
        )
        .unwrap();
        assert_eq!(machine.hart.state.pc, crate::memmap::ROM.base);
        // The six instructions of the reset vector.
        assert_eq!(machine.run(Some(6), u64::MAX), MachineStop::Limit);
        let hart = &machine.hart;
        assert_eq!(hart.state.pc, 0x8000_0000);
        assert_eq!(hart.state.x[10], 0, "a0 = hart id");
        assert_eq!(hart.state.x[11], machine.dtb_addr(), "a1 = device tree");
        assert_eq!(
            hart.state.x[12],
            super::FW_DYNAMIC_INFO,
            "a2 = fw_dynamic info"
        );
        // The firmware stores zero over the first ROM word: ignored, as on QEMU.
        machine.hart.state.x[5] = crate::memmap::ROM.base;
        assert_eq!(machine.run(Some(7), u64::MAX), MachineStop::Limit);
        assert_eq!(machine.hart.state.pc, 0x8000_0004);
        // Running the ROM's first instruction again (auipc t0, 0) shows it intact.
        machine.hart.state.pc = crate::memmap::ROM.base;
        machine.hart.state.x[5] = 0;
        assert_eq!(machine.run(Some(8), u64::MAX), MachineStop::Limit);
        assert_eq!(machine.hart.state.pc, crate::memmap::ROM.base + 4);
        assert_eq!(machine.hart.state.x[5], crate::memmap::ROM.base);
    }
}
