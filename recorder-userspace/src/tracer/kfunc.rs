//! Linking the programs' kernel-function (kfunc) calls, which aya 0.14 cannot do.
//!
//! The eBPF crate calls each kfunc under a placeholder helper number (`recorder_common::kfunc`):
//! the compiler emits a plain helper call, `call IMM`. Before the object is handed to aya, each
//! such instruction in the object's code sections is rewritten into a kfunc call of the
//! function's id in the running kernel's BTF (`src_reg` = `BPF_PSEUDO_KFUNC_CALL`, `imm` = the
//! id, `off` = 0 for vmlinux), which is what libbpf does for an extern `__ksym` function. aya
//! leaves calls that are not `BPF_PSEUDO_CALL` untouched, so the rewritten call reaches the
//! kernel as written. A kernel without the function (before 6.2 for `bpf_rdonly_cast`) is named
//! in the error before anything is loaded.

use object::{Object, ObjectSection, SectionKind};
use recorder_common::{btf_type, kfunc};
use thiserror::Error;

use super::btf::{Btf, BtfError};

/// `BPF_JMP | BPF_CALL`.
const CALL: u8 = 0x85;
/// `src_reg` of a call of a kernel function by BTF id.
const PSEUDO_KFUNC_CALL: u8 = 2;
/// Bytes of one instruction.
const INSN: usize = 8;

/// Why the programs' kfunc calls could not be linked.
#[derive(Debug, Error)]
pub enum KfuncError {
    /// The running kernel lacks a function the programs call.
    #[error(
        "this kernel has no {name} in its BTF; the recorder's programs need it (kernel 6.2 or later)"
    )]
    Missing {
        /// The kernel function.
        name: &'static str,
    },
    /// The object file could not be read as ELF.
    #[error("reading the eBPF object to link its kernel-function calls")]
    Object {
        /// The cause.
        #[source]
        source: object::Error,
    },
    /// A type the programs cast to is not in the kernel's BTF.
    #[error("looking up the kernel types the programs read")]
    Type {
        /// The cause.
        #[source]
        source: BtfError,
    },
}

/// The eBPF object with its kfunc calls linked, in 8-byte-aligned memory (the ELF reader
/// needs its tables aligned, as `include_bytes_aligned!` gives the original).
pub struct LinkedObject {
    words: Vec<u64>,
    len: usize,
}

impl LinkedObject {
    /// The object's bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `words` holds at least `len` initialised bytes; u8 has no alignment or
        // validity requirement, and the borrow ties the slice to `self`.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.len) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, borrowed mutably.
        unsafe { std::slice::from_raw_parts_mut(self.words.as_mut_ptr().cast::<u8>(), self.len) }
    }
}

/// The ids of the types `recorder_common::btf_type` names, in its order.
pub fn type_ids(btf: &Btf) -> Result<[u64; btf_type::COUNT], KfuncError> {
    let mut ids = [0; btf_type::COUNT];
    for (id, name) in ids.iter_mut().zip(btf_type::NAMES) {
        *id = u64::from(
            btf.struct_id(name)
                .map_err(|source| KfuncError::Type { source })?,
        );
    }
    Ok(ids)
}

/// Copies `object` and rewrites its placeholder calls into calls of the kernel's functions.
pub fn link(object: &[u8], btf: &Btf) -> Result<LinkedObject, KfuncError> {
    let mut ids = Vec::with_capacity(kfunc::ALL.len());
    for (placeholder, name) in kfunc::ALL {
        let id = btf.func_id(name).ok_or(KfuncError::Missing { name })?;
        ids.push((placeholder, id));
    }
    let code = code_ranges(object)?;
    let mut linked = LinkedObject {
        words: vec![0; object.len().div_ceil(INSN)],
        len: object.len(),
    };
    linked.bytes_mut().copy_from_slice(object);
    let bytes = linked.bytes_mut();
    for (start, end) in code {
        for insn in bytes[start..end].chunks_exact_mut(INSN) {
            rewrite(insn, &ids);
        }
    }
    Ok(linked)
}

/// Rewrites one instruction if it is a placeholder call.
fn rewrite(insn: &mut [u8], ids: &[(i32, u32)]) {
    // A helper call: opcode, registers 0, offset 0, the helper number in the immediate.
    if insn[0] != CALL || insn[1] != 0 || insn[2..4] != [0, 0] {
        return;
    }
    let imm = i32::from_le_bytes([insn[4], insn[5], insn[6], insn[7]]);
    if let Some(&(_, id)) = ids.iter().find(|(placeholder, _)| *placeholder == imm) {
        insn[1] = PSEUDO_KFUNC_CALL << 4;
        insn[4..8].copy_from_slice(&id.to_le_bytes());
    }
}

/// Byte ranges of the object's code sections.
fn code_ranges(object: &[u8]) -> Result<Vec<(usize, usize)>, KfuncError> {
    let file = object::File::parse(object).map_err(|source| KfuncError::Object { source })?;
    let mut ranges = Vec::new();
    for section in file.sections() {
        if section.kind() != SectionKind::Text {
            continue;
        }
        if let Some((start, size)) = section.file_range() {
            let (start, size) = (start as usize, size as usize);
            // Whole instructions only: a section's size is a multiple of 8 in any valid object.
            let end = start + size - size % INSN;
            if end <= object.len() {
                ranges.push((start, end));
            }
        }
    }
    Ok(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_placeholder_calls_are_rewritten() {
        let ids = [(kfunc::RDONLY_CAST, 12345)];
        let placeholder = kfunc::RDONLY_CAST.to_le_bytes();
        let p = |head: [u8; 4]| {
            [
                head[0],
                head[1],
                head[2],
                head[3],
                placeholder[0],
                placeholder[1],
                placeholder[2],
                placeholder[3],
            ]
        };
        let cases: [([u8; 8], [u8; 8]); 5] = [
            // The placeholder call: a kfunc call of the id.
            (p([CALL, 0, 0, 0]), [CALL, 0x20, 0, 0, 0x39, 0x30, 0, 0]),
            // A real helper call (bpf_probe_read_kernel, 113).
            ([CALL, 0, 0, 0, 113, 0, 0, 0], [CALL, 0, 0, 0, 113, 0, 0, 0]),
            // A call of a subprogram (src_reg = BPF_PSEUDO_CALL) with the same immediate.
            (p([CALL, 0x10, 0, 0]), p([CALL, 0x10, 0, 0])),
            // Not a call: a 64-bit immediate load's first half with that value.
            (p([0x18, 0x01, 0, 0]), p([0x18, 0x01, 0, 0])),
            // A call with an offset (a kfunc of a module's BTF) is left alone.
            (p([CALL, 0, 1, 0]), p([CALL, 0, 1, 0])),
        ];
        for (mut insn, expected) in cases {
            let before = insn;
            rewrite(&mut insn, &ids);
            assert_eq!(insn, expected, "{before:02x?}");
        }
    }

    #[test]
    fn the_running_kernel_links_the_programs() {
        let btf = Btf::from_sys_fs().expect("this machine has BTF");
        let ids = type_ids(&btf).expect("the types are in the kernel's BTF");
        assert!(ids.iter().all(|&id| id > 0), "{ids:?}");
        assert!(btf.func_id("bpf_rdonly_cast").is_some());
        assert!(matches!(
            link(b"not an object", &btf),
            Err(KfuncError::Object { .. })
        ));
        // The programs' object: every placeholder becomes a kfunc call, and nothing else changes.
        let object = super::super::load::EBPF_OBJECT;
        let linked = link(object, &btf).expect("the programs link");
        let (mut kfunc_calls, mut changed) = (0, 0);
        for (start, end) in code_ranges(object).unwrap() {
            let before = object[start..end].chunks_exact(INSN);
            let after = linked.bytes()[start..end].chunks_exact(INSN);
            for (old, new) in before.zip(after) {
                changed += usize::from(old != new);
                kfunc_calls += usize::from(new[0] == CALL && new[1] == PSEUDO_KFUNC_CALL << 4);
                assert!(
                    !(new[0] == CALL
                        && new[1] == 0
                        && new[4..8] == kfunc::RDONLY_CAST.to_le_bytes()),
                    "a placeholder call is left"
                );
            }
        }
        assert!(kfunc_calls > 0, "the programs call bpf_rdonly_cast");
        assert_eq!(changed, kfunc_calls);
        assert_eq!(linked.bytes().len(), object.len());
    }
}
