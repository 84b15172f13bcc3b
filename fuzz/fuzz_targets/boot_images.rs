//! Arbitrary bytes as firmware, kernel and initrd: the loaders must refuse what they cannot
//! use with an error, never panic.
//!
//! Run with `cargo fuzz run boot_images` from the repository root.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rewind_machine::{BootImages, Machine, MachineConfig};

fuzz_target!(|data: &[u8]| {
    let config = MachineConfig {
        ram_size: 4 << 20,
        ..MachineConfig::default()
    };
    let as_kernel = BootImages {
        bios: None,
        kernel: Some(data.to_vec()),
        initrd: None,
        dtb: None,
        disks: Vec::new(),
    };
    let as_firmware = BootImages {
        bios: Some(data.to_vec()),
        kernel: Some(data.to_vec()),
        initrd: Some(data.to_vec()),
        dtb: None,
        disks: Vec::new(),
    };
    for images in [as_kernel, as_firmware] {
        if let Ok(mut machine) = Machine::new(config.clone(), &images) {
            machine.run_unattended(Some(1000));
        }
    }
});
