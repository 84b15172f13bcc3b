//! The device tree handed to the guest in `a1`, generated from the machine as configured and
//! laid out like the one QEMU 10 builds for `virt` (the nodes both machines have).

use vm_fdt::FdtWriter;

use crate::devices::{plic, rtc, uart, virtio_mmio};
use crate::memmap;
use crate::{BootLayout, MachineConfig};

/// `mtime` frequency (10 MHz, as on QEMU's `virt`), from the clock's one definition.
pub const TIMEBASE_HZ: u32 = (1_000_000_000 / rewind_cpu::clock::NS_PER_MTIME_TICK) as u32;
/// What the hart implements, in the form Linux and OpenSBI parse.
pub const RISCV_ISA: &str = "rv64imafdc_zicsr_zifencei_zihintpause_sstc";

/// Phandles: each hart's cpu node and its interrupt controller, then the test device and
/// the PLIC.
fn phandle_cpu(hart: u32) -> u32 {
    2 * hart + 1
}

fn phandle_intc(hart: u32) -> u32 {
    2 * hart + 2
}

/// Builds the flattened device tree for `config` with images placed as in `layout`, and
/// `rng_seed` (the host's entropy) as `/chosen/rng-seed` unless it is empty.
pub fn build(
    config: &MachineConfig,
    layout: &BootLayout,
    rng_seed: &[u8],
) -> Result<Vec<u8>, vm_fdt::Error> {
    let harts = config.harts;
    let phandle_test = phandle_cpu(harts);
    let phandle_plic = phandle_test + 1;
    let mut fdt = FdtWriter::new()?;
    let root = fdt.begin_node("")?;
    fdt.property_u32("#address-cells", 2)?;
    fdt.property_u32("#size-cells", 2)?;
    fdt.property_string("compatible", "riscv-virtio")?;
    fdt.property_string("model", "riscv-virtio,qemu")?;

    let chosen = fdt.begin_node("chosen")?;
    fdt.property_string(
        "stdout-path",
        &format!("/soc/serial@{:x}", memmap::UART.base),
    )?;
    if let Some(args) = &config.bootargs {
        fdt.property_string("bootargs", args)?;
    }
    if let Some((start, end)) = layout.initrd {
        fdt.property_u64("linux,initrd-start", start)?;
        fdt.property_u64("linux,initrd-end", end)?;
    }
    if !rng_seed.is_empty() {
        fdt.property("rng-seed", rng_seed)?;
    }
    fdt.end_node(chosen)?;

    for (name, value) in [("poweroff", 0x5555u32), ("reboot", 0x7777u32)] {
        let node = fdt.begin_node(name)?;
        fdt.property_u32("value", value)?;
        fdt.property_u32("offset", 0)?;
        fdt.property_u32("regmap", phandle_test)?;
        fdt.property_string("compatible", &format!("syscon-{name}"))?;
        fdt.end_node(node)?;
    }

    let memory = fdt.begin_node(&format!("memory@{:x}", config.ram_base))?;
    fdt.property_string("device_type", "memory")?;
    fdt.property_array_u64("reg", &[config.ram_base, config.ram_size])?;
    fdt.end_node(memory)?;

    let cpus = fdt.begin_node("cpus")?;
    fdt.property_u32("#address-cells", 1)?;
    fdt.property_u32("#size-cells", 0)?;
    fdt.property_u32("timebase-frequency", TIMEBASE_HZ)?;
    for hart in 0..harts {
        let cpu = fdt.begin_node(&format!("cpu@{hart}"))?;
        fdt.property_phandle(phandle_cpu(hart))?;
        fdt.property_string("device_type", "cpu")?;
        fdt.property_u32("reg", hart)?;
        fdt.property_string("status", "okay")?;
        fdt.property_string("compatible", "riscv")?;
        fdt.property_string("riscv,isa", RISCV_ISA)?;
        fdt.property_string("mmu-type", "riscv,sv48")?;
        let intc = fdt.begin_node("interrupt-controller")?;
        fdt.property_u32("#interrupt-cells", 1)?;
        fdt.property_null("interrupt-controller")?;
        fdt.property_string("compatible", "riscv,cpu-intc")?;
        fdt.property_phandle(phandle_intc(hart))?;
        fdt.end_node(intc)?;
        fdt.end_node(cpu)?;
    }
    let map = fdt.begin_node("cpu-map")?;
    let cluster = fdt.begin_node("cluster0")?;
    for hart in 0..harts {
        let core = fdt.begin_node(&format!("core{hart}"))?;
        fdt.property_u32("cpu", phandle_cpu(hart))?;
        fdt.end_node(core)?;
    }
    fdt.end_node(cluster)?;
    fdt.end_node(map)?;
    fdt.end_node(cpus)?;

    let soc = fdt.begin_node("soc")?;
    fdt.property_u32("#address-cells", 2)?;
    fdt.property_u32("#size-cells", 2)?;
    fdt.property_string("compatible", "simple-bus")?;
    fdt.property_null("ranges")?;

    let node = fdt.begin_node(&format!("rtc@{:x}", memmap::RTC.base))?;
    fdt.property_u32("interrupts", rtc::IRQ as u32)?;
    fdt.property_u32("interrupt-parent", phandle_plic)?;
    fdt.property_array_u64("reg", &[memmap::RTC.base, memmap::RTC.size])?;
    fdt.property_string("compatible", "google,goldfish-rtc")?;
    fdt.end_node(node)?;

    let node = fdt.begin_node(&format!("serial@{:x}", memmap::UART.base))?;
    fdt.property_u32("interrupts", uart::IRQ as u32)?;
    fdt.property_u32("interrupt-parent", phandle_plic)?;
    fdt.property_u32("clock-frequency", 0x38_4000)?;
    fdt.property_array_u64("reg", &[memmap::UART.base, memmap::UART.size])?;
    fdt.property_string("compatible", "ns16550a")?;
    fdt.end_node(node)?;

    let node = fdt.begin_node(&format!("test@{:x}", memmap::TEST.base))?;
    fdt.property_phandle(phandle_test)?;
    fdt.property_array_u64("reg", &[memmap::TEST.base, memmap::TEST.size])?;
    fdt.property_string_list(
        "compatible",
        vec![
            "sifive,test1".into(),
            "sifive,test0".into(),
            "syscon".into(),
        ],
    )?;
    fdt.end_node(node)?;

    // QEMU lists the slots from the highest address down; Linux probes them in this order.
    for slot in (0..memmap::VIRTIO_SLOTS).rev() {
        let base = memmap::VIRTIO.base + slot * memmap::VIRTIO_SLOT_SIZE;
        let node = fdt.begin_node(&format!("virtio_mmio@{base:x}"))?;
        fdt.property_u32("interrupts", (virtio_mmio::FIRST_IRQ as u64 + slot) as u32)?;
        fdt.property_u32("interrupt-parent", phandle_plic)?;
        fdt.property_array_u64("reg", &[base, memmap::VIRTIO_SLOT_SIZE])?;
        fdt.property_string("compatible", "virtio,mmio")?;
        fdt.end_node(node)?;
    }

    let node = fdt.begin_node(&format!("plic@{:x}", memmap::PLIC.base))?;
    fdt.property_phandle(phandle_plic)?;
    fdt.property_u32("riscv,ndev", plic::NUM_SOURCES as u32 - 1)?;
    fdt.property_array_u64("reg", &[memmap::PLIC.base, memmap::PLIC.size])?;
    // Per hart, two contexts: M-mode external (11), then S-mode external (9).
    let contexts: Vec<u32> = (0..harts)
        .flat_map(|h| [phandle_intc(h), 11, phandle_intc(h), 9])
        .collect();
    fdt.property_array_u32("interrupts-extended", &contexts)?;
    fdt.property_null("interrupt-controller")?;
    fdt.property_string_list(
        "compatible",
        vec!["sifive,plic-1.0.0".into(), "riscv,plic0".into()],
    )?;
    fdt.property_u32("#address-cells", 0)?;
    fdt.property_u32("#interrupt-cells", 1)?;
    fdt.end_node(node)?;

    let node = fdt.begin_node(&format!("clint@{:x}", memmap::CLINT.base))?;
    // Machine software (3) and machine timer (7) interrupts of each hart.
    let lines: Vec<u32> = (0..harts)
        .flat_map(|h| [phandle_intc(h), 3, phandle_intc(h), 7])
        .collect();
    fdt.property_array_u32("interrupts-extended", &lines)?;
    fdt.property_array_u64("reg", &[memmap::CLINT.base, memmap::CLINT.size])?;
    fdt.property_string_list(
        "compatible",
        vec!["sifive,clint0".into(), "riscv,clint0".into()],
    )?;
    fdt.end_node(node)?;

    fdt.end_node(soc)?;
    fdt.end_node(root)?;
    fdt.finish()
}
