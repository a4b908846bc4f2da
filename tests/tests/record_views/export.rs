//! Exports to each converter's format, against golden files and each consumer's schema.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use super::{ok, recorder};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/export")
}

/// The paths of the golden input record, as absolute paths.
fn golden_paths() -> Vec<String> {
    let input = std::fs::read(golden_dir().join("record.jsonl")).unwrap();
    String::from_utf8(input)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            format!("/{}", v["path"].as_str().unwrap())
        })
        .collect()
}

/// stargz-snapshotter's `recorder.Entry` (analyzer/recorder/recorder.go): path,
/// manifestDigest, layerIndex; one JSON object per line.
fn read_stargz(bytes: &[u8]) -> Vec<String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Entry {
        path: String,
        // `omitempty` in Go: both may be absent.
        #[allow(dead_code)]
        manifest_digest: Option<String>,
        #[allow(dead_code)]
        layer_index: Option<usize>,
    }
    bytes
        .lines()
        .map(|l| {
            format!(
                "/{}",
                serde_json::from_str::<Entry>(&l.unwrap()).unwrap().path
            )
        })
        .collect()
}

/// nydus-image's prefetch patterns (`get_patterns`/`generate_patterns`: stdin read line by
/// line, each line trimmed, relative ones skipped). Stricter here: every line must end in a
/// newline, be absolute and need no trimming.
fn read_paths(bytes: &[u8]) -> Vec<String> {
    let mut reader = bytes;
    let mut out = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 {
            return out;
        }
        let path = line
            .strip_suffix('\n')
            .expect("every line ends in a newline");
        assert!(path.starts_with('/'), "not absolute: {path:?}");
        assert_eq!(path.trim(), path, "would be trimmed");
        out.push(path.to_owned());
    }
}

/// nydus-builder's `PrefetchJson` (optimize_prefetch.rs): `version` and `files`, each a
/// `path` with optional `ranges`, for `nydusify optimize --prefetch-files`.
fn read_nydus_optimize(bytes: &[u8]) -> Vec<String> {
    #[derive(serde::Deserialize)]
    struct PrefetchJson {
        version: String,
        files: Vec<PrefetchFileJson>,
    }
    #[derive(serde::Deserialize)]
    struct PrefetchFileJson {
        path: String,
        ranges: Option<Vec<[u64; 2]>>,
    }
    let p: PrefetchJson = serde_json::from_slice(bytes).unwrap();
    assert_eq!(p.version, "v1");
    p.files
        .into_iter()
        .map(|f| {
            assert!(f.ranges.is_none());
            f.path
        })
        .collect()
}

/// soci-snapshotter's `--prefetch-files-json` (cmd/soci/commands/internal/prefetch.go): a JSON
/// array of strings, each trimmed, blank ones dropped.
fn read_soci(bytes: &[u8]) -> Vec<String> {
    let list: Vec<String> = serde_json::from_slice(bytes).unwrap();
    list.iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

#[test]
fn every_export_format_matches_its_golden_file_and_its_consumers_schema() {
    let dir = tempfile::tempdir().unwrap();
    let input = golden_dir().join("record.jsonl");
    type Reader = fn(&[u8]) -> Vec<String>;
    let cases: &[(&str, &str, Reader)] = &[
        ("stargz", "stargz.jsonl", read_stargz),
        ("paths", "paths.txt", read_paths),
        ("nydus-optimize", "nydus-optimize.json", read_nydus_optimize),
        ("soci", "soci.json", read_soci),
    ];
    let want = golden_paths();
    assert!(want.len() >= 5);
    for (format, golden, read) in cases {
        let out = ok(&[
            "record",
            "export",
            "--format",
            format,
            input.to_str().unwrap(),
        ]);
        let golden_bytes = std::fs::read(golden_dir().join(golden)).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&golden_bytes),
            "{format}"
        );
        assert_eq!(read(&out.stdout), want, "{format} read back");
        // --out writes the same bytes.
        let file = dir.path().join(golden);
        ok(&[
            "record",
            "export",
            "--format",
            format,
            "--out",
            file.to_str().unwrap(),
            input.to_str().unwrap(),
        ]);
        assert_eq!(std::fs::read(&file).unwrap(), golden_bytes);
    }
    // The stargz export is the record itself.
    assert_eq!(
        std::fs::read(golden_dir().join("stargz.jsonl")).unwrap(),
        std::fs::read(&input).unwrap()
    );
}

#[test]
fn paths_export_refuses_a_path_with_a_newline_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("r.json");
    std::fs::write(
        &record,
        concat!(
            "{\"path\":\"etc/ok\",\"layerIndex\":0}\n",
            "{\"path\":\"etc/two\\nlines\",\"layerIndex\":0}\n"
        ),
    )
    .unwrap();
    for format in ["paths", "soci", "nydus-optimize"] {
        let out = recorder(&[
            "record",
            "export",
            "--format",
            format,
            record.to_str().unwrap(),
        ]);
        assert!(!out.status.success(), "{format}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(r#""/etc/two\u{a}lines""#) && stderr.contains("newline"),
            "{stderr}"
        );
        assert!(out.stdout.is_empty());
    }
    ok(&[
        "record",
        "export",
        "--format",
        "stargz",
        record.to_str().unwrap(),
    ]);
}
