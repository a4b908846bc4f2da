//! Merging the records of several runs of one image into one prefetch order.
//!
//! A workload is not deterministic: one run reads a file early, the next late, a third not at
//! all. A file's place in the merged record is its mean rank over the runs that read it (as
//! Starlight orders its prefetch list); files read in fewer than `min_runs` runs are dropped.
//! Equal means keep the order of the first run (in the order given) that read both files,
//! then the path's byte order. The result depends only on the runs and their order.

use std::cmp::Ordering;
use std::collections::HashMap;

use super::RecordEntry;
use super::companion::{CompanionLine, Extras};
use crate::image::path;

/// Why records could not be merged.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// Nothing to merge.
    #[error("merging records: no record given")]
    NoRuns,
    /// Two records are of different images.
    #[error(
        "merging records: {first} is of manifest {first_manifest} but {other} is of \
         {other_manifest}; only runs of the same image can be merged"
    )]
    DifferentManifests {
        /// The first record's name.
        first: String,
        /// Its manifest.
        first_manifest: String,
        /// The record that differs.
        other: String,
        /// Its manifest.
        other_manifest: String,
    },
    /// `min_runs` exceeds the number of runs: nothing could be kept.
    #[error("merging records: --min-runs {min_runs} but only {runs} records were given")]
    MinRunsTooHigh {
        /// The threshold asked for.
        min_runs: usize,
        /// Records given.
        runs: usize,
    },
}

/// One run to merge: its record and, when known, its companion's lines (by entry).
#[derive(Debug, Clone)]
pub struct Run {
    /// How the run is named in messages (e.g. its file).
    pub name: String,
    /// The record's entries, first access first.
    pub entries: Vec<RecordEntry>,
    /// The companion line of each entry, or empty when the run has no companion.
    pub companion: Vec<Option<CompanionLine>>,
}

/// One file of the merged record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergedEntry {
    /// Cleaned path relative to the image root.
    pub path: Vec<u8>,
    /// Layer providing the path (from the first run that read it).
    pub layer_index: Option<usize>,
    /// Runs that read the file.
    pub runs: u32,
    /// Sum of the file's 0-based ranks in those runs (the mean is `rank_sum / runs`).
    pub rank_sum: u64,
    /// First-access offsets (ns) of the runs that read it and recorded when, in run order.
    pub offsets_ns: Vec<u64>,
    /// Kind of the first access, from the first run that read it and recorded one.
    pub kind: Option<String>,
}

/// The merged record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    /// The runs' manifest digest (empty when the records name none).
    pub manifest_digest: String,
    /// Number of runs merged.
    pub runs: usize,
    /// Files in prefetch order.
    pub entries: Vec<MergedEntry>,
    /// Files dropped because fewer than `min_runs` runs read them.
    pub dropped: usize,
}

struct Acc {
    entry: MergedEntry,
    /// (run, rank) of every run that read the file, in run order.
    ranks: Vec<(u32, u32)>,
}

/// Merges `runs`, keeping the files read in at least `min_runs` of them (0 counts as 1).
pub fn merge(runs: &[Run], min_runs: usize) -> Result<Merged, MergeError> {
    if runs.is_empty() {
        return Err(MergeError::NoRuns);
    }
    let min_runs = min_runs.max(1);
    if min_runs > runs.len() {
        return Err(MergeError::MinRunsTooHigh {
            min_runs,
            runs: runs.len(),
        });
    }
    let manifest_digest = manifest_of(runs)?;
    let mut files: Vec<Acc> = Vec::new();
    let mut by_path: HashMap<Vec<u8>, usize> = HashMap::new();
    for (r, run) in runs.iter().enumerate() {
        let r = u32::try_from(r).unwrap_or(u32::MAX);
        let mut rank: u32 = 0;
        for (i, e) in run.entries.iter().enumerate() {
            let cleaned = path::clean(&e.path);
            let line = run.companion.get(i).and_then(Option::as_ref);
            let slot = *by_path.entry(cleaned.clone()).or_insert_with(|| {
                files.push(Acc {
                    entry: MergedEntry {
                        path: cleaned,
                        layer_index: e.layer_index,
                        runs: 0,
                        rank_sum: 0,
                        offsets_ns: Vec::new(),
                        kind: None,
                    },
                    ranks: Vec::new(),
                });
                files.len() - 1
            });
            let acc = &mut files[slot];
            // A path twice in one run (not in records we write) keeps its first rank.
            if acc.ranks.last().is_some_and(|&(run, _)| run == r) {
                continue;
            }
            acc.ranks.push((r, rank));
            acc.entry.runs += 1;
            acc.entry.rank_sum += u64::from(rank);
            if let Some(line) = line {
                if let Some(ns) = line.extras.offset_ns {
                    acc.entry.offsets_ns.push(ns);
                }
                if acc.entry.kind.is_none() {
                    acc.entry.kind.clone_from(&line.extras.kind);
                }
            }
            rank = rank.saturating_add(1);
        }
    }
    let total = files.len();
    files.retain(|f| f.entry.runs as usize >= min_runs);
    let dropped = total - files.len();
    // Mean ranks compared exactly, as fractions: a/n < b/m  <=>  a*m < b*n.
    let by_mean = |a: &Acc, b: &Acc| {
        (u128::from(a.entry.rank_sum) * u128::from(b.entry.runs))
            .cmp(&(u128::from(b.entry.rank_sum) * u128::from(a.entry.runs)))
    };
    files.sort_by(|a, b| by_mean(a, b).then_with(|| a.entry.path.cmp(&b.entry.path)));
    // Within a group of equal means, "the first run that read both" is not a total order
    // (it can be cyclic across three files), so `sort_by` may not be given it; an insertion
    // sort is deterministic whatever the relation, and tie groups are small.
    let mut start = 0;
    while start < files.len() {
        let mut end = start + 1;
        while end < files.len() && by_mean(&files[start], &files[end]) == Ordering::Equal {
            end += 1;
        }
        insertion_sort(&mut files[start..end]);
        start = end;
    }
    Ok(Merged {
        manifest_digest,
        runs: runs.len(),
        entries: files.into_iter().map(|f| f.entry).collect(),
        dropped,
    })
}

/// The one manifest all runs name (`""` if none names one); refuses a second.
fn manifest_of(runs: &[Run]) -> Result<String, MergeError> {
    let mut seen: Option<(&str, &str)> = None;
    for run in runs {
        for e in &run.entries {
            if e.manifest_digest.is_empty() {
                continue;
            }
            match seen {
                None => seen = Some((run.name.as_str(), e.manifest_digest.as_str())),
                Some((name, m)) if m != e.manifest_digest => {
                    return Err(MergeError::DifferentManifests {
                        first: name.to_owned(),
                        first_manifest: m.to_owned(),
                        other: run.name.clone(),
                        other_manifest: e.manifest_digest.clone(),
                    });
                }
                Some(_) => {}
            }
        }
    }
    Ok(seen.map(|(_, m)| m.to_owned()).unwrap_or_default())
}

/// Order of two files of equal mean rank: as in the first run that read both, else by path.
fn tie(a: &Acc, b: &Acc) -> Ordering {
    let (mut i, mut j) = (0, 0);
    while let (Some(&(ra, ka)), Some(&(rb, kb))) = (a.ranks.get(i), b.ranks.get(j)) {
        match ra.cmp(&rb) {
            Ordering::Less => i += 1,
            Ordering::Greater => j += 1,
            Ordering::Equal => return ka.cmp(&kb),
        }
    }
    a.entry.path.cmp(&b.entry.path)
}

fn insertion_sort(group: &mut [Acc]) {
    for i in 1..group.len() {
        let mut j = i;
        while j > 0 && tie(&group[j - 1], &group[j]) == Ordering::Greater {
            group.swap(j - 1, j);
            j -= 1;
        }
    }
}

impl Merged {
    /// The merged record, byte-compatible with stargz-snapshotter's.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * 128);
        for e in &self.entries {
            RecordEntry {
                path: e.path.clone(),
                manifest_digest: self.manifest_digest.clone(),
                layer_index: e.layer_index,
            }
            .write_json(&mut out);
        }
        out
    }

    /// The companion: per file, how many runs read it, their first-access offsets and their
    /// mean (as `offsetNs`, so that readers of single-run companions see a time).
    pub fn companion_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (index, e) in self.entries.iter().enumerate() {
            let mean = (!e.offsets_ns.is_empty()).then(|| {
                let sum: u128 = e.offsets_ns.iter().map(|&n| u128::from(n)).sum();
                u64::try_from(sum / e.offsets_ns.len() as u128).unwrap_or(u64::MAX)
            });
            let line = CompanionLine {
                index,
                path: path::display(&e.path),
                extras: Extras {
                    offset_ns: mean,
                    kind: e.kind.clone(),
                    ..Extras::default()
                },
                runs: Some(e.runs),
                offsets_ns: (!e.offsets_ns.is_empty()).then(|| e.offsets_ns.clone()),
            };
            // Serialising plain strings and integers cannot fail.
            if let Ok(mut v) = serde_json::to_vec(&line) {
                out.append(&mut v);
                out.push(b'\n');
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(name: &str, paths: &[&str]) -> Run {
        Run {
            name: name.to_owned(),
            entries: paths
                .iter()
                .map(|p| RecordEntry {
                    path: p.as_bytes().to_vec(),
                    manifest_digest: "sha256:m".into(),
                    layer_index: Some(0),
                })
                .collect(),
            companion: Vec::new(),
        }
    }

    fn order(m: &Merged) -> Vec<String> {
        m.entries.iter().map(|e| path::display(&e.path)).collect()
    }

    #[test]
    fn orders_by_mean_rank_then_first_common_run_then_path() {
        type Case<'a> = (&'a [&'a [&'a str]], usize, &'a [&'a str]);
        let cases: &[Case] = &[
            // a: 0,1,0  b: 1,0,2  c: 2,2,1  d: 3,-,3  e: -,3,-
            (
                &[
                    &["a", "b", "c", "d"],
                    &["b", "a", "c", "e"],
                    &["a", "c", "b", "d"],
                ],
                1,
                &["a", "b", "c", "d", "e"],
            ),
            (
                &[
                    &["a", "b", "c", "d"],
                    &["b", "a", "c", "e"],
                    &["a", "c", "b", "d"],
                ],
                2,
                &["a", "b", "c", "d"],
            ),
            (
                &[
                    &["a", "b", "c", "d"],
                    &["b", "a", "c", "e"],
                    &["a", "c", "b", "d"],
                ],
                3,
                &["a", "b", "c"],
            ),
            // Equal means: the first run reading both decides, not the path.
            (
                &[&["zeta", "alpha"], &["alpha", "zeta"]],
                1,
                &["zeta", "alpha"],
            ),
            (
                &[&["alpha", "zeta"], &["zeta", "alpha"]],
                1,
                &["alpha", "zeta"],
            ),
            // Equal means and no run reads both: the path decides.
            (&[&["q"], &["p"]], 1, &["p", "q"]),
            // A cyclic tie relation still gives one answer.
            (
                &[&["x", "y"], &["y", "z"], &["z", "x"]],
                1,
                &["x", "y", "z"],
            ),
        ];
        for (runs, k, want) in cases {
            let runs: Vec<Run> = runs
                .iter()
                .enumerate()
                .map(|(i, p)| run(&format!("r{i}"), p))
                .collect();
            let m = merge(&runs, *k).unwrap();
            assert_eq!(order(&m), *want, "runs {runs:?} k {k}");
            assert_eq!(m, merge(&runs, *k).unwrap());
        }
    }

    #[test]
    fn refuses_other_manifests_and_impossible_thresholds() {
        let mut other = run("b.json", &["x"]);
        other.entries[0].manifest_digest = "sha256:other".into();
        let err = merge(&[run("a.json", &["x"]), other], 1).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("a.json") && msg.contains("b.json"), "{msg}");
        assert!(
            msg.contains("sha256:m") && msg.contains("sha256:other"),
            "{msg}"
        );
        assert!(matches!(
            merge(&[run("a", &["x"])], 2),
            Err(MergeError::MinRunsTooHigh { .. })
        ));
        assert!(matches!(merge(&[], 1), Err(MergeError::NoRuns)));
    }
}
