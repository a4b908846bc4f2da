//! io_uring opens (`io_uring_complete`, a BTF tracepoint here): an `IORING_OP_OPENAT`/`OPENAT2`
//! completion named by the file it installed, in the task's table or the ring's fixed-file
//! table.
//!
//! A BTF tracepoint rather than the `io_uring:io_uring_complete` trace event: its arguments are
//! typed pointers, and detaching it does not wait for grace periods as closing a trace event's
//! perf event does (about 40 ms each, the bulk of a run's exit; see the tracer's `Drop`).

use aya_ebpf::{
    helpers::bpf_probe_read_kernel, macros::btf_tracepoint, programs::BtfTracePointContext,
};
use recorder_common::{
    AT_FDCWD, Counter, EventKind, FILE_FIXED_SLOT, FILE_UNRESOLVED, uring, walk,
};

use crate::{
    NO_OFFSET, SCRATCH,
    file::emit_file,
    kernel::{current_task, kread, load, walk_offset},
    record::{count, emit, fill_header},
    task::{fd_file, target_mntns},
};

/// `io_uring_cqe.res`.
const CQE_RES: usize = 8;

/// The file in slot `index` of the fixed-file table of io_uring context `ring`.
#[inline(always)]
pub(crate) fn ring_file(ring: u64, index: u32) -> Option<u64> {
    let nr = kread::<u32>(ring, walk::RING_FILES_NR)?;
    if index >= nr {
        return None;
    }
    let nodes = kread::<u64>(ring, walk::RING_FILES_NODES)?;
    // SAFETY: see kread; the index was checked against the table size.
    let node: u64 =
        unsafe { bpf_probe_read_kernel((nodes + u64::from(index) * 8) as *const u64) }.ok()?;
    if node == 0 {
        return None;
    }
    let file = kread::<u64>(node, walk::RSRC_NODE_FILE_PTR)? & !uring::FILE_PTR_FLAGS;
    (file != 0).then_some(file)
}

/// An io_uring completion: an `IORING_OP_OPENAT`/`OPENAT2` that succeeded installed an fd in the
/// submitter's table (io-wq workers share it), or filled a slot of the ring's fixed-file table,
/// read from there.
#[btf_tracepoint(function = "io_uring_complete")]
pub fn io_uring_complete(ctx: BtfTracePointContext) -> i32 {
    let task = current_task();
    let Some(mntns) = target_mntns(task) else {
        return 0;
    };
    // The prototype is (struct io_ring_ctx *ctx, void *req, struct io_uring_cqe *cqe).
    let ring: u64 = ctx.arg(0);
    let req: u64 = ctx.arg(1);
    let cqe: *const u8 = ctx.arg(2);
    if cqe.is_null() {
        return 0;
    }
    // SAFETY: cqe is the tracepoint's BTF pointer; `res` follows the u64 `user_data` (UAPI).
    let res = i64::from(unsafe { load::<i32>(cqe, CQE_RES) });
    let kind = match kread::<u8>(req, walk::KIOCB_OPCODE) {
        Some(uring::OP_OPENAT) => EventKind::UringOpenat,
        Some(uring::OP_OPENAT2) => EventKind::UringOpenat2,
        _ => return 0,
    };
    let Some(buf) = SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: per-CPU scratch, see exit_open.
    let buf = unsafe { &mut *buf };
    fill_header(&mut buf.header, task, kind as u8, mntns, AT_FDCWD, 0);
    buf.header.ret = res;
    if res >= 0 {
        let slot = if walk_offset(walk::KIOCB_OPEN_FILE_SLOT) == NO_OFFSET {
            0
        } else {
            kread::<u32>(req, walk::KIOCB_OPEN_FILE_SLOT).unwrap_or(0)
        };
        let file = if slot == 0 {
            fd_file(task as u64, res)
        } else {
            // file_slot is the slot + 1, or FILE_INDEX_ALLOC for a slot the kernel picked and
            // returned as the result.
            let index = if slot == uring::FILE_INDEX_ALLOC {
                res as u32
            } else {
                slot - 1
            };
            ring_file(ring, index)
        };
        match file {
            Some(file) => {
                buf.header.flags = u64::from(kread::<u32>(file, walk::FILE_FLAGS).unwrap_or(0));
                emit_file(buf, file);
                return 0;
            }
            None => {
                buf.header.file_status = if slot == 0 {
                    FILE_UNRESOLVED
                } else {
                    FILE_FIXED_SLOT
                };
                count(Counter::FileUnresolved);
            }
        }
    }
    emit(buf);
    0
}
