// SPDX-License-Identifier: MPL-2.0
//! `model-path=hf:ORG/NAME[@REVISION]`: a checkpoint from the Hugging Face
//! Hub, downloaded once into the standard Hugging Face cache.
//!
//! # Client
//! The `hf-hub` crate, 0.5 (`default-features = false`, features `tokio`
//! and `rustls-tls`: reqwest with rustls, no native-tls/OpenSSL). Its
//! builder is given everything explicitly — endpoint, cache directory and
//! token come from [`DownloadEnv`] (the element's environment), never from
//! the process environment (its `from_env` would read `std::env`; it is
//! not called). 0.5 shares this crate's reqwest 0.12; 1.x is a rewrite on
//! reqwest 0.13 that takes its defaults from the process environment. Its
//! client (token and user agent), listing request and file URLs are used;
//! the download itself is ours (rules 1–4 below): hf-hub's pre-sizes the
//! blob and never counts a range's bytes, so a short answer left zeros that
//! were cached as complete, and it buffers a range's body with no bound.
//! Its partial-blob format (`blobs/<etag>.sync.part`: the data, then the
//! committed length) and lock file (`blobs/<etag>.lock`) are kept. The
//! metadata call (`Range: bytes=0-0` → `x-repo-commit`,
//! `x-linked-etag`/`etag`, `content-range`) follows only redirects within
//! the Hub, as hf-hub's; a redirect out (a CDN) is asked without the token.
//!
//! # Checks (hardening round 3: F2, F6)
//! 1. Every body read into memory is capped: the file listing at
//!    `LISTING_CAP` (16 MiB; a repo with thousands of files lists in a
//!    few MB), `config.json` and the safetensors indexes (also those of
//!    the Cosmos3 folders, below) at `META_CAP`
//!    (16 MiB; real ones are kilobytes, a 100-shard index a few MB), the
//!    other non-weight files at `OTHER_CAP` (256 MiB; the largest real
//!    `tokenizer.json` files are tens of MB). A Content-Length (or a listed
//!    size) over the cap is refused before any byte is read; a body that
//!    streams past it is cut there. The error names the URL path, the cap
//!    and what to check. Weights are never read whole: at most
//!    `PARALLEL` ranges of `CHUNK` bytes are held.
//! 2. Each range (10 MB) must come back as a 206 whose Content-Range is the
//!    one asked (a 200 only for a whole file asked from byte 0), with
//!    exactly its bytes: a short or long Content-Length, or a body that
//!    ends early or runs on, is an error and nothing of it is written. The
//!    committed length advances only over ranges that arrived whole.
//! 3. When the whole file is there, its sha256 is compared with the Hub's
//!    (`x-linked-etag`, else `etag`, quotes and `W/` stripped, when it is
//!    64 hex digits: a git LFS file; else the listing's `lfs.sha256`). A
//!    mismatch deletes the partial blob and nothing is linked. Git (non-LFS)
//!    files carry a git sha1 etag, which is not checked: their length is
//!    (rule 2), and config.json and the index must parse.
//! 4. Only then is the blob renamed to `blobs/<etag>` and linked into the
//!    snapshot. The listing's size must equal the size the file's answer
//!    gives, and the answer must come from the listed commit.
//! 5. A blob named by a sha256 that this element did not check itself (one
//!    `hf download` or an older version left) is hashed once before a
//!    snapshot that links it is used or a blob is linked again; a note
//!    `<cache>/.locks/models--ORG--NAME/<sha256>.vsssummarize-verified`
//!    (huggingface_hub's lock folder, which its cache scan skips) holds the
//!    blob's length and modification time, so it is not hashed again while
//!    unchanged. A blob whose bytes do not match its name is deleted with its
//!    link and fetched again (or, with `HF_HUB_OFFLINE`, the model counts as
//!    not in the cache). A read-only cache cannot keep the note: its blobs
//!    are hashed at each start.

//! # Environment (from [`DownloadEnv`])
//! - `HF_ENDPOINT` — the Hub (default `https://huggingface.co`).
//! - `HF_HOME` — default `$XDG_CACHE_HOME/huggingface`, else
//!   `~/.cache/huggingface`; the cache is `$HF_HOME/hub` unless
//!   `HF_HUB_CACHE` names it (as in Python's `huggingface_hub`).
//! - `HF_TOKEN` — sent as `Authorization: Bearer …`; without it the token
//!   file `HF_TOKEN_PATH` or `$HF_HOME/token` (`hf auth login`) is used.
//!   The token never appears in a message.
//! - `HF_HUB_OFFLINE=1` — use the cache only, never the network.
//!
//! # Cache layout
//! Exactly `hf download`'s: `<cache>/models--ORG--NAME/blobs/<etag>`,
//! `snapshots/<commit>/<file>` (relative symlinks `../../blobs/<etag>`; a
//! file in a folder, `snapshots/<commit>/transformer/<file>`, links
//! `../../../blobs/<etag>`, one more `..` per folder, as huggingface_hub
//! links it) and `refs/<revision>` holding the commit. A model fetched with
//! `hf download` is reused and vice versa. [`fetch`] returns
//! `snapshots/<commit>`.
//!
//! # `model-root-dir`
//! When `model-root-dir` is set and the cache above does not lie inside it
//! (compared after resolving symlinks), the download goes to
//! `<model-root-dir>/huggingface/hub` instead, same layout; the returned
//! directory always lies inside the root.
//!
//! # Which files
//! - Top-level files: `config.json`, `generation_config.json`,
//!   `hf_quant_config.json`, `preprocessor_config.json`,
//!   `processor_config.json`, `video_preprocessor_config.json`, the
//!   tokenizer files (`tokenizer.json`, `tokenizer_config.json`,
//!   `tokenizer.model`, `special_tokens_map.json`, `added_tokens.json`,
//!   `vocab.json`, `merges.txt`) and the chat template
//!   (`chat_template.json`, `chat_template.jinja`).
//! - The weights, at the top level: with `model.safetensors.index.json`,
//!   the index and exactly the shards its `weight_map` names; else
//!   `model.safetensors`; else every top-level `*.safetensors`.
//! - Else, the Cosmos3 layout (diffusers style, as Cosmos3 Nano Reasoner
//!   ships: the configs and tokenizer at the top, the language model in
//!   `transformer/`, the vision tower in `vision_encoder/`): when the top
//!   level has no safetensors weights and both `transformer/` and
//!   `vision_encoder/` hold `*.safetensors`, for each of the two folders
//!   its `*.safetensors.index.json` and exactly the shards it names (names
//!   beside the index: a name with `/`, `..` or absolute is refused, as at
//!   the top level), else every `*.safetensors` directly in it; plus
//!   `transformer/config.json`, `transformer/hf_quant_config.json` and
//!   `vision_encoder/config.json` when listed. A folder with several
//!   indexes is refused (which one holds the weights is ambiguous). One
//!   folder with weights and not the other is refused naming the missing
//!   one. This is what the in-process loader reads
//!   (`backend::cosmos::checkpoint::cosmos3_weight_files`).
//! - Nothing else: no other folder (`original/`; in the Cosmos3 layout
//!   `vae/`, `sound_tokenizer/`, `scheduler/`… hold what only video or
//!   sound generation uses, many GB, which no backend here reads), no
//!   `*.bin`, `*.pth`, `*.pt`, `*.gguf`, `*.onnx`, READMEs, images,
//!   `model_index.json`. The repo must have `config.json`, a
//!   `tokenizer.json` (or `tokenizer.model`) at the top, and safetensors
//!   weights.
//!
//! Every path the snapshot gets is a plain name, or a plain name in
//! `transformer/` or `vision_encoder/`: nothing lands outside the snapshot
//! directory, and a link or file in place of one of those folders is
//! replaced by the folder (what it pointed to is left alone).
//!
//! # Reuse without network
//! `refs/<revision>` (or the revision itself when it is a full commit hash)
//! names a snapshot; it is used with no request at all when it holds a
//! valid `config.json`, `tokenizer.json` (or `tokenizer.model`) and
//! complete weights, every blob it links that is named by a sha256 holds
//! those bytes (checked once, rule 5), and no symlink dangles at its top
//! level or in `transformer/` and `vision_encoder/`. Complete weights, by
//! the rule of "Which files" applied to what the snapshot holds: at the top
//! level every shard the index names, else `model.safetensors`, else the
//! `*.safetensors` present; without top-level weights, the Cosmos3 layout:
//! in both `transformer/` and `vision_encoder/`, every shard the folder's
//! index names, else the folder's `*.safetensors` (a folder with weights
//! and not the other is incomplete). Each safetensors file's length must
//! match its header. Other folders are not looked at. Optional files
//! missing from such a snapshot are not fetched (to pick up a newer
//! `main`, delete `refs/main` or pin a revision).
//!
//! # Half-finished downloads
//! A blob is written to `blobs/<etag>.sync.part` (hf-hub's format: the data
//! plus the committed length) and renamed when complete and checked; the
//! next fetch resumes it from the last committed 10 MB range. A snapshot
//! file shorter or longer than the Hub's size, a truncated safetensors, or
//! a blob whose sha256 is not its name is deleted and fetched again.
//! Python's `blobs/*.incomplete` files are not adopted (their bytes cannot
//! be verified here): such a file is downloaded again. Each file is tried 3
//! times (transient errors and short answers, 120 s without a byte); then
//! the error says to run again, which resumes. A failed file's other range
//! requests are cancelled.

use crate::retry;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use hf_hub::api::tokio::{Api, ApiBuilder, ApiError, ApiRepo};
use hf_hub::{Cache, Repo, RepoType};
use serde::Deserialize;

use super::{DownloadEnv, DownloadError, HfSpec, Progress, ProgressFn};

/// The form an `hf:` model path takes, for messages.
pub const EXPECTED: &str = "expected hf:ORG/NAME[@REVISION], e.g. hf:nvidia/Cosmos-Reason1-7B";

const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
/// hf-hub's chunk: the resume granularity, and memory per parallel chunk.
const CHUNK: u64 = 10_000_000;
/// Chunks of one file in flight at once.
const PARALLEL: usize = 4;
/// Tries per file (transient errors only).
const ATTEMPTS: u32 = 3;
/// A progress report at least every this many bytes of a file.
const REPORT_STEP: u64 = 2 << 20;
/// An attempt with no byte for this long is abandoned (and retried).
const STALL: Duration = Duration::from_secs(120);
const LISTING_TIMEOUT: Duration = Duration::from_secs(60);
/// The file listing's body (`?blobs=true`): a repo with thousands of files
/// lists in a few MB.
const LISTING_CAP: u64 = 16 << 20;
/// `config.json` and the safetensors indexes (`model.safetensors.index.json`,
/// a Cosmos3 folder's `*.safetensors.index.json`), read into memory: real
/// ones are kilobytes (an index of a 100-shard model, a few MB).
const META_CAP: u64 = 16 << 20;
/// The other non-weight files (tokenizers, chat templates, other configs):
/// the largest real tokenizer.json files are tens of MB.
const OTHER_CAP: u64 = 256 << 20;

// ---------------------------------------------------------------- parsing

/// Parses `ORG/NAME[@REVISION]` (what follows `hf:`).
pub fn parse(s: &str) -> Result<HfSpec, DownloadError> {
    let s = s.trim();
    let bad = |why: String| format!("'hf:{s}': {why}; {EXPECTED}");
    let (repo, revision) = match s.split_once('@') {
        Some((r, rev)) => (r, Some(rev)),
        None => (s, None),
    };
    if repo.is_empty() {
        return Err(DownloadError::Spec(bad(
            "the repository name is empty".into()
        )));
    }
    let parts: Vec<&str> = repo.split('/').collect();
    match parts.len() {
        1 => {
            return Err(DownloadError::Spec(bad(format!(
                "'{repo}' has no organisation (the ORG/ part before the name)"
            ))))
        }
        2 => {}
        n => {
            return Err(DownloadError::Spec(bad(format!(
                "'{repo}' has {} slashes; a repository is ORG/NAME, with one",
                n - 1
            ))))
        }
    }
    check_id_part("organisation", parts[0]).map_err(|e| DownloadError::Spec(bad(e.to_string())))?;
    check_id_part("name", parts[1]).map_err(|e| DownloadError::Spec(bad(e.to_string())))?;
    let revision = match revision {
        None => None,
        Some("") => {
            return Err(DownloadError::Spec(bad(
                "the revision after '@' is empty".into()
            )))
        }
        Some(r) => {
            check_revision(r).map_err(|e| DownloadError::Spec(bad(e.to_string())))?;
            Some(r.to_string())
        }
    };
    Ok(HfSpec {
        repo: repo.to_string(),
        revision,
    })
}

/// The Hub's rule for user/organisation and repository names.
fn check_id_part(what: &str, p: &str) -> Result<(), DownloadError> {
    if p.is_empty() {
        return Err(DownloadError::Spec(format!("the {what} is empty")));
    }
    if let Some(c) = p
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(DownloadError::Spec(format!(
            "the {what} '{p}' has the character {c:?} (allowed: letters, digits, '-', '_', '.')"
        )));
    }
    if p.len() > 96 {
        return Err(DownloadError::Spec(format!(
            "the {what} '{p}' is longer than 96 characters"
        )));
    }
    if p.starts_with(['-', '.']) || p.ends_with(['-', '.']) {
        return Err(DownloadError::Spec(format!(
            "the {what} '{p}' starts or ends with '-' or '.'"
        )));
    }
    if p.contains("--") || p.contains("..") {
        return Err(DownloadError::Spec(format!(
            "the {what} '{p}' contains '--' or '..'"
        )));
    }
    Ok(())
}

/// A branch, tag or commit: what git allows, minus the exotic.
fn check_revision(r: &str) -> Result<(), DownloadError> {
    if let Some(c) = r
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | '+')))
    {
        return Err(DownloadError::Spec(format!(
            "the revision '{r}' has the character {c:?} (a branch, tag or commit hash: letters, digits, '-', '_', '.', '/', '+')"
        )));
    }
    if r.len() > 255
        || r.starts_with(['/', '.'])
        || r.ends_with(['/', '.'])
        || r.contains("//")
        || r.contains("..")
        || r.ends_with(".lock")
    {
        return Err(DownloadError::Spec(format!(
            "the revision '{r}' is not a valid branch, tag or commit name"
        )));
    }
    Ok(())
}

fn is_commit(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A file name as it may appear in a snapshot directory: one component.
fn plain_name(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && !s.contains(['/', '\\', '\0'])
        && Path::new(s).components().count() == 1
}

// ------------------------------------------------------------ environment

/// Where and how to download, from the element's environment.
#[derive(Clone, Debug)]
struct Place {
    endpoint: String,
    /// The hub cache (`…/hub`), possibly moved under `model-root-dir`.
    cache: PathBuf,
    token: Option<String>,
    offline: bool,
    /// `model-root-dir`, canonical.
    root: Option<PathBuf>,
}

fn expand_home(p: &str, env: &DownloadEnv) -> PathBuf {
    if p == "~" {
        if let Some(h) = env.get("HOME") {
            return PathBuf::from(h);
        }
    }
    if let Some(rest) = p.strip_prefix("~/") {
        if let Some(h) = env.get("HOME") {
            return Path::new(h).join(rest);
        }
    }
    PathBuf::from(p)
}

fn absolute(p: PathBuf) -> PathBuf {
    if p.is_absolute() {
        p
    } else {
        std::env::current_dir().map(|d| d.join(&p)).unwrap_or(p)
    }
}

/// `HF_HOME`, or its default.
fn hf_home(env: &DownloadEnv) -> Option<PathBuf> {
    if let Some(h) = env.get("HF_HOME") {
        return Some(absolute(expand_home(h, env)));
    }
    if let Some(x) = env.get("XDG_CACHE_HOME") {
        return Some(absolute(expand_home(x, env)).join("huggingface"));
    }
    env.get("HOME")
        .map(|h| Path::new(h).join(".cache").join("huggingface"))
}

/// The hub cache as `hf download` would use it.
fn hub_cache(env: &DownloadEnv) -> Option<PathBuf> {
    if let Some(c) = env.get("HF_HUB_CACHE") {
        return Some(absolute(expand_home(c, env)));
    }
    hf_home(env).map(|h| h.join("hub"))
}

/// `p` with its longest existing ancestor resolved (symlinks, `..`) and the
/// rest appended as written.
fn canonical_prefix(p: &Path) -> PathBuf {
    let p = absolute(p.to_path_buf());
    let mut rest = Vec::new();
    let mut cur = p.as_path();
    loop {
        if let Ok(c) = cur.canonicalize() {
            let mut out = c;
            for comp in rest.iter().rev() {
                match comp {
                    Component::ParentDir => {
                        out.pop();
                    }
                    Component::CurDir => {}
                    c => out.push(c.as_os_str()),
                }
            }
            return out;
        }
        match (cur.parent(), cur.components().next_back()) {
            (Some(parent), Some(last)) => {
                rest.push(last);
                cur = parent;
            }
            _ => return p,
        }
    }
}

/// The `model-root-dir` rule: the hub cache if it lies inside the root,
/// else `<root>/huggingface/hub`.
fn choose_cache(hub: Option<PathBuf>, root: Option<&Path>) -> Result<PathBuf, DownloadError> {
    let Some(root) = root else {
        return hub.ok_or_else(|| {
            DownloadError::Setup("no Hugging Face cache directory: neither HF_HOME nor HOME is set; set HF_HOME (the cache is $HF_HOME/hub) or model-root-dir".to_string())
        });
    };
    if let Some(h) = hub {
        if canonical_prefix(&h).starts_with(root) {
            return Ok(h);
        }
    }
    Ok(root.join("huggingface").join("hub"))
}

fn read_token_file(p: &Path) -> Option<String> {
    let t = std::fs::read_to_string(p).ok()?;
    let t = t.trim();
    (!t.is_empty()).then(|| t.to_string())
}

fn token(env: &DownloadEnv) -> Option<String> {
    if let Some(t) = env.get("HF_TOKEN") {
        return Some(t.trim().to_string());
    }
    if let Some(p) = env.get("HF_TOKEN_PATH") {
        return read_token_file(&expand_home(p, env));
    }
    hf_home(env).and_then(|h| read_token_file(&h.join("token")))
}

fn truthy(v: Option<&str>) -> bool {
    v.is_some_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    })
}

impl Place {
    fn from_env(env: &DownloadEnv) -> Result<Place, DownloadError> {
        let endpoint = env
            .get("HF_ENDPOINT")
            .unwrap_or(DEFAULT_ENDPOINT)
            .trim()
            .trim_end_matches('/')
            .to_string();
        match url::Url::parse(&endpoint) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => {
                return Err(DownloadError::Setup(format!(
                    "HF_ENDPOINT '{endpoint}' is not an http(s) URL: set it to the Hub (https://huggingface.co) or a mirror, or unset it"
                )))
            }
        }
        let root = match env.model_root_dir.as_deref() {
            None => None,
            Some(r) => Some(r.canonicalize().map_err(|e| {
                format!(
                    "model-root-dir '{}' cannot be opened: {e}; fix model-root-dir (or MODEL_ROOT_DIR), or unset it",
                    r.display()
                )
            })?),
        };
        let cache = choose_cache(hub_cache(env), root.as_deref())?;
        Ok(Place {
            endpoint,
            cache,
            token: token(env),
            offline: truthy(env.get("HF_HUB_OFFLINE")),
            root,
        })
    }
}

/// `models--ORG--NAME`.
fn folder_name(repo: &str) -> String {
    format!("models--{}", repo.replace('/', "--"))
}

/// Replaces the token in a message (defence in depth: none is built with it).
fn redact(msg: String, token: Option<&str>) -> String {
    match token {
        Some(t) if t.len() >= 4 && msg.contains(t) => msg.replace(t, "<HF_TOKEN>"),
        _ => msg,
    }
}

// ----------------------------------------------------------- file choice

/// Top-level files of a checkpoint taken besides the weights.
const WANTED: &[&str] = &[
    "config.json",
    "generation_config.json",
    "hf_quant_config.json",
    "preprocessor_config.json",
    "processor_config.json",
    "video_preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "chat_template.json",
    "chat_template.jinja",
];
const INDEX: &str = "model.safetensors.index.json";
const SINGLE: &str = "model.safetensors";
const TOKENIZERS: &[&str] = &["tokenizer.json", "tokenizer.model"];
/// How a safetensors index's name ends (the Cosmos3 folders' are
/// `diffusion_pytorch_model.safetensors.index.json` or `model.…`).
const INDEX_SUFFIX: &str = ".safetensors.index.json";
/// The Cosmos3 layout's weight folders: the language model, the vision
/// tower. Its other folders (`vae/`, `sound_tokenizer/`, `scheduler/`…)
/// hold what only generation uses, many GB: never taken.
const COSMOS3_FOLDERS: [&str; 2] = ["transformer", "vision_encoder"];
/// The small metadata files taken from the Cosmos3 folders when listed.
const COSMOS3_META: &[&str] = &[
    "transformer/config.json",
    "transformer/hf_quant_config.json",
    "vision_encoder/config.json",
];

/// One set of weights: the top level's, or one Cosmos3 folder's.
#[derive(Debug, PartialEq, Eq)]
struct Weights {
    /// `""` for the top level, else the folder (`transformer`…).
    folder: String,
    /// The index (its path in the repo) when the weights are sharded; its
    /// shards come later, from the index itself.
    index: Option<String>,
    /// The weights (paths in the repo) when not sharded.
    files: Vec<String>,
}

/// What [`select`] takes from a listing.
#[derive(Debug, PartialEq, Eq)]
struct Selection {
    /// Non-weight files (paths in the repo), in download order.
    files: Vec<String>,
    /// The top level's weights, or the two Cosmos3 folders'.
    weights: Vec<Weights>,
}

/// `folder/name`, or `name` at the top level.
fn in_folder(folder: &str, name: &str) -> String {
    if folder.is_empty() {
        name.to_string()
    } else {
        format!("{folder}/{name}")
    }
}

/// The weights `names` (a repo's files, or a snapshot folder's) hold in
/// `folder` (`""`: the top level), by the rule shared with the snapshot
/// check: an index (exactly one), else `model.safetensors` (top level
/// only), else every `*.safetensors` directly there. `None`: no
/// `*.safetensors` there (an index alone does not count). `what` names the
/// repo or directory in the error for several indexes.
fn weights_in(folder: &str, names: &[&str], what: &str) -> Result<Option<Weights>, DownloadError> {
    let here: Vec<&str> = names
        .iter()
        .filter_map(|n| {
            if folder.is_empty() {
                Some(*n)
            } else {
                n.strip_prefix(folder)?.strip_prefix('/')
            }
        })
        .filter(|n| plain_name(n))
        .collect();
    let mut plain: Vec<String> = here
        .iter()
        .filter(|n| n.ends_with(".safetensors"))
        .map(|n| in_folder(folder, n))
        .collect();
    // (At the top level an index alone counts, as it always has: a repo
    // that lists it without its shards is refused naming the shard.)
    if plain.is_empty() && !(folder.is_empty() && here.contains(&INDEX)) {
        return Ok(None);
    }
    plain.sort();
    let mut indexes: Vec<&str> = if folder.is_empty() {
        // The top level's index has one name (others are not transformers').
        here.iter().copied().filter(|n| *n == INDEX).collect()
    } else {
        here.iter()
            .copied()
            .filter(|n| n.ends_with(INDEX_SUFFIX))
            .collect()
    };
    indexes.sort();
    let (index, files) = match indexes.as_slice() {
        [] if folder.is_empty() && here.contains(&SINGLE) => (None, vec![SINGLE.to_string()]),
        [] => (None, plain),
        [ix] => (Some(in_folder(folder, ix)), Vec::new()),
        several => {
            return Err(DownloadError::Failed(format!(
                "{what} has several safetensors indexes in {folder}/ ({}): which one holds the weights is ambiguous; choose a revision with one",
                several.join(", ")
            )))
        }
    };
    Ok(Some(Weights {
        folder: folder.to_string(),
        index,
        files,
    }))
}

/// The file choice rule (module docs). `names`: the repo's files.
fn select(names: &[String], what: &str) -> Result<Selection, DownloadError> {
    let all: Vec<&str> = names.iter().map(String::as_str).collect();
    let has = |n: &str| all.contains(&n);
    let mut files: Vec<String> = WANTED
        .iter()
        .filter(|n| has(n))
        .map(|n| n.to_string())
        .collect();
    let shown = || {
        let mut v: Vec<&str> = names.iter().map(String::as_str).take(12).collect();
        if names.len() > 12 {
            v.push("…");
        }
        v.join(", ")
    };
    let weights = match weights_in("", &all, what)? {
        Some(w) => vec![w],
        None => {
            let [t, v] = COSMOS3_FOLDERS;
            match (weights_in(t, &all, what)?, weights_in(v, &all, what)?) {
                (Some(tw), Some(vw)) => {
                    files.extend(
                        COSMOS3_META
                            .iter()
                            .filter(|n| has(n))
                            .map(|n| n.to_string()),
                    );
                    vec![tw, vw]
                }
                (None, None) => {
                    return Err(DownloadError::Failed(format!(
                        "{what} has no safetensors weights (its files: {}); this element loads *.safetensors only (not *.bin/*.pth/*.gguf), at the top level or in a Cosmos3 checkpoint's transformer/ and vision_encoder/: choose a repo that has them (see its 'Files and versions' tab) or convert the checkpoint to safetensors",
                        shown()
                    )));
                }
                (tw, _) => {
                    let (with, without) = if tw.is_some() { (t, v) } else { (v, t) };
                    return Err(DownloadError::Failed(format!(
                        "{what} has {with}/*.safetensors but no {without}/*.safetensors (its files: {}); a Cosmos3 checkpoint needs both (the language model in transformer/, the vision tower in vision_encoder/): choose the repo of the whole checkpoint, or a revision that has both",
                        shown()
                    )));
                }
            }
        }
    };
    if !has("config.json") {
        return Err(DownloadError::Failed(format!(
            "{what} has no config.json at its top level (its files: {}); it is not a transformers checkpoint: choose the repo of the checkpoint itself",
            shown()
        )));
    }
    if !TOKENIZERS.iter().any(|t| has(t)) {
        return Err(DownloadError::Failed(format!(
            "{what} has no tokenizer.json (its files: {}); choose a repo that ships the tokenizer with the weights",
            shown()
        )));
    }
    Ok(Selection { files, weights })
}

/// A text file of at most `cap` bytes, read whole.
fn read_capped_file(p: &Path, cap: u64) -> Result<String, DownloadError> {
    let f = std::fs::File::open(p).map_err(|e| format!("'{}' cannot be read: {e}", p.display()))?;
    let mut text = String::new();
    f.take(cap + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("'{}' cannot be read: {e}", p.display()))?;
    if text.len() as u64 > cap {
        return Err(DownloadError::Failed(format!(
            "'{}' is over the {cap} bytes ({} MiB) this element reads for it (real ones are kilobytes): it is not a usable checkpoint file; delete it (it is fetched again) or fix the checkpoint",
            p.display(),
            cap >> 20
        )));
    }
    Ok(text)
}

/// The shard names of an index's `weight_map`, sorted, deduplicated.
fn index_shards(index: &Path) -> Result<Vec<String>, DownloadError> {
    let text = read_capped_file(index, META_CAP)?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| format!("'{}' is not JSON: {e}", index.display()))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| format!("'{}' has no weight_map", index.display()))?;
    let mut shards = Vec::new();
    for f in map.values() {
        let f = f.as_str().ok_or_else(|| {
            format!(
                "'{}': a weight_map value is not a file name",
                index.display()
            )
        })?;
        if !plain_name(f) {
            return Err(DownloadError::Failed(format!(
                "'{}' names the shard '{f}', which is not a plain file name (a shard lies beside its index; '..', '/' and absolute names are refused)",
                index.display()
            )));
        }
        shards.push(f.to_string());
    }
    shards.sort();
    shards.dedup();
    if shards.is_empty() {
        return Err(DownloadError::Failed(format!(
            "'{}' has an empty weight_map",
            index.display()
        )));
    }
    Ok(shards)
}

// ---------------------------------------------------- completeness checks

/// A safetensors file whose length matches its header (catches truncation).
fn safetensors_complete(p: &Path) -> Result<(), DownloadError> {
    let bad = |why: String| format!("'{}' {why}", p.display());
    let mut f = std::fs::File::open(p).map_err(|e| bad(format!("cannot be opened: {e}")))?;
    let len = f.metadata().map_err(|e| bad(e.to_string()))?.len();
    let mut n8 = [0u8; 8];
    f.read_exact(&mut n8)
        .map_err(|_| bad("is shorter than a safetensors header".into()))?;
    let n = u64::from_le_bytes(n8);
    if n > 100 << 20 || 8 + n > len {
        return Err(DownloadError::Failed(bad(format!(
            "is truncated or not safetensors ({len} bytes)"
        ))));
    }
    let mut h = vec![0u8; n as usize];
    f.read_exact(&mut h)
        .map_err(|e| bad(format!("header cannot be read: {e}")))?;
    // The safetensors crate's own header: tensors in offset order, each
    // tensor's bytes matching its dtype and shape, no gap or overlap.
    let meta: safetensors::tensor::Metadata =
        serde_json::from_slice(&h).map_err(|e| bad(format!("has a bad header: {e}")))?;
    let end = meta.data_len() as u64;
    if len != 8 + n + end {
        return Err(DownloadError::Failed(bad(format!(
            "is incomplete: {len} bytes, its header says {}",
            8 + n + end
        ))));
    }
    Ok(())
}

/// The names directly in `dir` (none when it cannot be read).
fn dir_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The files of a snapshot directory that [`check_snapshot`] and the blob
/// check look at: its top level, and the Cosmos3 folders' files (paths
/// relative to `dir`). Other folders are not looked into.
fn snapshot_files(dir: &Path) -> Vec<String> {
    let mut v = dir_names(dir);
    for f in COSMOS3_FOLDERS {
        let d = dir.join(f);
        // A real folder only (a link is not followed out of the snapshot).
        if d.symlink_metadata().is_ok_and(|m| m.is_dir()) {
            v.extend(dir_names(&d).iter().map(|n| in_folder(f, n)));
        }
    }
    v
}

/// The weight files a snapshot directory needs (paths relative to it),
/// from what it holds: the top level's by the listing's rule, else the two
/// Cosmos3 folders' (every shard their index names, else their
/// `*.safetensors`).
fn local_weights(dir: &Path) -> Result<Vec<String>, DownloadError> {
    let what = format!("'{}'", dir.display());
    let files: Vec<String> = snapshot_files(dir)
        .into_iter()
        .filter(|n| dir.join(n).is_file())
        .collect();
    let names: Vec<&str> = files.iter().map(String::as_str).collect();
    let sets = match weights_in("", &names, &what)? {
        Some(w) => vec![w],
        None => {
            let [t, v] = COSMOS3_FOLDERS;
            match (weights_in(t, &names, &what)?, weights_in(v, &names, &what)?) {
                (Some(tw), Some(vw)) => vec![tw, vw],
                (None, None) => {
                    return Err(DownloadError::Failed(format!(
                        "{what} has no safetensors weights"
                    )))
                }
                (tw, _) => {
                    let (with, without) = if tw.is_some() { (t, v) } else { (v, t) };
                    return Err(DownloadError::Failed(format!(
                        "{what} has {with}/*.safetensors but no {without}/*.safetensors"
                    )));
                }
            }
        }
    };
    let mut out = Vec::new();
    for w in sets {
        match &w.index {
            Some(ix) => out.extend(
                index_shards(&dir.join(ix))?
                    .iter()
                    .map(|s| in_folder(&w.folder, s)),
            ),
            None => out.extend(w.files),
        }
    }
    Ok(out)
}

/// Whether a snapshot directory is a complete checkpoint (module docs).
fn check_snapshot(dir: &Path) -> Result<(), DownloadError> {
    if !dir.is_dir() {
        return Err(DownloadError::Failed(format!(
            "'{}' does not exist",
            dir.display()
        )));
    }
    for n in snapshot_files(dir) {
        let p = dir.join(n);
        if p.is_symlink() && !p.exists() {
            return Err(DownloadError::Failed(format!(
                "'{}' points to a missing blob",
                p.display()
            )));
        }
    }
    let cfg = dir.join("config.json");
    let text = read_capped_file(&cfg, META_CAP)?;
    serde_json::from_str::<serde_json::Value>(&text)
        .map_err(|e| format!("'{}' is not JSON: {e}", cfg.display()))?;
    if !TOKENIZERS.iter().any(|t| dir.join(t).is_file()) {
        return Err(DownloadError::Failed(format!(
            "'{}' has no tokenizer.json",
            dir.display()
        )));
    }
    for w in local_weights(dir)? {
        safetensors_complete(&dir.join(w))?;
    }
    Ok(())
}

/// The complete snapshot `revision` names in `repo_dir`, if any.
fn cached_snapshot(repo_dir: &Path, revision: &str) -> Option<PathBuf> {
    let commit = if is_commit(revision) {
        revision.to_string()
    } else {
        let c = std::fs::read_to_string(repo_dir.join("refs").join(revision)).ok()?;
        let c = c.trim().to_string();
        if !plain_name(&c) {
            return None;
        }
        c
    };
    let dir = repo_dir.join("snapshots").join(commit);
    check_snapshot(&dir).ok()?;
    // Blobs named by a sha256 must hold those bytes: checked once (then
    // noted), also for snapshots that `hf download` or an older version of
    // this element left. A bad one is removed and the snapshot fetched.
    let mut ok = true;
    for n in snapshot_files(&dir) {
        if let Some(blob) = linked_blob(&dir, &n).filter(|b| !blob_trusted(b)) {
            let _ = std::fs::remove_file(blob);
            let _ = std::fs::remove_file(dir.join(&n));
            ok = false;
        }
    }
    ok.then_some(dir)
}

// --------------------------------------------------------------- progress

enum Msg {
    Report(Progress),
    Done(Result<PathBuf, DownloadError>),
}

#[derive(Default)]
struct TrackState {
    /// The attempt whose events count; older attempts' stray chunk tasks
    /// are ignored.
    gen: u64,
    file: String,
    done: u64,
    total: Option<u64>,
    last: Option<u64>,
    /// Bytes of files finished (or found in the cache).
    base: u64,
    all_total: Option<u64>,
    activity: Option<Instant>,
}

#[derive(Clone)]
struct Tracker {
    st: Arc<Mutex<TrackState>>,
    tx: mpsc::Sender<Msg>,
}

impl Tracker {
    fn lock(&self) -> std::sync::MutexGuard<'_, TrackState> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn report(&self, st: &mut TrackState) {
        st.last = Some(st.done);
        let _ = self.tx.send(Msg::Report(Progress {
            file: st.file.clone(),
            done: st.done,
            total: st.total,
            all_done: st.base + st.done,
            all_total: st.all_total,
        }));
    }

    fn set_totals(&self, base: u64, all_total: Option<u64>) {
        let mut st = self.lock();
        st.base = base;
        st.all_total = all_total;
    }

    /// A new attempt at `file`; returns its generation.
    fn begin(&self, file: &str, size: Option<u64>) -> u64 {
        let mut st = self.lock();
        st.gen += 1;
        st.file = file.to_string();
        st.done = 0;
        st.total = size;
        st.last = None;
        st.activity = Some(Instant::now());
        st.gen
    }

    fn init(&self, gen: u64, size: u64) {
        let mut st = self.lock();
        if st.gen == gen {
            st.total = Some(size);
            st.done = 0;
            st.activity = Some(Instant::now());
        }
    }

    fn update(&self, gen: u64, n: u64) {
        let mut st = self.lock();
        if st.gen != gen {
            return;
        }
        st.done += n;
        if let Some(t) = st.total {
            st.done = st.done.min(t);
        }
        st.activity = Some(Instant::now());
        if st.last.is_none_or(|l| st.done >= l + REPORT_STEP) {
            self.report(&mut st);
        }
    }

    /// The file is complete: a last report, its bytes move to the base.
    fn finish(&self, gen: u64) {
        let mut st = self.lock();
        if st.gen != gen {
            return;
        }
        if let Some(t) = st.total {
            st.done = t;
        }
        if st.last != Some(st.done) {
            self.report(&mut st);
        }
        st.base += st.done;
        st.done = 0;
        st.gen += 1;
    }

    fn idle_for(&self) -> Duration {
        self.lock()
            .activity
            .map(|a| a.elapsed())
            .unwrap_or_default()
    }
}

// ----------------------------------------------------------------- errors

/// What an error message needs to say what to do.
struct Ctx {
    repo: String,
    revision: String,
    endpoint: String,
    cache: PathBuf,
    token_set: bool,
    gated: bool,
}

impl Ctx {
    fn what(&self) -> String {
        format!("hf:{}@{}", self.repo, self.revision)
    }
    fn page(&self) -> String {
        format!("{}/{}", self.endpoint, self.repo)
    }
    fn token_hint(&self) -> String {
        if self.token_set {
            "HF_TOKEN (or the token file) is set, but the Hub refused it: check that the token is valid and that its account may read the repo".into()
        } else {
            "no token is set: set HF_TOKEN (in the environment or the env-file) to an access token (https://huggingface.co/settings/tokens)".into()
        }
    }
    fn gated_msg(&self, status: u16) -> String {
        format!(
            "{} is gated (HTTP {status}): log in on {} and accept its licence, then set HF_TOKEN to an access token of that account; {}",
            self.what(),
            self.page(),
            self.token_hint()
        )
    }
    fn unreachable(&self, cause: &str) -> String {
        format!(
            "cannot reach the Hugging Face Hub at {} for {} ({cause}): check the network connection and proxy, or set HF_ENDPOINT to a reachable Hub or mirror",
            self.endpoint,
            self.what()
        )
    }
    fn not_writable(&self, e: &dyn std::fmt::Display) -> String {
        format!(
            "the Hugging Face cache '{}' is not writable ({e}): point HF_HOME (or HF_HUB_CACHE, or model-root-dir) at a writable directory, or fix its permissions",
            self.cache.display()
        )
    }
    fn disk_full(&self, needed: u64, free: Option<u64>) -> String {
        let free = free
            .map(|f| format!(", {f} bytes ({}) are free", gb(f)))
            .unwrap_or_default();
        format!(
            "not enough disk space for {} in the Hugging Face cache '{}': {needed} bytes ({}) are still to download{free}; free some space, or point HF_HOME (or model-root-dir) at a larger disk",
            self.what(),
            self.cache.display(),
            gb(needed)
        )
    }

    /// An HTTP error status, with the Hub's `x-error-code` when known.
    fn status(&self, status: u16, code: Option<&str>, file: Option<&str>) -> String {
        let on = file.map(|f| format!(" (file {f})")).unwrap_or_default();
        match (status, code) {
            (_, Some("GatedRepo")) => self.gated_msg(status),
            (_, Some("RevisionNotFound")) => format!(
                "revision '{}' not found in {} (HTTP {status}): use a branch, tag or full commit hash that exists (see {}/tree/main); {EXPECTED}",
                self.revision,
                self.page(),
                self.page()
            ),
            (401 | 404, Some("RepoNotFound")) => format!(
                "Hugging Face repo '{}' not found at {} (HTTP {status}): check the name (hf:ORG/NAME; see {}); if it is private or gated: {}",
                self.repo,
                self.endpoint,
                self.page(),
                self.token_hint()
            ),
            (401 | 403, _) if self.gated => self.gated_msg(status),
            (401, _) => format!(
                "the Hub refused {}{on} (HTTP 401, not authorised): the repo may be private or gated, or not exist; {}; for a gated repo also accept its licence on {}",
                self.what(),
                self.token_hint(),
                self.page()
            ),
            (403, _) => format!(
                "the Hub refused {}{on} (HTTP 403, forbidden): the token lacks access, or the licence is not accepted yet on {}; {}",
                self.what(),
                self.page(),
                self.token_hint()
            ),
            (404, _) if file.is_some() => format!(
                "{}{on} not found on the Hub (HTTP 404), although the repo lists it: run again; if it persists the repo changed, pin a revision",
                self.what()
            ),
            (404, _) => format!(
                "{} not found at {} (HTTP 404): check the repo name and the revision ({EXPECTED})",
                self.what(),
                self.endpoint
            ),
            (429, _) => format!(
                "the Hub rate-limited {}{on} (HTTP 429): wait and run again; a token (HF_TOKEN) raises the limit",
                self.what()
            ),
            (s, _) if s >= 500 => format!(
                "the Hub at {} failed on {}{on} (HTTP {s}): try again later",
                self.endpoint,
                self.what()
            ),
            (s, _) => format!(
                "the Hub at {} answered HTTP {s} for {}{on}",
                self.endpoint,
                self.what()
            ),
        }
    }

    fn reqwest(&self, e: &reqwest::Error, file: Option<&str>) -> String {
        if let Some(s) = e.status() {
            return self.status(s.as_u16(), None, file);
        }
        let cause = chain(e);
        if e.is_connect() {
            return self.unreachable(&cause);
        }
        match file {
            Some(f) if e.is_timeout() || e.is_body() || e.is_decode() || e.is_request() => format!(
                "the download of {f} for {} was interrupted ({cause}); run again to resume it (the partial file stays in '{}')",
                self.what(),
                self.cache.display()
            ),
            None if e.is_timeout() => self.unreachable(&cause),
            _ => format!(
                "talking to the Hub at {} for {} failed: {cause}",
                self.endpoint,
                self.what()
            ),
        }
    }

    fn io(&self, e: &std::io::Error, file: &str, needed: u64) -> String {
        use std::io::ErrorKind as K;
        match e.kind() {
            K::StorageFull => self.disk_full(needed, free_bytes(&self.cache)),
            K::PermissionDenied | K::ReadOnlyFilesystem => self.not_writable(e),
            _ => format!(
                "I/O error in the Hugging Face cache '{}' while downloading {file} for {}: {e}",
                self.cache.display(),
                self.what()
            ),
        }
    }

    fn dl(&self, e: &DlError, file: &str, needed: u64) -> String {
        let what = self.what();
        match e {
            DlError::Stalled => format!(
                "the download of {file} for {what} stalled (no data for {} s); check the network and run again to resume it",
                STALL.as_secs()
            ),
            DlError::Http(r) => self.reqwest(r, Some(file)),
            DlError::Io(io) => self.io(io, file, needed),
            DlError::Header(h) => format!(
                "{} answered {file} of {what} without a valid '{h}' header: is HF_ENDPOINT ({}) a Hugging Face Hub, or a mirror that passes its headers on?",
                self.endpoint, self.endpoint
            ),
            DlError::Lock(p) => format!(
                "another process is downloading {file} of {what} (lock '{}'): wait for it to finish and run again",
                p.display()
            ),
            DlError::Short { start, want, got } => format!(
                "the Hub at {} sent {got} of the {want} bytes asked for {file} of {what} (from byte {start}); nothing of it was kept: run again to resume (if it persists, a proxy between cuts the answers: check it, or set HF_ENDPOINT to another mirror)",
                self.endpoint
            ),
            DlError::Long { start, want } => format!(
                "the Hub at {} sent more than the {want} bytes asked for {file} of {what} (from byte {start}); nothing of it was kept: is HF_ENDPOINT a Hugging Face Hub, or a proxy that ignores byte ranges?",
                self.endpoint
            ),
            DlError::NoRange { start } => format!(
                "the Hub at {} ignored the byte range asked for {file} of {what} (from byte {start}: it answered the whole file): is HF_ENDPOINT a Hugging Face Hub, or a proxy that drops Range headers?",
                self.endpoint
            ),
            DlError::Size { listed, served } => format!(
                "the Hub at {} lists {file} of {what} as {listed} bytes but serves {served}: the repo may have changed under the download; run again, or pin a revision",
                self.endpoint
            ),
            DlError::Commit(c) => format!(
                "{file} of {what} came from commit {c}, not the one listed: run again; if it persists, is HF_ENDPOINT ({}) a Hugging Face Hub?",
                self.endpoint
            ),
            DlError::TooBig { size, cap } => format!(
                "{file} of {what} is {size} bytes, over the {cap} bytes ({} MiB) this element reads for it (real ones are far smaller); the repo is not a usable checkpoint at this revision: pin another revision or choose another repo",
                cap >> 20
            ),
            DlError::Corrupt { expected, got } => format!(
                "the download of {file} for {what} is corrupt: its sha256 is {got}, the Hub's is {expected}; it was deleted and not put in the cache '{}': run again (if it persists, a proxy between alters the data, or HF_ENDPOINT is not a Hugging Face Hub)",
                self.cache.display()
            ),
        }
    }
}

const BAD_TOKEN: &str = "HF_TOKEN is not a valid token (it has characters an HTTP header cannot carry): set it to the token exactly as the Hub shows it";

fn chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        src = s.source();
    }
    parts.join(": ")
}

fn gb(n: u64) -> String {
    format!("{:.2} GB", n as f64 / 1e9)
}

/// Bytes free for an unprivileged writer on the file system holding `p`
/// (or its nearest existing ancestor).
fn free_bytes(p: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let mut cur = p;
    while !cur.exists() {
        cur = cur.parent()?;
    }
    let c = std::ffi::CString::new(cur.as_os_str().as_bytes()).ok()?;
    // SAFETY: `c` is a valid NUL-terminated path, `st` a plain C struct.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return None;
        }
        Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
    }
}

enum DlError {
    Stalled,
    Http(reqwest::Error),
    Io(std::io::Error),
    /// A header the Hub always sends is missing or unusable.
    Header(&'static str),
    Lock(PathBuf),
    /// A range answered with fewer bytes than asked.
    Short {
        start: u64,
        want: u64,
        got: u64,
    },
    /// A range answered with more bytes than asked.
    Long {
        start: u64,
        want: u64,
    },
    /// A 200 with the whole file to a range from `start` > 0.
    NoRange {
        start: u64,
    },
    /// The listing and the file's answer disagree on its size.
    Size {
        listed: u64,
        served: u64,
    },
    /// The answer came from another commit.
    Commit(String),
    /// A file read into memory is over its cap.
    TooBig {
        size: u64,
        cap: u64,
    },
    /// The whole file's sha256 is not the Hub's.
    Corrupt {
        expected: String,
        got: String,
    },
}

impl From<reqwest::Error> for DlError {
    fn from(e: reqwest::Error) -> Self {
        DlError::Http(e)
    }
}

impl From<std::io::Error> for DlError {
    fn from(e: std::io::Error) -> Self {
        DlError::Io(e)
    }
}

impl DlError {
    fn transient(&self) -> bool {
        match self {
            DlError::Stalled | DlError::Lock(_) | DlError::Short { .. } => true,
            DlError::Http(e) => match e.status() {
                Some(s) => s.is_server_error() || s.as_u16() == 429,
                None => true,
            },
            _ => false,
        }
    }
}

// ---------------------------------------------------------------- listing

#[derive(Deserialize)]
struct Listing {
    sha: String,
    #[serde(default)]
    siblings: Vec<Sibling>,
    #[serde(default)]
    gated: serde_json::Value,
}

#[derive(Deserialize)]
struct Sibling {
    rfilename: String,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default, rename = "blobId")]
    blob_id: Option<String>,
    #[serde(default)]
    lfs: Option<Lfs>,
}

#[derive(Deserialize)]
struct Lfs {
    #[serde(default)]
    sha256: Option<String>,
    #[serde(default)]
    size: Option<u64>,
}

impl Sibling {
    fn size(&self) -> Option<u64> {
        self.lfs.as_ref().and_then(|l| l.size).or(self.size)
    }
    /// The blob name the Hub's etag will give (LFS: its sha256; else the git
    /// blob id), to reuse a blob already in the cache.
    fn etag(&self) -> Option<&str> {
        self.lfs
            .as_ref()
            .and_then(|l| l.sha256.as_deref())
            .or(self.blob_id.as_deref())
            .filter(|e| plain_name(e))
    }
}

/// `GET {endpoint}/api/models/{repo}/revision/{rev}?blobs=true`.
async fn list(api: &Api, job: &Job, ctx: &mut Ctx) -> Result<Listing, DownloadError> {
    let repo = api.repo(Repo::with_revision(
        job.repo.clone(),
        RepoType::Model,
        job.revision.clone(),
    ));
    let resp = repo
        .info_request()
        .query(&[("blobs", "true")])
        .timeout(LISTING_TIMEOUT)
        .send()
        .await
        .map_err(|e| ctx.reqwest(&e, None))?;
    let status = resp.status();
    if !status.is_success() {
        let code = resp
            .headers()
            .get("x-error-code")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        return Err(DownloadError::Failed(ctx.status(
            status.as_u16(),
            code.as_deref(),
            None,
        )));
    }
    let path = resp.url().path().to_string();
    let body = read_capped(resp, LISTING_CAP).await.map_err(|e| match e {
        Capped::Over(n) => format!(
            "the Hub at {} {} for {} ({path}), over the {LISTING_CAP} bytes ({} MiB) this element reads for it (a repo with thousands of files lists in a few MB); it was not read and nothing was downloaded: check HF_ENDPOINT (is it a Hugging Face Hub, or a proxy that answers with something else?)",
            ctx.endpoint,
            match n {
                Some(n) => format!("announced a file list of {n} bytes"),
                None => "sent a longer file list".into(),
            },
            ctx.what(),
            LISTING_CAP >> 20,
        ),
        Capped::Http(e) => ctx.reqwest(&e, None),
    })?;
    let listing: Listing = serde_json::from_slice(&body).map_err(|e| {
        format!(
            "the Hub at {} sent a file list for {} that cannot be read ({}): is HF_ENDPOINT a Hugging Face Hub?",
            ctx.endpoint,
            ctx.what(),
            chain(&e)
        )
    })?;
    if !plain_name(&listing.sha) {
        return Err(DownloadError::Failed(format!(
            "the Hub at {} sent no usable commit for {}",
            ctx.endpoint,
            ctx.what()
        )));
    }
    ctx.gated = !matches!(
        listing.gated,
        serde_json::Value::Null | serde_json::Value::Bool(false)
    );
    Ok(listing)
}

enum Capped {
    /// Over the cap: the announced length, or `None` when it streamed past.
    Over(Option<u64>),
    Http(reqwest::Error),
}

/// The whole body of `resp`, refused when it is (or announces) more than
/// `cap` bytes: at most `cap` plus one network chunk is ever held.
async fn read_capped(mut resp: reqwest::Response, cap: u64) -> Result<Vec<u8>, Capped> {
    if let Some(n) = resp.content_length().filter(|n| *n > cap) {
        return Err(Capped::Over(Some(n)));
    }
    let mut body = Vec::new();
    while let Some(b) = resp.chunk().await.map_err(Capped::Http)? {
        if (body.len() + b.len()) as u64 > cap {
            return Err(Capped::Over(None));
        }
        body.extend_from_slice(&b);
    }
    Ok(body)
}

// --------------------------------------------------------------- download

struct Job {
    repo: String,
    revision: String,
    place: Place,
    repo_dir: PathBuf,
}

/// The Hub clients: hf-hub's `Api` (the listing, file URLs, and the data
/// requests, which follow any redirect, e.g. to a CDN) and, for the
/// metadata probe, one that follows only redirects within the Hub (the
/// `x-repo-commit` and etag headers are the Hub's, not the CDN's), as
/// hf-hub's own probe does.
struct Net {
    api: Api,
    probe: reqwest::Client,
    /// For the probe's redirect out of the Hub (a CDN): no token.
    plain: reqwest::Client,
}

fn build_net(place: &Place) -> Result<Net, DownloadError> {
    use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, USER_AGENT};
    let api = ApiBuilder::from_cache(Cache::new(place.cache.clone()))
        .with_endpoint(place.endpoint.clone())
        .with_token(place.token.clone())
        .with_progress(false)
        .with_max_files(PARALLEL)
        .with_chunk_size(Some(CHUNK as usize))
        .with_user_agent("vsssummarize", env!("CARGO_PKG_VERSION"))
        .build()
        .map_err(|e| match e {
            ApiError::InvalidHeaderValue(_) => BAD_TOKEN.to_string(),
            e => format!("cannot set up the Hugging Face client: {e}"),
        })?;
    let mut headers = HeaderMap::new();
    headers.insert(
        USER_AGENT,
        HeaderValue::from_static(concat!("vsssummarize/", env!("CARGO_PKG_VERSION"))),
    );
    let within_hub = reqwest::redirect::Policy::custom(|attempt| {
        if attempt.previous().len() > 10 {
            return attempt.error("too many redirects");
        }
        match attempt.previous().last() {
            Some(last) if last.make_relative(attempt.url()).is_none() => attempt.stop(),
            _ => attempt.follow(),
        }
    });
    let plain = reqwest::Client::builder()
        .default_headers(headers.clone())
        .build()
        .map_err(|e| format!("cannot set up the Hugging Face client: {e}"))?;
    if let Some(t) = &place.token {
        let mut v =
            HeaderValue::from_str(&format!("Bearer {t}")).map_err(|_| BAD_TOKEN.to_string())?;
        v.set_sensitive(true);
        headers.insert(AUTHORIZATION, v);
    }
    let probe = reqwest::Client::builder()
        .default_headers(headers)
        .redirect(within_hub)
        .build()
        .map_err(|e| format!("cannot set up the Hugging Face client: {e}"))?;
    Ok(Net { api, probe, plain })
}

/// A 64-hex-digit string: a git LFS file's sha256.
fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The sha256 of a file, lower-case hex.
fn sha256_file(p: &Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    let mut f = std::fs::File::open(p)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{:x}", h.finalize()))
}

/// Where the note "this blob's sha256 was checked" lives:
/// `<cache>/.locks/models--ORG--NAME/<sha256>.vsssummarize-verified`
/// (huggingface_hub's lock folder, which its cache scan skips), holding the
/// blob's length and modification time when it was checked.
fn verified_note(blob: &Path) -> Option<PathBuf> {
    let name = blob.file_name()?.to_str()?;
    let repo_dir = blob.parent()?.parent()?;
    let cache = repo_dir.parent()?;
    Some(
        cache
            .join(".locks")
            .join(repo_dir.file_name()?)
            .join(format!("{name}.vsssummarize-verified")),
    )
}

fn blob_stamp(blob: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(blob).ok()?;
    Some(format!("{} {} {}", m.len(), m.mtime(), m.mtime_nsec()))
}

/// Notes that `blob` (named by its sha256) was checked; best effort (a
/// read-only cache is checked again next time).
fn note_verified(blob: &Path) {
    if let (Some(note), Some(stamp)) = (verified_note(blob), blob_stamp(blob)) {
        if let Some(d) = note.parent() {
            let _ = std::fs::create_dir_all(d);
        }
        let _ = std::fs::write(note, stamp);
    }
}

/// Whether a blob named by a sha256 holds exactly those bytes: by its note
/// when the blob is unchanged since it was checked, else by hashing it (and
/// noting the result). Blobs not named by a sha256 (git files: the name is
/// a git sha1) are not checked here.
fn blob_trusted(blob: &Path) -> bool {
    let Some(name) = blob.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    if !is_sha256(name) {
        return true;
    }
    let stamp = blob_stamp(blob);
    if stamp.is_some() && verified_note(blob).and_then(|n| std::fs::read_to_string(n).ok()) == stamp
    {
        return true;
    }
    match sha256_file(blob) {
        Ok(h) if h.eq_ignore_ascii_case(name) => {
            note_verified(blob);
            true
        }
        _ => false,
    }
}

/// The blob `snap/name` links to, when it is a link into the repo's
/// `blobs/` (`../../blobs/<etag>`, one more `..` per folder of `name`).
fn linked_blob(snap: &Path, name: &str) -> Option<PathBuf> {
    let link = snap.join(name);
    let target = std::fs::read_link(&link).ok()?;
    let blob = link.parent()?.join(&target);
    let blob_name = target.file_name()?;
    let repo_dir = snap.parent()?.parent()?;
    (blob.parent().and_then(|p| p.canonicalize().ok())
        == repo_dir.join("blobs").canonicalize().ok())
    .then(|| repo_dir.join("blobs").join(blob_name))
}

/// Whether `snap/name` is there and whole; when it is there but not whole
/// it is removed (with its blob, when it links one in `blobs/`) so it is
/// fetched again. Whole: the Hub's size, a safetensors file's length
/// matches its header, and a blob named by a sha256 has that sha256.
fn present(snap: &Path, name: &str, size: Option<u64>) -> bool {
    let p = snap.join(name);
    let ok = match std::fs::metadata(&p) {
        Ok(m) if m.is_file() => {
            size.is_none_or(|s| m.len() == s)
                && (!name.ends_with(".safetensors") || safetensors_complete(&p).is_ok())
                && linked_blob(snap, name).is_none_or(|b| blob_trusted(&b))
        }
        _ => false,
    };
    if !ok && p.symlink_metadata().is_ok() {
        if let Some(blob) = linked_blob(snap, name).filter(|b| b.is_file()) {
            let _ = std::fs::remove_file(blob);
        }
        let _ = std::fs::remove_file(&p);
    }
    ok
}

/// A path in the snapshot that [`select`] can give: a plain name, or a
/// plain name in one of the Cosmos3 folders.
fn snapshot_path_ok(name: &str) -> bool {
    match name.split_once('/') {
        None => plain_name(name),
        Some((f, rest)) => COSMOS3_FOLDERS.contains(&f) && plain_name(rest),
    }
}

/// Points `snap/name` at `../../blobs/<etag>` (one more `..` per folder of
/// `name`, as huggingface_hub links nested files), replacing what is there.
fn link_into(snap: &Path, name: &str, etag: &str) -> std::io::Result<()> {
    if !snapshot_path_ok(name) || !plain_name(etag) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("internal error: '{name}' is not a snapshot file name"),
        ));
    }
    let link = snap.join(name);
    let dir = link.parent().unwrap_or(snap);
    // A Cosmos3 folder must be a real folder of the snapshot: a link or a
    // file in its place is removed (never what it points to).
    if dir != snap && dir.symlink_metadata().is_ok_and(|m| !m.is_dir()) {
        std::fs::remove_file(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    let mut target = PathBuf::new();
    for _ in 0..name.matches('/').count() + 2 {
        target.push("..");
    }
    target.push("blobs");
    target.push(etag);
    let base = name.rsplit('/').next().unwrap_or(name);
    let tmp = dir.join(format!(".{base}.vsssummarize-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)?;
    std::fs::rename(&tmp, &link)
}

/// Points `snap/name` at an existing `blobs/<etag>` of the right size (and
/// sha256, when the etag is one).
fn link_blob(repo_dir: &Path, snap: &Path, name: &str, etag: &str, size: u64) -> bool {
    let blob = repo_dir.join("blobs").join(etag);
    if !std::fs::metadata(&blob).is_ok_and(|m| m.is_file() && m.len() == size) {
        return false;
    }
    if !blob_trusted(&blob) {
        let _ = std::fs::remove_file(&blob);
        return false;
    }
    link_into(snap, name, etag).is_ok() && present(snap, name, Some(size))
}

fn check_writable(ctx: &Ctx, repo_dir: &Path) -> Result<(), DownloadError> {
    let blobs = repo_dir.join("blobs");
    std::fs::create_dir_all(&blobs)
        .and_then(|_| std::fs::create_dir_all(repo_dir.join("snapshots")))
        .map_err(|e| ctx.not_writable(&e))?;
    let probe = blobs.join(format!(".vsssummarize-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .and_then(|_| std::fs::remove_file(&probe))
        .map_err(|e| ctx.not_writable(&e).into())
}

/// What the Hub says of a file (its answer to `Range: bytes=0-0`).
struct Meta {
    commit: String,
    etag: String,
    size: u64,
}

async fn probe(net: &Net, url: &str) -> Result<Meta, DlError> {
    use reqwest::header::{CONTENT_RANGE, ETAG, LOCATION, RANGE};
    let resp = net
        .probe
        .get(url)
        .header(RANGE, "bytes=0-0")
        .send()
        .await?
        .error_for_status()?;
    let h = resp.headers();
    let text = |v: Option<&reqwest::header::HeaderValue>| {
        v.and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_string())
    };
    // huggingface_hub's normalisation: no weak prefix, no quotes.
    let etag = text(h.get("x-linked-etag").or_else(|| h.get(ETAG)))
        .map(|e| e.trim_start_matches("W/").replace('"', ""))
        .filter(|e| plain_name(e))
        .ok_or(DlError::Header("etag"))?;
    let commit = text(h.get("x-repo-commit"))
        .filter(|c| !c.is_empty())
        .ok_or(DlError::Header("x-repo-commit"))?;
    let resp = if resp.status().is_redirection() {
        let loc = text(h.get(LOCATION))
            .and_then(|l| resp.url().join(&l).ok())
            .ok_or(DlError::Header("location"))?;
        net.plain
            .get(loc)
            .header(RANGE, "bytes=0-0")
            .send()
            .await?
            .error_for_status()?
    } else {
        resp
    };
    let size = text(resp.headers().get(CONTENT_RANGE))
        .and_then(|r| r.rsplit('/').next().and_then(|n| n.trim().parse().ok()))
        .ok_or(DlError::Header("content-range"))?;
    Ok(Meta { commit, etag, size })
}

/// hf-hub's partial-blob format: the data, then the committed length (u64
/// LE: every byte before it arrived and was checked).
const TRAILER: u64 = 8;

/// The committed length of `part`, creating (or resetting) it when it is
/// not a partial blob of `size` bytes.
fn open_part(part: &Path, size: u64) -> std::io::Result<u64> {
    use std::os::unix::fs::FileExt;
    if let Ok(f) = std::fs::File::open(part) {
        if f.metadata()?.len() == size + TRAILER {
            let mut b = [0u8; TRAILER as usize];
            if f.read_exact_at(&mut b, size).is_ok() {
                let c = u64::from_le_bytes(b);
                if c <= size {
                    return Ok(c);
                }
            }
        }
    }
    let f = std::fs::File::create(part)?;
    f.set_len(size + TRAILER)?;
    Ok(0)
}

struct BlobLock(std::fs::File);

impl Drop for BlobLock {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        // SAFETY: a valid open descriptor.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// `blobs/<etag>.lock`, as hf-hub takes it (5 s of tries).
async fn lock_blob(blobs: &Path, etag: &str) -> Result<BlobLock, DlError> {
    use std::os::fd::AsRawFd;
    let p = blobs.join(format!("{etag}.lock"));
    let f = std::fs::File::create(&p)?;
    for i in 0..6 {
        // SAFETY: a valid open descriptor.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(BlobLock(f));
        }
        if i < 5 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    Err(DlError::Lock(p))
}

/// One range `[start, end)` of the file into `part`: exactly its bytes, or
/// an error (nothing written). At most the range is held in memory.
#[allow(clippy::too_many_arguments)]
async fn get_range(
    client: reqwest::Client,
    url: String,
    part: PathBuf,
    start: u64,
    end: u64,
    size: u64,
    tracker: Tracker,
    gen: u64,
) -> Result<(u64, u64), DlError> {
    use reqwest::header::{CONTENT_RANGE, RANGE};
    let want = end - start;
    let mut resp = client
        .get(&url)
        .header(RANGE, format!("bytes={start}-{}", end - 1))
        .send()
        .await?
        .error_for_status()?;
    match resp.status().as_u16() {
        206 => {
            let range = resp
                .headers()
                .get(CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let expect = format!("bytes {start}-{}/", end - 1);
            if !range.starts_with(&expect) {
                return Err(DlError::Header("content-range"));
            }
        }
        200 if start == 0 && end == size => {}
        _ => return Err(DlError::NoRange { start }),
    }
    match resp.content_length() {
        Some(n) if n < want => {
            return Err(DlError::Short {
                start,
                want,
                got: n,
            })
        }
        Some(n) if n > want => return Err(DlError::Long { start, want }),
        _ => {}
    }
    let mut buf = Vec::with_capacity(want as usize);
    while let Some(b) = resp.chunk().await? {
        if (buf.len() + b.len()) as u64 > want {
            return Err(DlError::Long { start, want });
        }
        buf.extend_from_slice(&b);
        tracker.update(gen, b.len() as u64);
    }
    if (buf.len() as u64) < want {
        return Err(DlError::Short {
            start,
            want,
            got: buf.len() as u64,
        });
    }
    tokio::task::spawn_blocking(move || {
        use std::os::unix::fs::FileExt;
        std::fs::OpenOptions::new()
            .write(true)
            .open(&part)?
            .write_all_at(&buf, start)
    })
    .await
    .map_err(std::io::Error::other)??;
    Ok((start, end))
}

/// What [`fetch_file`] needs to know of a file from the listing.
struct Want<'a> {
    name: &'a str,
    /// The listing's size.
    size: Option<u64>,
    /// The listing's LFS sha256.
    sha256: Option<&'a str>,
    /// The most bytes allowed (files read into memory).
    cap: Option<u64>,
}

/// Downloads one file: `blobs/<etag>.sync.part` (resumed from its committed
/// length), every range checked for its exact length, the whole checked
/// against the Hub's sha256 when it gives one; only then renamed to
/// `blobs/<etag>` and linked into `snap`. A corrupt file is deleted.
async fn fetch_file(
    to: &Dest<'_>,
    want: &Want<'_>,
    tracker: &Tracker,
    gen: u64,
) -> Result<(), DlError> {
    let Dest {
        net,
        repo,
        repo_dir,
        snap,
        sha,
    } = *to;
    let url = repo.url(want.name);
    let meta = probe(net, &url).await?;
    if meta.commit != sha {
        return Err(DlError::Commit(meta.commit));
    }
    let size = meta.size;
    if let Some(listed) = want.size.filter(|l| *l != size) {
        return Err(DlError::Size {
            listed,
            served: size,
        });
    }
    if let Some(cap) = want.cap.filter(|c| size > *c) {
        return Err(DlError::TooBig { size, cap });
    }
    let expected = Some(meta.etag.as_str())
        .filter(|e| is_sha256(e))
        .or(want.sha256.filter(|s| is_sha256(s)))
        .map(|s| s.to_ascii_lowercase());
    let blobs = repo_dir.join("blobs");
    std::fs::create_dir_all(&blobs)?;
    let blob = blobs.join(&meta.etag);
    let _lock = lock_blob(&blobs, &meta.etag).await?;
    tracker.init(gen, size);

    let part = blobs.join(format!("{}.sync.part", meta.etag));
    let first = open_part(&part, size)?;
    tracker.update(gen, first);
    let client = net.api.client().clone();
    let mut set = tokio::task::JoinSet::new();
    let mut starts = (first..size).step_by(CHUNK as usize);
    let spawn = |set: &mut tokio::task::JoinSet<_>, start: u64| {
        set.spawn(get_range(
            client.clone(),
            url.clone(),
            part.clone(),
            start,
            (start + CHUNK).min(size),
            size,
            tracker.clone(),
            gen,
        ));
    };
    for s in starts.by_ref().take(PARALLEL) {
        spawn(&mut set, s);
    }
    // Ranges done, committed in order (the trailer) so a resume never skips
    // a gap. Dropping `set` (an error, a stall) aborts the other ranges.
    let mut done = std::collections::BinaryHeap::new();
    let mut committed = first;
    while let Some(r) = set.join_next().await {
        let (a, b) = r.map_err(std::io::Error::other)??;
        done.push(std::cmp::Reverse((a, b)));
        let before = committed;
        while let Some(std::cmp::Reverse((a, b))) = done.peek().copied() {
            if a != committed {
                break;
            }
            done.pop();
            committed = b;
        }
        if committed != before {
            use std::os::unix::fs::FileExt;
            std::fs::OpenOptions::new()
                .write(true)
                .open(&part)?
                .write_all_at(&committed.to_le_bytes(), size)?;
        }
        if let Some(s) = starts.next() {
            spawn(&mut set, s);
        }
    }
    if committed != size {
        return Err(DlError::Short {
            start: first,
            want: size - first,
            got: committed - first,
        });
    }
    let p = part.clone();
    let got = tokio::task::spawn_blocking(move || -> std::io::Result<String> {
        let f = std::fs::OpenOptions::new().write(true).open(&p)?;
        f.set_len(size)?;
        f.sync_all()?;
        sha256_file(&p)
    })
    .await
    .map_err(std::io::Error::other)??;
    let checked = expected.is_some();
    if let Some(expected) = expected.filter(|e| *e != got) {
        let _ = std::fs::remove_file(&part);
        return Err(DlError::Corrupt { expected, got });
    }
    std::fs::rename(&part, &blob)?;
    if checked {
        note_verified(&blob);
    }
    drop(_lock);
    link_into(snap, want.name, &meta.etag)?;
    tracker.finish(gen);
    Ok(())
}

fn want_of<'a>(by_name: &BTreeMap<&str, &'a Sibling>, name: &'a str) -> Want<'a> {
    let s = by_name.get(name);
    Want {
        name,
        size: s.and_then(|s| s.size()),
        sha256: s
            .and_then(|s| s.lfs.as_ref())
            .and_then(|l| l.sha256.as_deref()),
        cap: cap_of(name),
    }
}

/// [`present`] off the runtime's workers (it may hash a blob).
async fn is_present(snap: &Path, name: &str, size: Option<u64>) -> bool {
    let (snap, name) = (snap.to_path_buf(), name.to_string());
    tokio::task::spawn_blocking(move || present(&snap, &name, size))
        .await
        .unwrap_or(false)
}

/// The most bytes of a file this element reads into memory: config.json
/// and the safetensors indexes (at the top level or in a Cosmos3 folder)
/// [`META_CAP`], the other non-weight files [`OTHER_CAP`]; the weights are
/// not read whole.
fn cap_of(name: &str) -> Option<u64> {
    let base = name.rsplit('/').next().unwrap_or(name);
    if base == "config.json" || base.ends_with(INDEX_SUFFIX) {
        Some(META_CAP)
    } else if base.ends_with(".safetensors") {
        None
    } else {
        Some(OTHER_CAP)
    }
}

/// Where [`fetch_file`] downloads from and to.
#[derive(Clone, Copy)]
struct Dest<'a> {
    net: &'a Net,
    /// The repo at the listed commit.
    repo: &'a ApiRepo,
    repo_dir: &'a Path,
    snap: &'a Path,
    /// The listed commit.
    sha: &'a str,
}

/// Downloads one file into the snapshot, retrying transient failures
/// ([`crate::retry`]: 0.5 s, then 1 s; `ATTEMPTS` tries in all).
async fn download(
    to: &Dest<'_>,
    want: &Want<'_>,
    tracker: &Tracker,
    ctx: &Ctx,
) -> Result<(), DownloadError> {
    const BACKOFF: retry::Backoff = retry::Backoff {
        first: Duration::from_millis(500),
        max: Duration::from_secs(1),
        retry_after_cap: Duration::ZERO,
    };
    let r = retry::run(&BACKOFF, ATTEMPTS - 1, |_| async move {
        let gen = tracker.begin(want.name, want.size);
        let fut = fetch_file(to, want, tracker, gen);
        let watch = async {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                if tracker.idle_for() > STALL {
                    break;
                }
            }
        };
        let r = tokio::select! {
            r = fut => r,
            _ = watch => Err(DlError::Stalled),
        };
        match r {
            Ok(()) => retry::Attempt::Done(Ok(())),
            Err(e) if e.transient() => retry::Attempt::Retry {
                error: e,
                retry_after: None,
            },
            Err(e) => retry::Attempt::Done(Err(e)),
        }
    })
    .await;
    match r {
        Ok(()) => Ok(()),
        Err(retry::Stop::Permanent(e) | retry::Stop::Exhausted { error: e, .. }) => Err(
            DownloadError::Failed(ctx.dl(&e, want.name, want.size.unwrap_or(0))),
        ),
    }
}

fn write_ref(repo_dir: &Path, revision: &str, commit: &str) -> std::io::Result<()> {
    let p = repo_dir.join("refs").join(revision);
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d)?;
    }
    let tmp = p.with_file_name(format!(
        ".{}.vsssummarize-{}",
        p.file_name().and_then(|n| n.to_str()).unwrap_or("ref"),
        std::process::id()
    ));
    std::fs::write(&tmp, commit)?;
    std::fs::rename(&tmp, &p)
}

async fn run(job: Job, tracker: Tracker) -> Result<PathBuf, DownloadError> {
    let mut ctx = Ctx {
        repo: job.repo.clone(),
        revision: job.revision.clone(),
        endpoint: job.place.endpoint.clone(),
        cache: job.place.cache.clone(),
        token_set: job.place.token.is_some(),
        gated: false,
    };
    let net = build_net(&job.place)?;
    let listing = list(&net.api, &job, &mut ctx).await?;
    let sha = listing.sha.clone();
    let names: Vec<String> = listing
        .siblings
        .iter()
        .map(|s| s.rfilename.clone())
        .collect();
    let by_name: BTreeMap<&str, &Sibling> = listing
        .siblings
        .iter()
        .map(|s| (s.rfilename.as_str(), s))
        .collect();
    let sel = select(&names, &ctx.what())?;
    let size_of = |n: &str| by_name.get(n).and_then(|s| s.size());
    // Files read into memory: refused before any byte when the listing
    // says they are over their cap.
    let indexes = sel.weights.iter().filter_map(|w| w.index.as_ref());
    for n in sel.files.iter().chain(indexes) {
        if let (Some(size), Some(cap)) = (size_of(n), cap_of(n)) {
            if size > cap {
                return Err(DownloadError::Failed(ctx.dl(
                    &DlError::TooBig { size, cap },
                    n,
                    size,
                )));
            }
        }
    }

    check_writable(&ctx, &job.repo_dir)?;
    let snap = job.repo_dir.join("snapshots").join(&sha);
    let repo = net.api.repo(Repo::with_revision(
        job.repo.clone(),
        RepoType::Model,
        sha.clone(),
    ));

    let to = Dest {
        net: &net,
        repo: &repo,
        repo_dir: &job.repo_dir,
        snap: &snap,
        sha: &sha,
    };
    let mut all = sel.files.clone();
    for w in &sel.weights {
        let Some(index) = &w.index else {
            all.extend(w.files.iter().cloned());
            continue;
        };
        if !is_present(&snap, index, size_of(index)).await {
            let want = want_of(&by_name, index);
            download(&to, &want, &tracker, &ctx).await?;
        }
        // Shard names: plain names beside the index (checked there).
        let shards: Vec<String> = index_shards(&snap.join(index))?
            .iter()
            .map(|s| in_folder(&w.folder, s))
            .collect();
        if let Some(s) = shards.iter().find(|s| !by_name.contains_key(s.as_str())) {
            return Err(DownloadError::Failed(format!(
                "{}: {index} names the shard '{s}', which the repo does not have; the repo is broken at this revision: pin another one",
                ctx.what()
            )));
        }
        all.push(index.clone());
        all.extend(shards);
    }

    let mut missing = Vec::new();
    let mut base = 0u64;
    for n in &all {
        if is_present(&snap, n, size_of(n)).await {
            base += std::fs::metadata(snap.join(n))
                .map(|m| m.len())
                .unwrap_or(0);
        } else {
            missing.push(n.clone());
        }
    }
    let all_total = all
        .iter()
        .map(|n| size_of(n))
        .sum::<Option<u64>>()
        .filter(|t| *t >= base);
    tracker.set_totals(base, all_total);

    let linkable = |n: &str| -> bool {
        match (by_name.get(n).and_then(|s| s.etag()), size_of(n)) {
            (Some(e), Some(s)) => {
                std::fs::metadata(job.repo_dir.join("blobs").join(e)).is_ok_and(|m| m.len() == s)
            }
            _ => false,
        }
    };
    let needed: u64 = missing
        .iter()
        .filter(|n| !linkable(n))
        .filter_map(|n| size_of(n))
        .sum();
    if let Some(free) = free_bytes(&job.place.cache) {
        if needed > free {
            return Err(DownloadError::Failed(ctx.disk_full(needed, Some(free))));
        }
    }

    for n in &missing {
        let size = size_of(n);
        let etag = by_name.get(n.as_str()).and_then(|s| s.etag());
        if let (Some(e), Some(s)) = (etag, size) {
            let (rd, sn, n2, e2) = (job.repo_dir.clone(), snap.clone(), n.clone(), e.to_string());
            let linked = tokio::task::spawn_blocking(move || link_blob(&rd, &sn, &n2, &e2, s))
                .await
                .unwrap_or(false);
            if linked {
                let gen = tracker.begin(n, size);
                tracker.finish(gen);
                continue;
            }
        }
        download(&to, &want_of(&by_name, n), &tracker, &ctx).await?;
        if !is_present(&snap, n, size).await {
            return Err(DownloadError::Failed(format!(
                "{}: {n} was downloaded but is incomplete or landed elsewhere (does the Hub at {} send x-repo-commit {sha}?); run again",
                ctx.what(),
                ctx.endpoint
            )));
        }
    }

    if job.revision != sha {
        write_ref(&job.repo_dir, &job.revision, &sha).map_err(|e| ctx.not_writable(&e))?;
    }
    check_snapshot(&snap).map_err(|e| format!("{}: after the download: {e}", ctx.what()))?;
    Ok(snap)
}

/// Downloads `spec` (unless complete in the cache) and returns its
/// snapshot directory. Call from a thread that is not a tokio worker.
pub fn fetch(
    spec: &HfSpec,
    env: &DownloadEnv,
    progress: ProgressFn<'_>,
) -> Result<PathBuf, DownloadError> {
    let token = token(env);
    fetch_inner(spec, env, progress).map_err(|e| e.map_message(|m| redact(m, token.as_deref())))
}

fn fetch_inner(
    spec: &HfSpec,
    env: &DownloadEnv,
    progress: ProgressFn<'_>,
) -> Result<PathBuf, DownloadError> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(DownloadError::Failed(
            "internal error: hf: downloads must not run on a tokio runtime thread".into(),
        ));
    }
    // An `HfSpec` built by hand gets the checks `parse` makes.
    let written = match &spec.revision {
        Some(r) => format!("{}@{r}", spec.repo),
        None => spec.repo.clone(),
    };
    if parse(&written)? != *spec {
        return Err(DownloadError::Failed(format!(
            "'hf:{written}' is not a valid model path; {EXPECTED}"
        )));
    }
    let place = Place::from_env(env)?;
    let revision = spec.revision.clone().unwrap_or_else(|| "main".into());
    let what = format!("hf:{}@{revision}", spec.repo);
    let repo_dir = place.cache.join(folder_name(&spec.repo));
    let dir = if let Some(dir) = cached_snapshot(&repo_dir, &revision) {
        dir
    } else {
        if place.offline {
            return Err(DownloadError::Failed(format!(
                "HF_HUB_OFFLINE is set and {what} is not complete in the Hugging Face cache '{}': unset HF_HUB_OFFLINE, or download it first (hf download {} --revision {revision})",
                place.cache.display(),
                spec.repo
            )));
        }
        let job = Job {
            repo: spec.repo.clone(),
            revision,
            place: place.clone(),
            repo_dir,
        };
        let (tx, rx) = mpsc::channel();
        let tracker = Tracker {
            st: Arc::default(),
            tx: tx.clone(),
        };
        let handle = crate::runtime::RUNTIME.spawn(async move {
            let r = run(job, tracker).await;
            let _ = tx.send(Msg::Done(r));
        });
        loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(Msg::Report(p)) => progress(&p),
                Ok(Msg::Done(r)) => break r?,
                Err(mpsc::RecvTimeoutError::Timeout) if !handle.is_finished() => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    // Finished: its last messages may still be queued.
                    match rx.try_recv() {
                        Ok(Msg::Report(p)) => progress(&p),
                        Ok(Msg::Done(r)) => break r?,
                        Err(_) => {
                            return Err(DownloadError::Failed(format!(
                                "internal error: the download of {what} ended without a result"
                            )))
                        }
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(DownloadError::Failed(format!(
                        "internal error: the download of {what} ended without a result"
                    )))
                }
            }
        }
    };
    if let Some(root) = &place.root {
        let c = dir.canonicalize().unwrap_or_else(|_| dir.clone());
        if !c.starts_with(root) {
            return Err(DownloadError::Failed(format!(
                "{what} is at '{}', outside model-root-dir '{}' (a symlink under the root points out of it): fix the link or model-root-dir",
                c.display(),
                root.display()
            )));
        }
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn download_hf_parse_accepts() {
        assert_eq!(
            parse("nvidia/Cosmos-Reason1-7B").unwrap(),
            HfSpec {
                repo: "nvidia/Cosmos-Reason1-7B".into(),
                revision: None
            }
        );
        assert_eq!(
            parse("Qwen/Qwen2.5-VL-7B-Instruct@v1.0").unwrap(),
            HfSpec {
                repo: "Qwen/Qwen2.5-VL-7B-Instruct".into(),
                revision: Some("v1.0".into())
            }
        );
        assert_eq!(
            parse("a_b/c.d@refs/pr/1").unwrap().revision.as_deref(),
            Some("refs/pr/1")
        );
        let sha = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(
            parse(&format!("o/n@{sha}")).unwrap().revision.as_deref(),
            Some(sha)
        );
    }

    #[test]
    fn download_hf_parse_rejects() {
        for (input, says) in [
            ("", "empty"),
            ("@main", "empty"),
            ("Cosmos-Reason1-7B", "no organisation"),
            ("nvidia/Cosmos/7B", "slashes"),
            ("nvidia//x", "slashes"),
            ("/x", "organisation is empty"),
            ("x/", "name is empty"),
            ("nvidia/Cosmos Reason", "character ' '"),
            ("nvi:dia/x", "character ':'"),
            ("nvidia/-x", "starts or ends"),
            ("nvidia/a--b", "'--'"),
            ("nvidia/x@", "revision after '@' is empty"),
            ("nvidia/x@a b", "character ' '"),
            ("nvidia/x@../etc", "not a valid"),
            ("nvidia/x@a@b", "character '@'"),
        ] {
            let e = parse(input).unwrap_err().to_string();
            assert!(e.contains(says), "{input:?}: {e}");
            assert!(e.contains("hf:ORG/NAME[@REVISION]"), "{input:?}: {e}");
            assert!(e.contains("hf:nvidia/Cosmos-Reason1-7B"), "{input:?}: {e}");
        }
    }

    #[test]
    fn download_hf_parse_via_model_path() {
        use super::super::{parse_model_path, ModelSource};
        assert!(matches!(
            parse_model_path("hf:nvidia/Cosmos-Reason1-7B@main"),
            Ok(ModelSource::Hf(_))
        ));
        assert!(parse_model_path("hf:Cosmos").is_err());
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn download_hf_select_rule() {
        let s = select(
            &names(&[
                ".gitattributes",
                "README.md",
                "config.json",
                "generation_config.json",
                "tokenizer.json",
                "tokenizer_config.json",
                "chat_template.json",
                "preprocessor_config.json",
                "model-00001-of-00002.safetensors",
                "model-00002-of-00002.safetensors",
                "model.safetensors.index.json",
                "pytorch_model.bin",
                "original/consolidated.00.pth",
                "original/model.safetensors",
                "hf_quant_config.json",
            ]),
            "x",
        )
        .unwrap();
        assert_eq!(
            s.files,
            names(&[
                "config.json",
                "generation_config.json",
                "hf_quant_config.json",
                "preprocessor_config.json",
                "tokenizer.json",
                "tokenizer_config.json",
                "chat_template.json",
            ])
        );
        assert_eq!(
            s.weights,
            vec![Weights {
                folder: String::new(),
                index: Some(INDEX.into()),
                files: Vec::new(),
            }]
        );

        let s = select(
            &names(&[
                "config.json",
                "tokenizer.json",
                "model.safetensors",
                "consolidated.safetensors",
            ]),
            "x",
        )
        .unwrap();
        assert_eq!(s.weights.len(), 1);
        assert_eq!(s.weights[0].files, names(&["model.safetensors"]));
        let s = select(
            &names(&[
                "config.json",
                "tokenizer.json",
                "b.safetensors",
                "a.safetensors",
            ]),
            "x",
        )
        .unwrap();
        assert_eq!(
            s.weights[0].files,
            names(&["a.safetensors", "b.safetensors"])
        );

        let e = select(
            &names(&["config.json", "tokenizer.json", "pytorch_model.bin"]),
            "hf:o/n@main",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("no safetensors") && e.contains("pytorch_model.bin"),
            "{e}"
        );
        let e = select(&names(&["tokenizer.json", "model.safetensors"]), "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("config.json"), "{e}");
        let e = select(&names(&["config.json", "model.safetensors"]), "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("tokenizer.json"), "{e}");
    }

    /// A Cosmos3 (diffusers-style) repo's listing: the top level's
    /// configs and tokenizer, the two weight folders, and folders that
    /// must not be taken.
    fn cosmos3_listing() -> Vec<String> {
        names(&[
            "config.json",
            "model_index.json",
            "tokenizer.json",
            "chat_template.jinja",
            "transformer/config.json",
            "transformer/hf_quant_config.json",
            "transformer/diffusion_pytorch_model.safetensors.index.json",
            "transformer/diffusion_pytorch_model-00001-of-00002.safetensors",
            "transformer/diffusion_pytorch_model-00002-of-00002.safetensors",
            "transformer/README.md",
            "vision_encoder/config.json",
            "vision_encoder/model.safetensors",
            "vae/config.json",
            "vae/diffusion_pytorch_model.safetensors",
            "sound_tokenizer/model.safetensors",
            "scheduler/scheduler_config.json",
        ])
    }

    #[test]
    fn download_hf_select_cosmos3_layout() {
        let s = select(&cosmos3_listing(), "x").unwrap();
        assert_eq!(
            s.files,
            names(&[
                "config.json",
                "tokenizer.json",
                "chat_template.jinja",
                "transformer/config.json",
                "transformer/hf_quant_config.json",
                "vision_encoder/config.json",
            ])
        );
        assert_eq!(
            s.weights,
            vec![
                Weights {
                    folder: "transformer".into(),
                    index: Some(
                        "transformer/diffusion_pytorch_model.safetensors.index.json".into()
                    ),
                    files: Vec::new(),
                },
                Weights {
                    folder: "vision_encoder".into(),
                    index: None,
                    files: names(&["vision_encoder/model.safetensors"]),
                },
            ]
        );
        // Nothing of the other folders, in any case.
        for n in s
            .files
            .iter()
            .chain(s.weights.iter().flat_map(|w| &w.files))
        {
            assert!(
                n.starts_with("transformer/")
                    || n.starts_with("vision_encoder/")
                    || !n.contains('/'),
                "{n}"
            );
        }

        // Without an index: every *.safetensors directly in the folder
        // (not in a folder below it), sorted.
        let s = select(
            &names(&[
                "config.json",
                "tokenizer.json",
                "transformer/b.safetensors",
                "transformer/a.safetensors",
                "transformer/nested/c.safetensors",
                "vision_encoder/v.safetensors",
            ]),
            "x",
        )
        .unwrap();
        assert_eq!(
            s.weights[0].files,
            names(&["transformer/a.safetensors", "transformer/b.safetensors"])
        );
        assert_eq!(s.weights[1].files, names(&["vision_encoder/v.safetensors"]));
        assert_eq!(s.files, names(&["config.json", "tokenizer.json"]));

        // Top-level weights win: the folders are not looked at.
        let mut l = cosmos3_listing();
        l.push("model.safetensors".into());
        let s = select(&l, "x").unwrap();
        assert_eq!(s.weights.len(), 1);
        assert_eq!(s.weights[0].files, names(&["model.safetensors"]));
        assert!(!s.files.iter().any(|f| f.contains('/')), "{:?}", s.files);
    }

    #[test]
    fn download_hf_select_cosmos3_refusals() {
        // One weight folder without the other: the error names the missing one.
        let only_t: Vec<String> = cosmos3_listing()
            .into_iter()
            .filter(|n| !n.starts_with("vision_encoder/"))
            .collect();
        let e = select(&only_t, "hf:o/n@main").unwrap_err().to_string();
        assert!(
            e.contains("hf:o/n@main")
                && e.contains("has transformer/*.safetensors but no vision_encoder/*.safetensors"),
            "{e}"
        );
        let only_v: Vec<String> = cosmos3_listing()
            .into_iter()
            .filter(|n| !n.starts_with("transformer/"))
            .collect();
        let e = select(&only_v, "x").unwrap_err().to_string();
        assert!(
            e.contains("has vision_encoder/*.safetensors but no transformer/*.safetensors"),
            "{e}"
        );
        // An index alone (its shards not listed) is no weights.
        let e = select(
            &names(&[
                "config.json",
                "tokenizer.json",
                "transformer/diffusion_pytorch_model.safetensors.index.json",
                "vision_encoder/model.safetensors",
            ]),
            "x",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("no transformer/*.safetensors"), "{e}");
        // Weights only in other folders: no safetensors weights.
        let e = select(
            &names(&["config.json", "tokenizer.json", "vae/x.safetensors"]),
            "x",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("no safetensors weights"), "{e}");
        // Hostile or odd listed names are never taken.
        let e = select(
            &names(&[
                "config.json",
                "tokenizer.json",
                "transformer/../x.safetensors",
                "transformer/./y.safetensors",
                "transformer//z.safetensors",
                "vision_encoder/model.safetensors",
            ]),
            "x",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("no transformer/*.safetensors"), "{e}");
        // Two indexes in a folder: ambiguous.
        let mut l = cosmos3_listing();
        l.push("transformer/model.safetensors.index.json".into());
        let e = select(&l, "x").unwrap_err().to_string();
        assert!(
            e.contains("several safetensors indexes in transformer/"),
            "{e}"
        );
        // The top level still needs config.json and the tokenizer.
        let l: Vec<String> = cosmos3_listing()
            .into_iter()
            .filter(|n| n != "tokenizer.json")
            .collect();
        assert!(select(&l, "x")
            .unwrap_err()
            .to_string()
            .contains("tokenizer.json"));
    }

    #[test]
    fn download_hf_cosmos3_index_shard_names_are_plain() {
        let d = tmp("c3index");
        let p = d.join("diffusion_pytorch_model.safetensors.index.json");
        for bad in [
            "../x.safetensors",
            "/etc/x.safetensors",
            "a/b.safetensors",
            "..",
        ] {
            std::fs::write(&p, json_index(bad)).unwrap();
            let e = index_shards(&p).unwrap_err().to_string();
            assert!(e.contains("not a plain file name"), "{bad}: {e}");
        }
        assert_eq!(cap_of("transformer/config.json"), Some(META_CAP));
        assert_eq!(
            cap_of("transformer/diffusion_pytorch_model.safetensors.index.json"),
            Some(META_CAP)
        );
        assert_eq!(cap_of("transformer/hf_quant_config.json"), Some(OTHER_CAP));
        assert_eq!(cap_of("vision_encoder/model.safetensors"), None);
        assert!(snapshot_path_ok("transformer/a.safetensors"));
        assert!(snapshot_path_ok("config.json"));
        for bad in [
            "vae/a.safetensors",
            "transformer/../a",
            "transformer/x/y",
            "../a",
            "/a",
        ] {
            assert!(!snapshot_path_ok(bad), "{bad}");
        }
        let _ = std::fs::remove_dir_all(&d);
    }

    fn json_index(shard: &str) -> String {
        serde_json::json!({ "weight_map": { "w": shard } }).to_string()
    }

    /// A snapshot in the Cosmos3 layout is complete only with every shard
    /// of each folder; a dangling link in a folder is seen.
    #[test]
    fn download_hf_cosmos3_snapshot_check() {
        let d = tmp("c3snap");
        let snap = d.join("snap");
        std::fs::create_dir_all(snap.join("transformer")).unwrap();
        std::fs::create_dir_all(snap.join("vision_encoder")).unwrap();
        std::fs::create_dir_all(snap.join("vae")).unwrap();
        std::fs::write(snap.join("config.json"), "{}").unwrap();
        std::fs::write(snap.join("tokenizer.json"), "{}").unwrap();
        std::fs::write(
            snap.join("transformer/diffusion_pytorch_model.safetensors.index.json"),
            serde_json::json!({"weight_map": {"a": "s-1.safetensors", "b": "s-2.safetensors"}})
                .to_string(),
        )
        .unwrap();
        std::fs::write(
            snap.join("transformer/s-1.safetensors"),
            safetensors_bytes(10),
        )
        .unwrap();
        std::fs::write(
            snap.join("transformer/s-2.safetensors"),
            safetensors_bytes(20),
        )
        .unwrap();
        std::fs::write(
            snap.join("vision_encoder/model.safetensors"),
            safetensors_bytes(5),
        )
        .unwrap();
        check_snapshot(&snap).unwrap();
        assert_eq!(
            local_weights(&snap).unwrap(),
            names(&[
                "transformer/s-1.safetensors",
                "transformer/s-2.safetensors",
                "vision_encoder/model.safetensors",
            ])
        );
        // A dangling link in another folder is not looked at.
        std::os::unix::fs::symlink("../../../blobs/nothing", snap.join("vae/x.safetensors"))
            .unwrap();
        check_snapshot(&snap).unwrap();
        // A missing shard, a truncated one, a dangling link in a weight
        // folder: incomplete.
        let s2 = snap.join("transformer/s-2.safetensors");
        std::fs::remove_file(&s2).unwrap();
        assert!(check_snapshot(&snap).is_err());
        let b = safetensors_bytes(20);
        std::fs::write(&s2, &b[..b.len() - 1]).unwrap();
        assert!(check_snapshot(&snap)
            .unwrap_err()
            .to_string()
            .contains("incomplete"));
        std::fs::write(&s2, &b).unwrap();
        check_snapshot(&snap).unwrap();
        let dangling = snap.join("transformer/extra.json");
        std::os::unix::fs::symlink("../../../blobs/nothing", &dangling).unwrap();
        assert!(check_snapshot(&snap)
            .unwrap_err()
            .to_string()
            .contains("missing blob"));
        std::fs::remove_file(&dangling).unwrap();
        // No vision tower: named.
        std::fs::remove_file(snap.join("vision_encoder/model.safetensors")).unwrap();
        let e = check_snapshot(&snap).unwrap_err().to_string();
        assert!(e.contains("no vision_encoder/*.safetensors"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }

    /// Nested files link to their blob with one more `..` per folder, as
    /// huggingface_hub lays them out, and the link resolves to the blob.
    #[test]
    fn download_hf_nested_links() {
        let d = tmp("c3link");
        let repo_dir = d.join("models--o--n");
        let snap = repo_dir.join("snapshots").join("c");
        std::fs::create_dir_all(repo_dir.join("blobs")).unwrap();
        std::fs::write(repo_dir.join("blobs/e1"), b"x").unwrap();
        link_into(&snap, "transformer/a.json", "e1").unwrap();
        link_into(&snap, "config.json", "e1").unwrap();
        assert_eq!(
            std::fs::read_link(snap.join("transformer/a.json")).unwrap(),
            Path::new("../../../blobs/e1")
        );
        assert_eq!(
            std::fs::read_link(snap.join("config.json")).unwrap(),
            Path::new("../../blobs/e1")
        );
        assert_eq!(
            std::fs::read(snap.join("transformer/a.json")).unwrap(),
            b"x"
        );
        assert_eq!(
            linked_blob(&snap, "transformer/a.json"),
            Some(repo_dir.join("blobs/e1"))
        );
        for bad in ["vae/a.json", "transformer/../a.json", "../a.json"] {
            assert!(link_into(&snap, bad, "e1").is_err(), "{bad}");
        }
        // A link in place of a weight folder is replaced, its target kept.
        let outside = d.join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::remove_dir_all(snap.join("transformer")).unwrap();
        std::os::unix::fs::symlink(&outside, snap.join("transformer")).unwrap();
        link_into(&snap, "transformer/a.json", "e1").unwrap();
        assert!(snap
            .join("transformer")
            .symlink_metadata()
            .unwrap()
            .is_dir());
        assert!(outside.is_dir() && dir_names(&outside).is_empty());
        let _ = std::fs::remove_dir_all(&d);
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("vss-hf-unit-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn safetensors_bytes(n: usize) -> Vec<u8> {
        let h = format!(r#"{{"w":{{"dtype":"U8","shape":[{n}],"data_offsets":[0,{n}]}}}}"#);
        let mut v = (h.len() as u64).to_le_bytes().to_vec();
        v.extend(h.as_bytes());
        v.extend(std::iter::repeat_n(7u8, n));
        v
    }

    #[test]
    fn download_hf_safetensors_truncation_is_seen() {
        let d = tmp("st");
        let p = d.join("model.safetensors");
        let b = safetensors_bytes(1000);
        std::fs::write(&p, &b).unwrap();
        safetensors_complete(&p).unwrap();
        std::fs::write(&p, &b[..b.len() - 1]).unwrap();
        assert!(safetensors_complete(&p)
            .unwrap_err()
            .to_string()
            .contains("incomplete"));
        std::fs::write(&p, &b[..5]).unwrap();
        assert!(safetensors_complete(&p).is_err());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn download_hf_root_rule() {
        let d = tmp("root");
        let root = d.join("root");
        std::fs::create_dir_all(&root).unwrap();
        let root = root.canonicalize().unwrap();
        // Inside the root (even not existing yet): kept.
        let inside = root.join("hf").join("hub");
        assert_eq!(
            choose_cache(Some(inside.clone()), Some(&root)).unwrap(),
            inside
        );
        // Outside: moved under the root.
        let outside = d.join("elsewhere").join("hub");
        assert_eq!(
            choose_cache(Some(outside), Some(&root)).unwrap(),
            root.join("huggingface").join("hub")
        );
        // A symlink inside the root pointing out does not count as inside.
        let out = d.join("out");
        std::fs::create_dir_all(&out).unwrap();
        std::os::unix::fs::symlink(&out, root.join("link")).unwrap();
        assert_eq!(
            choose_cache(Some(root.join("link").join("hub")), Some(&root)).unwrap(),
            root.join("huggingface").join("hub")
        );
        assert!(choose_cache(None, None)
            .unwrap_err()
            .to_string()
            .contains("HF_HOME"));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn download_hf_env_defaults() {
        let env = |kv: &[(&str, &str)]| DownloadEnv {
            vars: kv
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            model_root_dir: None,
        };
        assert_eq!(
            hub_cache(&env(&[("HOME", "/h")])).unwrap(),
            PathBuf::from("/h/.cache/huggingface/hub")
        );
        assert_eq!(
            hub_cache(&env(&[("HOME", "/h"), ("XDG_CACHE_HOME", "/x")])).unwrap(),
            PathBuf::from("/x/huggingface/hub")
        );
        assert_eq!(
            hub_cache(&env(&[("HOME", "/h"), ("HF_HOME", "~/hf")])).unwrap(),
            PathBuf::from("/h/hf/hub")
        );
        assert_eq!(
            hub_cache(&env(&[("HF_HOME", "/a"), ("HF_HUB_CACHE", "/b")])).unwrap(),
            PathBuf::from("/b")
        );
        let p =
            Place::from_env(&env(&[("HF_HOME", "/a"), ("HF_ENDPOINT", "http://h:1/")])).unwrap();
        assert_eq!(p.endpoint, "http://h:1");
        assert!(!p.offline);
        assert!(
            Place::from_env(&env(&[("HF_HOME", "/a"), ("HF_ENDPOINT", "h:1")]))
                .unwrap_err()
                .to_string()
                .contains("HF_ENDPOINT")
        );
        assert_eq!(
            token(&env(&[("HF_TOKEN", " t "), ("HF_HOME", "/nonexistent")])).as_deref(),
            Some("t")
        );
    }

    #[test]
    fn download_hf_meta_files_are_capped() {
        let d = tmp("cap");
        let p = d.join(INDEX);
        let f = std::fs::File::create(&p).unwrap();
        f.set_len(META_CAP + 1).unwrap();
        let e = index_shards(&p).unwrap_err().to_string();
        assert!(e.contains("16777216 bytes (16 MiB)"), "{e}");
        std::fs::write(&p, br#"{"weight_map":{"a":"m.safetensors"}}"#).unwrap();
        assert_eq!(index_shards(&p).unwrap(), vec!["m.safetensors"]);
        assert_eq!(cap_of("config.json"), Some(META_CAP));
        assert_eq!(cap_of(INDEX), Some(META_CAP));
        assert_eq!(cap_of("tokenizer.json"), Some(OTHER_CAP));
        assert_eq!(cap_of("model-00001-of-00002.safetensors"), None);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn download_hf_blob_sha256_is_checked_once() {
        use sha2::{Digest, Sha256};
        let d = tmp("blobcheck");
        let blobs = d.join("hub/models--o--n/blobs");
        std::fs::create_dir_all(&blobs).unwrap();
        let data = b"weights".to_vec();
        let name = format!("{:x}", Sha256::digest(&data));
        let blob = blobs.join(&name);
        std::fs::write(&blob, &data).unwrap();
        assert!(blob_trusted(&blob));
        let note = verified_note(&blob).unwrap();
        assert_eq!(
            note,
            d.join(format!(
                "hub/.locks/models--o--n/{name}.vsssummarize-verified"
            ))
        );
        assert!(note.is_file());
        // Changed after the check: the note no longer matches, hashed again.
        // (Its time set apart: two writes may share a clock tick.)
        std::fs::write(&blob, b"weightz").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&blob)
            .unwrap()
            .set_modified(std::time::UNIX_EPOCH + Duration::from_secs(1000))
            .unwrap();
        assert!(!blob_trusted(&blob));
        // A git blob (sha1 name) is not hashed.
        let git = blobs.join("0123456789abcdef0123456789abcdef01234567");
        std::fs::write(&git, b"x").unwrap();
        assert!(blob_trusted(&git));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn download_hf_redacts() {
        assert_eq!(
            redact("x hf_secret y".into(), Some("hf_secret")),
            "x <HF_TOKEN> y"
        );
        assert_eq!(redact("x".into(), None), "x");
    }
}
