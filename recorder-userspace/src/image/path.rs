//! Entry names: cleaned as the seed cleans them (`path.Clean("/"+name)` minus the leading `/`).

/// Longest path the kernel accepts (`PATH_MAX`, counting the NUL).
pub const PATH_MAX: usize = 4096;
/// Longest file name component the kernel accepts (`NAME_MAX`).
pub const NAME_MAX: usize = 255;

/// Prefix that marks a whiteout entry.
pub const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// Name of the entry that makes its directory opaque.
pub const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
/// Prefix of AUFS metadata entries (`.wh..wh.plnk`, the opaque marker, ...), which carry no
/// file of the image.
pub const AUFS_META_PREFIX: &[u8] = b".wh..wh.";

/// Why a name is refused outright rather than cleaned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name contains a NUL byte, which no kernel path can.
    #[error("name contains a NUL byte")]
    Nul,
    /// The name is longer than `PATH_MAX`.
    #[error("name is {0} bytes long, longer than PATH_MAX ({PATH_MAX})")]
    TooLong(usize),
    /// A component is longer than `NAME_MAX`.
    #[error("a component is {0} bytes long, longer than NAME_MAX ({NAME_MAX})")]
    ComponentTooLong(usize),
}

/// The components of `name` as written, without the empty and `.` ones (`..` is kept).
pub fn components(name: &[u8]) -> impl Iterator<Item = &[u8]> {
    name.split(|&b| b == b'/')
        .filter(|c| !matches!(*c, b"" | b"."))
}

/// The components of `name` after lexical cleaning, rooted: `..` never climbs above the root.
pub fn clean_components(name: &[u8]) -> Vec<&[u8]> {
    let mut out: Vec<&[u8]> = Vec::new();
    for c in components(name) {
        match c {
            b".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

/// The cleaned name: relative to the root, no `.`/`..`/empty components, `""` for the root.
pub fn clean(name: &[u8]) -> Vec<u8> {
    clean_components(name).join(&b'/')
}

/// Refuses names no kernel path could be: NUL bytes, over-long names or components.
pub fn check(name: &[u8]) -> Result<(), NameError> {
    if name.contains(&0) {
        return Err(NameError::Nul);
    }
    if name.len() >= PATH_MAX {
        return Err(NameError::TooLong(name.len()));
    }
    if let Some(long) = name.split(|&b| b == b'/').find(|c| c.len() > NAME_MAX) {
        return Err(NameError::ComponentTooLong(long.len()));
    }
    Ok(())
}

/// Text of a byte name for people: lossy UTF-8, with control characters (C0, DEL, C1) written
/// as `\u{1b}` so that an image's names cannot drive the terminal that shows them.
pub fn display(name: &[u8]) -> String {
    let lossy = String::from_utf8_lossy(name);
    if !lossy.chars().any(char::is_control) {
        return lossy.into_owned();
    }
    let mut out = String::with_capacity(lossy.len() + 8);
    for c in lossy.chars() {
        if c.is_control() {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// Why `recorder run` refuses to unpack an entry of this raw name (or link target) that the
/// index accepts after cleaning, as the stargz seed does: absolute names and `..` components.
pub fn refused_by_run(name: &[u8]) -> Option<&'static str> {
    if name.first() == Some(&b'/') {
        return Some("absolute path");
    }
    if components(name).any(|c| c == b"..") {
        return Some("path contains a '..' component");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_like_go_path_clean() {
        for (input, want) in [
            ("", ""),
            ("/", ""),
            (".", ""),
            ("./", ""),
            ("..", ""),
            ("../../etc/passwd", "etc/passwd"),
            ("/usr/bin/", "usr/bin"),
            ("./usr//bin/./sh", "usr/bin/sh"),
            ("a/b/../../../c", "c"),
            ("a/../b/..", ""),
        ] {
            assert_eq!(clean(input.as_bytes()), want.as_bytes(), "{input:?}");
        }
    }

    #[test]
    fn display_escapes_control_characters() {
        assert_eq!(display(b"usr/bin/sh"), "usr/bin/sh");
        assert_eq!(display(b"a\x1b[31mred\x07"), "a\\u{1b}[31mred\\u{7}");
        assert_eq!(display("x\u{9b}y".as_bytes()), "x\\u{9b}y");
        assert_eq!(display(b"tab\there\n"), "tab\\u{9}here\\u{a}");
    }

    #[test]
    fn names_run_refuses() {
        assert_eq!(refused_by_run(b"usr/bin/sh"), None);
        assert_eq!(refused_by_run(b"./a/..b"), None);
        assert!(refused_by_run(b"../../tmp/x").is_some());
        assert!(refused_by_run(b"a/../b").is_some());
        assert!(refused_by_run(b"/etc/passwd").is_some());
    }

    #[test]
    fn refuses_hostile_names() {
        assert_eq!(check(b"a\0b"), Err(NameError::Nul));
        assert!(matches!(
            check(&[b'a'; 300]),
            Err(NameError::ComponentTooLong(300))
        ));
        let long = "ab/".repeat(1400);
        assert!(matches!(check(long.as_bytes()), Err(NameError::TooLong(_))));
        assert_eq!(check(b"/../ok"), Ok(()));
    }
}
