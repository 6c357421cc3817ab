// SPDX-License-Identifier: MPL-2.0
//! `model-path` values that name a remote checkpoint — `ngc:ORG/TEAM/MODEL:VERSION`
//! (NVIDIA NGC, as VSS's seed page writes them) and `hf:ORG/NAME[@REVISION]`
//! (the Hugging Face Hub) — resolved to a local directory, downloading once
//! into a cache. Plain Rust, no GStreamer types; called from the application
//! thread at NULL→READY (never the streaming thread, never a tokio worker).

pub mod hf;
pub mod ngc;

use std::collections::HashMap;
use std::path::PathBuf;

/// Ends a download early from another thread; see [`resolve_cancellable`].
pub use tokio_util::sync::CancellationToken;

/// Where a `model-path` points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelSource {
    Local(PathBuf),
    Ngc(NgcSpec),
    Hf(HfSpec),
}

/// `ngc:ORG/TEAM/MODEL:VERSION` (or `ngc:ORG/MODEL:VERSION`, team `no-team`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NgcSpec {
    pub org: String,
    /// `None` for `ORG/MODEL:VERSION`.
    pub team: Option<String>,
    pub model: String,
    pub version: String,
}

/// `hf:ORG/NAME[@REVISION]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HfSpec {
    pub repo: String,
    /// `None`: the default branch (`main`).
    pub revision: Option<String>,
}

/// One progress report: bytes of `file` done out of `total` (when known),
/// and of the whole download.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    pub file: String,
    pub done: u64,
    pub total: Option<u64>,
    /// Whole download so far / expected (when known).
    pub all_done: u64,
    pub all_total: Option<u64>,
}

/// Called with each progress report (from the downloading thread).
pub type ProgressFn<'a> = &'a (dyn Fn(&Progress) + Send + Sync);

/// What a download may use: the environment as the element sees it
/// (process environment overlaid by the `env-file`: `NGC_API_KEY`,
/// `NGC_CLI_API_KEY`, `NGC_MODEL_CACHE`, `HF_ENDPOINT`, `HF_HOME`,
/// `HF_TOKEN`, `PATH`, `HOME`, …) and `model-root-dir`, under which any
/// cache must lie when it is set.
///
/// `Debug` shows the variables' names only: the map holds `HF_TOKEN` and
/// `NGC_API_KEY` (as [`crate::config::Env`] does).
#[derive(Clone, Default)]
pub struct DownloadEnv {
    pub vars: HashMap<String, String>,
    pub model_root_dir: Option<PathBuf>,
}

impl std::fmt::Debug for DownloadEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&str> = self.vars.keys().map(String::as_str).collect();
        names.sort_unstable();
        f.debug_struct("DownloadEnv")
            .field("names", &names)
            .field("model_root_dir", &self.model_root_dir)
            .finish()
    }
}

impl DownloadEnv {
    /// A variable; empty values count as unset.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    }
}

/// Why a `model-path` could not be turned into a local checkpoint. Its
/// `Display` is the message the element reports, word for word: each says
/// what failed and what to do about it (docs/errors.md).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DownloadError {
    /// The value is malformed: an `hf:` or `ngc:` spec that names no model.
    #[error("{0}")]
    Spec(String),
    /// The environment does not allow the download: cache or model root,
    /// credentials, the NGC CLI, a timeout setting.
    #[error("{0}")]
    Setup(String),
    /// Cancelled from another thread ([`resolve_cancellable`]).
    #[error("{0}")]
    Cancelled(String),
    /// The NGC CLI made no progress for the stall timeout.
    #[error("{0}")]
    Stalled(String),
    /// The Hub, the NGC CLI or the local files failed the download.
    #[error("{0}")]
    Failed(String),
}

impl DownloadError {
    /// The same kind of error with its message rewritten by `f`.
    pub(crate) fn map_message(self, f: impl FnOnce(String) -> String) -> Self {
        use DownloadError::*;
        match self {
            Spec(m) => Spec(f(m)),
            Setup(m) => Setup(f(m)),
            Cancelled(m) => Cancelled(f(m)),
            Stalled(m) => Stalled(f(m)),
            Failed(m) => Failed(f(m)),
        }
    }
}

impl From<String> for DownloadError {
    /// A message from a step with no variant of its own.
    fn from(msg: String) -> Self {
        DownloadError::Failed(msg)
    }
}

/// Parses a `model-path` value. Anything without an `ngc:` or `hf:` prefix
/// is a local path.
pub fn parse_model_path(s: &str) -> Result<ModelSource, DownloadError> {
    if let Some(rest) = s.strip_prefix("ngc:") {
        ngc::parse(rest).map(ModelSource::Ngc)
    } else if let Some(rest) = s.strip_prefix("hf:") {
        hf::parse(rest).map(ModelSource::Hf)
    } else {
        Ok(ModelSource::Local(PathBuf::from(s)))
    }
}

/// How records name the model of a remote `source`: `ORG/NAME` (with
/// `@REVISION` when one was given) for `hf:`, `ORG/TEAM/MODEL:VERSION` for
/// `ngc:`. `None` for a local path, whose directory name serves. (The
/// directory [`resolve`] returns for `hf:` is named by the snapshot's
/// commit hash, which says nothing of the model.)
pub fn model_name(source: &ModelSource) -> Option<String> {
    match source {
        ModelSource::Local(_) => None,
        ModelSource::Hf(h) => Some(match &h.revision {
            Some(r) => format!("{}@{r}", h.repo),
            None => h.repo.clone(),
        }),
        ModelSource::Ngc(n) => Some(match &n.team {
            Some(t) => format!("{}/{t}/{}:{}", n.org, n.model, n.version),
            None => format!("{}/{}:{}", n.org, n.model, n.version),
        }),
    }
}

/// The local checkpoint directory for `source`, downloading it first when
/// it is remote and not complete in the cache. Errors say what to do.
pub fn resolve(
    source: &ModelSource,
    env: &DownloadEnv,
    progress: ProgressFn<'_>,
) -> Result<PathBuf, DownloadError> {
    resolve_cancellable(source, env, progress, &CancellationToken::new())
}

/// [`resolve`], ended early with an error when `cancel` is cancelled from
/// another thread: an `ngc:` download at any point (its CLI is stopped, see
/// [`ngc::fetch_cancellable`]); an `hf:` download only before it starts.
pub fn resolve_cancellable(
    source: &ModelSource,
    env: &DownloadEnv,
    progress: ProgressFn<'_>,
    cancel: &CancellationToken,
) -> Result<PathBuf, DownloadError> {
    match source {
        ModelSource::Local(p) => Ok(p.clone()),
        ModelSource::Ngc(spec) => ngc::fetch_cancellable(spec, env, progress, cancel),
        ModelSource::Hf(_) if cancel.is_cancelled() => Err(DownloadError::Cancelled(
            "the hf: download was cancelled before it started".into(),
        )),
        ModelSource::Hf(spec) => hf::fetch(spec, env, progress),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The map holds tokens: `{:?}` (a log line, an error built with it)
    /// must show names only.
    #[test]
    fn debug_shows_names_not_values() {
        let env = DownloadEnv {
            vars: [
                ("HF_TOKEN", "hf_secret_token_value"),
                ("NGC_API_KEY", "nvapi-secret-key-value"),
                ("HOME", "/home/someone"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            model_root_dir: Some(PathBuf::from("/models")),
        };
        for shown in [format!("{env:?}"), format!("{env:#?}")] {
            assert!(!shown.contains("hf_secret_token_value"), "{shown}");
            assert!(!shown.contains("nvapi-secret-key-value"), "{shown}");
            assert!(!shown.contains("/home/someone"), "{shown}");
            assert!(shown.contains("HF_TOKEN") && shown.contains("NGC_API_KEY"));
            assert!(shown.contains("/models"));
        }
    }

    #[test]
    fn download_model_name_names_the_repository() {
        let name = |s: &str| model_name(&parse_model_path(s).unwrap());
        assert_eq!(
            name("hf:nvidia/Cosmos-Reason1-7B").as_deref(),
            Some("nvidia/Cosmos-Reason1-7B")
        );
        assert_eq!(
            name("hf:nvidia/Cosmos-Reason1-7B@v1.0").as_deref(),
            Some("nvidia/Cosmos-Reason1-7B@v1.0")
        );
        assert_eq!(name("/models/x"), None);
    }
}
