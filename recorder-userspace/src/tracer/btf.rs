//! The kernel's BTF: struct member offsets, and the ids of structs and functions.
//!
//! Aya has no CO-RE for Rust programs, so the offsets the programs need are computed from it
//! (see `offsets`) and patched in as globals, as are the type ids they cast to and the kfuncs
//! they call (see `kfunc`). aya-obj keeps its type queries private, so this is a small reader
//! of the BTF type section (format: the kernel's Documentation/bpf/btf.rst).

use std::{collections::HashMap, path::Path};

use thiserror::Error;

/// Where the running kernel publishes its own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

const BTF_MAGIC: u16 = 0xeb9f;
const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// Why offsets could not be computed.
#[derive(Debug, Error)]
pub enum BtfError {
    /// The kernel publishes no BTF: it was built without `CONFIG_DEBUG_INFO_BTF`.
    #[error(
        "this kernel has no BTF at {path} (it needs CONFIG_DEBUG_INFO_BTF=y); the recorder reads \
         kernel struct offsets from it"
    )]
    Missing {
        /// The path that was tried.
        path: String,
    },
    /// Reading the BTF file failed.
    #[error("reading {path}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The data is not BTF or is cut short.
    #[error("malformed BTF: {0}")]
    Malformed(&'static str),
    /// The struct is not in the kernel's BTF.
    #[error("struct {0} not found in kernel BTF")]
    NoStruct(String),
    /// The struct has no such member.
    #[error("struct {strukt} has no member {member} in kernel BTF")]
    NoMember {
        /// The struct searched.
        strukt: String,
        /// The member asked for.
        member: String,
    },
    /// The member is a bitfield or not byte-aligned.
    #[error("member {0} is not byte-aligned")]
    Bitfield(String),
    /// Members the programs read together are not laid out as they expect.
    #[error("unexpected kernel struct layout: {0}")]
    Layout(&'static str),
}

#[derive(Clone, Copy)]
struct Member {
    name_off: u32,
    type_id: u32,
    bit_offset: u32,
}

enum Type {
    Struct {
        members: Vec<Member>,
    },
    /// typedef, const, volatile, restrict, type tag: a name for another type.
    Alias(u32),
    Other,
}

/// The parsed BTF types that offset lookups need.
pub struct Btf {
    strings: Vec<u8>,
    /// Index 0 is `void`.
    types: Vec<Type>,
    structs_by_name: HashMap<String, u32>,
    funcs_by_name: HashMap<String, u32>,
}

fn u32_at(data: &[u8], at: usize) -> Result<u32, BtfError> {
    data.get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or(BtfError::Malformed("type section cut short"))
}

impl Btf {
    /// Reads the running kernel's BTF.
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        Self::from_file(Path::new(VMLINUX_BTF))
    }

    /// Reads BTF from a file.
    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let data = std::fs::read(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                BtfError::Missing {
                    path: path.display().to_string(),
                }
            } else {
                BtfError::Read {
                    path: path.display().to_string(),
                    source,
                }
            }
        })?;
        Self::parse(&data)
    }

    /// Parses little-endian BTF (the only byte order of the hosts this runs on).
    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        let magic = data
            .get(0..2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .ok_or(BtfError::Malformed("no header"))?;
        if magic != BTF_MAGIC {
            return Err(BtfError::Malformed("bad magic (not little-endian BTF)"));
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let type_off = u32_at(data, 8)? as usize;
        let type_len = u32_at(data, 12)? as usize;
        let str_off = u32_at(data, 16)? as usize;
        let str_len = u32_at(data, 20)? as usize;
        let types_data = data
            .get(hdr_len + type_off..hdr_len + type_off + type_len)
            .ok_or(BtfError::Malformed("type section out of bounds"))?;
        let strings = data
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or(BtfError::Malformed("string section out of bounds"))?
            .to_vec();

        let mut btf = Btf {
            strings,
            types: vec![Type::Other],
            structs_by_name: HashMap::new(),
            funcs_by_name: HashMap::new(),
        };
        let mut at = 0;
        while at < types_data.len() {
            let name_off = u32_at(types_data, at)?;
            let info = u32_at(types_data, at + 4)?;
            let size_or_type = u32_at(types_data, at + 8)?;
            at += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let ty = match kind {
                KIND_STRUCT | KIND_UNION => {
                    let mut members = Vec::with_capacity(vlen);
                    for i in 0..vlen {
                        let m = at + i * 12;
                        let offset = u32_at(types_data, m + 8)?;
                        members.push(Member {
                            name_off: u32_at(types_data, m)?,
                            type_id: u32_at(types_data, m + 4)?,
                            // With kind_flag the top 8 bits hold a bitfield size.
                            bit_offset: if kind_flag {
                                offset & 0xff_ffff
                            } else {
                                offset
                            },
                        });
                    }
                    at += vlen * 12;
                    if kind == KIND_STRUCT && name_off != 0 {
                        let name = btf.string(name_off)?.to_owned();
                        let id = btf.types.len() as u32;
                        btf.structs_by_name.entry(name).or_insert(id);
                    }
                    Type::Struct { members }
                }
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    Type::Alias(size_or_type)
                }
                KIND_INT | KIND_VAR | KIND_DECL_TAG => {
                    at += 4;
                    Type::Other
                }
                KIND_ARRAY => {
                    at += 12;
                    Type::Other
                }
                KIND_ENUM | KIND_FUNC_PROTO => {
                    at += vlen * 8;
                    Type::Other
                }
                KIND_DATASEC | KIND_ENUM64 => {
                    at += vlen * 12;
                    Type::Other
                }
                KIND_FUNC => {
                    let id = btf.types.len() as u32;
                    btf.funcs_by_name
                        .insert(btf.string(name_off)?.to_owned(), id);
                    Type::Other
                }
                KIND_PTR | KIND_FWD | KIND_FLOAT => Type::Other,
                _ => return Err(BtfError::Malformed("unknown type kind")),
            };
            btf.types.push(ty);
        }
        Ok(btf)
    }

    fn string(&self, offset: u32) -> Result<&str, BtfError> {
        let rest = self
            .strings
            .get(offset as usize..)
            .ok_or(BtfError::Malformed("string offset out of bounds"))?;
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).map_err(|_| BtfError::Malformed("string not UTF-8"))
    }

    /// Follows typedefs and qualifiers to the struct or union a type names.
    fn members_of(&self, mut id: u32) -> Option<&[Member]> {
        for _ in 0..32 {
            match self.types.get(id as usize)? {
                Type::Struct { members } => return Some(members),
                Type::Alias(next) => id = *next,
                Type::Other => return None,
            }
        }
        None
    }

    /// Bit offset of `name` in the struct/union `id`, looking through anonymous members as C does.
    fn find_member(&self, id: u32, name: &str) -> Option<Member> {
        for member in self.members_of(id)? {
            if member.name_off == 0 {
                if let Some(inner) = self.find_member(member.type_id, name) {
                    return Some(Member {
                        bit_offset: member.bit_offset + inner.bit_offset,
                        ..inner
                    });
                }
            } else if self.string(member.name_off).ok()? == name {
                return Some(*member);
            }
        }
        None
    }

    /// The id of `struct name`.
    pub fn struct_id(&self, name: &str) -> Result<u32, BtfError> {
        self.structs_by_name
            .get(name)
            .copied()
            .ok_or_else(|| BtfError::NoStruct(name.to_owned()))
    }

    /// The id of function `name` (a kfunc the programs call), if the kernel has it.
    pub fn func_id(&self, name: &str) -> Option<u32> {
        self.funcs_by_name.get(name).copied()
    }

    /// Byte offset of a member path such as `["ns", "inum"]` inside `struct name`.
    pub fn offset_of(&self, strukt: &str, path: &[&str]) -> Result<usize, BtfError> {
        let mut id = self.struct_id(strukt)?;
        let mut bits = 0u64;
        for member in path {
            let found = self
                .find_member(id, member)
                .ok_or_else(|| BtfError::NoMember {
                    strukt: strukt.to_owned(),
                    member: path.join("."),
                })?;
            bits += u64::from(found.bit_offset);
            id = found.type_id;
        }
        if !bits.is_multiple_of(8) {
            return Err(BtfError::Bitfield(format!("{strukt}.{}", path.join("."))));
        }
        Ok((bits / 8) as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_struct_and_member_are_named() {
        let btf = Btf::from_sys_fs().expect("this machine has BTF");
        let err = btf.offset_of("no_such_struct_xyz", &["a"]).unwrap_err();
        assert!(err.to_string().contains("no_such_struct_xyz"));
        let err = btf.offset_of("nsproxy", &["no_such_member"]).unwrap_err();
        assert!(err.to_string().contains("no_such_member"));
    }

    #[test]
    fn garbage_is_rejected() {
        assert!(matches!(Btf::parse(b"nope"), Err(BtfError::Malformed(_))));
        assert!(matches!(
            Btf::parse(&[0x9f, 0xeb, 1, 0, 24, 0, 0, 0, 0, 0, 0, 0, 99, 0, 0, 0]),
            Err(BtfError::Malformed(_))
        ));
    }
}
