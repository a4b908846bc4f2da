//! Reading kernel memory: patched globals, typed loads through BTF pointers (plain loads the
//! verifier makes fault-tolerant), pointers held as numbers typed by a cast, and helper reads
//! where neither is worth it.

use core::ptr::{addr_of, read_volatile};

use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_current_task_btf, bpf_probe_read_kernel, bpf_task_pt_regs},
    programs::TracePointContext,
};

use recorder_common::kfunc;

use crate::{BTF_TYPE_IDS, WALK_OFFSETS};

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

/// Views the kernel object at `addr` as a `ty` (a `recorder_common::btf_type` index): a
/// pointer the verifier types, read with [`load`] instead of helper calls.
///
/// This is `bpf_rdonly_cast` (a kfunc, kernel 6.2+), which the verifier replaces by a register
/// move: the cast is free and each load through its result is a plain load made
/// fault-tolerant, where a `bpf_probe_read_kernel` call costs about 50 ns here. The object
/// file calls it under a placeholder helper number that userspace links before load (aya 0.14
/// cannot link kfuncs itself); the type id is a patched read-only global, a constant for the
/// verifier as the kfunc requires.
#[inline(always)]
pub(crate) fn cast(addr: u64, ty: usize) -> *const u8 {
    // SAFETY: the placeholder number is rewritten into the kfunc call before load (a program
    // that still calls it is refused by the verifier, not run); the kfunc only reinterprets
    // `addr`; `ty` is a btf_type index below COUNT.
    unsafe {
        let rdonly_cast: unsafe extern "C" fn(u64, u64) -> *const u8 =
            core::mem::transmute(kfunc::RDONLY_CAST as usize);
        rdonly_cast(addr, read_volatile(addr_of!(BTF_TYPE_IDS[ty])))
    }
}

/// The current syscall's arguments from `task`'s saved user registers, one per `walk` offset
/// of a `pt_regs` field asked for (x86-64 passes them in di, si, dx, r10, r8, r9).
#[inline(always)]
pub(crate) fn syscall_args<const N: usize>(task: *const u8, registers: [usize; N]) -> [u64; N] {
    // SAFETY: bpf_task_pt_regs returns the BTF pointer to the task's user registers; the
    // offsets are its fields' (see load).
    unsafe {
        let regs = bpf_task_pt_regs(task as *mut _) as *const u8;
        registers.map(|register| load::<u64>(regs, walk_offset(register) as usize))
    }
}

#[inline(always)]
pub(crate) fn current_task() -> *const u8 {
    // SAFETY: plain helper call.
    unsafe { bpf_get_current_task_btf() as *const u8 }
}

/// A field of a tracepoint's record at `offset`: a plain load from the program's context (the
/// verifier checks it lies inside the record), where `TracePointContext::read_at` is a helper
/// call.
#[inline(always)]
pub(crate) fn arg<T: Copy>(ctx: &TracePointContext, offset: usize) -> T {
    // SAFETY: offsets are those of the record's fields, aligned to their size.
    unsafe { read_volatile(ctx.as_ptr().cast::<u8>().add(offset).cast::<T>()) }
}

#[inline(always)]
pub(crate) fn walk_offset(index: usize) -> u64 {
    // Volatile for the same reason as `global`.
    // SAFETY: a valid static; every index used is a `walk` constant below COUNT.
    unsafe { read_volatile(addr_of!(WALK_OFFSETS[index])) }
}

/// Reads a kernel word through the fault-tolerant helper: for the paths that run rarely
/// (`recorder trace`'s directory walk, io_uring's fixed-file table), where a [`cast`] to one
/// more kernel type is not worth its id.
#[inline(always)]
pub(crate) fn kread<T>(base: u64, offset: usize) -> Option<T> {
    // SAFETY: the helper validates the address; a bad one is an error, not a fault.
    unsafe { bpf_probe_read_kernel((base + walk_offset(offset)) as *const T) }.ok()
}

/// Declares tracepoint programs, one per name, that each hand their context and an
/// `EventKind` to one handler (`handler(&ctx, kind)`): the syscall exits that share a handler.
macro_rules! exit_programs {
    ($handler:ident: $($name:ident => $kind:expr),+ $(,)?) => {
        $(
            #[aya_ebpf::macros::tracepoint]
            pub fn $name(ctx: aya_ebpf::programs::TracePointContext) -> u32 {
                $handler(&ctx, $kind);
                0
            }
        )+
    };
}
pub(crate) use exit_programs;
