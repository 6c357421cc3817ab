// SPDX-License-Identifier: MPL-2.0
//! Child processes the plugin starts (a custom model's Python worker, the
//! NGC CLI): what both need of the process itself.

/// Blocks until the child `pid` has exited (or is no child of ours any
/// more), without reaping it: its pid, which may also be its process group's
/// id, cannot be reused until someone waits for it. Used by the custom
/// worker's watcher and the NGC CLI's.
pub fn wait_exited(pid: u32) {
    loop {
        // SAFETY: an all-zero siginfo_t is valid; waitid fills it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: plain syscall on our child; `info` is valid for writes.
        // WNOWAIT leaves it unreaped.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        // Exited, or not (any more) our child (ECHILD): either way there
        // is nothing left to wait for.
        if rc == 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    /// Returns once the child has exited, and leaves it for its owner to
    /// reap (its status is still there).
    #[test]
    fn waits_for_the_exit_without_reaping() {
        let mut c = std::process::Command::new("sh")
            .args(["-c", "exit 3"])
            .spawn()
            .unwrap();
        super::wait_exited(c.id());
        assert_eq!(c.try_wait().unwrap().and_then(|s| s.code()), Some(3));
    }
}
