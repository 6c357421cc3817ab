// SPDX-License-Identifier: MPL-2.0
//! The disk budget of `evidence-dir` (`evidence-max-bytes`). Plain Rust.
//!
//! Rules (one test each):
//! 1. **Ours only**: the budget covers the files of this stream
//!    (`<stream-id>-…​.jpg` / `.mp4`, names made by [`super::file_stem`]);
//!    other files in the directory are never counted nor deleted. Files left
//!    by an earlier run of the same stream are found at start and count,
//!    oldest (by modification time) first.
//! 2. **Oldest first**: when a new file would exceed the budget, the oldest
//!    files are deleted until it fits. "Oldest" is the moment a file shows,
//!    not when it was written ([`Age`]): the files of earlier runs (in
//!    modification-time order) before those of this element's runs, each
//!    run's before the next one's, and within a run the earliest stream
//!    time first. Snapshots are written by several event-check threads, so
//!    the order in which they reach the disk is not the stream's; by this
//!    rule what stays is always the evidence of the newest moments. A file
//!    older than all that is kept can therefore be deleted as soon as it is
//!    added (and counted, rule 4), like any file the budget deletes later.
//! 3. **Too large**: a file larger than the whole budget is deleted at once
//!    (and the caller reports it); nothing older is deleted for it.
//! 4. **Counted**: files deleted for the budget are counted.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

/// Where a file stands in the deletion order (rule 2): smaller goes first.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub struct Age {
    /// 0: found at start (an earlier run); then 1, 2 … for this element's
    /// runs ([`Store::new_run`]).
    pub run: u64,
    /// Within a run: the stream time (seconds) the file shows; for the
    /// files found at start, their place in modification-time order.
    pub t: f64,
}

#[derive(Debug)]
pub struct Store {
    max_bytes: u64,
    prefix: String,
    /// Ascending by age.
    files: VecDeque<(Age, PathBuf, u64)>,
    run: u64,
    total: u64,
    /// Files deleted to stay in the budget (rule 4).
    pub deleted: u64,
}

fn is_ours(name: &str, prefix: &str) -> bool {
    name.starts_with(prefix) && (name.ends_with(".jpg") || name.ends_with(".mp4"))
}

impl Store {
    /// Scans `dir` for this stream's files (rule 1).
    pub fn open(dir: &Path, prefix: &str, max_bytes: u64) -> std::io::Result<Store> {
        let mut found = Vec::new();
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().to_string();
            let Ok(md) = e.metadata() else { continue };
            if md.is_file() && is_ours(&name, prefix) {
                let t = md.modified().unwrap_or(std::time::SystemTime::UNIX_EPOCH);
                found.push((t, e.path(), md.len()));
            }
        }
        found.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        let mut s = Store {
            max_bytes,
            prefix: prefix.to_string(),
            files: VecDeque::new(),
            run: 0,
            total: 0,
            deleted: 0,
        };
        for (i, (_, p, n)) in found.into_iter().enumerate() {
            s.total += n;
            let age = Age {
                run: 0,
                t: i as f64,
            };
            s.files.push_back((age, p, n));
        }
        s.trim();
        Ok(s)
    }

    /// A new run of the element (READY→PAUSED): its files are younger
    /// than all before, whatever their stream times (rule 2).
    pub fn new_run(&mut self) {
        self.run += 1;
    }

    /// The age of a file of the current run showing stream time `t`.
    pub fn age(&self, t: f64) -> Age {
        Age { run: self.run, t }
    }

    /// Bytes of this stream's files.
    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn count(&self) -> usize {
        self.files.len()
    }

    /// Deletes the oldest files until the rest fit (rule 2).
    fn trim(&mut self) {
        while self.total > self.max_bytes {
            let Some((_, p, n)) = self.files.pop_front() else {
                break;
            };
            let _ = std::fs::remove_file(&p);
            self.total -= n;
            self.deleted += 1;
        }
    }

    /// A new file of `n` bytes and `age` was written at `path` (rules 2
    /// and 3); false when it was larger than the budget and was deleted.
    pub fn add(&mut self, path: PathBuf, n: u64, age: Age) -> bool {
        debug_assert!(path
            .file_name()
            .is_some_and(|f| is_ours(&f.to_string_lossy(), &self.prefix)));
        if n > self.max_bytes {
            let _ = std::fs::remove_file(&path);
            return false;
        }
        let at = self.files.partition_point(|(a, _, _)| *a <= age);
        self.files.insert(at, (age, path, n));
        self.total += n;
        self.trim();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("vss-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn write(d: &Path, name: &str, n: usize) -> PathBuf {
        let p = d.join(name);
        std::fs::write(&p, vec![7u8; n]).unwrap();
        p
    }

    #[test]
    fn rule_1_only_this_streams_files_count() {
        let d = dir("ours");
        write(&d, "cam-a-1.jpg", 100);
        write(&d, "other-a-1.jpg", 100);
        write(&d, "cam-notes.txt", 100);
        let s = Store::open(&d, "cam-", 1000).unwrap();
        assert_eq!((s.count(), s.total()), (1, 100));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn rule_2_the_oldest_go_first() {
        let d = dir("oldest");
        let mut s = Store::open(&d, "cam-", 1000).unwrap();
        let mut paths = Vec::new();
        for i in 0..5 {
            let p = write(&d, &format!("cam-{i}.jpg"), 300);
            assert!(s.add(p.clone(), 300, s.age(i as f64)));
            paths.push(p);
            assert!(s.total() <= 1000);
        }
        assert_eq!(s.count(), 3);
        assert!(!paths[0].exists() && !paths[1].exists());
        assert!(paths[2].exists() && paths[4].exists());
        assert_eq!(s.deleted, 2);
        // A second run finds them, oldest first.
        let mut s2 = Store::open(&d, "cam-", 700).unwrap();
        assert_eq!(s2.count(), 2);
        assert!(!paths[2].exists());
        let p = write(&d, "cam-9.mp4", 300);
        s2.new_run();
        s2.add(p, 300, s2.age(0.0));
        assert!(!paths[3].exists() && paths[4].exists());
        let _ = std::fs::remove_dir_all(&d);
    }

    /// Rule 2: the order is the stream's, not the disk's: a file written
    /// late for an early moment goes first, even at once; a later run's
    /// files are younger than an earlier run's whatever their times.
    #[test]
    fn rule_2_age_is_the_moment_shown_not_the_write() {
        let d = dir("age");
        let mut s = Store::open(&d, "cam-", 1000).unwrap();
        s.new_run();
        let add = |s: &mut Store, name: &str, t: f64| {
            let p = write(&d, name, 300);
            assert!(s.add(p.clone(), 300, s.age(t)));
            p
        };
        let p2 = add(&mut s, "cam-2.jpg", 2.0);
        let p3 = add(&mut s, "cam-3.jpg", 3.0);
        let p1 = add(&mut s, "cam-1.jpg", 1.0);
        assert!(p1.exists() && p2.exists() && p3.exists());
        // Over the budget: 1 s is the oldest although written last.
        let p4 = add(&mut s, "cam-4.jpg", 4.0);
        assert!(!p1.exists() && p2.exists() && p4.exists());
        // Older than all that is kept, with no room: deleted at once.
        let p0 = add(&mut s, "cam-0.jpg", 0.5);
        assert!(!p0.exists() && p2.exists());
        assert_eq!((s.count(), s.deleted), (3, 2));
        // A new run starts its stream times again; its files are younger.
        s.new_run();
        let q = add(&mut s, "cam-r2-0.jpg", 0.0);
        assert!(q.exists() && !p2.exists() && p3.exists() && p4.exists());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn rule_3_a_file_larger_than_the_budget_is_not_kept() {
        let d = dir("large");
        let mut s = Store::open(&d, "cam-", 1000).unwrap();
        let small = write(&d, "cam-0.jpg", 100);
        s.add(small.clone(), 100, s.age(0.0));
        let big = write(&d, "cam-1.mp4", 5000);
        assert!(!s.add(big.clone(), 5000, s.age(1.0)));
        assert!(!big.exists() && small.exists());
        assert_eq!(s.total(), 100);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn rule_4_deletions_are_counted() {
        let d = dir("count");
        let mut s = Store::open(&d, "cam-", 250).unwrap();
        for i in 0..10 {
            let p = write(&d, &format!("cam-{i}.jpg"), 100);
            s.add(p, 100, s.age(i as f64));
        }
        assert_eq!(s.deleted, 8);
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 2);
        let _ = std::fs::remove_dir_all(&d);
    }
}
