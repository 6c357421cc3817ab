// SPDX-License-Identifier: MPL-2.0
//! The worker process's life and death, learnt from the process itself
//! rather than from its pipes, and the end of everything it started.
//!
//! A child that the model forks (`os.fork`, a `multiprocessing` helper, a
//! `subprocess` started with `close_fds=False`) inherits the worker's pipes.
//! Pipe EOF then never comes when the worker dies, and the helper outlives
//! the pipeline. The rules:
//!
//! 1. The worker leads a process group of its own (the caller spawns it with
//!    `process_group(0)`); whatever it forks is in that group unless it
//!    leaves it itself.
//! 2. [`Exited`] learns the worker's exit from the process: a watcher thread
//!    blocks in `waitid(WEXITED | WNOWAIT)` and then closes a pipe whose read
//!    end the others poll. It does not reap: until [`end`] reaps the worker,
//!    its pid, which is also the group id, cannot be reused, so signals sent
//!    to the group cannot reach a stranger.
//! 3. [`ExitAwareRead`] delivers everything the worker wrote before it
//!    exited; once the pipe is empty and the worker has exited it reads EOF,
//!    whoever else still holds the pipe's write end.
//! 4. [`ExitAwareWrite`] never blocks past the worker's exit: a write that
//!    would block fails with `BrokenPipe` once the worker is gone, whoever
//!    else still holds the pipe's read end.
//! 5. [`end`] stops the worker (SIGKILL unless it has exited), sends SIGTERM
//!    to the group while the worker is still unreaped, reaps the worker,
//!    waits up to a grace period for the rest of the group to exit, then
//!    sends SIGKILL to what is left. Zombies count as gone (an orphan's
//!    zombie is its new parent's to reap; a container's PID 1 may never do
//!    it).
//! 6. Limit: a process that leaves the group (`setsid`, as a double-fork
//!    daemon does, or `setpgid`) is not found and outlives the pipeline. The
//!    element is not made a child subreaper (`PR_SET_CHILD_SUBREAPER`): that
//!    would hand it every orphan of the whole host process to reap.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::{Child, ExitStatus};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn errno() -> io::Error {
    io::Error::last_os_error()
}

/// `poll` on `fds`, retried on EINTR; `None` waits without a limit.
fn poll(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> io::Result<usize> {
    let until = timeout.map(|t| Instant::now() + t);
    loop {
        let ms: libc::c_int = match until {
            None => -1,
            Some(u) => {
                let left = u.saturating_duration_since(Instant::now());
                // Rounded up, so a short wait is not a busy loop.
                left.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as libc::c_int
            }
        };
        // SAFETY: fds is a valid slice of pollfd for its length.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = errno();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn pollfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// Becomes ready once the process has exited (rule 2). Clones share one
/// watcher.
#[derive(Clone)]
pub struct Exited(Arc<OwnedFd>);

impl Exited {
    /// Starts watching `pid`, a child of this process that nobody has
    /// reaped yet.
    pub fn watch(pid: u32) -> io::Result<Exited> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: pipe2 writes two fds into the array we own.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(errno());
        }
        // SAFETY: both fds were just created and are owned by nobody else.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        std::thread::Builder::new()
            .name(format!("vss-py-wait-{pid}"))
            .spawn(move || {
                crate::process::wait_exited(pid);
                drop(w);
            })?;
        Ok(Exited(Arc::new(r)))
    }

    fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    /// Waits up to `timeout` (`None`: without a limit) for the exit; true
    /// once the process has exited.
    pub fn wait(&self, timeout: Option<Duration>) -> bool {
        let mut fds = [pollfd(self.fd(), libc::POLLIN)];
        matches!(poll(&mut fds, timeout), Ok(n) if n > 0)
    }

    pub fn has(&self) -> bool {
        self.wait(Some(Duration::ZERO))
    }
}

/// A pipe from the worker that reads EOF once the worker has exited and the
/// pipe is empty (rule 3).
pub struct ExitAwareRead<R> {
    inner: R,
    exited: Exited,
}

impl<R: Read + AsRawFd> ExitAwareRead<R> {
    pub fn new(inner: R, exited: Exited) -> Self {
        ExitAwareRead { inner, exited }
    }
}

impl<R: Read + AsRawFd> Read for ExitAwareRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let pipe = self.inner.as_raw_fd();
        let mut fds = [
            pollfd(pipe, libc::POLLIN),
            pollfd(self.exited.fd(), libc::POLLIN),
        ];
        poll(&mut fds, None)?;
        if fds[0].revents != 0 {
            return self.inner.read(buf);
        }
        // Exited. poll looks at the pipe before the exit: bytes written just
        // before the exit may have arrived in between, so look once more,
        // now that the exit (and so every write before it) is known.
        let mut again = [pollfd(pipe, libc::POLLIN)];
        if poll(&mut again, Some(Duration::ZERO))? > 0 {
            return self.inner.read(buf);
        }
        Ok(0)
    }
}

/// A pipe to the worker whose writes fail instead of blocking once the
/// worker has exited (rule 4). Sets the pipe (this end only) non-blocking.
pub struct ExitAwareWrite<W> {
    inner: W,
    exited: Exited,
}

impl<W: Write + AsRawFd> ExitAwareWrite<W> {
    pub fn new(inner: W, exited: Exited) -> io::Result<Self> {
        let fd = inner.as_raw_fd();
        // SAFETY: fcntl on an fd we own.
        let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        // SAFETY: as above.
        if fl < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK) } < 0 {
            return Err(errno());
        }
        Ok(ExitAwareWrite { inner, exited })
    }
}

impl<W: Write + AsRawFd> Write for ExitAwareWrite<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            match self.inner.write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                r => return r,
            }
            let mut fds = [
                pollfd(self.inner.as_raw_fd(), libc::POLLOUT),
                pollfd(self.exited.fd(), libc::POLLIN),
            ];
            poll(&mut fds, None)?;
            if fds[0].revents == 0 && fds[1].revents != 0 {
                return Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "the process exited while the request was being written",
                ));
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Whether a process of group `pgid` is still running (not a zombie).
fn group_running(pgid: libc::pid_t) -> bool {
    // SAFETY: signal 0 only checks for existence.
    if unsafe { libc::killpg(pgid, 0) } != 0 {
        return false; // ESRCH: the group is empty
    }
    // Something is in it; zombies count as gone (rule 5).
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return true;
    };
    dir.flatten()
        .filter(|e| {
            e.file_name()
                .as_encoded_bytes()
                .iter()
                .all(u8::is_ascii_digit)
        })
        .any(|e| {
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                return false; // gone meanwhile
            };
            // "pid (comm) state ppid pgrp …"; comm may hold anything.
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                return false;
            };
            let mut f = rest.split_whitespace();
            let state = f.next().unwrap_or("Z");
            let pgrp = f.nth(1).and_then(|s| s.parse::<libc::pid_t>().ok());
            pgrp == Some(pgid) && !matches!(state, "Z" | "X" | "x")
        })
}

/// Ends the worker `child` and its process group (rule 5); returns how the
/// worker ended.
pub fn end(child: &mut Child, exited: &Exited, grace: Duration) -> io::Result<ExitStatus> {
    let pgid = child.id() as libc::pid_t;
    if !exited.has() {
        child.kill()?;
    }
    // SAFETY: plain syscall; the group id is the unreaped worker's pid, so
    // it is still ours (rule 2).
    unsafe { libc::killpg(pgid, libc::SIGTERM) };
    let st = child.wait()?;
    let until = Instant::now() + grace;
    while group_running(pgid) {
        if Instant::now() >= until {
            // SAFETY: as above; a pid that is in use as a group id is not
            // handed to a new process.
            unsafe { libc::killpg(pgid, libc::SIGKILL) };
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(st)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    use std::process::{Command, Stdio};
    use std::sync::mpsc;

    fn sh(script: &str) -> Child {
        Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Not running: gone, or a zombie nobody reaps.
    fn gone(pid: &str) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(s) => {
                let state = s[s.rfind(')').unwrap() + 1..].split_whitespace().next();
                matches!(state, Some("Z" | "X"))
            }
        }
    }

    /// Waits (10 s at most) until `pid` is not running: a signal is sent
    /// when kill() returns, not yet acted on.
    fn wait_gone(pid: &str) -> bool {
        let until = Instant::now() + Duration::from_secs(10);
        while !gone(pid) {
            if Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }

    /// Runs `f` on a thread; panics if it has not finished after 60 s (a
    /// "did not hang" bound: the old behaviour is to block for ever).
    fn within_a_minute<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || tx.send(f()).unwrap());
        rx.recv_timeout(Duration::from_secs(60))
            .expect("blocked although the process had exited")
    }

    // Rules 2, 3, 5: output written before the exit arrives, then EOF
    // although a background job holds the pipe; end() reports the status
    // and takes the job down.
    #[test]
    fn reads_end_at_the_exit_although_a_grandchild_holds_the_pipe() {
        let mut c = sh("sleep 300 & echo $!; exit 7");
        let exited = Exited::watch(c.id()).unwrap();
        let mut r = ExitAwareRead::new(c.stdout.take().unwrap(), exited.clone());
        let out = within_a_minute(move || {
            let mut s = String::new();
            r.read_to_string(&mut s).unwrap();
            s
        });
        let job = out.trim().to_string();
        assert!(job.parse::<u32>().is_ok(), "{out:?}");
        assert!(exited.has());
        assert!(!gone(&job), "the job runs until end()");
        let st = end(&mut c, &exited, Duration::from_secs(5)).unwrap();
        assert_eq!(st.code(), Some(7));
        assert!(wait_gone(&job), "sleep {job} outlived end()");
    }

    // Rule 4: a write that does not fit in the pipe fails once the process
    // has exited, although a background job holds the pipe's read end.
    #[test]
    fn writes_fail_after_the_exit_although_a_grandchild_holds_the_pipe() {
        let mut c = sh("exec 3<&0; sleep 300 & echo $!; exit 0");
        let exited = Exited::watch(c.id()).unwrap();
        let mut job = String::new();
        ExitAwareRead::new(c.stdout.take().unwrap(), exited.clone())
            .read_to_string(&mut job)
            .unwrap();
        let mut w = ExitAwareWrite::new(c.stdin.take().unwrap(), exited.clone()).unwrap();
        let e = within_a_minute(move || w.write_all(&vec![0u8; 16 << 20]).unwrap_err());
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe, "{e}");
        end(&mut c, &exited, Duration::from_secs(5)).unwrap();
        assert!(wait_gone(job.trim()));
    }

    // Rule 5: a running worker is killed; a group member that ignores
    // SIGTERM gets SIGKILL after the grace period.
    #[test]
    fn end_kills_the_worker_and_a_group_member_that_ignores_sigterm() {
        let mut c = sh("trap '' TERM; sleep 300 & echo $!; exec sleep 300");
        let exited = Exited::watch(c.id()).unwrap();
        let mut line = String::new();
        let mut out = c.stdout.take().unwrap();
        let mut b = [0u8; 1];
        while out.read(&mut b).unwrap() == 1 && b[0] != b'\n' {
            line.push(b[0] as char);
        }
        assert!(!exited.has());
        let st = end(&mut c, &exited, Duration::from_millis(200)).unwrap();
        assert_eq!(st.signal(), Some(libc::SIGKILL));
        assert!(exited.has());
        let job = line.trim();
        assert!(job.parse::<u32>().is_ok(), "{line:?}");
        assert!(
            wait_gone(job),
            "sleep {job} ignoring SIGTERM outlived end()"
        );
    }
}
