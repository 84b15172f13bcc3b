//! The device tree handed to the guest in `a1`, generated from the machine as configured.

use vm_fdt::FdtWriter;

use crate::devices::{clint, finisher, uart};
use crate::MachineConfig;

/// `mtime` frequency: 10 MHz, as on QEMU's `virt`.
pub const TIMEBASE_HZ: u32 = 10_000_000;

const PHANDLE_CPU0_INTC: u32 = 1;
const PHANDLE_TEST: u32 = 2;

/// Builds the flattened device tree for `config`.
pub fn build(config: &MachineConfig) -> Result<Vec<u8>, vm_fdt::Error> {
    let mut fdt = FdtWriter::new()?;
    let root = fdt.begin_node("")?;
    fdt.property_u32("#address-cells", 2)?;
    fdt.property_u32("#size-cells", 2)?;
    fdt.property_string("compatible", "riscv-virtio")?;
    fdt.property_string("model", "riscv-virtio,qemu")?;

    let chosen = fdt.begin_node("chosen")?;
    fdt.property_string("stdout-path", "/soc/serial@10000000")?;
    if let Some(args) = &config.bootargs {
        fdt.property_string("bootargs", args)?;
    }
    fdt.end_node(chosen)?;

    let memory = fdt.begin_node(&format!("memory@{:x}", config.ram_base))?;
    fdt.property_string("device_type", "memory")?;
    fdt.property_array_u64("reg", &[config.ram_base, config.ram_size])?;
    fdt.end_node(memory)?;

    let cpus = fdt.begin_node("cpus")?;
    fdt.property_u32("#address-cells", 1)?;
    fdt.property_u32("#size-cells", 0)?;
    fdt.property_u32("timebase-frequency", TIMEBASE_HZ)?;
    let cpu = fdt.begin_node("cpu@0")?;
    fdt.property_string("device_type", "cpu")?;
    fdt.property_u32("reg", 0)?;
    fdt.property_string("status", "okay")?;
    fdt.property_string("compatible", "riscv")?;
    fdt.property_string("riscv,isa", "rv64imafdc_zicsr_zifencei")?;
    fdt.property_string("mmu-type", "riscv,sv48")?;
    let intc = fdt.begin_node("interrupt-controller")?;
    fdt.property_u32("#interrupt-cells", 1)?;
    fdt.property_null("interrupt-controller")?;
    fdt.property_string("compatible", "riscv,cpu-intc")?;
    fdt.property_phandle(PHANDLE_CPU0_INTC)?;
    fdt.end_node(intc)?;
    fdt.end_node(cpu)?;
    fdt.end_node(cpus)?;

    let soc = fdt.begin_node("soc")?;
    fdt.property_u32("#address-cells", 2)?;
    fdt.property_u32("#size-cells", 2)?;
    fdt.property_string("compatible", "simple-bus")?;
    fdt.property_null("ranges")?;

    let test = fdt.begin_node(&format!("test@{:x}", finisher::BASE))?;
    fdt.property_string_list(
        "compatible",
        vec![
            "sifive,test1".into(),
            "sifive,test0".into(),
            "syscon".into(),
        ],
    )?;
    fdt.property_array_u64("reg", &[finisher::BASE, finisher::SIZE])?;
    fdt.property_phandle(PHANDLE_TEST)?;
    fdt.end_node(test)?;
    for (name, value) in [("poweroff", 0x5555u32), ("reboot", 0x7777u32)] {
        let node = fdt.begin_node(name)?;
        fdt.property_string("compatible", &format!("syscon-{name}"))?;
        fdt.property_u32("regmap", PHANDLE_TEST)?;
        fdt.property_u32("offset", 0)?;
        fdt.property_u32("value", value)?;
        fdt.end_node(node)?;
    }

    let serial = fdt.begin_node(&format!("serial@{:x}", uart::BASE))?;
    fdt.property_string("compatible", "ns16550a")?;
    fdt.property_array_u64("reg", &[uart::BASE, uart::SIZE])?;
    fdt.property_u32("clock-frequency", 3_686_400)?;
    fdt.end_node(serial)?;

    let clint_node = fdt.begin_node(&format!("clint@{:x}", clint::BASE))?;
    fdt.property_string_list(
        "compatible",
        vec!["sifive,clint0".into(), "riscv,clint0".into()],
    )?;
    fdt.property_array_u64("reg", &[clint::BASE, clint::SIZE])?;
    // Machine software (3) and machine timer (7) interrupts of hart 0.
    fdt.property_array_u32(
        "interrupts-extended",
        &[PHANDLE_CPU0_INTC, 3, PHANDLE_CPU0_INTC, 7],
    )?;
    fdt.end_node(clint_node)?;

    fdt.end_node(soc)?;
    fdt.end_node(root)?;
    fdt.finish()
}
