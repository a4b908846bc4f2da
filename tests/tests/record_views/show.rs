//! `record show --json` against sums from the image's own tar listing.

use std::collections::BTreeMap;

use recorder_tests::agent_fixtures::{layers, write_image};

use super::{agent_record, ok, recorder};

/// Per layer of the agent image, from its tars: (regular files, their bytes), and each
/// regular file's size by path. Whiteouts (`.wh.NAME`, empty regular tar entries) are
/// markers, not files of the image.
fn tar_listing() -> Vec<(u64, u64, BTreeMap<String, u64>)> {
    layers()
        .iter()
        .map(|tar_bytes| {
            let mut archive = tar::Archive::new(tar_bytes.as_slice());
            let mut sizes = BTreeMap::new();
            for e in archive.entries().unwrap() {
                let e = e.unwrap();
                let path = e.path().unwrap().to_string_lossy().into_owned();
                let name = path.rsplit('/').next().unwrap_or_default();
                if e.header().entry_type().is_file() && !name.starts_with(".wh.") {
                    sizes.insert(path.trim_start_matches("./").to_owned(), e.size());
                }
            }
            let bytes = sizes.values().sum();
            (sizes.len() as u64, bytes, sizes)
        })
        .collect()
}

#[test]
fn show_json_equals_sums_from_the_tar_listing() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let manifest = write_image(&layout);
    let record = agent_record(dir.path(), &manifest);
    let listing = tar_listing();
    let recorded: &[(&str, usize)] = &[
        ("bin/sh", 0),
        ("app/run.sh", 2),
        ("etc/shadowed", 1),
        ("bin/cat", 0),
        ("app/conf", 2),
        ("opt/real/tool.conf", 0),
        ("app/tree/deep/found.txt", 1),
    ];
    // The image as a layout, and the same blobs as a content store with the manifest digest.
    let sources = [
        layout.to_str().unwrap().to_owned(),
        format!("{}@{manifest}", layout.display()),
    ];
    for src in &sources {
        let out = ok(&[
            "record",
            "show",
            record.to_str().unwrap(),
            "--image",
            src,
            "--json",
        ]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["manifest"], manifest.as_str());
        let mut read_total = (0u64, 0u64);
        let mut all_total = (0u64, 0u64);
        for (i, (files, bytes, sizes)) in listing.iter().enumerate() {
            let l = &v["layers"][i];
            assert_eq!(l["total"]["files"], *files, "layer {i} files");
            assert_eq!(l["total"]["bytes"], *bytes, "layer {i} bytes");
            // Regular files of this layer that the record names (app/conf is a symlink).
            let read: Vec<u64> = recorded
                .iter()
                .filter(|(_, layer)| *layer == i)
                .filter_map(|(p, _)| sizes.get(*p).copied())
                .collect();
            assert_eq!(l["read"]["files"], read.len() as u64, "layer {i}");
            assert_eq!(l["read"]["bytes"], read.iter().sum::<u64>(), "layer {i}");
            assert_eq!(l["blobBytes"], layers()[i].len() as u64, "layer {i}");
            read_total.0 += read.len() as u64;
            read_total.1 += read.iter().sum::<u64>();
            all_total.0 += files;
            all_total.1 += bytes;
        }
        assert_eq!(v["layers"][2]["entries"], 3);
        assert_eq!(
            (v["read"]["files"].as_u64(), v["read"]["bytes"].as_u64()),
            (Some(read_total.0), Some(read_total.1))
        );
        assert_eq!(
            (v["total"]["files"].as_u64(), v["total"]["bytes"].as_u64()),
            (Some(all_total.0), Some(all_total.1))
        );
        assert_eq!(
            (v["entries"].as_u64(), v["outside"].as_u64()),
            (Some(9), Some(1))
        );
        assert_eq!(v["lastAccessNs"], 9_600_000);
        // The largest file read is the shell (or what it links to), from layer 0.
        let largest = v["largest"][0]["bytes"].as_u64().unwrap();
        let max = recorded
            .iter()
            .filter_map(|(p, l)| listing[*l].2.get(*p))
            .max()
            .unwrap();
        assert_eq!(largest, *max);
    }
    // The text form names what the user decides by: bytes needed per layer and the time.
    let out = ok(&[
        "record",
        "show",
        record.to_str().unwrap(),
        "--image",
        layout.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("bytes needed/all"), "{text}");
    assert!(text.contains("last first access: 0.010 s"), "{text}");
    // A record of another image is refused, naming both manifests.
    let other = dir.path().join("other.json");
    let other_manifest = format!("sha256:{}", "3".repeat(64));
    std::fs::write(
        &other,
        format!(
            "{{\"path\":\"bin/sh\",\"manifestDigest\":\"{other_manifest}\",\"layerIndex\":0}}\n"
        ),
    )
    .unwrap();
    let out = recorder(&[
        "record",
        "show",
        other.to_str().unwrap(),
        "--image",
        layout.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&other_manifest) && stderr.contains(&manifest),
        "{stderr}"
    );
}
