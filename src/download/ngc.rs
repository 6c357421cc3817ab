// SPDX-License-Identifier: MPL-2.0
//! `model-path=ngc:ORG/TEAM/MODEL:VERSION` (or `ngc:ORG/MODEL:VERSION`):
//! a model version on NVIDIA NGC, downloaded once with NVIDIA's NGC CLI, the
//! way VSS 2.x does it (`vlm_pipeline/ngc_model_downloader.py`).
//!
//! # Where the model lands
//! - The cache is `NGC_MODEL_CACHE` (environment or env-file; a leading `~/`
//!   is the home directory, a relative path is relative to the working
//!   directory), else `$HOME/.via/ngc_model_cache`, VSS's default.
//! - When `model-root-dir` is set the cache must lie under it:
//!   `NGC_MODEL_CACHE` is used when it already lies inside the root, and
//!   otherwise (unset or outside) the cache is `<model-root-dir>/ngc_model_cache`.
//!   The model directory is checked to be inside the root once more, with
//!   symlinks resolved, before it is returned.
//! - The model's directory is `{cache}/{org}_{team}_{model}_{version}`, as
//!   VSS names it (team `no-team` for `ORG/MODEL:VERSION`, so
//!   `ngc:ORG/no-team/MODEL:VERSION` is the same model), e.g.
//!   `nim_nvidia_cosmos-reason1-7b_1.1-fp8-dynamic`.
//!
//! # Complete and half-finished downloads
//! - The CLI downloads into a temporary directory inside the cache
//!   (`{cache}/.tmp-{dir name}-{pid}`), into `<tmp>/<model>_v<version>/`.
//!   After it succeeds, a marker file [`COMPLETE_MARKER`] (JSON: the source,
//!   every file's relative path and size) is written into that directory,
//!   which is then renamed into place (same filesystem, so atomic): a model
//!   directory either does not exist or is complete.
//! - A model directory is reused only when its marker exists and every file
//!   it lists has the listed size; anything else (no marker, as after a crash
//!   or a copy by other means, including a directory VSS itself downloaded,
//!   or a truncated file) is a half-finished download: it is removed and the
//!   download redone from scratch (the NGC CLI does not resume).
//! - A complete download is reused without running the CLI, so it needs
//!   neither the CLI nor a key.
//! - Downloads of one model are serialised by `flock` on
//!   `{cache}/.{dir name}.lock` (left in place): a second pipeline (or
//!   process) waits for the first and then reuses its download. Under the
//!   lock, leftover temporary directories of that model are removed.
//!
//! # The CLI
//! - `ngc` is looked up on the `PATH` of the [`DownloadEnv`] (not of the
//!   process), and runs with exactly that environment plus
//!   `NGC_CLI_API_KEY` (from `NGC_CLI_API_KEY`, else `NGC_API_KEY`: the key
//!   never appears in the arguments), `NGC_CLI_ORG`, `NGC_CLI_TEAM` (the
//!   model's, `no-team` when absent, as VSS sets them) and
//!   `NGC_CLI_FORMAT_TYPE` (`ascii` for the download, `json` for `info`).
//! - With neither variable set, a key saved by `ngc config set` in
//!   `$HOME/.ngc/config` is used by the CLI itself (neither key variable is
//!   passed then); with none of these, no CLI is run.
//! - First `ngc registry model info ORG/TEAM/MODEL:VERSION` (JSON) for the
//!   total size (`totalSizeInBytes`), at most [`INFO_TIMEOUT`]; when it fails
//!   the download goes ahead with the total unknown (or taken from the CLI's
//!   progress lines). With the total known, a cache filesystem with less
//!   free space fails at once as disk full.
//! - Then `ngc registry model download-version ORG/TEAM/MODEL:VERSION --dest
//!   <tmp>`, with stdin closed. It has no overall time limit (a 7B model
//!   takes long), but a stall limit (next section).
//!
//! # Stalls, cancellation and the CLI's processes
//! 1. Stall limit: while the CLI downloads, about once a second the bytes
//!    of the temporary directory (file sizes, and bytes allocated on disk,
//!    which grow while a preallocated file is written) and the bytes the
//!    CLI's progress bar reports are compared with the most seen so far. When
//!    none of them has grown for the stall limit, the CLI is stopped (rule
//!    3) and `fetch` fails saying the download stalled, for how long, where,
//!    and what to do. The limit is [`STALL_VAR`] (`VSS_DOWNLOAD_STALL_TIMEOUT`,
//!    environment or env-file), whole seconds from 1 to [`MAX_STALL_SECS`]
//!    (a day), default [`DEFAULT_STALL`] (300 s); anything else fails before
//!    any CLI runs (even when the model is cached), naming the variable and
//!    the range. The CLI's listing before its first byte counts against it.
//! 2. Cancellation: [`fetch_cancellable`] takes a
//!    [`CancellationToken`]; cancelled from another thread, it ends the
//!    wait for another download's lock (checked every 250 ms), `info`, or the
//!    download (at once: the wait wakes on the token, on the CLI's exit, or
//!    on the once-a-second check, never a busy loop), stops the CLI (rule 3),
//!    removes the temporary directory and fails with "… was cancelled …".
//!    A token cancelled before the start runs no CLI. [`fetch`] is
//!    [`fetch_cancellable`] with a token nobody cancels. The waits run on a
//!    current-thread tokio runtime of their own, so `fetch` must not be
//!    called on a tokio runtime thread (an error says so).
//! 3. Stopping the CLI: each CLI (`info` too) starts in a process group of
//!    its own; stopping it sends SIGTERM to the group, SIGKILL after
//!    [`TERM_GRACE`] (3 s) when the CLI is still running, and then SIGKILL to
//!    whatever is left in the group, before the CLI is reaped (so the group
//!    id cannot have been reused). This happens on a stall, on cancellation,
//!    on every return (a CLI that exited leaves nothing behind in its
//!    group) and when the waiting code unwinds (a panicking progress
//!    callback). Readers of the CLI's output get 2 s more to see the end of
//!    their pipes; a process that left the group and keeps them open cannot
//!    make `fetch` hang.
//! 4. When this process dies (however: a crash, `exit` with the download
//!    running on another thread, SIGKILL), the CLI's group dies with it: a
//!    guard process, forked in the group before the CLI starts, holds only
//!    the read end of a pipe whose write end this process holds, and SIGKILLs
//!    the group when it reads end-of-file. The CLI itself also has
//!    `PR_SET_PDEATHSIG` = SIGKILL (tied to the thread that started it,
//!    which waits for it). Limits: a process that the CLI moved to another
//!    process group or session (`setsid`) escapes both; a process in
//!    uninterruptible sleep (a hung NFS mount) dies only when it wakes; the
//!    temporary directory stays until the next `fetch` of the model removes
//!    it (the NGC CLI does not resume).
//! 5. In the element, `set_state(NULL)` cannot cancel a download under way:
//!    NULL→READY runs inside `gst_element_set_state`, which holds the
//!    element's (and, from a pipeline, the pipeline's) state lock until it
//!    returns, and a second `set_state` from another thread waits for that
//!    lock before any of the element's code runs (measured with GStreamer
//!    1.22: a pipeline's `set_state(NULL)` called from another thread 10 ms
//!    into a child's 4 s NULL→READY returned after 3.99 s, when that had
//!    finished). What ends a hung download is the stall limit, or the
//!    application's exit (rule 4).
//!
//! # Progress
//! About once a second while the CLI runs, the size of the temporary
//! directory on disk (never decreasing), with the total from `info`, else the
//! `done/total UNIT` figures of the CLI's progress bar; at the end one report
//! with the final size as both. `file` is `ORG/TEAM/MODEL:VERSION` (the CLI
//! does not say which file it is on).
//!
//! # Errors
//! Each says what to do: CLI missing (how to install it), no key, key
//! refused (the CLI mentions authentication, 401 or 403), model or version
//! not found, disk full (naming the cache), a stall, a cancellation, a bad
//! [`STALL_VAR`], and any other failure with the last lines of the CLI's
//! output. Every message has the key (from any of
//! the variables or the CLI config) replaced by `***`.

use std::collections::VecDeque;
use std::fs;
use std::io::{self, Read};
use std::os::unix::process::CommandExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::runtime::Runtime;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{DownloadEnv, DownloadError, NgcSpec, Progress, ProgressFn};

/// The marker file in a complete model directory.
pub const COMPLETE_MARKER: &str = ".vss-complete";
/// The example `model-path` the error messages show (the seed page's).
pub const EXAMPLE: &str = "ngc:nim/nvidia/cosmos-reason1-7b:1.1-fp8-dynamic";
/// The team of `ORG/MODEL:VERSION`, as VSS and the CLI name it.
pub const NO_TEAM: &str = "no-team";
/// Longest wait for `ngc registry model info`.
pub const INFO_TIMEOUT: Duration = Duration::from_secs(60);

const CLI_URL: &str = "https://ngc.nvidia.com/setup/installers/cli";
const KEY_URL: &str = "https://org.ngc.nvidia.com/setup/api-key";
const CLI_ZIP: &str = "https://api.ngc.nvidia.com/v2/resources/nvidia/ngc-apps/ngc_cli/versions/3.169.4/files/ngccli_linux.zip";
/// The variable (environment or env-file) that sets the stall limit, in
/// whole seconds.
pub const STALL_VAR: &str = "VSS_DOWNLOAD_STALL_TIMEOUT";
/// The stall limit when [`STALL_VAR`] is unset or empty.
pub const DEFAULT_STALL: Duration = Duration::from_secs(300);
/// The largest stall limit [`STALL_VAR`] may set (a day).
pub const MAX_STALL_SECS: u64 = 86_400;
/// How long a stopped CLI gets between SIGTERM and SIGKILL.
pub const TERM_GRACE: Duration = Duration::from_secs(3);

const POLL: Duration = Duration::from_secs(1);
/// How often a wait for another download's lock looks for cancellation.
const LOCK_POLL: Duration = Duration::from_millis(250);
/// How long the readers of the CLI's output get to finish after it ended
/// (a process outside its group may still hold the pipes).
const READER_GRACE: Duration = Duration::from_secs(2);
const TAIL_LINES: usize = 8;

impl NgcSpec {
    /// The team, `no-team` when absent.
    pub fn team_or_default(&self) -> &str {
        self.team.as_deref().unwrap_or(NO_TEAM)
    }

    /// `ORG/TEAM/MODEL:VERSION` (or `ORG/MODEL:VERSION`), as the CLI takes it.
    pub fn cli_name(&self) -> String {
        match &self.team {
            Some(t) => format!("{}/{t}/{}:{}", self.org, self.model, self.version),
            None => format!("{}/{}:{}", self.org, self.model, self.version),
        }
    }

    /// `{org}_{team}_{model}_{version}`: the model's directory in the cache.
    pub fn cache_dir_name(&self) -> String {
        format!(
            "{}_{}_{}_{}",
            self.org,
            self.team_or_default(),
            self.model,
            self.version
        )
    }
}

/// Parses what follows `ngc:`: `ORG/TEAM/MODEL:VERSION` or
/// `ORG/MODEL:VERSION`. Each part is letters, digits, `-`, `_` and `.`, not
/// starting with `.`. A team of `no-team` is the same as none.
pub fn parse(s: &str) -> Result<NgcSpec, DownloadError> {
    let bad = |why: &str| {
        format!(
            "model-path 'ngc:{s}': {why}; expected ngc:ORG/TEAM/MODEL:VERSION or ngc:ORG/MODEL:VERSION, e.g. {EXAMPLE}"
        )
    };
    let t = s.trim();
    if t.starts_with("//") {
        return Err(DownloadError::Spec(bad("write no '//' after 'ngc:'")));
    }
    let Some((path, version)) = t.rsplit_once(':') else {
        let hint = if t.is_empty() {
            "nothing after 'ngc:'".to_string()
        } else {
            format!("no ':VERSION' (list the versions with `ngc registry model list '{t}:*'`)")
        };
        return Err(DownloadError::Spec(bad(&hint)));
    };
    let parts: Vec<&str> = path.split('/').collect();
    let (org, team, model) = match parts.as_slice() {
        [o, m] => (*o, None, *m),
        [o, t, m] => (*o, Some(*t), *m),
        _ => {
            return Err(DownloadError::Spec(bad(&format!(
                "'{path}' has {} '/'-separated parts, not 2 or 3",
                parts.len()
            ))))
        }
    };
    let mut named = vec![("ORG", org), ("MODEL", model), ("VERSION", version)];
    if let Some(t) = team {
        named.insert(1, ("TEAM", t));
    }
    for (what, v) in named {
        check_part(what, v).map_err(|e| DownloadError::Spec(bad(&e.to_string())))?;
    }
    Ok(NgcSpec {
        org: org.to_string(),
        team: team.filter(|t| *t != NO_TEAM).map(str::to_string),
        model: model.to_string(),
        version: version.to_string(),
    })
}

fn check_part(what: &str, v: &str) -> Result<(), DownloadError> {
    if v.is_empty() {
        return Err(DownloadError::Spec(format!("{what} is empty")));
    }
    if v.starts_with('.') {
        return Err(DownloadError::Spec(format!("{what} '{v}' starts with '.'")));
    }
    if let Some(c) = v
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(DownloadError::Spec(format!(
            "{what} '{v}' contains {c:?} (allowed: letters, digits, '-', '_', '.')"
        )));
    }
    Ok(())
}

/// The cache directory for `env` (see the module docs); not created.
pub fn cache_root(env: &DownloadEnv) -> Result<PathBuf, DownloadError> {
    let configured = env
        .get("NGC_MODEL_CACHE")
        .map(|v| absolute(&expand_home(v.trim(), env)));
    let Some(root) = &env.model_root_dir else {
        return match configured {
            Some(p) => Ok(p),
            None => match env.get("HOME") {
                Some(h) => Ok(Path::new(h).join(".via").join("ngc_model_cache")),
                None => Err(DownloadError::Setup(
                    "an ngc: model-path needs a cache directory: set NGC_MODEL_CACHE (environment or env-file), or HOME (the default cache is $HOME/.via/ngc_model_cache)"
                        .into(),
                )),
            },
        };
    };
    let root_c = canonical_root(root)?;
    if let Some(p) = configured {
        if resolves_under(&p, &root_c) {
            return Ok(p);
        }
    }
    Ok(root_c.join("ngc_model_cache"))
}

/// The directory `spec` is (or will be) cached in.
pub fn model_dir(spec: &NgcSpec, env: &DownloadEnv) -> Result<PathBuf, DownloadError> {
    Ok(cache_root(env)?.join(spec.cache_dir_name()))
}

/// The local checkpoint directory for `spec`, downloading it first when it
/// is not complete in the cache (see the module docs). Not cancellable: see
/// [`fetch_cancellable`].
pub fn fetch(
    spec: &NgcSpec,
    env: &DownloadEnv,
    progress: ProgressFn<'_>,
) -> Result<PathBuf, DownloadError> {
    fetch_cancellable(spec, env, progress, &CancellationToken::new())
}

/// [`fetch`], ended early (with an error that says it was cancelled) when
/// `cancel` is cancelled from another thread: while waiting for another
/// download's lock, for `info` or for the download, whose CLI is then
/// stopped with everything it started (see the module docs). Call it from a
/// thread that is not running a tokio runtime.
pub fn fetch_cancellable(
    spec: &NgcSpec,
    env: &DownloadEnv,
    progress: ProgressFn<'_>,
    cancel: &CancellationToken,
) -> Result<PathBuf, DownloadError> {
    let mut secrets: Vec<String> = ["NGC_CLI_API_KEY", "NGC_API_KEY"]
        .iter()
        .filter_map(|k| env.get(k).map(|v| v.trim().to_string()))
        .collect();
    if let Some((_, k)) = config_key(env) {
        secrets.push(k);
    }
    fetch_inner(spec, env, progress, cancel).map_err(|e| e.map_message(|m| scrub(&m, &secrets)))
}

/// The stall limit [`STALL_VAR`] sets (see the module docs).
pub fn stall_timeout(env: &DownloadEnv) -> Result<Duration, DownloadError> {
    let Some(raw) = env.get(STALL_VAR) else {
        return Ok(DEFAULT_STALL);
    };
    match raw.trim().parse::<u64>() {
        Ok(n) if (1..=MAX_STALL_SECS).contains(&n) => Ok(Duration::from_secs(n)),
        _ => Err(DownloadError::Setup(format!(
            "environment variable {STALL_VAR}='{raw}' is out of range: allowed 1 to {MAX_STALL_SECS} whole seconds (empty: {}); it is how long an ngc: download may make no progress before it is stopped: fix it in the environment or the env-file",
            DEFAULT_STALL.as_secs()
        ))),
    }
}

fn fetch_inner(
    spec: &NgcSpec,
    env: &DownloadEnv,
    progress: ProgressFn<'_>,
    cancel: &CancellationToken,
) -> Result<PathBuf, DownloadError> {
    let stall = stall_timeout(env)?;
    let cache = cache_root(env)?;
    let name = spec.cache_dir_name();
    let dir = cache.join(&name);
    if is_complete(&dir) {
        return finish(&dir, env);
    }
    let cli = find_cli(env, spec)?;
    let key = api_key(env, spec)?;
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(DownloadError::Failed(
            "internal error: ngc: downloads must not run on a tokio runtime thread".into(),
        ));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| format!("cannot download 'ngc:{}': {e}", spec.cli_name()))?;
    let ctx = Ctx {
        spec,
        env,
        cli: &cli,
        key: &key,
        cache: &cache,
        cancel,
        rt: &rt,
        stall,
    };
    ctx.check_cancel()?;
    fs::create_dir_all(&cache)
        .map_err(|e| ctx.fs_error("cannot create the NGC model cache", &cache, &e))?;
    let lock_path = cache.join(format!(".{name}.lock"));
    let _lock = ctx.lock(&lock_path)?;
    // Another download may have finished while we waited for the lock.
    if is_complete(&dir) {
        return finish(&dir, env);
    }
    remove_stale(&cache, &name);
    if fs::symlink_metadata(&dir).is_ok() {
        remove_any(&dir).map_err(|e| {
            format!(
                "'{}' holds an incomplete download of 'ngc:{}' (no complete {COMPLETE_MARKER}) that cannot be removed: {e}; remove it by hand",
                dir.display(),
                spec.cli_name()
            )
        })?;
    }
    let tmp = cache.join(format!(".tmp-{name}-{}", std::process::id()));
    fs::create_dir(&tmp).map_err(|e| ctx.fs_error("cannot create", &tmp, &e))?;
    let r = ctx.download(&tmp, &dir, progress);
    let _ = fs::remove_dir_all(&tmp);
    r?;
    finish(&dir, env)
}

struct Ctx<'a> {
    spec: &'a NgcSpec,
    env: &'a DownloadEnv,
    cli: &'a Path,
    key: &'a Key,
    cache: &'a Path,
    cancel: &'a CancellationToken,
    rt: &'a Runtime,
    stall: Duration,
}

impl Ctx<'_> {
    fn download(
        &self,
        tmp: &Path,
        dir: &Path,
        progress: ProgressFn<'_>,
    ) -> Result<(), DownloadError> {
        let name = self.spec.cli_name();
        let info_total = self.info_total()?;
        if let (Some(total), Some(free)) = (info_total, free_bytes(self.cache)) {
            if free < total {
                return Err(DownloadError::Failed(self.disk_full(&format!(
                    "it needs {} and {} is free",
                    human(total),
                    human(free)
                ))));
            }
        }
        let mut cmd = self.command("ascii");
        cmd.args(["registry", "model", "download-version", &name, "--dest"])
            .arg(tmp)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut proc = Proc::spawn(cmd, self.rt).map_err(|e| self.spawn_error(&e))?;
        let shared = Arc::new(Mutex::new(Output::default()));
        let (readers_done, readers_rx) = mpsc::channel();
        let readers = [
            spawn_reader(
                proc.child.stdout.take(),
                false,
                shared.clone(),
                readers_done.clone(),
            ),
            spawn_reader(proc.child.stderr.take(), true, shared.clone(), readers_done),
        ]
        .iter()
        .filter(|r| r.is_some())
        .count();
        let report = |done: u64, total: Option<u64>| {
            progress(&Progress {
                file: name.clone(),
                done,
                total,
                all_done: done,
                all_total: total,
            })
        };
        report(0, info_total);
        let mut done = 0u64;
        let mut last: Option<(u64, Option<u64>)> = None;
        // Progress for the stall limit: any of these growing.
        let mut seen = Usage::default();
        let mut seen_cli = 0u64;
        let mut last_growth = Instant::now();
        let mut next_poll = Instant::now() + POLL;
        loop {
            match proc.wait(self.cancel, next_poll) {
                Event::Exited => break,
                Event::Cancelled => {
                    proc.stop();
                    return Err(
                        self.cancelled(&format!("the NGC CLI was stopped after {} bytes", done))
                    );
                }
                Event::Tick => {}
            }
            let now = Instant::now();
            next_poll = (next_poll + POLL).max(now);
            let (cli_done, cli_total) = {
                let o = shared.lock().unwrap();
                (o.done, o.total)
            };
            let usage = dir_usage(tmp);
            let cli_done = cli_done.unwrap_or(0);
            if usage.bytes > seen.bytes || usage.blocks > seen.blocks || cli_done > seen_cli {
                last_growth = now;
                seen.bytes = seen.bytes.max(usage.bytes);
                seen.blocks = seen.blocks.max(usage.blocks);
                seen_cli = seen_cli.max(cli_done);
            }
            done = done.max(usage.bytes).max(cli_done);
            let total = info_total.or(cli_total).map(|t| t.max(done));
            if last != Some((done, total)) {
                last = Some((done, total));
                report(done, total);
            }
            if now.duration_since(last_growth) >= self.stall {
                proc.stop();
                wait_readers(&readers_rx, readers);
                let out = std::mem::take(&mut *shared.lock().unwrap());
                return Err(self.stalled(tmp, done, total, &out));
            }
        }
        let status = proc.stop();
        wait_readers(&readers_rx, readers);
        let out = std::mem::take(&mut *shared.lock().unwrap());
        if !status.success() || out.status_failed {
            return Err(DownloadError::Failed(self.cli_failure(status, &out)));
        }
        let got = locate(tmp, self.spec, out.local_path.as_deref()).map_err(|why| {
            format!(
                "the NGC CLI reported 'ngc:{name}' downloaded, but {why}; its last output: {}",
                out.tail(false)
            )
        })?;
        let files = list_files(&got).map_err(|e| self.fs_error("cannot list", &got, &e))?;
        if files.is_empty() {
            return Err(DownloadError::Failed(format!(
                "the NGC CLI downloaded no files for 'ngc:{name}' (its directory '{}' is empty); check the version on NGC (`ngc registry model info '{name}'`)",
                got.display()
            )));
        }
        let bytes = files.iter().map(|f| f.size).sum();
        let marker = Marker {
            source: format!("ngc:{name}"),
            bytes,
            files,
        };
        let json = serde_json::to_string_pretty(&marker).expect("marker serializes");
        let marker_path = got.join(COMPLETE_MARKER);
        fs::write(&marker_path, json)
            .map_err(|e| self.fs_error("cannot write", &marker_path, &e))?;
        fs::rename(&got, dir).map_err(|e| {
            self.fs_error(
                &format!("cannot move the download '{}' to", got.display()),
                dir,
                &e,
            )
        })?;
        report(bytes, Some(bytes));
        Ok(())
    }

    /// The CLI with the environment it runs with (see the module docs).
    fn command(&self, format: &str) -> Command {
        let mut cmd = Command::new(self.cli);
        cmd.env_clear()
            .envs(&self.env.vars)
            .env("NGC_CLI_ORG", &self.spec.org)
            .env("NGC_CLI_TEAM", self.spec.team_or_default())
            .env("NGC_CLI_FORMAT_TYPE", format)
            .stdin(Stdio::null());
        match self.key {
            Key::Env { value, .. } => {
                cmd.env("NGC_CLI_API_KEY", value);
            }
            Key::Config(_) => {
                cmd.env_remove("NGC_CLI_API_KEY").env_remove("NGC_API_KEY");
            }
        }
        cmd
    }

    /// `totalSizeInBytes` from `ngc registry model info`; `None` on any
    /// failure (the download then reports its own errors), or after
    /// [`INFO_TIMEOUT`]. An error only when cancelled.
    fn info_total(&self) -> Result<Option<u64>, DownloadError> {
        let mut cmd = self.command("json");
        cmd.args(["registry", "model", "info", &self.spec.cli_name()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let Ok(mut proc) = Proc::spawn(cmd, self.rt) else {
            return Ok(None);
        };
        let Some(mut stdout) = proc.child.stdout.take() else {
            return Ok(None);
        };
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut s = String::new();
            let _ = stdout.read_to_string(&mut s);
            let _ = tx.send(s);
        });
        let end = Instant::now() + INFO_TIMEOUT;
        let ev = proc.wait(self.cancel, end);
        let status = proc.stop();
        match ev {
            Event::Cancelled => return Err(self.cancelled("while asking NGC for its size")),
            Event::Tick => return Ok(None),
            Event::Exited => {}
        }
        let Ok(text) = rx.recv_timeout(READER_GRACE) else {
            return Ok(None);
        };
        if !status.success() {
            return Ok(None);
        }
        let Ok(v) = serde_json::from_str::<serde_json::Value>(text.trim()) else {
            return Ok(None);
        };
        Ok(find_number(&v, "totalSizeInBytes").filter(|&n| n > 0))
    }

    fn check_cancel(&self) -> Result<(), DownloadError> {
        if self.cancel.is_cancelled() {
            return Err(self.cancelled("before it started"));
        }
        Ok(())
    }

    fn cancelled(&self, when: &str) -> DownloadError {
        DownloadError::Cancelled(format!(
            "the download of 'ngc:{}' was cancelled ({when}); nothing of it is kept: start the pipeline again to download it",
            self.spec.cli_name()
        ))
    }

    fn stalled(&self, tmp: &Path, done: u64, total: Option<u64>, out: &Output) -> DownloadError {
        let name = self.spec.cli_name();
        let of = total
            .map(|t| format!(" of {}", human(t)))
            .unwrap_or_default();
        DownloadError::Stalled(format!(
            "the download of 'ngc:{name}' stalled: the NGC CLI made no progress for {} s ({} done{of} in '{}'), so it was stopped and its partial download removed; check the network and NGC's status (run `ngc registry model download-version '{name}'` by hand to see more) and start the pipeline again; on a slow link raise {STALL_VAR} (seconds, environment or env-file; default {}); its last output: {}",
            self.stall.as_secs(),
            human(done),
            tmp.display(),
            DEFAULT_STALL.as_secs(),
            out.tail(true)
        ))
    }

    /// The download lock of the model (another download of it may hold it:
    /// waited for, cancellably).
    fn lock(&self, path: &Path) -> Result<Lock, DownloadError> {
        let f = Lock::open(path).map_err(|e| self.fs_error("cannot lock", path, &e))?;
        loop {
            match f.try_lock() {
                Ok(true) => return Ok(Lock(f.0)),
                Ok(false) => {}
                Err(e) => {
                    return Err(DownloadError::Failed(self.fs_error(
                        "cannot lock",
                        path,
                        &e,
                    )))
                }
            }
            let cancelled = self.rt.block_on(async {
                tokio::select! {
                    _ = self.cancel.cancelled() => true,
                    _ = tokio::time::sleep(LOCK_POLL) => false,
                }
            });
            if cancelled {
                return Err(self.cancelled(&format!(
                    "while waiting for another download of it to finish ('{}')",
                    path.display()
                )));
            }
        }
    }

    fn spawn_error(&self, e: &io::Error) -> String {
        format!(
            "cannot run the NGC CLI '{}' for 'ngc:{}': {e}; check that it is the NGC CLI and executable (chmod u+x), or reinstall it from {CLI_URL}",
            self.cli.display(),
            self.spec.cli_name()
        )
    }

    fn fs_error(&self, what: &str, path: &Path, e: &io::Error) -> String {
        if is_disk_full(e) {
            return self.disk_full(&format!("{what} '{}': {e}", path.display()));
        }
        format!(
            "{what} '{}': {e}; the NGC model cache '{}' must be writable: fix its permissions or set NGC_MODEL_CACHE (environment or env-file; under model-root-dir when that is set) to a writable directory",
            path.display(),
            self.cache.display()
        )
    }

    fn disk_full(&self, detail: &str) -> String {
        format!(
            "disk full downloading 'ngc:{}' into the NGC model cache '{}' ({detail}); free space there, or set NGC_MODEL_CACHE (environment or env-file; under model-root-dir when that is set) to a directory on a disk with room",
            self.spec.cli_name(),
            self.cache.display()
        )
    }

    fn cli_failure(&self, status: ExitStatus, out: &Output) -> String {
        let name = self.spec.cli_name();
        let said = out.tail(true);
        let how = describe(status, out.status_failed);
        match classify(&out.notable()) {
            Failure::DiskFull => self.disk_full(&format!("the NGC CLI {how}: {said}")),
            Failure::Auth => format!(
                "NGC refused the API key downloading 'ngc:{name}' (the NGC CLI {how}: {said}); {}",
                self.key.fix(&self.spec.org)
            ),
            Failure::NotFound => format!(
                "NGC has no model version '{name}' that this key can see (the NGC CLI {how}: {said}); check ORG/TEAM/MODEL:VERSION in model-path (e.g. {EXAMPLE}) and list the versions with `ngc registry model list '{}/{}:*'`",
                match &self.spec.team {
                    Some(t) => format!("{}/{t}", self.spec.org),
                    None => self.spec.org.clone(),
                },
                self.spec.model
            ),
            Failure::Other => format!(
                "downloading 'ngc:{name}' with the NGC CLI failed: it {how}; its last output: {said}; run `ngc registry model download-version '{name}'` by hand to see more, or download the model yourself and set model-path to its directory"
            ),
        }
    }
}

/// Where the key comes from.
enum Key {
    Env {
        var: &'static str,
        value: String,
    },
    /// `ngc config set` saved one in this file; the CLI reads it.
    Config(PathBuf),
}

impl Key {
    fn fix(&self, org: &str) -> String {
        let whence = match self {
            Key::Env { var, .. } => format!("the key is from {var}"),
            Key::Config(p) => format!("the key is from '{}'", p.display()),
        };
        format!(
            "{whence}: set a valid key (one with access to org '{org}'; create it at {KEY_URL}) in NGC_API_KEY or NGC_CLI_API_KEY (which wins) in the environment or the env-file"
        )
    }
}

fn api_key(env: &DownloadEnv, spec: &NgcSpec) -> Result<Key, DownloadError> {
    for var in ["NGC_CLI_API_KEY", "NGC_API_KEY"] {
        if let Some(v) = env.get(var) {
            return Ok(Key::Env {
                var,
                value: v.trim().to_string(),
            });
        }
    }
    if let Some((path, _)) = config_key(env) {
        return Ok(Key::Config(path));
    }
    Err(DownloadError::Setup(format!(
        "model-path 'ngc:{}' needs an NGC API key: set NGC_API_KEY (or NGC_CLI_API_KEY, which wins) in the environment or in the env-file (a line `export NGC_API_KEY=<your key>`), or save one with `ngc config set`; create a key at {KEY_URL}",
        spec.cli_name()
    )))
}

/// The file and key of `apikey = …` in `$HOME/.ngc/config` (`ngc config set`).
fn config_key(env: &DownloadEnv) -> Option<(PathBuf, String)> {
    let path = Path::new(env.get("HOME")?).join(".ngc").join("config");
    let text = fs::read_to_string(&path).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        let v = v.trim();
        (k.trim() == "apikey" && !v.is_empty() && v != "None")
            .then(|| (path.clone(), v.to_string()))
    })
}

fn find_cli(env: &DownloadEnv, spec: &NgcSpec) -> Result<PathBuf, DownloadError> {
    use std::os::unix::fs::PermissionsExt;
    let path = env.get("PATH").unwrap_or("");
    for d in path.split(':').filter(|d| !d.is_empty()) {
        let p = Path::new(d).join("ngc");
        if let Ok(m) = fs::metadata(&p) {
            if m.is_file() && m.permissions().mode() & 0o111 != 0 {
                return Ok(p);
            }
        }
    }
    Err(DownloadError::Setup(format!(
        "model-path 'ngc:{}' is downloaded with NVIDIA's NGC CLI, and no executable 'ngc' is on PATH; install it: download it from {CLI_URL} (on x86_64: `wget --content-disposition {CLI_ZIP} -O ngccli_linux.zip && unzip ngccli_linux.zip && chmod u+x ngc-cli/ngc`), add its directory to PATH (`export PATH=\"$PATH:$(pwd)/ngc-cli\"`) where the pipeline runs, and run `ngc config set` (or set NGC_API_KEY); or download the model yourself (`ngc registry model download-version '{}'`) and set model-path to its directory",
        spec.cli_name(),
        spec.cli_name()
    )))
}

/// The canonical model directory, checked against `model-root-dir`.
fn finish(dir: &Path, env: &DownloadEnv) -> Result<PathBuf, DownloadError> {
    let c = dir
        .canonicalize()
        .map_err(|e| format!("cannot open the downloaded model '{}': {e}", dir.display()))?;
    if let Some(root) = &env.model_root_dir {
        let root_c = canonical_root(root)?;
        if !c.starts_with(&root_c) {
            return Err(DownloadError::Failed(format!(
                "the NGC model directory '{}' resolves to '{}', outside model-root-dir '{}'; remove the symlink, or fix NGC_MODEL_CACHE / model-root-dir",
                dir.display(),
                c.display(),
                root.display()
            )));
        }
    }
    Ok(c)
}

fn canonical_root(root: &Path) -> Result<PathBuf, DownloadError> {
    root.canonicalize().map_err(|e| {
        DownloadError::Setup(format!(
            "model-root-dir '{}' cannot be opened: {e}; ngc: downloads go under it: create it, fix model-root-dir (or MODEL_ROOT_DIR), or unset it",
            root.display()
        ))
    })
}

fn expand_home(v: &str, env: &DownloadEnv) -> PathBuf {
    match (v.strip_prefix("~/"), env.get("HOME")) {
        (Some(rest), Some(h)) => Path::new(h).join(rest),
        _ => PathBuf::from(v),
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Whether `p` (which need not exist) lies under the canonical `root`: its
/// longest existing ancestor is resolved, and a `..` in the rest counts as
/// outside.
fn resolves_under(p: &Path, root: &Path) -> bool {
    let mut existing = p;
    let mut rest = Vec::new();
    loop {
        if let Ok(c) = existing.canonicalize() {
            if rest
                .iter()
                .any(|c: &Component| !matches!(c, Component::Normal(_)))
            {
                return false;
            }
            let full = rest.iter().rev().fold(c, |acc, c| acc.join(c));
            return full.starts_with(root);
        }
        match (existing.parent(), existing.components().next_back()) {
            (Some(parent), Some(last)) => {
                rest.push(last);
                existing = parent;
            }
            _ => return false,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Marker {
    source: String,
    bytes: u64,
    files: Vec<FileEntry>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Eq)]
struct FileEntry {
    path: String,
    size: u64,
}

/// Whether `dir` holds a complete download: its marker lists at least one
/// file and every listed file has the listed size.
fn is_complete(dir: &Path) -> bool {
    let Ok(text) = fs::read_to_string(dir.join(COMPLETE_MARKER)) else {
        return false;
    };
    let Ok(m) = serde_json::from_str::<Marker>(&text) else {
        return false;
    };
    !m.files.is_empty()
        && m.files.iter().all(|f| {
            !Path::new(&f.path)
                .components()
                .any(|c| !matches!(c, Component::Normal(_)))
                && fs::metadata(dir.join(&f.path))
                    .is_ok_and(|md| md.is_file() && md.len() == f.size)
        })
}

/// Every regular file under `dir` (relative, `/`-separated, sorted), but
/// the marker.
fn list_files(dir: &Path) -> io::Result<Vec<FileEntry>> {
    fn walk(base: &Path, rel: &str, out: &mut Vec<FileEntry>) -> io::Result<()> {
        for e in fs::read_dir(base.join(rel))? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            let r = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let md = fs::symlink_metadata(e.path())?;
            if md.is_dir() {
                walk(base, &r, out)?;
            } else if md.is_file() && r != COMPLETE_MARKER {
                out.push(FileEntry {
                    path: r,
                    size: md.len(),
                });
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, "", &mut out)?;
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// What the regular files under a directory hold: their sizes, and the
/// bytes allocated to them (which grow as a preallocated file is written).
#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
struct Usage {
    bytes: u64,
    blocks: u64,
}

/// [`Usage`] of `p` (zeros when unreadable).
fn dir_usage(p: &Path) -> Usage {
    use std::os::unix::fs::MetadataExt;
    let mut u = Usage::default();
    let Ok(rd) = fs::read_dir(p) else {
        return u;
    };
    for e in rd.flatten() {
        match fs::symlink_metadata(e.path()) {
            Ok(m) if m.is_dir() => {
                let d = dir_usage(&e.path());
                u.bytes += d.bytes;
                u.blocks += d.blocks;
            }
            Ok(m) if m.is_file() => {
                u.bytes += m.len();
                u.blocks += m.blocks().saturating_mul(512);
            }
            _ => {}
        }
    }
    u
}

/// Where the CLI put the model: `<tmp>/<model>_v<version>`, else the path
/// it printed when inside `tmp`, else the one directory in `tmp`.
fn locate(tmp: &Path, spec: &NgcSpec, printed: Option<&str>) -> Result<PathBuf, DownloadError> {
    let expected = tmp.join(format!("{}_v{}", spec.model, spec.version));
    if expected.is_dir() {
        return Ok(expected);
    }
    if let Some(p) = printed.map(Path::new) {
        if p.is_dir() && p.starts_with(tmp) && p != tmp {
            return Ok(p.to_path_buf());
        }
    }
    let dirs: Vec<PathBuf> = fs::read_dir(tmp)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    match dirs.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(DownloadError::Failed(format!(
            "there is no '{}' in '{}' (it holds {} other directories)",
            expected.file_name().unwrap_or_default().to_string_lossy(),
            tmp.display(),
            dirs.len()
        ))),
    }
}

fn remove_any(p: &Path) -> io::Result<()> {
    let md = fs::symlink_metadata(p)?;
    if md.is_dir() {
        fs::remove_dir_all(p)
    } else {
        fs::remove_file(p)
    }
}

/// Removes the temporary directories earlier downloads of `name` left.
fn remove_stale(cache: &Path, name: &str) {
    let prefix = format!(".tmp-{name}-");
    if let Ok(rd) = fs::read_dir(cache) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = remove_any(&e.path());
            }
        }
    }
}

/// An exclusive `flock` on a file, released when dropped.
struct Lock(#[allow(dead_code)] fs::File);

impl Lock {
    fn open(path: &Path) -> io::Result<Lock> {
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        Ok(Lock(f))
    }

    /// Takes the lock when it is free: `Ok(false)` when another holds it.
    fn try_lock(&self) -> io::Result<bool> {
        use std::os::fd::AsRawFd;
        loop {
            // SAFETY: the descriptor is open (owned by `self`) during the call.
            if unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(true);
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EWOULDBLOCK) => return Ok(false),
                Some(libc::EINTR) => {}
                _ => return Err(e),
            }
        }
    }
}

/// Free bytes for unprivileged users on the filesystem of `p`.
#[allow(clippy::unnecessary_cast)]
fn free_bytes(p: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).ok()?;
    let mut s = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is NUL-terminated; statvfs writes `s` when it returns 0.
    if unsafe { libc::statvfs(c.as_ptr(), s.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: initialised by the successful call above.
    let s = unsafe { s.assume_init() };
    Some((s.f_bavail as u64).saturating_mul(s.f_frsize as u64))
}

fn is_disk_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// What ended a [`Proc::wait`].
#[derive(Debug, PartialEq, Eq)]
enum Event {
    /// The CLI exited (not yet reaped: [`Proc::stop`] does that).
    Exited,
    Cancelled,
    /// The time given passed.
    Tick,
}

/// A running CLI in a process group of its own (its id is the CLI's pid),
/// with `PR_SET_PDEATHSIG` = SIGKILL and a guard process in that group (see
/// [`guard`]). A thread waits for its exit without reaping it (`waitid`
/// with `WNOWAIT`), so the group id cannot be reused before [`Proc::stop`]
/// has signalled the group and reaped the CLI. Dropped without `stop`, it
/// stops the CLI the same way.
struct Proc<'r> {
    child: Child,
    pid: libc::pid_t,
    exited: Arc<(AtomicBool, Notify)>,
    waiter: Option<thread::JoinHandle<()>>,
    rt: &'r Runtime,
    status: Option<ExitStatus>,
    /// The write end of the guard's pipe: closed by `stop` (or when this
    /// process dies), which makes the guard kill the group.
    guard: Option<std::os::fd::OwnedFd>,
}

impl<'r> Proc<'r> {
    fn spawn(mut cmd: Command, rt: &'r Runtime) -> io::Result<Proc<'r>> {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        // SAFETY: getpid has no preconditions.
        let parent = unsafe { libc::getpid() };
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded: both are open and owned by nobody else.
        let (read_end, write_end) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let (rfd, wfd) = (read_end.as_raw_fd(), write_end.as_raw_fd());
        cmd.process_group(0);
        // SAFETY: the closure runs between fork and exec and calls only
        // async-signal-safe functions (setpgid, prctl, getppid, getpid,
        // fork, and in the guard close, dup2, read, kill, _exit); it
        // allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setpgid(0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                if libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                // The parent died before the prctl: no signal will come.
                if libc::getppid() != parent {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                let group = libc::getpid();
                match libc::fork() {
                    -1 => Err(io::Error::last_os_error()),
                    0 => guard(group, rfd, wfd),
                    _ => Ok(()),
                }
            });
        }
        let spawned = cmd.spawn();
        drop(read_end);
        let child = spawned?;
        let pid = child.id() as libc::pid_t;
        let exited = Arc::new((AtomicBool::new(false), Notify::new()));
        let flag = exited.clone();
        let waiter = thread::Builder::new()
            .name("ngc-cli-wait".into())
            .spawn(move || {
                crate::process::wait_exited(pid as u32);
                flag.0.store(true, Ordering::SeqCst);
                flag.1.notify_one();
            });
        let mut p = Proc {
            child,
            pid,
            exited,
            waiter: None,
            rt,
            status: None,
            guard: Some(write_end),
        };
        match waiter {
            Ok(w) => p.waiter = Some(w),
            Err(e) => {
                // No waiter: kill and reap directly.
                kill_group(pid, libc::SIGKILL);
                p.guard = None;
                let _ = p.child.wait();
                p.status = Some(ExitStatus::from_raw(0));
                return Err(e);
            }
        }
        Ok(p)
    }

    fn has_exited(&self) -> bool {
        self.exited.0.load(Ordering::SeqCst)
    }

    /// Waits until the CLI exits, `cancel` is cancelled or `until`.
    fn wait(&self, cancel: &CancellationToken, until: Instant) -> Event {
        if self.has_exited() {
            return Event::Exited;
        }
        if cancel.is_cancelled() {
            return Event::Cancelled;
        }
        let left = until.saturating_duration_since(Instant::now());
        self.rt.block_on(async {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => Event::Cancelled,
                _ = self.exited.1.notified() => Event::Exited,
                _ = tokio::time::sleep(left) => Event::Tick,
            }
        })
    }

    /// Waits up to `limit` for the CLI to exit.
    fn exits_within(&self, limit: Duration) -> bool {
        if self.has_exited() {
            return true;
        }
        self.rt.block_on(async {
            tokio::time::timeout(limit, self.exited.1.notified())
                .await
                .is_ok()
        }) || self.has_exited()
    }

    /// Ends the CLI and its process group: SIGTERM to the group while the
    /// CLI runs, SIGKILL after [`TERM_GRACE`], then SIGKILL to whatever is
    /// left in the group; reaps the CLI and returns its exit status.
    fn stop(&mut self) -> ExitStatus {
        if let Some(st) = self.status {
            return st;
        }
        if !self.has_exited() {
            kill_group(self.pid, libc::SIGTERM);
            if !self.exits_within(TERM_GRACE) {
                kill_group(self.pid, libc::SIGKILL);
                while !self.exits_within(POLL) {}
            }
        }
        // The CLI is a zombie until reaped below, so the group id is still
        // its: processes it started and left behind are killed.
        kill_group(self.pid, libc::SIGKILL);
        self.guard = None;
        if let Some(w) = self.waiter.take() {
            let _ = w.join();
        }
        let st = self.child.wait().unwrap_or(ExitStatus::from_raw(0));
        self.status = Some(st);
        st
    }
}

impl Drop for Proc<'_> {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The guard, forked by the CLI's process before it runs the CLI, so a
/// member of the CLI's process group `group`: it keeps only the read end of
/// a pipe whose write end this process holds (every other descriptor is
/// closed), and when that reads end-of-file (this process closed it, or
/// died, however) it SIGKILLs the group, itself included. Only
/// async-signal-safe calls: it runs in a fork of a multi-threaded process.
unsafe fn guard(group: libc::pid_t, rfd: libc::c_int, wfd: libc::c_int) -> ! {
    // SAFETY (all calls): plain system calls on descriptors of this
    // process; nothing is allocated and no lock is taken.
    unsafe {
        libc::close(wfd);
        if libc::dup2(rfd, 0) == 0 {
            if libc::syscall(libc::SYS_close_range, 1u32, u32::MAX, 0u32) != 0 {
                for fd in 1..4096 {
                    libc::close(fd);
                }
            }
            let mut b = 0u8;
            while libc::read(0, (&mut b as *mut u8).cast(), 1) != 0
                && *libc::__errno_location() == libc::EINTR
            {}
        }
        libc::kill(-group, libc::SIGKILL);
        libc::_exit(0)
    }
}

fn kill_group(pid: libc::pid_t, sig: libc::c_int) {
    if pid > 1 {
        // SAFETY: kill has no memory-safety preconditions; a negative pid
        // names the process group.
        unsafe {
            libc::kill(-pid, sig);
        }
    }
}

/// Waits (at most [`READER_GRACE`] each) for `n` readers of the CLI's
/// output to reach the end of their pipe.
fn wait_readers(rx: &mpsc::Receiver<()>, n: usize) {
    for _ in 0..n {
        if rx.recv_timeout(READER_GRACE).is_err() {
            return;
        }
    }
}

fn find_number(v: &serde_json::Value, key: &str) -> Option<u64> {
    match v {
        serde_json::Value::Object(m) => m
            .get(key)
            .and_then(|n| n.as_u64().or_else(|| n.as_str()?.trim().parse().ok()))
            .or_else(|| m.values().find_map(|x| find_number(x, key))),
        serde_json::Value::Array(a) => a.iter().find_map(|x| find_number(x, key)),
        _ => None,
    }
}

fn describe(st: ExitStatus, status_failed: bool) -> String {
    if st.success() && status_failed {
        "reported the download failed (exit status 0)".into()
    } else if let Some(c) = st.code() {
        format!("exited with status {c}")
    } else if let Some(s) = st.signal() {
        format!("was killed by signal {s}")
    } else {
        format!("failed ({st})")
    }
}

/// `text` with every secret replaced by `***`.
fn scrub(text: &str, secrets: &[String]) -> String {
    let mut t = text.to_string();
    let mut s: Vec<&String> = secrets.iter().filter(|s| !s.is_empty()).collect();
    s.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for k in s {
        t = t.replace(k.as_str(), "***");
    }
    t
}

fn human(b: u64) -> String {
    const U: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < U.len() {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

/// What the CLI printed (kept bounded).
#[derive(Default)]
struct Output {
    out: VecDeque<String>,
    err: VecDeque<String>,
    done: Option<u64>,
    total: Option<u64>,
    status_failed: bool,
    local_path: Option<String>,
}

const KEEP_LINES: usize = 200;

impl Output {
    fn line(&mut self, raw: &[u8], is_err: bool) {
        let text = strip_ansi(&String::from_utf8_lossy(raw));
        let line = text.trim();
        if line.is_empty() {
            return;
        }
        let (done, total) = parse_progress(line);
        if done.is_some() || total.is_some() {
            self.done = self.done.max(done);
            if total.is_some() {
                self.total = total;
            }
            return;
        }
        if line.chars().all(|c| matches!(c, '-' | '=' | '━' | '─')) {
            return; // a rule
        }
        let lower = line.to_ascii_lowercase();
        if let Some(i) = lower.find("download status:") {
            self.status_failed = !lower[i..].contains("complete");
        }
        if lower.contains("downloaded local path") {
            if let Some((_, p)) = line.split_once(": ") {
                self.local_path = Some(p.trim().to_string());
            }
        }
        let q = if is_err { &mut self.err } else { &mut self.out };
        if q.len() == KEEP_LINES {
            q.pop_front();
        }
        q.push_back(line.to_string());
    }

    /// Non-progress lines of both streams.
    fn notable(&self) -> Vec<String> {
        self.out.iter().chain(self.err.iter()).cloned().collect()
    }

    /// The last lines of stderr (or of stdout, when stderr is empty or
    /// `prefer_err` is false and stdout is not), joined.
    fn tail(&self, prefer_err: bool) -> String {
        let q = if (prefer_err && !self.err.is_empty()) || self.out.is_empty() {
            &self.err
        } else {
            &self.out
        };
        if q.is_empty() {
            return "(nothing)".into();
        }
        let skip = q.len().saturating_sub(TAIL_LINES);
        q.iter().skip(skip).cloned().collect::<Vec<_>>().join(" | ")
    }
}

fn spawn_reader<R: Read + Send + 'static>(
    r: Option<R>,
    is_err: bool,
    shared: Arc<Mutex<Output>>,
    done: mpsc::Sender<()>,
) -> Option<thread::JoinHandle<()>> {
    let mut r = r?;
    Some(thread::spawn(move || {
        let mut buf = [0u8; 8192];
        let mut line = Vec::new();
        loop {
            let n = match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            for &b in &buf[..n] {
                if b == b'\n' || b == b'\r' {
                    shared.lock().unwrap().line(&line, is_err);
                    line.clear();
                } else if line.len() < 1000 {
                    line.push(b);
                }
            }
        }
        shared.lock().unwrap().line(&line, is_err);
        let _ = done.send(());
    }))
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\u{1b}' {
            if it.peek() == Some(&'[') {
                it.next();
                for d in it.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn unit_bytes(u: &str) -> Option<f64> {
    Some(match u.to_ascii_lowercase().as_str() {
        "b" | "bytes" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    })
}

/// Bytes done and total from one line of the CLI's output, as far as it
/// says: `1.2/15.4 GiB` or `1.2 GB/15.4 GB` (its progress bar), `Downloaded
/// 85.32 MB in …` and `Total downloaded size: 85.32 MB` (its summary).
fn parse_progress(line: &str) -> (Option<u64>, Option<u64>) {
    let spaced = line.replace('/', " / ");
    let toks: Vec<&str> = spaced
        .split(|c: char| c.is_whitespace() || matches!(c, '•' | '|' | ',' | '(' | ')'))
        .filter(|t| !t.is_empty())
        .collect();
    let num = |t: &str| t.parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0);
    let bytes = |v: f64, u: f64| (v * u).round() as u64;
    for i in 0..toks.len() {
        // A [UNIT] / B UNIT
        let Some(a) = num(toks[i]) else { continue };
        let (a_unit, j) = match toks.get(i + 1).and_then(|u| unit_bytes(u)) {
            Some(u) => (Some(u), i + 2),
            None => (None, i + 1),
        };
        if toks.get(j) == Some(&"/") {
            if let (Some(b), Some(bu)) = (
                toks.get(j + 1).and_then(|t| num(t)),
                toks.get(j + 2).and_then(|u| unit_bytes(u)),
            ) {
                return (Some(bytes(a, a_unit.unwrap_or(bu))), Some(bytes(b, bu)));
            }
        }
        // "Downloaded A UNIT" / "size: A UNIT"
        if let Some(u) = a_unit {
            let prev = i
                .checked_sub(1)
                .map(|p| toks[p].to_ascii_lowercase())
                .unwrap_or_default();
            if prev == "downloaded" || prev == "size:" {
                return (Some(bytes(a, u)), None);
            }
        }
    }
    (None, None)
}

#[derive(Debug, PartialEq, Eq)]
enum Failure {
    DiskFull,
    Auth,
    NotFound,
    Other,
}

fn classify(lines: &[String]) -> Failure {
    let all = lines.join("\n").to_ascii_lowercase();
    let any = |ps: &[&str]| ps.iter().any(|p| all.contains(p));
    // An HTTP status code on a line that looks like an error report.
    let code = |c: &str| {
        lines.iter().any(|l| {
            let l = l.to_ascii_lowercase();
            ["error", "status", "response", "http"]
                .iter()
                .any(|w| l.contains(w))
                && l.match_indices(c).any(|(i, _)| {
                    let before = l[..i].chars().next_back();
                    let after = l[i + c.len()..].chars().next();
                    !before.is_some_and(|b| b.is_ascii_digit() || b == '.')
                        && !after.is_some_and(|a| a.is_ascii_digit() || a == '.')
                })
        })
    };
    if any(&[
        "no space left",
        "errno 28",
        "enospc",
        "disk full",
        "disk quota exceeded",
        "not enough space",
        "not enough disk space",
        "insufficient disk",
        "insufficient storage",
    ]) {
        Failure::DiskFull
    } else if any(&[
        "not authenticated",
        "unauthorized",
        "unauthenticated",
        "authenticat",
        "invalid apikey",
        "invalid api key",
        "api key is invalid",
        "missing api key",
        "forbidden",
        "access denied",
    ]) || code("401")
        || code("403")
    {
        Failure::Auth
    } else if any(&[
        "could not be found",
        "not found",
        "does not exist",
        "no such model",
    ]) || code("404")
    {
        Failure::NotFound
    } else {
        Failure::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn spec(org: &str, team: Option<&str>, model: &str, version: &str) -> NgcSpec {
        NgcSpec {
            org: org.into(),
            team: team.map(Into::into),
            model: model.into(),
            version: version.into(),
        }
    }

    #[test]
    fn parses_the_seed_page_path() {
        let s = parse("nim/nvidia/cosmos-reason1-7b:1.1-fp8-dynamic").unwrap();
        assert_eq!(
            s,
            spec(
                "nim",
                Some("nvidia"),
                "cosmos-reason1-7b",
                "1.1-fp8-dynamic"
            )
        );
        assert_eq!(s.cli_name(), "nim/nvidia/cosmos-reason1-7b:1.1-fp8-dynamic");
        assert_eq!(
            s.cache_dir_name(),
            "nim_nvidia_cosmos-reason1-7b_1.1-fp8-dynamic"
        );
        assert_eq!(
            super::super::parse_model_path(EXAMPLE).unwrap(),
            super::super::ModelSource::Ngc(s)
        );
    }

    #[test]
    fn parses_two_parts_and_no_team() {
        let s = parse("nvidia/tlt_peoplenet:unpruned_v2.1").unwrap();
        assert_eq!(s, spec("nvidia", None, "tlt_peoplenet", "unpruned_v2.1"));
        assert_eq!(s.cli_name(), "nvidia/tlt_peoplenet:unpruned_v2.1");
        assert_eq!(
            s.cache_dir_name(),
            "nvidia_no-team_tlt_peoplenet_unpruned_v2.1"
        );
        assert_eq!(s.team_or_default(), "no-team");
        assert_eq!(
            parse("nvidia/no-team/tlt_peoplenet:unpruned_v2.1").unwrap(),
            s
        );
        assert_eq!(parse("  nvidia/tlt_peoplenet:unpruned_v2.1 \n").unwrap(), s);
    }

    #[test]
    fn parse_errors_show_the_expected_form() {
        for (input, why) in [
            ("", "nothing after 'ngc:'"),
            ("nim/nvidia/cosmos-reason1-7b", "no ':VERSION'"),
            (
                "nim/nvidia/cosmos-reason1-7b",
                "ngc registry model list 'nim/nvidia/cosmos-reason1-7b:*'",
            ),
            ("cosmos:1.1", "1 '/'-separated parts"),
            ("a/b/c/d:1", "4 '/'-separated parts"),
            ("nim//cosmos:1", "TEAM is empty"),
            ("nim/nvidia/cosmos:", "VERSION is empty"),
            ("/nvidia/cosmos:1", "ORG is empty"),
            ("nim/nvidia/..:1", "MODEL '..' starts with '.'"),
            ("nim/nvidia/cos mos:1", "contains ' '"),
            ("nim/nvidia/cosmos:1:2", "MODEL 'cosmos:1' contains ':'"),
            ("//nim/nvidia/cosmos:1", "no '//'"),
        ] {
            let e = parse(input).unwrap_err().to_string();
            assert!(e.contains(why), "{input:?}: {e}");
            assert!(
                e.contains("expected ngc:ORG/TEAM/MODEL:VERSION or ngc:ORG/MODEL:VERSION")
                    && e.contains(EXAMPLE),
                "{e}"
            );
            assert!(e.starts_with(&format!("model-path 'ngc:{input}'")), "{e}");
        }
    }

    fn env(vars: &[(&str, &str)], root: Option<&Path>) -> DownloadEnv {
        DownloadEnv {
            vars: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>(),
            model_root_dir: root.map(Path::to_path_buf),
        }
    }

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("vss-ngc-unit-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d.canonicalize().unwrap()
    }

    #[test]
    fn cache_root_rules() {
        assert_eq!(
            cache_root(&env(&[("HOME", "/home/u")], None)).unwrap(),
            PathBuf::from("/home/u/.via/ngc_model_cache")
        );
        assert_eq!(
            cache_root(&env(
                &[("HOME", "/home/u"), ("NGC_MODEL_CACHE", "/data/c")],
                None
            ))
            .unwrap(),
            PathBuf::from("/data/c")
        );
        assert_eq!(
            cache_root(&env(
                &[("HOME", "/home/u"), ("NGC_MODEL_CACHE", "~/c")],
                None
            ))
            .unwrap(),
            PathBuf::from("/home/u/c")
        );
        // Empty counts as unset.
        assert_eq!(
            cache_root(&env(&[("HOME", "/h"), ("NGC_MODEL_CACHE", " ")], None)).unwrap(),
            PathBuf::from("/h/.via/ngc_model_cache")
        );
        let e = cache_root(&env(&[], None)).unwrap_err().to_string();
        assert!(e.contains("NGC_MODEL_CACHE") && e.contains("HOME"), "{e}");

        let root = scratch("root");
        let r = Some(root.as_path());
        let inside = root.join("a/b");
        let s = inside.to_str().unwrap();
        assert_eq!(
            cache_root(&env(&[("NGC_MODEL_CACHE", s)], r)).unwrap(),
            inside
        );
        assert_eq!(
            cache_root(&env(&[("NGC_MODEL_CACHE", "/elsewhere")], r)).unwrap(),
            root.join("ngc_model_cache")
        );
        let sneaky = format!("{}/x/../../etc", root.display());
        assert_eq!(
            cache_root(&env(&[("NGC_MODEL_CACHE", &sneaky)], r)).unwrap(),
            root.join("ngc_model_cache")
        );
        assert_eq!(
            cache_root(&env(&[("HOME", "/h")], r)).unwrap(),
            root.join("ngc_model_cache")
        );
        let missing = root.join("missing");
        let e = cache_root(&env(&[], Some(&missing)))
            .unwrap_err()
            .to_string();
        assert!(e.contains("model-root-dir") && e.contains("missing"), "{e}");
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn completion_marker() {
        let d = scratch("marker");
        fs::create_dir_all(d.join("sub")).unwrap();
        fs::write(d.join("config.json"), b"{}").unwrap();
        fs::write(d.join("sub/w.bin"), b"12345").unwrap();
        assert!(!is_complete(&d));
        let files = list_files(&d).unwrap();
        assert_eq!(
            files,
            vec![
                FileEntry {
                    path: "config.json".into(),
                    size: 2
                },
                FileEntry {
                    path: "sub/w.bin".into(),
                    size: 5
                },
            ]
        );
        let m = Marker {
            source: "ngc:x".into(),
            bytes: 7,
            files,
        };
        fs::write(d.join(COMPLETE_MARKER), serde_json::to_string(&m).unwrap()).unwrap();
        assert!(is_complete(&d));
        assert_eq!(list_files(&d).unwrap().len(), 2, "the marker is not listed");
        assert_eq!(
            dir_usage(&d).bytes,
            7 + fs::metadata(d.join(COMPLETE_MARKER)).unwrap().len()
        );
        fs::write(d.join("sub/w.bin"), b"1234").unwrap();
        assert!(!is_complete(&d), "a truncated file");
        fs::remove_file(d.join("sub/w.bin")).unwrap();
        assert!(!is_complete(&d), "a missing file");
        fs::write(
            d.join(COMPLETE_MARKER),
            "{\"source\":\"x\",\"bytes\":0,\"files\":[]}",
        )
        .unwrap();
        assert!(!is_complete(&d), "no files");
        fs::write(d.join(COMPLETE_MARKER), "garbage").unwrap();
        assert!(!is_complete(&d));
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn progress_lines() {
        let gib = 1024.0f64.powi(3);
        assert_eq!(
            parse_progress("⠙ ━━━━━━━━━━ • 1.2/15.4 GiB • Remaining: 0:05:12 • 45.3 MB/s • Elapsed: 0:00:30 • Total: 12 - Completed: 2 - Failed: 0"),
            (Some((1.2 * gib).round() as u64), Some((15.4 * gib).round() as u64))
        );
        assert_eq!(
            parse_progress("12.5 MB/100 MB"),
            (Some(12_500_000), Some(100_000_000))
        );
        assert_eq!(parse_progress("3/10 KiB"), (Some(3072), Some(10240)));
        assert_eq!(
            parse_progress("Downloaded 85.32 MB in 4m 29s, Download speed: 324.34 KB/s"),
            (Some(85_320_000), None)
        );
        assert_eq!(
            parse_progress("Total downloaded size: 85.32 MB"),
            (Some(85_320_000), None)
        );
        assert_eq!(parse_progress("Total: 12 - Completed: 2"), (None, None));
        assert_eq!(
            parse_progress("Error: 'a/b/c:1' could not be found."),
            (None, None)
        );
        assert_eq!(
            parse_progress("Started at: 2021-02-22 06:48:01"),
            (None, None)
        );
        assert_eq!(strip_ansi("\u{1b}[32m50/100 MB\u{1b}[0m"), "50/100 MB");
    }

    #[test]
    fn output_lines() {
        let mut o = Output::default();
        o.line(b"\x1b[1m 1/4 MiB \x1b[0m", false);
        o.line(b"Download status: FAILED", false);
        o.line(b"Downloaded local path model: /tmp/x/m_v1", false);
        o.line(b"   ", true);
        o.line(b"------------", true);
        o.line(b"Error: boom", true);
        assert_eq!((o.done, o.total), (Some(1 << 20), Some(4 << 20)));
        assert!(o.status_failed);
        assert_eq!(o.local_path.as_deref(), Some("/tmp/x/m_v1"));
        assert_eq!(o.tail(true), "Error: boom");
        assert_eq!(
            o.tail(false),
            "Download status: FAILED | Downloaded local path model: /tmp/x/m_v1"
        );
        let mut o = Output::default();
        o.line(b"Download status: COMPLETED", false);
        assert!(!o.status_failed);
        assert_eq!(o.tail(true), "Download status: COMPLETED");
        assert_eq!(Output::default().tail(true), "(nothing)");
    }

    #[test]
    fn failures_classified() {
        let c = |s: &str| classify(&s.lines().map(String::from).collect::<Vec<_>>());
        assert_eq!(
            c("OSError: [Errno 28] No space left on device"),
            Failure::DiskFull
        );
        assert_eq!(c("Error: Invalid apikey"), Failure::Auth);
        assert_eq!(
            c("Error: Missing API key and missing Email Authentication."),
            Failure::Auth
        );
        assert_eq!(c("Client Error: 401 Response: Unauthorized"), Failure::Auth);
        assert_eq!(c("Error: HTTP status 403"), Failure::Auth);
        assert_eq!(
            c("Error: 'nim/nvidia/x:1' could not be found."),
            Failure::NotFound
        );
        assert_eq!(c("Error: response status 404"), Failure::NotFound);
        assert_eq!(c("Downloaded 401 MB"), Failure::Other);
        assert_eq!(c("Error: got 4010 bytes"), Failure::Other);
        assert_eq!(c("RuntimeError: boom"), Failure::Other);
    }

    #[test]
    fn scrubbing_and_sizes() {
        let keys = vec![
            "sekrit".to_string(),
            String::new(),
            "sekrit-long".to_string(),
        ];
        assert_eq!(scrub("a sekrit-long b sekrit", &keys), "a *** b ***");
        assert_eq!(human(999), "999 B");
        assert_eq!(human(15_400_000_000), "15.4 GB");
        let v: serde_json::Value =
            serde_json::from_str(r#"{"model":{"x":1},"modelVersion":{"totalSizeInBytes":"42"}}"#)
                .unwrap();
        assert_eq!(find_number(&v, "totalSizeInBytes"), Some(42));
    }
}
