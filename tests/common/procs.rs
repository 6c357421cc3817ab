// SPDX-License-Identifier: MPL-2.0
//! Processes a fake CLI started: the pids it wrote, whether they run.

use std::collections::HashMap;
use std::path::Path;

/// The pids a fake wrote to `file`, one `NAME PID` line each ("cli",
/// "child").
pub fn fake_pids(file: &Path) -> HashMap<String, i32> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// Whether `pid` is a live process (a zombie counts as gone).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            // "pid (comm) S ...": the state follows the last ')'.
            let state = s
                .rsplit_once(')')
                .map(|(_, r)| r.trim_start().chars().next());
            !matches!(state, Some(Some('Z' | 'X')) | None)
        }
        Err(_) => false,
    }
}
