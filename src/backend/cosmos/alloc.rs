// SPDX-License-Identifier: MPL-2.0
//! How the plugin's allocator (mimalloc, `src/lib.rs`) hands freed memory
//! back, for the forward pass.
//!
//! candle gives every op a fresh buffer, megabytes each in a prefill.
//! mimalloc by default *decommits* freed memory once it has been unused for
//! a while (`purge_delay`): `madvise(MADV_DONTNEED)`, so the next op that
//! gets the same memory page-faults every page back in and the kernel
//! zeroes it (about 650 faults and 5 % of a CPU prefill in
//! `cargo bench --bench cosmos`). With [`reuse_freed_pages`] a purge
//! *resets* instead (`MADV_FREE`): the kernel still takes the pages back
//! when it needs memory, but until then reusing them costs nothing. The
//! price: freed memory keeps counting in the process's RSS (in `top`) until
//! the kernel reclaims it.

use libmimalloc_sys::{mi_option_get, mi_option_set, mi_option_t};

/// `mi_option_purge_decommits`: the sixth entry of mimalloc's option enum
/// (v2 and v3 alike; the test checks the defaults of its neighbours).
const PURGE_DECOMMITS: mi_option_t = 5;

/// The environment variable by which a user keeps mimalloc's own choice.
pub const ENV: &str = "MIMALLOC_PURGE_DECOMMITS";

/// Makes mimalloc's purges reset rather than decommit (see the module
/// text), once per process, when a model loads; a no-op if
/// `MIMALLOC_PURGE_DECOMMITS` is set (mimalloc then follows it).
pub fn reuse_freed_pages() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os(ENV).is_none() {
            // SAFETY: sets one integer option. mimalloc reads it on each
            // purge; a purge racing with this call decommits or resets,
            // both valid.
            unsafe { mi_option_set(PURGE_DECOMMITS, 0) }
        }
    });
}

/// Whether purges decommit (mimalloc's default) or reset.
pub fn purges_decommit() -> bool {
    // SAFETY: reads one option.
    unsafe { mi_option_get(PURGE_DECOMMITS) != 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Minor page faults of the calling thread so far.
    fn thread_faults() -> i64 {
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `u` is a valid rusage to fill.
        assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut u) }, 0);
        u.ru_minflt
    }

    /// Set in the child process [`reused_buffers_do_not_fault_again`] runs.
    const CHILD: &str = "VSS_TEST_ALLOC_CHILD";

    /// Freed and reallocated buffers come back without page faults (run
    /// with MIMALLOC_PURGE_DECOMMITS=1, mimalloc's default, this fails:
    /// every round faults its 8 MiB back in). The measurement runs in a
    /// child process of this test binary with this test alone: the other
    /// tests' threads, allocating in the same arenas, would otherwise take
    /// the freed buffer between two rounds and leave this one fresh,
    /// never-touched memory (a CI run saw 604 faults that way).
    #[test]
    fn reused_buffers_do_not_fault_again() {
        if std::env::var_os(CHILD).is_some() {
            return measure_reuse_faults();
        }
        let name = "backend::cosmos::alloc::tests::reused_buffers_do_not_fault_again";
        let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", name, "--test-threads=1", "--nocapture"])
            .env(CHILD, "1")
            .output()
            .expect("run the test binary");
        let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "child test failed:\n{text}");
        // The child ran this test (not zero tests, e.g. after a rename).
        assert!(text.contains("1 passed"), "child test did not run:\n{text}");
    }

    fn measure_reuse_faults() {
        // The option enum is laid out as assumed: its neighbours hold their
        // documented defaults (arena_eager_commit = 2 at index 4,
        // purge_delay = 1000 ms at index 15, mimalloc v3).
        for (i, var, default) in [
            (4, "MIMALLOC_ARENA_EAGER_COMMIT", 2),
            (15, "MIMALLOC_PURGE_DELAY", 1000),
        ] {
            if std::env::var_os(var).is_none() {
                assert_eq!(unsafe { mi_option_get(i) }, default, "mimalloc option {i}");
            }
        }
        reuse_freed_pages();
        assert_eq!(
            purges_decommit(),
            std::env::var(ENV).is_ok_and(|v| v != "0")
        );
        const SIZE: usize = 8 << 20;
        let touch = || {
            let mut v: Vec<u8> = Vec::with_capacity(SIZE);
            let p = v.spare_capacity_mut();
            for i in (0..SIZE).step_by(4096) {
                p[i].write(1);
            }
            std::hint::black_box(&v);
        };
        touch();
        let mut faults = 0;
        for _ in 0..10 {
            // Purge what is free now, as mimalloc does after purge_delay.
            unsafe { libmimalloc_sys::mi_collect(true) };
            let f0 = thread_faults();
            touch();
            faults += thread_faults() - f0;
        }
        // 10 rounds of 2048 pages; a decommitted buffer faults each page
        // (or each 2 MiB huge page) back in every round.
        assert!(
            faults < 40,
            "{faults} page faults in 10 rounds of reusing an 8 MiB buffer"
        );
    }
}
