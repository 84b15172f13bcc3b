//! Loading guest images into RAM.

use goblin::elf::{header, program_header, Elf};
use rewind_cpu::Ram;

use crate::MachineError;

/// Loads an ELF's `PT_LOAD` segments at their physical addresses, as QEMU's `-kernel` does,
/// and returns the entry point. Nothing is written unless every segment fits in RAM.
pub fn load_elf(ram: &mut Ram, bytes: &[u8], what: &str) -> Result<u64, MachineError> {
    load_elf_extent(ram, bytes, what).map(|(entry, _)| entry)
}

/// As [`load_elf`], also returning the end of the highest segment.
pub fn load_elf_extent(
    ram: &mut Ram,
    bytes: &[u8],
    what: &str,
) -> Result<(u64, u64), MachineError> {
    let bad = |reason: String| MachineError::BadImage {
        what: what.to_string(),
        reason,
    };
    let elf = Elf::parse(bytes).map_err(|e| bad(format!("not a valid ELF file ({e})")))?;
    if elf.header.e_machine != header::EM_RISCV {
        return Err(bad(format!(
            "it is an ELF for {}, not RISC-V",
            header::machine_to_str(elf.header.e_machine)
        )));
    }
    if !elf.is_64 {
        return Err(bad("it is a 32-bit RISC-V ELF; this machine is RV64".into()));
    }
    if !elf.little_endian {
        return Err(bad("it is a big-endian ELF".into()));
    }
    let mut segments = Vec::new();
    for ph in elf.program_headers.iter() {
        if ph.p_type != program_header::PT_LOAD || ph.p_memsz == 0 {
            continue;
        }
        let file_range = ph.file_range();
        let data = bytes.get(file_range.clone()).ok_or_else(|| {
            bad(format!(
                "segment data {file_range:?} lies past the end of the file"
            ))
        })?;
        if ph.p_filesz > ph.p_memsz {
            return Err(bad("a segment has more file bytes than memory bytes".into()));
        }
        if !ram.contains(ph.p_paddr, ph.p_memsz) {
            return Err(bad(format!(
                "segment at {:#x}..{:#x} lies outside RAM ({:#x}..{:#x}); link it inside RAM or give more --memory",
                ph.p_paddr,
                ph.p_paddr.wrapping_add(ph.p_memsz),
                ram.base(),
                ram.end()
            )));
        }
        segments.push((ph.p_paddr, data, ph.p_memsz));
    }
    if segments.is_empty() {
        return Err(bad("it has no loadable segments".into()));
    }
    let mut end = 0;
    for (addr, data, memsz) in segments {
        ram.write(addr, data).expect("checked above");
        let zeros = vec![0u8; (memsz - data.len() as u64) as usize];
        ram.write(addr + data.len() as u64, &zeros)
            .expect("checked above");
        end = end.max(addr + memsz);
    }
    Ok((elf.entry, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_non_elf_and_foreign_elf() {
        let mut ram = Ram::new(0x8000_0000, 1 << 20);
        let err = load_elf(&mut ram, b"hello", "kernel").unwrap_err();
        assert!(err.to_string().contains("not a valid ELF"), "{err}");
        let host = std::fs::read("/proc/self/exe").unwrap();
        let err = load_elf(&mut ram, &host, "kernel").unwrap_err();
        assert!(err.to_string().contains("not RISC-V"), "{err}");
    }
}
