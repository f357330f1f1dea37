"""A small multi-file crate with unit and integration tests, vendored into a directory
the way ``cargo vendor`` lays crates out: the crate the crate-mutation tests break."""

from __future__ import annotations

import json
from pathlib import Path

LIB = """//! gamma: small numeric and text helpers.
pub mod stats;
pub mod text;

/// Index of the largest element (the first one on ties).
pub fn argmax(xs: &[i64]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, x) in xs.iter().enumerate() {
        if best.map_or(true, |b| *x > xs[b]) {
            best = Some(i);
        }
    }
    best
}

/// Whether the slice is sorted, smallest first.
pub fn is_sorted(xs: &[i64]) -> bool {
    let mut i = 1;
    while i < xs.len() {
        if xs[i - 1] > xs[i] {
            return false;
        }
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_largest() {
        assert_eq!(argmax(&[3, 9, 2]), Some(1));
    }

    #[test]
    fn ties_go_to_the_first() {
        assert_eq!(argmax(&[5, 5]), Some(0));
    }

    #[test]
    fn empty_is_none() {
        assert_eq!(argmax(&[]), None);
    }

    #[test]
    fn sorted_and_not() {
        assert!(is_sorted(&[1, 2, 2, 7]));
        assert!(!is_sorted(&[3, 1]));
    }
}
"""

STATS = """use std::collections::{BTreeMap, HashMap};

/// The arithmetic mean, None for an empty slice.
pub fn mean(xs: &[f64]) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    let total: f64 = xs.iter().sum();
    Some(total / xs.len() as f64)
}

/// Prefix sums: out[i] = xs[0] + ... + xs[i].
pub fn running_sum(xs: &[i64]) -> Vec<i64> {
    let mut out = Vec::new();
    let mut acc = 0i64;
    for x in xs {
        acc += x;
        out.push(acc);
    }
    out
}

/// How many values lie strictly above the threshold.
pub fn count_above(xs: &[i64], threshold: i64) -> usize {
    xs.iter().filter(|x| **x > threshold).count()
}

/// Values clamped into [lo, hi], in place.
pub fn clamp_all(xs: &mut Vec<i64>, lo: i64, hi: i64) {
    for x in xs.iter_mut() {
        if *x < lo {
            *x = lo;
        }
        if *x > hi {
            *x = hi;
        }
    }
}

/// The most frequent value (the smallest on ties).
pub fn mode(xs: &[i64]) -> Option<i64> {
    let mut counts: BTreeMap<i64, usize> = BTreeMap::new();
    for x in xs {
        *counts.entry(*x).or_insert(0) += 1;
    }
    let mut best: Option<(i64, usize)> = None;
    for (value, n) in counts {
        let better = match best {
            None => true,
            Some((v, m)) => n > m || (n == m && value < v),
        };
        if better {
            best = Some((value, n));
        }
    }
    best.map(|(v, _)| v)
}

/// How often each value occurs.
pub fn histogram(xs: &[i64]) -> HashMap<i64, usize> {
    let mut counts = HashMap::new();
    for x in xs {
        *counts.entry(*x).or_insert(0) += 1;
    }
    counts
}

/// Differences between neighbours.
pub fn deltas(xs: &[i64]) -> Vec<i64> {
    let pairs = xs.windows(2).collect::<Vec<_>>();
    let names: Vec<String> = pairs.iter().map(|w: &&[i64]| format!("{}", w[0])).collect();
    let label = names.clone();
    drop(label);
    pairs.iter().map(|w| w[1] - w[0]).collect()
}
"""

TEXT = """/// The words of a line, lower-cased.
pub fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    for w in line.split_whitespace() {
        let lower = w.to_lowercase();
        out.push(lower.clone());
    }
    out
}

/// The longest word (the first on ties).
pub fn longest(line: &str) -> Option<String> {
    let all = words(line);
    let mut best: Option<&String> = None;
    for w in &all {
        if best.map_or(true, |b| w.len() > b.len()) {
            best = Some(w);
        }
    }
    best.cloned()
}

/// The first letter of each word, upper-cased.
pub fn initials(line: &str) -> String {
    let letters: Vec<char> = line
        .split_whitespace()
        .filter_map(|w| w.chars().next())
        .collect();
    let mut s = String::new();
    for c in letters {
        s.push(c.to_ascii_uppercase());
    }
    s
}
"""

STATS_TESTS = """use gamma::stats::*;

#[test]
fn mean_of_three() {
    assert_eq!(mean(&[1.0, 2.0, 6.0]), Some(3.0));
    assert_eq!(mean(&[]), None);
}

#[test]
fn running_sums() {
    assert_eq!(running_sum(&[1, 2, 3]), vec![1, 3, 6]);
}

#[test]
fn above_and_clamped() {
    assert_eq!(count_above(&[1, 5, 9], 4), 2);
    let mut v = vec![-3, 4, 12];
    clamp_all(&mut v, 0, 10);
    assert_eq!(v, vec![0, 4, 10]);
}

#[test]
fn modes_and_deltas() {
    assert_eq!(mode(&[4, 1, 4, 1, 7]), Some(1));
    assert_eq!(deltas(&[1, 4, 9]), vec![3, 5]);
}
"""

TEXT_TESTS = """use gamma::text::*;

#[test]
fn words_and_longest() {
    assert_eq!(words("Hello World"), vec!["hello", "world"]);
    assert_eq!(longest("a bbb cc ddd"), Some("bbb".to_string()));
}

#[test]
fn initials_of_a_name() {
    assert_eq!(initials("ada king lovelace"), "AKL");
}
"""


def write_crate(root: Path, name: str = "gamma", version: str = "0.3.1") -> Path:
    """Write the crate as ``root/NAME-VERSION`` with a vendored checksum file."""
    folder = root / f"{name}-{version}"
    files = {"src/lib.rs": LIB, "src/stats.rs": STATS, "src/text.rs": TEXT, "tests/stats.rs": STATS_TESTS,
             "tests/text.rs": TEXT_TESTS}
    for rel, text in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text.replace("gamma::", f"{name.replace('-', '_')}::"))
    (folder / "Cargo.toml").write_text(
        f'[package]\nname = "{name}"\nversion = "{version}"\nedition = "2021"\nlicense = "MIT"\n')
    (folder / ".cargo-checksum.json").write_text(json.dumps({"files": {}, "package": None}))
    return folder
