//! Checking what `ctr-remote image convert --estargz --estargz-record-in` made of a record:
//! every recorded file ahead of its layer's prefetch landmark.

use std::collections::BTreeMap;
use std::io::Read;

use crate::containerd::Daemon;

/// The landmark eStargz puts after the files to prefetch.
pub const LANDMARK: &str = ".prefetch.landmark";
/// The landmark of a layer with nothing to prefetch.
pub const NO_PREFETCH_LANDMARK: &str = ".no.prefetch.landmark";

/// The manifest of image `name` in the daemon (the amd64 one, from an index).
pub fn manifest_of(daemon: &Daemon, name: &str) -> serde_json::Value {
    let ls = String::from_utf8(daemon.ctr_ok(&["images", "ls"])).unwrap();
    let digest = ls
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.first() == Some(&name)).then(|| f.get(2).map(|d| d.to_string()))?
        })
        .unwrap_or_else(|| panic!("no image {name} in:\n{ls}"));
    let blob: serde_json::Value =
        serde_json::from_slice(&daemon.ctr_ok(&["content", "get", &digest])).unwrap();
    match blob["manifests"].as_array() {
        Some(list) => {
            let amd64 = list
                .iter()
                .find(|m| m["platform"]["architecture"] == "amd64")
                .unwrap_or(&list[0]);
            let d = amd64["digest"].as_str().unwrap();
            serde_json::from_slice(&daemon.ctr_ok(&["content", "get", d])).unwrap()
        }
        None => blob,
    }
}

/// The entry names of a gzip (eStargz) layer blob, in tar order, without a leading `./`.
pub fn layer_entries(blob: &[u8]) -> Vec<String> {
    let mut tar_bytes = Vec::new();
    flate2::read::MultiGzDecoder::new(blob)
        .read_to_end(&mut tar_bytes)
        .unwrap();
    let mut archive = tar::Archive::new(tar_bytes.as_slice());
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            path.trim_start_matches("./").to_owned()
        })
        .collect()
}

/// Fails unless every `(path, layer)` of `entries` is ahead of the landmark in that layer of
/// image `converted`, and layers with nothing recorded carry the no-prefetch landmark.
pub fn assert_prefetched(daemon: &Daemon, converted: &str, entries: &[(String, usize)]) {
    let manifest = manifest_of(daemon, converted);
    let layers = manifest["layers"].as_array().unwrap();
    let mut by_layer: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
    for (path, layer) in entries {
        by_layer.entry(*layer).or_default().push(path);
    }
    for (index, layer) in layers.iter().enumerate() {
        let blob = daemon.ctr_ok(&["content", "get", layer["digest"].as_str().unwrap()]);
        let names = layer_entries(&blob);
        let Some(recorded) = by_layer.get(&index) else {
            assert!(
                names.iter().any(|n| n == NO_PREFETCH_LANDMARK),
                "layer {index} has nothing recorded but no {NO_PREFETCH_LANDMARK}: {names:?}"
            );
            continue;
        };
        let landmark = names
            .iter()
            .position(|n| n == LANDMARK)
            .unwrap_or_else(|| panic!("layer {index} has no {LANDMARK}: {names:?}"));
        for path in recorded {
            let at = names
                .iter()
                .position(|n| n == path)
                .unwrap_or_else(|| panic!("{path} is not in layer {index}: {names:?}"));
            assert!(
                at < landmark,
                "{path} (entry {at}) is after the landmark (entry {landmark}) in layer {index}: {names:?}"
            );
        }
    }
}
