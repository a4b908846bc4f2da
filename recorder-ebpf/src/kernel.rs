//! Reading kernel memory: patched globals, typed loads through BTF pointers (plain loads the
//! verifier makes fault-tolerant), and helper reads for the pointers it cannot type.

use core::ptr::{addr_of, read_volatile};

use aya_ebpf::{
    helpers::{bpf_get_current_task_btf, bpf_probe_read_kernel},
    programs::TracePointContext,
};

use crate::WALK_OFFSETS;

#[inline(always)]
pub(crate) fn global(value: &'static u64) -> usize {
    // Volatile so the compiler does not fold the pre-patch value 0 into the code.
    // SAFETY: a valid static.
    unsafe { read_volatile(value) as usize }
}

/// Loads a word through a BTF-typed kernel pointer.
///
/// The verifier checks the offset against the kernel's BTF and turns the load into a
/// fault-tolerant one, so a stale pointer reads as 0 instead of crashing; this costs a plain load
/// where `bpf_probe_read_kernel` costs a helper call.
#[inline(always)]
pub(crate) unsafe fn load<T>(base: *const u8, offset: usize) -> T {
    // SAFETY: upheld by the caller: `base` is a BTF pointer and `offset` a field of it.
    unsafe { read_volatile(base.add(offset).cast::<T>()) }
}

#[inline(always)]
pub(crate) fn current_task() -> *const u8 {
    // SAFETY: plain helper call.
    unsafe { bpf_get_current_task_btf() as *const u8 }
}

#[inline(always)]
pub(crate) fn arg<T>(ctx: &TracePointContext, offset: usize) -> T
where
    T: Default,
{
    // SAFETY: offsets are those of the syscall record's argument slots.
    unsafe { ctx.read_at::<T>(offset) }.unwrap_or_default()
}

#[inline(always)]
pub(crate) fn walk_offset(index: usize) -> u64 {
    // Volatile for the same reason as `global`.
    // SAFETY: a valid static; every index used is a `walk` constant below COUNT.
    unsafe { read_volatile(addr_of!(WALK_OFFSETS[index])) }
}

/// Reads a kernel word. The walk chases pointers the verifier cannot type (an fd table slot,
/// a `struct mount` found by container_of), so it reads through the fault-tolerant helper.
#[inline(always)]
pub(crate) fn kread<T>(base: u64, offset: usize) -> Option<T> {
    // SAFETY: the helper validates the address; a bad one is an error, not a fault.
    unsafe { bpf_probe_read_kernel((base + walk_offset(offset)) as *const T) }.ok()
}

/// Words of one kernel struct at `base`, the fields' offsets being `WALK_OFFSETS[fields[i]]`,
/// each shifted down to its field (a narrower field is in the low bits: x86-64 is little
/// endian). Fields within [`SPAN_WORDS`] words of the first come from one helper read instead
/// of one each; any other layout falls back to one read per field.
#[inline(always)]
pub(crate) fn kread_fields<const N: usize>(base: u64, fields: [usize; N]) -> Option<[u64; N]> {
    let offsets = fields.map(walk_offset);
    let mut lo = u64::MAX;
    let mut hi = 0;
    for offset in offsets {
        lo = lo.min(offset & !7);
        hi = hi.max(offset);
    }
    let mut out = [0u64; N];
    if hi - lo < (SPAN_WORDS as u64 - 1) * 8 {
        // SAFETY: the helper validates the address; a bad one is an error, not a fault.
        let block: [u64; SPAN_WORDS] =
            unsafe { bpf_probe_read_kernel((base + lo) as *const [u64; SPAN_WORDS]) }.ok()?;
        for i in 0..N {
            let at = offsets[i] - lo;
            // The index is below SPAN_WORDS by the check above; the mask shows the verifier.
            let word = block[(at / 8) as usize & (SPAN_WORDS - 1)];
            out[i] = word >> ((at % 8) * 8);
        }
    } else {
        for i in 0..N {
            // SAFETY: as above.
            out[i] = unsafe { bpf_probe_read_kernel((base + offsets[i]) as *const u64) }.ok()?;
        }
    }
    Some(out)
}

/// Words one span read of [`kread_fields`] covers.
pub(crate) const SPAN_WORDS: usize = 16;
