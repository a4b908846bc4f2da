//! Naming a `struct file`: its identity (device, superblock magic, inode, mode, mount id) and
//! its path from the root of its filesystem, walked over its dentries in two passes.

use core::ptr::addr_of;

use aya_ebpf::{helpers::generated, macros::map, maps::PerCpuArray};
use recorder_common::{
    Counter, EventBuf, EventHeader, FILE_OK, FILE_UNRESOLVED, HEADER_LEN, PATH_MAX, btf_type, walk,
};

use crate::{
    NO_OFFSET, WALK,
    kernel::{cast, load, walk_offset},
    record::{count, emit, output},
};

/// Per-CPU record of a file's dentry walk, one [`Step`] per component from the file up.
#[map]
pub(crate) static STEPS: PerCpuArray<[Step; walk::MAX_DEPTH]> = PerCpuArray::with_max_entries(1, 0);

/// One step of a file's walk as read: `d_parent`, `d_name` (`hash | len << 32`, `name`),
/// `d_inode` and the five words of the inline name store that follows it; then the dentry, and
/// where its name starts in the path.
pub(crate) type Step = [u64; STEP_READ + 2];

/// Words of a step read from the dentry in one call.
pub(crate) const STEP_READ: usize = 9;

/// Index of the dentry's own address in a [`Step`].
pub(crate) const STEP_DENTRY: usize = STEP_READ;

/// Index of the name's offset in the path, once written.
pub(crate) const STEP_AT: usize = STEP_READ + 1;

/// Names the file at `file` (a `struct file *`) after the strings already in `buf`: its
/// identity goes into the header and its path from the root of its filesystem after the
/// strings. For a record with more to say after the file (an exec's script record).
///
/// The path is that of the dentry the file was opened through, so a hard link is named by the
/// link used, and every route to it (symlinks, `..`, magic links, bind mounts, a copy of the
/// mount in another namespace) gives the same name. Mounts are not crossed: which filesystem the
/// file lives on is the device's and mount's business, decided in userspace.
#[inline(always)]
pub(crate) fn append_file(buf: &mut EventBuf, file: u64) {
    let Some(out) = WALK.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU scratch, see exit_open.
    let out = unsafe { &mut *out };
    if !read_file(&mut buf.header, out, file).is_some_and(|len| copy_file(buf, out, len)) {
        unresolved(&mut buf.header);
    }
}

/// Names the file at `file` as [`append_file`] does and emits the record.
///
/// A record with no strings before the file (every open, unless `recorder trace` asked for the
/// path argument) is assembled where the walk wrote the path, its header copied in front, so
/// the path is not copied again (a helper call and the copy saved per open).
#[inline(always)]
pub(crate) fn emit_file(buf: &mut EventBuf, file: u64) {
    let Some(out) = WALK.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU scratch, see exit_open.
    let out = unsafe { &mut *out };
    let Some(len) = read_file(&mut buf.header, out, file) else {
        unresolved(&mut buf.header);
        emit(buf);
        return;
    };
    if buf.header.path_len != 0 || buf.header.dir_len != 0 {
        if !copy_file(buf, out, len) {
            unresolved(&mut buf.header);
        }
        emit(buf);
        return;
    }
    buf.header.file_len = len as u16;
    buf.header.file_status = FILE_OK;
    let words = addr_of!(buf.header).cast::<u64>();
    for i in 0..HEADER_LEN / 8 {
        // SAFETY: the header is HEADER_LEN bytes of plain data, 8-byte aligned, and so is the
        // start of `out`, which has room for it before the path.
        unsafe {
            out.as_mut_ptr()
                .add(i * 8)
                .cast::<u64>()
                .write(words.add(i).read())
        };
    }
    let len = HEADER_LEN + (len & (PATH_MAX - 1));
    // SAFETY: the record is the first `len` bytes of `out`.
    output(unsafe { core::slice::from_raw_parts(out.as_ptr(), len) });
}

#[inline(always)]
pub(crate) fn unresolved(header: &mut EventHeader) {
    header.file_len = 0;
    header.file_status = FILE_UNRESOLVED;
    count(Counter::FileUnresolved);
}

/// Reads one step of a file's walk (see [`Step`]) at `dentry` into `step`.
///
/// Nine plain loads through the dentry viewed as its BTF type: `d_parent`, `d_name` and
/// `d_inode` (userspace checks they are adjacent) and, when it follows them, the inline name
/// store. A fault (a dentry freed under the walk, which RCU prevents while the program runs)
/// reads as zeros: a parent of 0 ends the walk as a disconnected tree's root would.
#[inline(always)]
pub(crate) fn read_step(step: &mut Step, dentry: u64) {
    let typed = cast(dentry, btf_type::DENTRY);
    let at = walk_offset(walk::DENTRY_PARENT) as usize;
    // SAFETY: `typed` is a BTF dentry pointer and these are its fields' offsets (see above);
    // the inline store's five words are read only when userspace found it right after d_inode.
    unsafe {
        step[0] = load(typed, at);
        step[1] = load(typed, at + 8);
        step[2] = load(typed, at + 16);
        step[3] = load(typed, at + 24);
        if walk_offset(walk::DENTRY_SHORTNAME) != NO_OFFSET {
            for w in 0..5 {
                step[4 + w] = load(typed, at + 32 + w * 8);
            }
        }
    }
    step[STEP_DENTRY] = dentry;
}

/// Reads the identity of the file at `file` into `header` and writes its path from the root of
/// its filesystem into `out` after [`HEADER_LEN`] bytes left for a header; returns its length.
///
/// The walk goes up first, one call per component reading the dentry's parent, name and inline
/// name store (see [`Step`]), and stops at the superblock's root without reading it; then it
/// writes the names from the top down, so a short name (most are: below 40 bytes, stored in the
/// dentry) is copied from the step it came with instead of with a call of its own. Per
/// component that is one helper call where two were (about 50 ns each here).
#[inline(always)]
pub(crate) fn read_file(
    header: &mut EventHeader,
    out: &mut [u8; 2 * PATH_MAX],
    file: u64,
) -> Option<usize> {
    let typed = cast(file, btf_type::FILE);
    let path = walk_offset(walk::FILE_PATH) as usize;
    // SAFETY: `typed` is a BTF file pointer; f_path's mnt and dentry are its fields.
    let (mnt, mut dentry): (u64, u64) = unsafe {
        (
            load(typed, path + walk_offset(walk::PATH_MNT) as usize),
            load(typed, path + walk_offset(walk::PATH_DENTRY) as usize),
        )
    };
    if dentry == 0 {
        return None;
    }
    let steps = STEPS.get_ptr_mut(0)?;
    // SAFETY: per-CPU scratch, see exit_open.
    let steps = unsafe { &mut *steps };
    read_step(&mut steps[0], dentry);
    // The first step gives the inode too (`d_inode` is `f_inode` for any file an open returns:
    // an overlayfs file is the overlay's inode since 4.19).
    let inode = cast(steps[0][3], btf_type::INODE);
    // The vfsmount is embedded in its struct mount, which holds the id.
    let mount = cast(mnt - walk_offset(walk::MOUNT_MNT), btf_type::MOUNT);
    // SAFETY: `inode` and `mount` are BTF pointers of their types, `sb` the superblock pointer
    // the inode holds; the offsets are their fields'. The loads are sized as the fields are.
    let (mode, ino, dev, magic, root, mnt_id) = unsafe {
        let sb: *const u8 = load(inode, walk_offset(walk::INODE_SB) as usize);
        (
            load::<u16>(inode, walk_offset(walk::INODE_MODE) as usize),
            load::<u64>(inode, walk_offset(walk::INODE_INO) as usize),
            load::<u32>(sb, walk_offset(walk::SB_DEV) as usize),
            load::<u64>(sb, walk_offset(walk::SB_MAGIC) as usize),
            load::<u64>(sb, walk_offset(walk::SB_ROOT) as usize),
            load::<i32>(mount, walk_offset(walk::MOUNT_ID) as usize),
        )
    };
    header.mode = mode as u16;
    header.ino = ino;
    header.dev = dev as u32;
    header.magic = magic;
    header.mnt_id = mnt_id as u32;

    // Up: `depth` components are named by steps[..depth].
    let mut depth = 0;
    let mut done = false;
    for _ in 0..walk::MAX_DEPTH {
        let parent = steps[depth & (walk::MAX_DEPTH - 1)][0];
        if parent == dentry || parent == 0 {
            // The root of the filesystem (or of a disconnected tree).
            done = true;
            break;
        }
        depth += 1;
        if parent == root {
            // The superblock's root: the path is whole without reading the root's own step.
            done = true;
            break;
        }
        if depth >= walk::MAX_DEPTH {
            break;
        }
        dentry = parent;
        read_step(&mut steps[depth & (walk::MAX_DEPTH - 1)], dentry);
    }
    if !done {
        return None;
    }

    // Down: the names from the top, after room for the header. Each name is copied as the five
    // words of its step, whole: the bytes past it are overwritten by the next component or left
    // past the end. A name that is not inline (40 bytes or more) is then read over them. The
    // two passes keep one path through each loop: a branch per component in one loop doubles
    // the paths the verifier walks per component and exceeds its limit.
    if depth == 0 {
        out[HEADER_LEN] = b'/';
        return Some(1);
    }
    // Each loop is left at any of its steps, knowing the step: without `opaque`, the verifier
    // walks what follows once per exit, each loop once per length of the one before. With it
    // the programs load in about 0.2 s more than with the one-pass walk (measured under load).
    let depth = opaque(out, 0, depth);
    let mut len = 0;
    for i in 0..walk::MAX_DEPTH {
        if i >= depth {
            break;
        }
        let step = &mut steps[(depth - 1 - i) & (walk::MAX_DEPTH - 1)];
        // A name is at most NAME_MAX (255) bytes; the mask also shows the verifier the bound.
        let name_len = ((step[1] >> 32) & 0xff) as usize;
        if len + 1 + name_len >= PATH_MAX {
            return None;
        }
        let at = HEADER_LEN + (len & (PATH_MAX - 1));
        step[STEP_AT] = len as u64;
        out[at] = b'/';
        for w in 0..5 {
            // SAFETY: at + 1 + 40 < HEADER_LEN + PATH_MAX + 41, inside `out`.
            unsafe { store_unaligned(out.as_mut_ptr().add(at + 1 + w * 8), step[4 + w]) };
        }
        len += 1 + name_len;
    }
    let len = opaque(out, 1, len);
    let depth = opaque(out, 0, depth);
    let inline = walk_offset(walk::DENTRY_SHORTNAME);
    for i in 0..walk::MAX_DEPTH {
        if i >= depth {
            break;
        }
        let step = &steps[i & (walk::MAX_DEPTH - 1)];
        if inline != NO_OFFSET && step[2] == step[STEP_DENTRY] + inline {
            continue;
        }
        let at = HEADER_LEN + 1 + (step[STEP_AT] as usize & (PATH_MAX - 1));
        // SAFETY: at + 255 lies inside `out`; the helper validates the kernel address.
        let failed = unsafe {
            generated::bpf_probe_read_kernel(
                out.as_mut_ptr().add(at).cast(),
                ((step[1] >> 32) & 0xff) as u32,
                step[2] as *const _,
            )
        };
        if failed != 0 {
            return None;
        }
    }
    (len < PATH_MAX).then_some(len)
}

/// Stores a word at `at`, aligned or not, as one instruction.
///
/// The BPF backend assumes stores must be aligned and splits an unaligned one into eight byte
/// stores and their shifts; the kernel has no such rule for map values on hosts with efficient
/// unaligned access (x86-64, arm64), so the walk's name copies are written by hand: 5 stores
/// per component where there were about 75 instructions. With the loads through typed pointers
/// (see `read_step`) the walk went from 53 to 14 ns per component (kernel run-time accounting,
/// medians of 9 rounds).
///
/// # Safety
/// `at..at + 8` must lie in one map value this program may write.
#[inline(always)]
pub(crate) unsafe fn store_unaligned(at: *mut u8, value: u64) {
    // SAFETY: upheld by the caller.
    unsafe {
        core::arch::asm!("*(u64 *)({at} + 0) = {value}", at = in(reg) at, value = in(reg) value)
    }
}

/// `value`, through word `slot` of `out`'s header room: the same number, of which the verifier
/// knows nothing but its type, so the paths that reach this point with different values merge.
#[inline(always)]
pub(crate) fn opaque(out: &mut [u8; 2 * PATH_MAX], slot: usize, value: usize) -> usize {
    // SAFETY: slots 0 and 1 lie in the first HEADER_LEN bytes of `out`, 8-byte aligned; nothing
    // else reads them before the header is written there.
    unsafe {
        let word = out.as_mut_ptr().add(slot * 8).cast::<u64>();
        core::ptr::write_volatile(word, value as u64);
        core::ptr::read_volatile(word) as usize
    }
}

/// Copies the path `read_file` left in `out` (`len` bytes after [`HEADER_LEN`]) after the
/// strings in `buf`.
#[inline(always)]
pub(crate) fn copy_file(buf: &mut EventBuf, out: &[u8; 2 * PATH_MAX], len: usize) -> bool {
    let at = buf.header.path_len as usize + buf.header.dir_len as usize;
    if len >= PATH_MAX || at >= 2 * PATH_MAX {
        return false;
    }
    // SAFETY: the destination ends below 2 * PATH_MAX + PATH_MAX, the buffer's size (both masked
    // for the verifier); the source is this program's own map.
    let copied = unsafe {
        generated::bpf_probe_read_kernel(
            buf.strings.as_mut_ptr().add(at & (2 * PATH_MAX - 1)).cast(),
            (len & (PATH_MAX - 1)) as u32,
            out.as_ptr().add(HEADER_LEN).cast(),
        )
    };
    if copied != 0 {
        return false;
    }
    buf.header.file_len = len as u16;
    buf.header.file_status = FILE_OK;
    true
}
