// SPDX-License-Identifier: MPL-2.0
//! `ngc:` model paths against a fake NGC CLI (`tests/ngc/ngc`, a shell
//! script put first on the `PATH` of the `DownloadEnv`): the arguments and
//! environment it gets, where the model lands, reuse, redoing half-finished
//! downloads, each failure's message, progress and `model-root-dir`.
//! Nothing is downloaded from the network.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

mod common;
use common::procs::{alive, fake_pids};

use gstvsssummarize::download::{
    self, ngc, CancellationToken, DownloadEnv, ModelSource, NgcSpec, Progress,
};

const FAKE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ngc");
const TINY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/qwen/tiny");
const KEY: &str = "nvapi-TEST-KEY-0123456789";
const NAME: &str = "nim/nvidia/cosmos-reason1-7b:1.1-fp8-dynamic";
const DIR_NAME: &str = "nim_nvidia_cosmos-reason1-7b_1.1-fp8-dynamic";

struct Case {
    dir: PathBuf,
    env: DownloadEnv,
    /// Removes `dir` when the case ends.
    _tmp: tempfile::TempDir,
}

#[derive(Debug)]
struct Call {
    args: Vec<String>,
    env: HashMap<String, String>,
}

fn case(name: &str) -> Case {
    use std::os::unix::fs::PermissionsExt;
    let fake = Path::new(FAKE_DIR).join("ngc");
    let mode = fs::metadata(&fake).unwrap().permissions().mode();
    if mode & 0o111 == 0 {
        fs::set_permissions(&fake, fs::Permissions::from_mode(mode | 0o755)).unwrap();
    }
    let tmp = tempfile::Builder::new()
        .prefix(&format!("download_ngc-{name}-"))
        .tempdir()
        .unwrap();
    fs::create_dir_all(tmp.path().join("home")).unwrap();
    let dir = tmp.path().canonicalize().unwrap();
    let mut c = Case {
        env: DownloadEnv::default(),
        dir: dir.clone(),
        _tmp: tmp,
    };
    c.set("PATH", &format!("{FAKE_DIR}:/usr/bin:/bin"));
    c.set("HOME", dir.join("home").to_str().unwrap());
    c.set("NGC_MODEL_CACHE", dir.join("cache").to_str().unwrap());
    c.set("NGC_API_KEY", KEY);
    c.set("FAKE_NGC_LOG", dir.join("calls.log").to_str().unwrap());
    c.set("FAKE_NGC_SRC", TINY);
    c
}

impl Case {
    fn set(&mut self, k: &str, v: &str) {
        self.env.vars.insert(k.into(), v.into());
    }

    fn unset(&mut self, k: &str) {
        self.env.vars.remove(k);
    }

    fn cache(&self) -> PathBuf {
        self.dir.join("cache")
    }

    fn calls(&self) -> Vec<Call> {
        let text = fs::read_to_string(self.dir.join("calls.log")).unwrap_or_default();
        let mut calls = Vec::new();
        let mut cur: Option<Call> = None;
        for l in text.lines() {
            if l == "call" {
                cur = Some(Call {
                    args: vec![],
                    env: HashMap::new(),
                });
            } else if l == "end" {
                calls.push(cur.take().unwrap());
            } else if let Some(a) = l.strip_prefix("arg ") {
                cur.as_mut().unwrap().args.push(a.into());
            } else if let Some((k, v)) = l.strip_prefix("env ").and_then(|e| e.split_once('=')) {
                cur.as_mut().unwrap().env.insert(k.into(), v.into());
            }
        }
        calls
    }

    fn downloads(&self) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.args.get(2).map(String::as_str) == Some("download-version"))
            .collect()
    }

    fn fetch_spec(&self, spec: &NgcSpec) -> (Result<PathBuf, String>, Vec<Progress>) {
        let seen = Mutex::new(Vec::new());
        let r = ngc::fetch(spec, &self.env, &|p: &Progress| {
            seen.lock().unwrap().push(p.clone())
        })
        .map_err(|e| e.to_string());
        (r, seen.into_inner().unwrap())
    }

    fn fetch(&self) -> Result<PathBuf, String> {
        self.fetch_spec(&seed()).0
    }

    fn fetch_err(&self) -> String {
        let e = self.fetch().expect_err("the download should fail");
        assert!(!e.contains(KEY), "the key leaked: {e}");
        eprintln!("{e}");
        e
    }

    /// Names in the cache directory other than the lock files.
    fn cache_entries(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.cache())
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.ends_with(".lock"))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

fn seed() -> NgcSpec {
    ngc::parse(NAME).unwrap()
}

fn tiny_files() -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = fs::read_dir(TINY)
        .unwrap()
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

fn tiny_bytes() -> u64 {
    tiny_files().iter().map(|(_, b)| b.len() as u64).sum()
}

/// The model directory holds exactly tiny's files plus the marker.
fn assert_is_tiny(dir: &Path) {
    for (name, bytes) in tiny_files() {
        assert_eq!(fs::read(dir.join(&name)).unwrap(), bytes, "{name}");
    }
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut want: Vec<String> = tiny_files().into_iter().map(|(n, _)| n).collect();
    want.push(ngc::COMPLETE_MARKER.into());
    want.sort();
    assert_eq!(names, want);
    let marker: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.join(ngc::COMPLETE_MARKER)).unwrap()).unwrap();
    assert_eq!(marker["source"], format!("ngc:{NAME}"));
    assert_eq!(
        marker["files"].as_array().unwrap().len(),
        tiny_files().len()
    );
    assert_eq!(marker["bytes"], tiny_bytes());
}

#[test]
fn downloads_with_the_cli_key_by_environment_only() {
    let c = case("basic");
    let got = c.fetch().unwrap();
    assert_eq!(got, c.cache().join(DIR_NAME));
    assert_is_tiny(&got);

    let calls = c.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0].args, ["registry", "model", "info", NAME]);
    assert_eq!(calls[0].env["NGC_CLI_FORMAT_TYPE"], "json");
    let d = &calls[1];
    assert_eq!(
        d.args[..5],
        ["registry", "model", "download-version", NAME, "--dest"]
    );
    assert_eq!(d.args.len(), 6);
    let dest = Path::new(&d.args[5]);
    assert_eq!(dest.parent(), Some(c.cache().as_path()), "{dest:?}");
    assert!(
        dest.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(&format!(".tmp-{DIR_NAME}-")),
        "{dest:?}"
    );
    for call in &calls {
        assert!(
            call.args.iter().all(|a| !a.contains(KEY)),
            "key in argv: {call:?}"
        );
        assert_eq!(call.env["NGC_CLI_API_KEY"], KEY);
        assert_eq!(call.env["NGC_CLI_ORG"], "nim");
        assert_eq!(call.env["NGC_CLI_TEAM"], "nvidia");
    }
    assert_eq!(d.env["NGC_CLI_FORMAT_TYPE"], "ascii");
    // The temporary directory is gone.
    assert_eq!(c.cache_entries(), [DIR_NAME]);
}

#[test]
fn resolve_goes_through_ngc() {
    let c = case("resolve");
    let src = download::parse_model_path(&format!("ngc:{NAME}")).unwrap();
    assert_eq!(src, ModelSource::Ngc(seed()));
    let got = download::resolve(&src, &c.env, &|_: &Progress| {}).unwrap();
    assert_eq!(got, c.cache().join(DIR_NAME));
}

#[test]
fn ngc_cli_api_key_wins_over_ngc_api_key() {
    let mut c = case("cli-key-wins");
    c.set("NGC_CLI_API_KEY", "nvapi-OTHER-KEY");
    c.fetch().unwrap();
    let d = c.downloads();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].env["NGC_CLI_API_KEY"], "nvapi-OTHER-KEY");
    // Only NGC_CLI_API_KEY set works too.
    let mut c = case("cli-key-only");
    c.unset("NGC_API_KEY");
    c.set("NGC_CLI_API_KEY", KEY);
    c.fetch().unwrap();
    assert_eq!(c.downloads()[0].env["NGC_CLI_API_KEY"], KEY);
}

#[test]
fn two_part_name_is_team_no_team() {
    let c = case("no-team");
    let spec = ngc::parse("nvidia/tlt_peoplenet:unpruned_v2.1").unwrap();
    assert_eq!(spec.team, None);
    let (r, _) = c.fetch_spec(&spec);
    let got = r.unwrap();
    assert_eq!(
        got,
        c.cache().join("nvidia_no-team_tlt_peoplenet_unpruned_v2.1")
    );
    let d = c.downloads();
    assert_eq!(d[0].args[3], "nvidia/tlt_peoplenet:unpruned_v2.1");
    assert_eq!(d[0].env["NGC_CLI_ORG"], "nvidia");
    assert_eq!(d[0].env["NGC_CLI_TEAM"], "no-team");
}

#[test]
fn default_cache_is_vss_s_under_home() {
    let mut c = case("default-cache");
    c.unset("NGC_MODEL_CACHE");
    let got = c.fetch().unwrap();
    assert_eq!(got, c.dir.join("home/.via/ngc_model_cache").join(DIR_NAME));
    assert_eq!(
        ngc::model_dir(&seed(), &c.env).unwrap(),
        c.dir.join("home/.via/ngc_model_cache").join(DIR_NAME)
    );
    assert_is_tiny(&got);
}

#[test]
fn complete_download_is_reused_without_cli_or_key() {
    let mut c = case("reuse");
    let first = c.fetch().unwrap();
    let n = c.calls().len();
    assert_eq!(c.fetch().unwrap(), first);
    assert_eq!(c.calls().len(), n, "the CLI ran again");
    // Neither the CLI nor a key is needed for a complete download.
    c.set("PATH", "/nonexistent");
    c.unset("NGC_API_KEY");
    let (r, progress) = c.fetch_spec(&seed());
    assert_eq!(r.unwrap(), first);
    assert!(progress.is_empty());
    assert_eq!(c.calls().len(), n);
}

#[test]
fn half_finished_dir_is_redone() {
    let c = case("half-finished");
    let dir = c.cache().join(DIR_NAME);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("config.json"), b"{\"partial\": tru").unwrap();
    fs::write(dir.join("junk.part"), b"xx").unwrap();
    // A temporary directory a killed download left behind.
    let stale = c.cache().join(format!(".tmp-{DIR_NAME}-999999"));
    fs::create_dir_all(stale.join("x")).unwrap();
    let got = c.fetch().unwrap();
    assert_eq!(c.downloads().len(), 1);
    assert_is_tiny(&got);
    assert!(!stale.exists());
    assert_eq!(c.cache_entries(), [DIR_NAME]);

    // A complete download whose file was truncated afterwards is redone too.
    fs::write(got.join("model.safetensors"), b"short").unwrap();
    let got = c.fetch().unwrap();
    assert_eq!(c.downloads().len(), 2);
    assert_is_tiny(&got);
}

#[test]
fn crash_mid_download_leaves_nothing_and_the_next_fetch_redoes_it() {
    let mut c = case("crash");
    c.set("FAKE_NGC_MODE", "crash");
    let e = c.fetch_err();
    assert!(e.contains("failed: it was killed by signal 9"), "{e}");
    assert!(e.contains(&format!("ngc:{NAME}")), "{e}");
    assert_eq!(
        c.cache_entries(),
        Vec::<String>::new(),
        "partial download left"
    );
    c.unset("FAKE_NGC_MODE");
    let got = c.fetch().unwrap();
    assert_is_tiny(&got);
    assert_eq!(c.downloads().len(), 2);
}

#[test]
fn missing_cli_says_how_to_install_it() {
    let mut c = case("no-cli");
    fs::create_dir_all(c.dir.join("emptybin")).unwrap();
    let p = format!("{}:/nonexistent", c.dir.join("emptybin").display());
    c.set("PATH", &p);
    let e = c.fetch_err();
    for want in [
        "no executable 'ngc' is on PATH",
        "https://ngc.nvidia.com/setup/installers/cli",
        "unzip ngccli_linux.zip",
        "export PATH=\"$PATH:$(pwd)/ngc-cli\"",
        "ngc config set",
        &format!("ngc registry model download-version '{NAME}'"),
    ] {
        assert!(e.contains(want), "no {want:?} in {e}");
    }
    assert!(c.calls().is_empty());
    // The process's PATH is not used.
    c.unset("PATH");
    assert!(c.fetch_err().contains("no executable 'ngc' is on PATH"));
}

#[test]
fn no_key_names_the_variables_and_the_env_file() {
    let mut c = case("no-key");
    c.unset("NGC_API_KEY");
    c.set("NGC_CLI_API_KEY", "  ");
    let e = c.fetch_err();
    for want in [
        "NGC_API_KEY",
        "NGC_CLI_API_KEY",
        "env-file",
        "ngc config set",
        &format!("ngc:{NAME}"),
    ] {
        assert!(e.contains(want), "no {want:?} in {e}");
    }
    assert!(c.calls().is_empty(), "the CLI ran without a key");
}

#[test]
fn key_saved_by_ngc_config_set_is_left_to_the_cli() {
    let mut c = case("config-key");
    c.unset("NGC_API_KEY");
    fs::create_dir_all(c.dir.join("home/.ngc")).unwrap();
    fs::write(
        c.dir.join("home/.ngc/config"),
        "[CURRENT]\napikey = nvapi-CONFIG-KEY\nformat_type = ascii\norg = nim\n",
    )
    .unwrap();
    c.fetch().unwrap();
    let d = c.downloads();
    assert_eq!(d[0].env["NGC_CLI_API_KEY"], "UNSET");
    assert_eq!(d[0].env["NGC_API_KEY"], "UNSET");
    // A refused config key is scrubbed from the message too.
    let mut c2 = case("config-key-refused");
    c2.unset("NGC_API_KEY");
    fs::create_dir_all(c2.dir.join("home/.ngc")).unwrap();
    fs::write(
        c2.dir.join("home/.ngc/config"),
        "apikey = nvapi-CONFIG-KEY\n",
    )
    .unwrap();
    c2.set("FAKE_NGC_MODE", "fail");
    c2.set("NGC_CLI_API_KEY", "");
    c2.set("FAKE_NGC_ECHO", "nvapi-CONFIG-KEY");
    let e = c2.fetch_err();
    assert!(
        e.contains("boom (key ***)") && !e.contains("nvapi-CONFIG-KEY"),
        "{e}"
    );
}

#[test]
fn bad_key_says_to_fix_the_key() {
    let mut c = case("bad-key");
    c.set("FAKE_NGC_MODE", "auth");
    let e = c.fetch_err();
    for want in [
        "NGC refused the API key",
        "the key is from NGC_API_KEY",
        "NGC_CLI_API_KEY",
        "env-file",
        "org 'nim'",
        "401 Unauthorized",
        "'***'",
    ] {
        assert!(e.contains(want), "no {want:?} in {e}");
    }
    assert_eq!(c.cache_entries(), Vec::<String>::new());
}

#[test]
fn missing_model_version_says_how_to_list_versions() {
    let mut c = case("not-found");
    c.set("FAKE_NGC_MODE", "notfound");
    let e = c.fetch_err();
    for want in [
        &format!("NGC has no model version '{NAME}'"),
        "could not be found",
        "ngc registry model list 'nim/nvidia/cosmos-reason1-7b:*'",
        "model-path",
    ] {
        assert!(e.contains(want), "no {want:?} in {e}");
    }
}

#[test]
fn disk_full_names_the_cache() {
    let mut c = case("disk-full");
    c.set("FAKE_NGC_MODE", "diskfull");
    let e = c.fetch_err();
    let cache = c.cache().display().to_string();
    for want in [
        "disk full",
        "No space left on device",
        &cache,
        "NGC_MODEL_CACHE",
    ] {
        assert!(e.contains(want), "no {want:?} in {e}");
    }
    assert_eq!(c.cache_entries(), Vec::<String>::new());
}

#[test]
fn too_little_free_space_fails_before_downloading() {
    let mut c = case("precheck");
    c.set("FAKE_NGC_TOTAL", "1000000000000000000");
    let e = c.fetch_err();
    let cache = c.cache().display().to_string();
    for want in [
        "disk full",
        "it needs 1000000.0 TB",
        &cache,
        "NGC_MODEL_CACHE",
    ] {
        assert!(e.contains(want), "no {want:?} in {e}");
    }
    assert_eq!(c.calls().len(), 1, "only info ran");
}

#[test]
fn other_failures_show_the_cli_s_last_lines_scrubbed() {
    let mut c = case("other");
    c.set("FAKE_NGC_MODE", "fail");
    let e = c.fetch_err();
    for want in [
        "with the NGC CLI failed: it exited with status 3",
        "Traceback (most recent call last): | RuntimeError: boom (key ***)",
        &format!("ngc registry model download-version '{NAME}'"),
    ] {
        assert!(e.contains(want), "no {want:?} in {e}");
    }
}

#[test]
fn failed_status_with_exit_0_is_a_failure() {
    let mut c = case("status-failed");
    c.set("FAKE_NGC_MODE", "status_failed");
    let e = c.fetch_err();
    assert!(
        e.contains("with the NGC CLI failed: it reported the download failed (exit status 0)"),
        "{e}"
    );
    assert!(e.contains("Download status: FAILED"), "{e}");
    assert_eq!(c.cache_entries(), Vec::<String>::new());
}

#[test]
fn success_without_the_model_directory_is_an_error() {
    let mut c = case("empty");
    c.set("FAKE_NGC_MODE", "empty");
    let e = c.fetch_err();
    assert!(
        e.contains("reported 'ngc:nim/nvidia/cosmos-reason1-7b:1.1-fp8-dynamic' downloaded, but there is no 'cosmos-reason1-7b_v1.1-fp8-dynamic'"),
        "{e}"
    );
    assert_eq!(c.cache_entries(), Vec::<String>::new());
}

fn check_reports(p: &[Progress], total: u64) {
    assert!(p.len() >= 3, "{p:?}");
    assert_eq!(p[0].all_done, 0);
    let last = p.last().unwrap();
    assert_eq!(
        (last.all_done, last.all_total),
        (total, Some(total)),
        "{p:?}"
    );
    for w in p.windows(2) {
        assert!(w[0].all_done <= w[1].all_done, "{p:?}");
    }
    for r in p {
        assert_eq!(r.file, NAME);
        assert_eq!((r.done, r.total), (r.all_done, r.all_total));
    }
    assert!(
        p.iter().any(|r| r.all_done > 0 && r.all_done < total),
        "no report mid-download: {p:?}"
    );
}

#[test]
fn progress_with_the_total_from_info() {
    let mut c = case("progress");
    let total = tiny_bytes();
    c.set("FAKE_NGC_TOTAL", &total.to_string());
    c.set("FAKE_NGC_SLEEP", "2.5");
    let (r, p) = c.fetch_spec(&seed());
    r.unwrap();
    check_reports(&p, total);
    assert!(p.iter().all(|r| r.all_total == Some(total)), "{p:?}");
}

#[test]
fn progress_with_the_total_from_the_cli_s_progress_bar() {
    let mut c = case("progress-bar");
    let total = tiny_bytes();
    c.set("FAKE_NGC_INFO", "fail");
    c.set("FAKE_NGC_SLEEP", "2.5");
    let (r, p) = c.fetch_spec(&seed());
    r.unwrap();
    check_reports(&p, total);
    assert_eq!(p[0].all_total, None);
    // The bar shows whole KiB.
    let mid = p
        .iter()
        .find(|r| r.all_done > 0 && r.all_done < total)
        .unwrap();
    let t = mid.all_total.expect("a total from the progress bar");
    assert!(t <= total && t + 1024 > total, "{t} vs {total}");
}

#[test]
fn model_root_dir_holds_the_cache() {
    // NGC_MODEL_CACHE outside the root: the cache moves under the root.
    let mut c = case("root-outside");
    let root = c.dir.join("root");
    fs::create_dir_all(&root).unwrap();
    c.env.model_root_dir = Some(root.clone());
    let got = c.fetch().unwrap();
    assert_eq!(got, root.join("ngc_model_cache").join(DIR_NAME));
    assert_is_tiny(&got);
    assert!(!c.cache().exists(), "the cache outside the root was used");
    // Unset: the same.
    c.unset("NGC_MODEL_CACHE");
    assert_eq!(c.fetch().unwrap(), got);
    assert_eq!(c.downloads().len(), 1);

    // NGC_MODEL_CACHE inside the root is used as it is.
    let mut c = case("root-inside");
    let root = c.dir.join("root");
    fs::create_dir_all(&root).unwrap();
    c.env.model_root_dir = Some(root.clone());
    c.set("NGC_MODEL_CACHE", root.join("models/ngc").to_str().unwrap());
    assert_eq!(c.fetch().unwrap(), root.join("models/ngc").join(DIR_NAME));

    // A root that does not exist.
    let mut c = case("root-missing");
    c.env.model_root_dir = Some(c.dir.join("nope"));
    let e = c.fetch_err();
    assert!(e.contains("model-root-dir") && e.contains("nope"), "{e}");
    assert!(c.calls().is_empty());
}

#[test]
fn concurrent_fetches_download_once() {
    let mut c = case("concurrent");
    c.set("FAKE_NGC_SLEEP", "1");
    let c = &c;
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| c.fetch());
        let b = s.spawn(|| c.fetch());
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_eq!(a.unwrap(), b.unwrap());
    assert_eq!(c.downloads().len(), 1);
}

// --- Stalls, cancellation and the CLI's processes (issue 21, F7) ---

/// Generous bound for "it did not hang" (never a timing claim).
const DID_NOT_HANG: Duration = Duration::from_secs(90);

/// Waits (up to a generous bound) for `pid` to be gone; SIGKILLs its
/// process group and panics when it is not.
fn assert_gone(pid: i32, what: &str) {
    let end = Instant::now() + Duration::from_secs(30);
    while alive(pid) {
        if Instant::now() > end {
            panic!("{what} (pid {pid}) is still running");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The live processes in process group `pgid`.
fn group_members(pgid: i32) -> Vec<i32> {
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            let Ok(s) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // "pid (comm) state ppid pgrp ..."
            let f: Vec<&str> = s
                .rsplit_once(')')
                .map(|(_, r)| r.split_whitespace().collect())
                .unwrap_or_default();
            f.get(2).and_then(|g| g.parse::<i32>().ok()) == Some(pgid) && alive(pid)
        })
        .collect()
}

/// Waits (up to a generous bound) for process group `pgid` to be empty.
fn assert_group_gone(pgid: i32) {
    let end = Instant::now() + Duration::from_secs(30);
    while !group_members(pgid).is_empty() {
        assert!(Instant::now() < end, "{:?} left", group_members(pgid));
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The fake CLI, its child and its whole process group are gone, and no
/// partial download is left in the cache.
fn assert_cli_stopped(c: &Case, pids: &Path) {
    let p = fake_pids(pids);
    assert_gone(p["cli"], "the NGC CLI");
    assert_gone(p["child"], "the CLI's child");
    assert_group_gone(p["cli"]);
    assert_eq!(
        c.cache_entries(),
        Vec::<String>::new(),
        "partial download left"
    );
}

/// Kills whatever the fake left (cleanup after a failed assertion): the
/// live members of the CLI's process group, and its child.
struct KillFake(PathBuf);

impl Drop for KillFake {
    fn drop(&mut self) {
        let pids = fake_pids(&self.0);
        let mut left = pids
            .get("cli")
            .map(|&g| group_members(g))
            .unwrap_or_default();
        left.extend(pids.get("child").filter(|&&p| alive(p)));
        for pid in left {
            // SAFETY: plain kill(2) of a process the fake started.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

/// A case whose fake starts a child and hangs after the first file.
fn hanging_case(name: &str) -> (Case, PathBuf) {
    let mut c = case(name);
    let pids = c.dir.join("pids");
    c.set("FAKE_NGC_PIDS", pids.to_str().unwrap());
    c.set("FAKE_NGC_CHILD", "1");
    c.set("FAKE_NGC_HANG", "1");
    (c, pids)
}

/// Runs `fetch_cancellable` on another thread; `on_progress` sees each
/// report there. The result, or `None` when it did not return in time.
fn fetch_on_thread(
    c: &Case,
    cancel: &CancellationToken,
    on_progress: impl Fn(&Progress) + Send + Sync + 'static,
) -> Option<Result<PathBuf, String>> {
    let (tx, rx) = mpsc::channel();
    let env = c.env.clone();
    let cancel = cancel.clone();
    std::thread::spawn(move || {
        let r = ngc::fetch_cancellable(&seed(), &env, &on_progress, &cancel);
        let _ = tx.send(r.map_err(|e| e.to_string()));
    });
    rx.recv_timeout(DID_NOT_HANG).ok()
}

#[test]
fn stalled_download_is_stopped_with_a_clear_error() {
    let (mut c, pids) = hanging_case("stall");
    let _cleanup = KillFake(pids.clone());
    c.set(ngc::STALL_VAR, "2");
    let start = Instant::now();
    let r = fetch_on_thread(&c, &CancellationToken::new(), |_| {})
        .expect("a download that makes no progress must end at the stall limit");
    let e = r.expect_err("a stalled download is an error");
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "before the limit"
    );
    eprintln!("{e}");
    assert!(!e.contains(KEY), "the key leaked: {e}");
    for want in [
        &format!("the download of 'ngc:{NAME}' stalled"),
        "no progress for 2 s",
        ngc::STALL_VAR,
        c.cache().to_str().unwrap(),
        "check the network",
    ] {
        assert!(e.contains(want), "{want:?} missing: {e}");
    }
    assert_cli_stopped(&c, &pids);

    // Without the hang the next fetch downloads it.
    c.unset("FAKE_NGC_HANG");
    assert_is_tiny(&c.fetch().unwrap());
}

#[test]
fn cancelled_download_ends_promptly_and_stops_the_cli() {
    let (c, pids) = hanging_case("cancel");
    let _cleanup = KillFake(pids.clone());
    // Cancel from this thread once the first file has arrived (the fake
    // then hangs, well inside the default stall limit).
    let cancel = CancellationToken::new();
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let (r_tx, r_rx) = mpsc::channel();
    let env = c.env.clone();
    let token = cancel.clone();
    std::thread::spawn(move || {
        let progress = move |p: &Progress| {
            if p.all_done > 0 {
                let _ = tx.lock().unwrap().send(());
            }
        };
        let _ = r_tx.send(ngc::fetch_cancellable(&seed(), &env, &progress, &token));
    });
    rx.recv_timeout(DID_NOT_HANG)
        .expect("the fake's first file is reported");
    cancel.cancel();
    let e = r_rx
        .recv_timeout(DID_NOT_HANG)
        .expect("a cancelled download must end")
        .expect_err("a cancelled download is an error")
        .to_string();
    eprintln!("{e}");
    assert!(
        e.contains(&format!("the download of 'ngc:{NAME}' was cancelled")),
        "{e}"
    );
    assert!(!e.contains(KEY), "the key leaked: {e}");
    assert_cli_stopped(&c, &pids);
}

#[test]
fn cancelled_before_the_start_runs_no_cli() {
    let c = case("cancel-early");
    let cancel = CancellationToken::new();
    cancel.cancel();
    let e = fetch_on_thread(&c, &cancel, |_| {})
        .unwrap()
        .expect_err("cancelled");
    assert!(e.contains("was cancelled"), "{e}");
    assert!(c.calls().is_empty());
    // resolve_cancellable goes the same way.
    let src = download::parse_model_path(&format!("ngc:{NAME}")).unwrap();
    let e = download::resolve_cancellable(&src, &c.env, &|_: &Progress| {}, &cancel).unwrap_err();
    assert!(matches!(e, download::DownloadError::Cancelled(_)), "{e}");
    assert!(e.to_string().contains("was cancelled"), "{e}");
}

#[test]
fn stall_limit_is_range_checked() {
    for bad in ["0", "-1", "abc", "1.5", "86401"] {
        let mut c = case("stall-range");
        c.set(ngc::STALL_VAR, bad);
        let e = c.fetch_err();
        assert!(
            e.contains(&format!(
                "{}='{bad}' is out of range: allowed 1 to 86400",
                ngc::STALL_VAR
            )),
            "{e}"
        );
        assert!(c.calls().is_empty(), "{bad}: the CLI ran");
    }
    let mut c = case("stall-ok");
    c.set(ngc::STALL_VAR, " 86400 ");
    assert_is_tiny(&c.fetch().unwrap());
    assert_eq!(ngc::DEFAULT_STALL, Duration::from_secs(300));
}

/// The helper process of `cli_dies_with_the_application`: fetches with the
/// environment in `$VSS_NGC_TEST_HELPER` (a file of `KEY=VALUE` lines),
/// printing `progress N` lines, until it is killed.
#[test]
fn helper_fetch_until_killed() {
    let Ok(file) = std::env::var("VSS_NGC_TEST_HELPER") else {
        return;
    };
    let env = DownloadEnv {
        vars: fs::read_to_string(file)
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        model_root_dir: None,
    };
    let r = ngc::fetch(&seed(), &env, &|p: &Progress| {
        use std::io::Write;
        let mut o = std::io::stdout().lock();
        let _ = writeln!(o, "progress {}", p.all_done);
        let _ = o.flush();
    });
    println!("returned {r:?}");
}

#[test]
fn cli_dies_with_the_application() {
    use std::io::BufRead;
    let (c, pids) = hanging_case("pdeathsig");
    let _cleanup = KillFake(pids.clone());
    let file = c.dir.join("helper.env");
    let text: String = c
        .env
        .vars
        .iter()
        .map(|(k, v)| format!("{k}={v}\n"))
        .collect();
    fs::write(&file, text).unwrap();
    let mut app = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_fetch_until_killed",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("VSS_NGC_TEST_HELPER", &file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let out = std::io::BufReader::new(app.stdout.take().unwrap());
    for line in out.lines() {
        let line = line.unwrap();
        if line
            .strip_prefix("progress ")
            .and_then(|n| n.parse::<u64>().ok())
            > Some(0)
        {
            break;
        }
        assert!(!line.starts_with("returned"), "{line}");
    }
    let p = fake_pids(&pids);
    assert!(alive(p["cli"]), "the CLI runs while the application does");
    app.kill().unwrap();
    app.wait().unwrap();
    // The CLI and what it started die with the application.
    assert_gone(p["cli"], "the NGC CLI after the application died");
    assert_gone(p["child"], "the CLI's child after the application died");
    assert_group_gone(p["cli"]);
}
