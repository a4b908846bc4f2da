//! The kernel struct offsets the programs read, computed from BTF.

use recorder_common::walk;

use super::btf::{Btf, BtfError};

/// The kernel struct offsets the programs use, indexed by `recorder_common::walk`: the filter's
/// (`task→nsproxy→mnt_ns→ns.inum`), the syscall arguments' saved registers, and the walks'.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelOffsets {
    /// The offsets, indexed by `recorder_common::walk`.
    pub walk: [u64; walk::COUNT],
}

impl KernelOffsets {
    /// Computes the offsets from the running kernel's BTF.
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        Self::from_btf(&Btf::from_sys_fs()?)
    }

    /// Computes the offsets from parsed BTF.
    pub fn from_btf(btf: &Btf) -> Result<Self, BtfError> {
        Ok(Self {
            walk: walk_offsets(btf)?,
        })
    }
}

fn walk_offsets(btf: &Btf) -> Result<[u64; walk::COUNT], BtfError> {
    let at = |strukt: &str, path: &[&str]| btf.offset_of(strukt, path).map(|o| o as u64);
    let mut offsets = [0u64; walk::COUNT];
    offsets[walk::TASK_NSPROXY] = at("task_struct", &["nsproxy"])?;
    offsets[walk::NSPROXY_MNT_NS] = at("nsproxy", &["mnt_ns"])?;
    offsets[walk::MNT_NS_INUM] = at("mnt_namespace", &["ns", "inum"])?;
    offsets[walk::PT_REGS_DI] = at("pt_regs", &["di"])?;
    offsets[walk::PT_REGS_SI] = at("pt_regs", &["si"])?;
    offsets[walk::PT_REGS_DX] = at("pt_regs", &["dx"])?;
    offsets[walk::PT_REGS_R8] = at("pt_regs", &["r8"])?;
    offsets[walk::TASK_COMM] = at("task_struct", &["comm"])?;
    offsets[walk::TASK_FS] = at("task_struct", &["fs"])?;
    offsets[walk::TASK_FILES] = at("task_struct", &["files"])?;
    offsets[walk::FS_ROOT] = at("fs_struct", &["root"])?;
    offsets[walk::FS_PWD] = at("fs_struct", &["pwd"])?;
    offsets[walk::PATH_MNT] = at("path", &["mnt"])?;
    offsets[walk::PATH_DENTRY] = at("path", &["dentry"])?;
    offsets[walk::FILES_FDT] = at("files_struct", &["fdt"])?;
    offsets[walk::FDT_FD] = at("fdtable", &["fd"])?;
    offsets[walk::FDT_MAX_FDS] = at("fdtable", &["max_fds"])?;
    offsets[walk::FILE_PATH] = at("file", &["f_path"])?;
    offsets[walk::DENTRY_PARENT] = at("dentry", &["d_parent"])?;
    offsets[walk::DENTRY_NAME_LEN] = at("dentry", &["d_name", "len"])?;
    offsets[walk::DENTRY_NAME] = at("dentry", &["d_name", "name"])?;
    // A file's f_path is read as {mnt, dentry} in one go.
    if offsets[walk::PATH_DENTRY] != offsets[walk::PATH_MNT] + 8 {
        return Err(BtfError::Layout(
            "struct path: dentry does not directly follow mnt",
        ));
    }
    offsets[walk::DENTRY_INODE] = at("dentry", &["d_inode"])?;
    // The walk reads d_parent, d_name and d_inode in one go (see the eBPF crate's dentry_step).
    if offsets[walk::DENTRY_NAME_LEN] != offsets[walk::DENTRY_PARENT] + 12
        || offsets[walk::DENTRY_NAME] != offsets[walk::DENTRY_PARENT] + 16
        || offsets[walk::DENTRY_INODE] != offsets[walk::DENTRY_PARENT] + 24
    {
        return Err(BtfError::Layout(
            "struct dentry: d_name (hash, len, name) and d_inode do not directly follow d_parent",
        ));
    }
    // Short names live inline in the dentry, right after d_inode on 64-bit kernels: the walk
    // then reads them with the step instead of with a call of their own.
    offsets[walk::DENTRY_SHORTNAME] = at("dentry", &["d_shortname"])
        .or_else(|_| at("dentry", &["d_iname"]))
        .ok()
        .filter(|&at| at == offsets[walk::DENTRY_PARENT] + 32)
        .unwrap_or(u64::MAX);
    offsets[walk::VFSMOUNT_ROOT] = at("vfsmount", &["mnt_root"])?;
    offsets[walk::MOUNT_MNT] = at("mount", &["mnt"])?;
    offsets[walk::MOUNT_PARENT] = at("mount", &["mnt_parent"])?;
    offsets[walk::MOUNT_MOUNTPOINT] = at("mount", &["mnt_mountpoint"])?;
    offsets[walk::MOUNT_ID] = at("mount", &["mnt_id"])?;
    offsets[walk::FILE_INODE] = at("file", &["f_inode"])?;
    offsets[walk::FILE_FLAGS] = at("file", &["f_flags"])?;
    offsets[walk::INODE_MODE] = at("inode", &["i_mode"])?;
    offsets[walk::INODE_INO] = at("inode", &["i_ino"])?;
    offsets[walk::INODE_SB] = at("inode", &["i_sb"])?;
    offsets[walk::SB_DEV] = at("super_block", &["s_dev"])?;
    offsets[walk::SB_MAGIC] = at("super_block", &["s_magic"])?;
    offsets[walk::SB_ROOT] = at("super_block", &["s_root"])?;
    offsets[walk::BPRM_FILE] = at("linux_binprm", &["file"])?;
    offsets[walk::BPRM_FILENAME] = at("linux_binprm", &["filename"])?;
    offsets[walk::BPRM_INTERP] = at("linux_binprm", &["interp"])?;
    offsets[walk::TASK_TGID] = at("task_struct", &["tgid"])?;
    offsets[walk::TASK_PID] = at("task_struct", &["pid"])?;
    // A kernel built without io_uring has neither struct; its opens are then syscalls only, and
    // the program that reads these never runs.
    let uring = (|| {
        Ok::<_, BtfError>([
            at("io_kiocb", &["opcode"])?,
            at("io_kiocb", &["cmd"])? + at("io_open", &["file_slot"])?,
            at("io_ring_ctx", &["file_table", "data", "nr"])?,
            at("io_ring_ctx", &["file_table", "data", "nodes"])?,
            at("io_rsrc_node", &["file_ptr"])?,
        ])
    })();
    let [opcode, file_slot, files_nr, files_nodes, file_ptr] =
        uring.unwrap_or([0, u64::MAX, 0, 0, 0]);
    offsets[walk::KIOCB_OPCODE] = opcode;
    offsets[walk::KIOCB_OPEN_FILE_SLOT] = file_slot;
    offsets[walk::RING_FILES_NR] = files_nr;
    offsets[walk::RING_FILES_NODES] = files_nodes;
    offsets[walk::RSRC_NODE_FILE_PTR] = file_ptr;
    Ok(offsets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_kernel_offsets_are_plausible() {
        let offsets = KernelOffsets::from_sys_fs().expect("this machine has BTF");
        // nsproxy sits deep in task_struct; mnt_ns is the second or third pointer of nsproxy.
        let at = offsets.walk;
        assert!(at[walk::TASK_NSPROXY] > 1000, "{offsets:?}");
        assert!(
            at[walk::NSPROXY_MNT_NS] >= 8 && at[walk::NSPROXY_MNT_NS] < 64,
            "{offsets:?}"
        );
        assert!(at[walk::MNT_NS_INUM] < 256, "{offsets:?}");
        // The x86-64 register frame layout is ABI: di, si, dx, r8 at 112, 104, 96, 72.
        assert_eq!(
            [
                at[walk::PT_REGS_DI],
                at[walk::PT_REGS_SI],
                at[walk::PT_REGS_DX],
                at[walk::PT_REGS_R8]
            ],
            [112, 104, 96, 72]
        );
        // This kernel has io_uring: its fixed-file table is found.
        let btf = Btf::from_sys_fs().unwrap();
        for path in [
            &["file_table", "data", "nr"][..],
            &["file_table", "data", "nodes"],
        ] {
            let at = btf.offset_of("io_ring_ctx", path);
            assert!(matches!(at, Ok(o) if o > 0), "io_ring_ctx.{path:?}: {at:?}");
        }
        assert_ne!(offsets.walk[walk::RING_FILES_NODES], 0, "{offsets:?}");
        assert_eq!(offsets.walk[walk::RSRC_NODE_FILE_PTR], 16, "{offsets:?}");
    }
}
