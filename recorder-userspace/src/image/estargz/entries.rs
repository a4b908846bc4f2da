//! The TOC JSON's entries, streamed into a [`LayerIndex`] in their order: no list of a million
//! entries is held in memory, and only what the index needs is decoded.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::TOC_TAR_NAME;
use crate::image::index::{EntryKind, LayerIndex, LayerIndexBuilder};

/// One TOC entry: only what the index holds (names and types never need escapes but may get
/// them: Go escapes `<`, `>` and `&`).
#[derive(Deserialize)]
struct Entry<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    size: u64,
    #[serde(rename = "linkName", default, borrow)]
    link_name: Cow<'a, str>,
    #[serde(rename = "devMajor", default)]
    dev_major: u32,
    #[serde(rename = "devMinor", default)]
    dev_minor: u32,
}

/// Why the JSON gave no index: it does not parse, or names an entry the TOC cannot carry.
pub(in crate::image) enum Build {
    /// It does not parse, or lists no entries.
    Json(serde_json::Error),
    /// It names an entry (this one) that it cannot carry exactly.
    Lossy(String),
}

/// A builder holding the entries a TOC's `json` lists, in its order: eStargz's and
/// zstd:chunked's TOCs have the same shape.
pub(in crate::image) fn toc_entries(json: &[u8]) -> Result<LayerIndexBuilder, Build> {
    let mut builder = LayerIndexBuilder::new();
    let mut lossy = None;
    let mut de = serde_json::Deserializer::from_slice(json);
    let seen = TocSeed {
        builder: &mut builder,
        lossy: &mut lossy,
    }
    .deserialize(&mut de);
    if let Some(entry) = lossy {
        return Err(Build::Lossy(entry));
    }
    if !seen.map_err(Build::Json)? {
        return Err(Build::Json(de::Error::missing_field("entries")));
    }
    de.end().map_err(Build::Json)?;
    builder.mark_from_toc();
    Ok(builder)
}

/// The index of the entries `json` lists, in its order, then the TOC's own tar entry (the
/// slow path sees it as the layer's last file).
pub(super) fn build(json: &[u8]) -> Result<LayerIndex, Build> {
    let mut builder = toc_entries(json)?;
    builder
        .add(
            TOC_TAR_NAME.as_bytes(),
            EntryKind::File,
            json.len() as u64,
            None,
            None,
        )
        .map_err(|m| Build::Json(de::Error::custom(m)))?;
    Ok(builder.finish())
}

/// The TOC's top-level object: its `entries` go to the builder as they are parsed (no list of
/// a million entries in memory); the other fields are skipped. Yields whether there were any.
struct TocSeed<'b> {
    builder: &'b mut LayerIndexBuilder,
    lossy: &'b mut Option<String>,
}

impl<'de> DeserializeSeed<'de> for TocSeed<'_> {
    type Value = bool;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for TocSeed<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a TOC object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let mut seen = false;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if key == "entries" && !seen {
                map.next_value_seed(EntriesSeed {
                    builder: &mut *self.builder,
                    lossy: &mut *self.lossy,
                })?;
                seen = true;
            } else if key == "entries" {
                return Err(de::Error::duplicate_field("entries"));
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(seen)
    }
}

struct EntriesSeed<'b> {
    builder: &'b mut LayerIndexBuilder,
    lossy: &'b mut Option<String>,
}

impl<'de> DeserializeSeed<'de> for EntriesSeed<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for EntriesSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of TOC entries")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(e) = seq.next_element::<Entry<'de>>()? {
            let kind = match &*e.kind {
                "reg" => EntryKind::File,
                "dir" => EntryKind::Dir,
                "symlink" => EntryKind::Symlink,
                "hardlink" => EntryKind::Hardlink,
                "char" => EntryKind::CharDevice,
                "block" => EntryKind::BlockDevice,
                "fifo" => EntryKind::Fifo,
                // The second and later pieces of a large file, which its "reg" entry sized.
                "chunk" => continue,
                other => {
                    return Err(de::Error::custom(format!(
                        "entry {:?} has unknown type {other:?}",
                        e.name
                    )));
                }
            };
            // Go's encoder writes U+FFFD for bytes that are not UTF-8: the tar name differs.
            if e.name.contains('\u{fffd}') || e.link_name.contains('\u{fffd}') {
                *self.lossy = Some(e.name.into_owned());
                return Err(de::Error::custom("lossy name"));
            }
            let target = matches!(kind, EntryKind::Symlink | EntryKind::Hardlink)
                .then(|| e.link_name.as_bytes());
            let device = matches!(kind, EntryKind::CharDevice | EntryKind::BlockDevice)
                .then_some((e.dev_major, e.dev_minor));
            let size = if kind == EntryKind::File { e.size } else { 0 };
            self.builder
                .add(e.name.as_bytes(), kind, size, target, device)
                .map_err(|m| de::Error::custom(format!("entry {:?}: {m}", e.name)))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Row = (String, EntryKind, u64, Option<Vec<u8>>, Option<(u32, u32)>);

    #[test]
    fn toc_json_builds_the_index_entry_by_entry() {
        let json = br#"{"version":1,"entries":[
            {"name":"a/","type":"dir","mode":493},
            {"name":"a/f","type":"reg","size":5000000,"digest":"sha256:00"},
            {"name":"a/f","type":"chunk","chunkOffset":4194304},
            {"name":"a/.wh.gone","type":"reg"},
            {"name":"b/.wh..wh..opq","type":"reg"},
            {"name":"a/l","type":"symlink","linkName":"../x\u003c"},
            {"name":"a/h","type":"hardlink","linkName":"./a/f"},
            {"name":"dev/null","type":"char","devMajor":1,"devMinor":3},
            {"name":".prefetch.landmark","type":"reg","size":1}
        ]}"#;
        let Ok(idx) = build(json) else {
            panic!("build failed")
        };
        let got: Vec<Row> = idx
            .entries()
            .map(|(p, e)| {
                (
                    String::from_utf8(p).unwrap(),
                    e.kind,
                    e.size,
                    e.target.map(<[u8]>::to_vec),
                    e.device,
                )
            })
            .collect();
        let want = vec![
            ("a".to_owned(), EntryKind::Dir, 0, None, None),
            ("a/f".into(), EntryKind::File, 5000000, None, None),
            ("a/.wh.gone".into(), EntryKind::Whiteout, 0, None, None),
            ("b/.wh..wh..opq".into(), EntryKind::Opaque, 0, None, None),
            (
                "a/l".into(),
                EntryKind::Symlink,
                0,
                Some(b"../x<".to_vec()),
                None,
            ),
            (
                "a/h".into(),
                EntryKind::Hardlink,
                0,
                Some(b"a/f".to_vec()),
                None,
            ),
            (
                "dev/null".into(),
                EntryKind::CharDevice,
                0,
                None,
                Some((1, 3)),
            ),
            (".prefetch.landmark".into(), EntryKind::File, 1, None, None),
            (
                TOC_TAR_NAME.into(),
                EntryKind::File,
                json.len() as u64,
                None,
                None,
            ),
        ];
        assert_eq!(got, want);
        assert!(idx.stats().from_toc);
        assert_eq!((idx.stats().whiteouts, idx.stats().opaques), (1, 1));
    }

    #[test]
    fn bad_toc_json_is_refused() {
        let cases: &[&[u8]] = &[
            br#"{"version":1}"#,
            br#"{"entries":[{"name":"x","type":"socket"}]}"#,
            br#"{"entries":[{"name":"x\ufffd","type":"reg"}]}"#,
            br#"{"entries":[{"name":"x","type":"reg"}]} trailing"#,
            br#"{"entries":[{"name":"x","type":"reg"}"#,
            br#"[]"#,
        ];
        for json in cases {
            assert!(build(json).is_err(), "{}", String::from_utf8_lossy(json));
        }
    }
}
