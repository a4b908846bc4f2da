//! Records for userspace: the header every record starts with, the user path argument
//! (`recorder trace` only), loss counters, and the ring buffer writes.

use core::ptr::{addr_of, write_volatile};

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user_str_bytes},
};
use recorder_common::{
    Counter, DIR_NONE, EventBuf, EventHeader, FILE_NONE, HEADER_LEN, PATH_MAX, PATH_OK,
    PATH_READ_FAILED, walk,
};

use crate::{
    COUNTERS, EVENTS, MAX_RECORD, WAKEUP_THRESHOLD,
    kernel::{global, load, walk_offset},
};

#[inline(always)]
pub(crate) fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // A plain increment is enough: the slot is this CPU's, and the kernel never runs two
        // tracing programs on one CPU at once (a nested one is skipped and counted by the
        // kernel as a recursion miss, which userspace reports).
        // SAFETY: the pointer is a valid, aligned u64 in a map value.
        unsafe { *slot += 1 };
    }
}

#[inline(always)]
pub(crate) fn fill_header(
    header: &mut EventHeader,
    task: *const u8,
    kind: u8,
    mntns: u32,
    dirfd: i32,
    flags: u64,
) {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: plain helper call.
    let ts_ns = unsafe { bpf_ktime_get_ns() };
    // SAFETY: task is the current task's BTF pointer and comm its 16-byte array (see load);
    // two plain loads instead of a helper call.
    let comm: [u64; 2] = unsafe { load(task, walk_offset(walk::TASK_COMM) as usize) };
    // Volatile stores: plain ones LLVM merges into `memset` calls, which on BPF are a byte loop
    // in a subprogram (31 bytes, about a tenth of an emitted open's program time).
    // SAFETY: each pointer is a field of `header`, valid and aligned.
    unsafe {
        write_volatile(&raw mut header.ts_ns, ts_ns);
        write_volatile(&raw mut header.ret, 0);
        write_volatile(&raw mut header.flags, flags);
        write_volatile(&raw mut header.tgid, (pid_tgid >> 32) as u32);
        write_volatile(&raw mut header.tid, pid_tgid as u32);
        write_volatile(&raw mut header.mntns, mntns);
        write_volatile(&raw mut header.dirfd, dirfd);
        // comm lies at an 8-byte boundary (asserted where the header is defined).
        let words = (&raw mut header.comm).cast::<u64>();
        write_volatile(words, comm[0]);
        write_volatile(words.add(1), comm[1]);
        write_volatile(&raw mut header.ino, 0);
        write_volatile(&raw mut header.magic, 0);
        write_volatile(&raw mut header.dev, 0);
        write_volatile(&raw mut header.mnt_id, 0);
        write_volatile(&raw mut header.kind, kind);
        write_volatile(&raw mut header.path_status, PATH_OK);
        write_volatile(&raw mut header.path_len, 0);
        write_volatile(&raw mut header.dir_len, 0);
        write_volatile(&raw mut header.dir_status, DIR_NONE);
        write_volatile(&raw mut header.file_status, FILE_NONE);
        write_volatile(&raw mut header.file_len, 0);
        write_volatile(&raw mut header.mode, 0);
        write_volatile(&raw mut header.exec_flags, 0);
        for byte in &mut header._pad {
            write_volatile(byte, 0);
        }
    }
}

/// Reads a user path into the start of `buf.strings`, recording the outcome in the header.
#[inline(always)]
pub(crate) fn read_path(buf: &mut EventBuf, filename: u64) {
    // SAFETY: the helper validates the user pointer and bounds the copy by the slice length.
    match unsafe {
        bpf_probe_read_user_str_bytes(filename as *const u8, &mut buf.strings[..PATH_MAX])
    } {
        Ok(path) => {
            buf.header.path_len = path.len() as u16;
            buf.header.path_status = PATH_OK;
        }
        Err(_) => {
            buf.header.path_len = 0;
            buf.header.path_status = PATH_READ_FAILED;
            count(Counter::PathReadFailed);
        }
    }
}

/// Whether the path just read is relative (an empty path with AT_EMPTY_PATH names the dirfd).
#[inline(always)]
pub(crate) fn path_is_relative(buf: &EventBuf) -> bool {
    buf.header.path_status == PATH_OK && buf.strings[0] != b'/'
}

/// Writes header + strings to the ring.
#[inline(always)]
pub(crate) fn emit(buf: &EventBuf) {
    let len = HEADER_LEN
        + buf.header.path_len as usize
        + buf.header.dir_len as usize
        + buf.header.file_len as usize;
    if len > MAX_RECORD {
        return;
    }
    // SAFETY: `len` is within the record, which is plain bytes.
    output(unsafe { core::slice::from_raw_parts(addr_of!(*buf).cast::<u8>(), len) });
}

/// Records one CPU emits between two looks at the ring's fill. A look (`bpf_ringbuf_query`)
/// on every record cost 40-50 ns of an emitted open's program time (the bench's program
/// accounting, 3 paired runs: 343-358 ns with a look per record, 304-316 ns with none); one
/// every 64 records wakes the consumer at most 63 records per CPU past its threshold, which the
/// ring's size (16 MiB against a 256 KiB threshold by default) absorbs.
const QUERY_EVERY: u64 = 64;

/// Writes one record to the ring, waking the consumer only when the ring is filling up.
#[inline(always)]
pub(crate) fn output(bytes: &[u8]) {
    let emitted = COUNTERS.get_ptr_mut(Counter::Emitted as u32);
    // SAFETY: the slot is this CPU's valid, aligned u64 (see `count`). Without it (never, for
    // an index below the array's size) every record looks, and none is lost.
    let n = emitted.map_or(0, |slot| unsafe { *slot });
    let wakeup = if n % QUERY_EVERY == 0
        && EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= global(&WAKEUP_THRESHOLD) as u64
    {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    match EVENTS.output::<[u8]>(bytes, wakeup as u64) {
        Ok(()) => {
            if let Some(slot) = emitted {
                // SAFETY: as above; a dropped record leaves the count, so the next one looks
                // again.
                unsafe { *slot = n + 1 };
            }
        }
        Err(_) => count(Counter::Dropped),
    }
}
