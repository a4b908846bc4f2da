//! io_uring opens (`io_uring:io_uring_complete`, 5.5+): an `IORING_OP_OPENAT`/`OPENAT2`
//! completion named by the file it installed, in the task's table or the ring's fixed-file
//! table.

use aya_ebpf::{helpers::bpf_probe_read_kernel, macros::tracepoint, programs::TracePointContext};
use recorder_common::{
    AT_FDCWD, Counter, EventKind, FILE_FIXED_SLOT, FILE_UNRESOLVED, uring, walk,
};

use crate::{
    NO_OFFSET, SCRATCH,
    file::emit_file,
    kernel::{arg, current_task, kread, walk_offset},
    record::{count, emit, fill_header},
    task::{fd_file, target_mntns},
};

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
#[tracepoint]
pub fn io_uring_complete(ctx: TracePointContext) -> u32 {
    let task = current_task();
    let Some(mntns) = target_mntns(task) else {
        return 0;
    };
    // Fields of io_uring/io_uring_complete: ctx at 8, req at 16, user_data at 24, res at 32.
    let ring = arg::<u64>(&ctx, 8);
    let req = arg::<u64>(&ctx, 16);
    let res = i64::from(arg::<i32>(&ctx, 32));
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
