//! The RV64GC register file as gdb sees it: x0–x31, pc, f0–f31, fflags/frm/fcsr, the
//! privileged CSRs and the privilege level, described by a target description that
//! `gdb-multiarch` understands (features `org.gnu.gdb.riscv.{cpu,fpu,csr,virtual}`).

use gdbstub::arch::{Arch, Registers};

/// CSRs shown to gdb, by number and name, in increasing number (the `g` packet's order).
pub const CSRS: &[(u16, &str)] = &[
    (0x100, "sstatus"),
    (0x104, "sie"),
    (0x105, "stvec"),
    (0x106, "scounteren"),
    (0x10a, "senvcfg"),
    (0x140, "sscratch"),
    (0x141, "sepc"),
    (0x142, "scause"),
    (0x143, "stval"),
    (0x144, "sip"),
    (0x14d, "stimecmp"),
    (0x180, "satp"),
    (0x300, "mstatus"),
    (0x301, "misa"),
    (0x302, "medeleg"),
    (0x303, "mideleg"),
    (0x304, "mie"),
    (0x305, "mtvec"),
    (0x306, "mcounteren"),
    (0x30a, "menvcfg"),
    (0x320, "mcountinhibit"),
    (0x340, "mscratch"),
    (0x341, "mepc"),
    (0x342, "mcause"),
    (0x343, "mtval"),
    (0x344, "mip"),
    (0x3a0, "pmpcfg0"),
    (0x3a2, "pmpcfg2"),
    (0x3b0, "pmpaddr0"),
    (0x3b1, "pmpaddr1"),
    (0x3b2, "pmpaddr2"),
    (0x3b3, "pmpaddr3"),
    (0x3b4, "pmpaddr4"),
    (0x3b5, "pmpaddr5"),
    (0x3b6, "pmpaddr6"),
    (0x3b7, "pmpaddr7"),
    (0x3b8, "pmpaddr8"),
    (0x3b9, "pmpaddr9"),
    (0x3ba, "pmpaddr10"),
    (0x3bb, "pmpaddr11"),
    (0x3bc, "pmpaddr12"),
    (0x3bd, "pmpaddr13"),
    (0x3be, "pmpaddr14"),
    (0x3bf, "pmpaddr15"),
    (0xc00, "cycle"),
    (0xc01, "time"),
    (0xc02, "instret"),
    (0xf14, "mhartid"),
];

const X_NAMES: [&str; 32] = [
    "zero", "ra", "sp", "gp", "tp", "t0", "t1", "t2", "fp", "s1", "a0", "a1", "a2", "a3", "a4",
    "a5", "a6", "a7", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11", "t3", "t4",
    "t5", "t6",
];
const F_NAMES: [&str; 32] = [
    "ft0", "ft1", "ft2", "ft3", "ft4", "ft5", "ft6", "ft7", "fs0", "fs1", "fa0", "fa1", "fa2",
    "fa3", "fa4", "fa5", "fa6", "fa7", "fs2", "fs3", "fs4", "fs5", "fs6", "fs7", "fs8", "fs9",
    "fs10", "fs11", "ft8", "ft9", "ft10", "ft11",
];

/// gdb numbers CSR n as 65 + n, and the privilege level as 65 + 4096.
const CSR_REGNUM_BASE: usize = 65;

/// The target description XML.
pub fn target_xml() -> String {
    let mut xml = String::from(
        "<?xml version=\"1.0\"?>\n<!DOCTYPE target SYSTEM \"gdb-target.dtd\">\n\
         <target version=\"1.0\">\n<architecture>riscv:rv64</architecture>\n\
         <feature name=\"org.gnu.gdb.riscv.cpu\">\n",
    );
    for (i, name) in X_NAMES.iter().enumerate() {
        let ty = match i {
            1 => "code_ptr",
            2 | 8 => "data_ptr",
            _ => "int",
        };
        xml += &format!("<reg name=\"{name}\" bitsize=\"64\" type=\"{ty}\" regnum=\"{i}\"/>\n");
    }
    xml += "<reg name=\"pc\" bitsize=\"64\" type=\"code_ptr\" regnum=\"32\"/>\n</feature>\n";
    xml += "<feature name=\"org.gnu.gdb.riscv.fpu\">\n";
    for (i, name) in F_NAMES.iter().enumerate() {
        xml += &format!(
            "<reg name=\"{name}\" bitsize=\"64\" type=\"ieee_double\" regnum=\"{}\"/>\n",
            33 + i
        );
    }
    for (n, name) in [(1, "fflags"), (2, "frm"), (3, "fcsr")] {
        xml += &format!(
            "<reg name=\"{name}\" bitsize=\"32\" type=\"int\" regnum=\"{}\" group=\"float\"/>\n",
            CSR_REGNUM_BASE + n
        );
    }
    xml += "</feature>\n<feature name=\"org.gnu.gdb.riscv.csr\">\n";
    for (n, name) in CSRS {
        xml += &format!(
            "<reg name=\"{name}\" bitsize=\"64\" type=\"int\" regnum=\"{}\" group=\"system\"/>\n",
            CSR_REGNUM_BASE + *n as usize
        );
    }
    xml += &format!(
        "</feature>\n<feature name=\"org.gnu.gdb.riscv.virtual\">\n\
         <reg name=\"priv\" bitsize=\"64\" type=\"int\" regnum=\"{}\"/>\n</feature>\n</target>\n",
        CSR_REGNUM_BASE + 4096
    );
    xml
}

/// The registers, in the order of their numbers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Regs {
    pub x: [u64; 32],
    pub pc: u64,
    pub f: [u64; 32],
    pub fflags: u32,
    pub frm: u32,
    pub fcsr: u32,
    /// Values of [`CSRS`], in that order.
    pub csrs: Vec<u64>,
    pub privilege: u64,
}

impl Registers for Regs {
    type ProgramCounter = u64;

    fn pc(&self) -> u64 {
        self.pc
    }

    fn gdb_serialize(&self, mut write_byte: impl FnMut(Option<u8>)) {
        let mut put = |bytes: &[u8]| bytes.iter().for_each(|b| write_byte(Some(*b)));
        for v in &self.x {
            put(&v.to_le_bytes());
        }
        put(&self.pc.to_le_bytes());
        for v in &self.f {
            put(&v.to_le_bytes());
        }
        for v in [self.fflags, self.frm, self.fcsr] {
            put(&v.to_le_bytes());
        }
        for i in 0..CSRS.len() {
            put(&self.csrs.get(i).copied().unwrap_or(0).to_le_bytes());
        }
        put(&self.privilege.to_le_bytes());
    }

    fn gdb_deserialize(&mut self, bytes: &[u8]) -> Result<(), ()> {
        // Registers cannot be written while replaying; parse what is given so that a `G`
        // packet can be answered with a proper error by the target.
        let mut words = bytes.chunks_exact(8);
        for v in self.x.iter_mut() {
            *v = u64::from_le_bytes(words.next().ok_or(())?.try_into().map_err(|_| ())?);
        }
        self.pc = u64::from_le_bytes(words.next().ok_or(())?.try_into().map_err(|_| ())?);
        Ok(())
    }
}

/// RV64GC for gdbstub, with our register file and description.
pub enum Rv64 {}

impl Arch for Rv64 {
    type Usize = u64;
    type Registers = Regs;
    type BreakpointKind = usize;
    type RegId = ();

    fn target_description_xml() -> Option<&'static str> {
        None
    }
}
