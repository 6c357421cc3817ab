// SPDX-License-Identifier: MPL-2.0
//! Resolution of the element's configuration: properties first, then the
//! `env-file`, then the process environment (VSS's variable names), then the
//! built-in defaults. Free of GStreamer types so it can be unit tested.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// Which model backend captions the chunks. Fixed once the element leaves NULL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BackendKind {
    #[default]
    OpenAiCompat,
    /// Cosmos-Reason1 / Qwen2.5-VL in process.
    CosmosReason1,
    Custom,
    /// Cosmos-Reason2 / Qwen3-VL in process (VSS's `cosmos-reason2`).
    CosmosReason2,
    /// Cosmos3 Nano Reasoner (Qwen3-VL) in process (VSS's `cosmos-reason3`).
    CosmosReason3,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::OpenAiCompat => "openai-compat",
            BackendKind::CosmosReason1 => "cosmos-reason1",
            BackendKind::Custom => "custom",
            BackendKind::CosmosReason2 => "cosmos-reason2",
            BackendKind::CosmosReason3 => "cosmos-reason3",
        }
    }

    /// The in-process model backends (`cosmos-reason1/2/3`): all build a
    /// `CosmosBackend`, load `model-path` (a directory, `ngc:` or `hf:`)
    /// and serve summaries and event checks with the loaded model.
    pub fn is_in_process(self) -> bool {
        matches!(
            self,
            BackendKind::CosmosReason1 | BackendKind::CosmosReason2 | BackendKind::CosmosReason3
        )
    }

    /// Frames per chunk when `num-frames-per-chunk` is 0 (VSS defaults).
    pub fn default_frames(self) -> u32 {
        match self {
            BackendKind::OpenAiCompat => 10,
            BackendKind::CosmosReason1
            | BackendKind::CosmosReason2
            | BackendKind::CosmosReason3 => 20,
            BackendKind::Custom => 1,
        }
    }
}

/// A setting (property, environment variable or `.env` line) that cannot
/// work: its text names the setting and says what to do. There is one kind
/// on purpose: every such error stops NULL→READY with the same domain, and
/// nothing decides anything from it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SettingsError(pub String);

impl From<String> for SettingsError {
    fn from(s: String) -> Self {
        SettingsError(s)
    }
}

impl From<SettingsError> for String {
    fn from(e: SettingsError) -> String {
        e.0
    }
}

/// The text, to read or search (tests, callers that add context).
impl std::ops::Deref for SettingsError {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl FromStr for BackendKind {
    type Err = SettingsError;
    fn from_str(s: &str) -> Result<Self, SettingsError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "openai-compat" | "openai" => Ok(BackendKind::OpenAiCompat),
            "cosmos-reason1" => Ok(BackendKind::CosmosReason1),
            "cosmos-reason2" => Ok(BackendKind::CosmosReason2),
            "cosmos-reason3" => Ok(BackendKind::CosmosReason3),
            "custom" => Ok(BackendKind::Custom),
            other => Err(format!(
                "unknown backend '{other}': use one of openai-compat, cosmos-reason1, cosmos-reason2, cosmos-reason3, custom"
            )
            .into()),
        }
    }
}

/// An API key. It has no `Display`, its `Debug` is redacted, and it is only
/// ever turned back into text when building the HTTP header.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(s: impl Into<String>) -> Option<ApiKey> {
        let s = s.into();
        let t = s.trim();
        if t.is_empty() {
            None
        } else {
            Some(ApiKey(t.to_string()))
        }
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// Replaces every occurrence of the key in `text` (e.g. a server's error
    /// body that echoes it) with `<redacted>`.
    pub fn scrub(&self, text: &str) -> String {
        if self.0.len() < 4 {
            return text.to_string();
        }
        text.replace(&self.0, "<redacted>")
    }

    /// The fewest characters of the key's start that [`ApiKey::scrub_cut`]
    /// redacts.
    pub const MIN_CUT_PREFIX: usize = 8;

    /// For a text that was cut short (after [`ApiKey::scrub`]): when it ends
    /// with the start of the key, at least [`ApiKey::MIN_CUT_PREFIX`]
    /// characters of it (what a cut through an echoed key leaves), that part
    /// is replaced with `<redacted>`.
    pub fn scrub_cut(&self, text: &str) -> String {
        // Byte ends of the key's first 1, 2, … characters, longest first.
        let ends = self
            .0
            .char_indices()
            .skip(1)
            .map(|(i, _)| i)
            .chain([self.0.len()]);
        let ends: Vec<usize> = ends.collect();
        for (n, &end) in ends.iter().enumerate().rev() {
            if n + 1 < Self::MIN_CUT_PREFIX {
                break;
            }
            if let Some(kept) = text.strip_suffix(&self.0[..end]) {
                return format!("{kept}<redacted>");
            }
        }
        text.to_string()
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// Environment variables as seen by the element: the process environment
/// overlaid by the `env-file` (the file wins, as it was named explicitly on
/// the element).
#[derive(Clone, Default)]
pub struct Env {
    vars: HashMap<String, String>,
}

/// Names only: values may be secrets.
impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&str> = self.vars.keys().map(String::as_str).collect();
        names.sort_unstable();
        f.debug_struct("Env").field("names", &names).finish()
    }
}

impl Env {
    pub fn from_process() -> Env {
        Env {
            vars: std::env::vars().collect(),
        }
    }

    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Env {
        Env {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// Overlays the variables of a VSS `.env` file.
    pub fn overlay_file(&mut self, path: &Path) -> Result<(), SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "cannot read env-file '{}': {e}; fix the env-file property",
                path.display()
            )
        })?;
        for (k, v) in parse_env_file(&text).map_err(|e| {
            format!(
                "env-file '{}': {e}; fix the file or the env-file property",
                path.display()
            )
        })? {
            self.vars.insert(k, v);
        }
        Ok(())
    }

    /// Every variable, unset (empty) ones included.
    pub fn vars(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// A variable's value; empty values count as unset (as in VSS's scripts).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars
            .get(key)
            .map(|s| s.as_str())
            .filter(|s| !s.trim().is_empty())
    }
}

/// Parses `.env` text: `export KEY=VALUE` or `KEY=VALUE` lines (`export` may
/// be followed by spaces or tabs), `#` comments, blank lines, values
/// optionally in single or double quotes (double quotes understand `\"`, `\\`
/// and `\n`). Unquoted values end at ` #`. A UTF-8 byte-order mark at the
/// start of the file (or of a line, as left by concatenating files) is
/// ignored. Errors name the line and show invisible characters as `\u{..}`.
///
/// Values are taken literally: `$VAR` / `${VAR}` are not expanded. This is a
/// hand-written parser on purpose. The `dotenvy` crate (0.15.7, the current
/// release) was tried and rejected because it silently changes values that
/// contain `$`:
/// - an unbraced name stops at the first `_` (documented upstream, issues
///   allan2/dotenvy#73 and #170): `K=$NGC_API_KEY` becomes the value of
///   `$NGC` followed by `_API_KEY`, and every VSS variable name has a `_`;
/// - `$` followed by letters or digits that name no variable vanishes, so a
///   key such as `ab$1cd` becomes `ab`, and `a$$b` becomes `a`;
/// - references are looked up in the real process environment before the
///   file's own earlier lines (`A=file` then `B=$A` gives the process's `A`),
///   unlike a shell and unlike this element (the file wins);
/// - `K="x$VAR"` (a reference right before the closing quote) is rejected.
///
/// Its other gaps would have needed code here anyway: its line iterator keeps
/// the BOM, its errors carry no line number and quote the whole value (which
/// may be a secret), and it rejects unquoted values with spaces, which this
/// parser (and docker compose's `env_file`) accept.
pub fn parse_env_file(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (lineno, raw) in text.lines().enumerate() {
        let line = raw.trim_start_matches('\u{feff}').trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = strip_export(line);
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!(
                "line {}: expected KEY=VALUE, found '{}'",
                lineno + 1,
                visible(&truncate(line, 40))
            ));
        };
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "line {}: invalid variable name '{}'",
                lineno + 1,
                visible(&truncate(key, 40))
            ));
        }
        let value = value.trim();
        let value = if let Some(rest) = value.strip_prefix('"') {
            let mut s = String::new();
            let mut chars = rest.chars();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            s.push(match n {
                                'n' => '\n',
                                other => other,
                            });
                        }
                    }
                    '"' => {
                        closed = true;
                        break;
                    }
                    c => s.push(c),
                }
            }
            if !closed {
                return Err(format!("line {}: unterminated double quote", lineno + 1));
            }
            s
        } else if let Some(rest) = value.strip_prefix('\'') {
            match rest.find('\'') {
                Some(end) => rest[..end].to_string(),
                None => return Err(format!("line {}: unterminated single quote", lineno + 1)),
            }
        } else {
            match value.find(" #").or_else(|| value.find("\t#")) {
                Some(i) => value[..i].trim_end().to_string(),
                None => value.to_string(),
            }
        };
        out.push((key.to_string(), value));
    }
    Ok(out)
}

/// `export KEY=…` → `KEY=…` (`export` followed by spaces or tabs, as in a
/// shell); `export=…` and `exporter=…` are left alone.
fn strip_export(line: &str) -> &str {
    match line.strip_prefix("export") {
        Some(rest) if rest.starts_with([' ', '\t']) => rest.trim_start(),
        _ => line,
    }
}

/// `s` with control and invisible characters (BOM, zero-width and unusual
/// spaces) written as `\u{XXXX}`, so an error message shows what is there.
pub(crate) fn visible(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        // No-break and odd-width spaces, soft hyphen, zero-width and
        // direction marks, separators, word joiners, BOM.
        let invisible = c.is_control()
            || matches!(
                c,
                '\u{a0}'
                    | '\u{ad}'
                    | '\u{2000}'..='\u{200f}'
                    | '\u{2028}'..='\u{202f}'
                    | '\u{205f}'..='\u{206f}'
                    | '\u{3000}'
                    | '\u{feff}'
            );
        if invisible {
            out.push_str(&format!("\\u{{{:04x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// At most `n` characters of `s`, `…` marking a cut.
pub(crate) fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n).collect::<String>() + "…"
    }
}

/// What the user set on the element (None = not set, fall back to the environment).
#[derive(Clone, Debug, Default)]
pub struct UserSettings {
    pub backend: Option<BackendKind>,
    pub endpoint: Option<String>,
    pub model_name: Option<String>,
    pub api_key: Option<ApiKey>,
    pub api_version: Option<String>,
    pub model_path: Option<String>,
    pub model_root_dir: Option<String>,
    pub env_file: Option<String>,
    pub num_frames: Option<u32>,
    pub frame_width: Option<u32>,
    pub frame_height: Option<u32>,
    pub system_prompt: Option<String>,
    pub python: Option<String>,
}

pub const DEFAULT_ENDPOINT: &str = "https://api.openai.com/v1";
pub const DEFAULT_MODEL: &str = "gpt-4o";
/// GA Azure OpenAI data-plane version used when none is configured.
pub const DEFAULT_AZURE_API_VERSION: &str = "2024-10-21";

/// [`Resolved::endpoint_source`] when nothing named an endpoint.
pub const DEFAULT_SOURCE: &str = "the default endpoint (nothing set)";

/// How to reach the chat-completions endpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct EndpointConfig {
    /// Full URL of the POST, query included for Azure.
    pub chat_url: url::Url,
    pub azure: bool,
    pub api_key: Option<ApiKey>,
    pub model: String,
    /// Whether the model name came from the user (property or environment).
    pub model_explicit: bool,
    /// The chat URLs of the other servers when `endpoint` lists several
    /// (comma-separated; `chat_url` is the first). See [`crate::endpoints`].
    pub more_urls: Vec<url::Url>,
}

impl EndpointConfig {
    /// Every server's chat-completions URL, in list order.
    pub fn chat_urls(&self) -> impl Iterator<Item = &url::Url> {
        std::iter::once(&self.chat_url).chain(&self.more_urls)
    }
}

impl EndpointConfig {
    /// OpenAI's own API or Azure OpenAI (where `gpt-4o` is a sensible default).
    pub fn is_openai(&self) -> bool {
        self.azure || is_openai_host(self.chat_url.host_str().unwrap_or_default())
    }
}

/// api.openai.com (or a subdomain): needs a key, and `gpt-4o` is a sensible default.
fn is_openai_host(host: &str) -> bool {
    host == "api.openai.com" || host.ends_with(".api.openai.com")
}

/// The configuration the element runs with, fully resolved.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub backend: BackendKind,
    /// openai-compat: where the endpoint came from (for the INFO line that
    /// says which endpoint is used, and why).
    pub endpoint_source: Option<&'static str>,
    /// The chat-completions endpoint; resolved (and checked) only for
    /// `openai-compat`.
    pub endpoint: Option<EndpointConfig>,
    pub model_path: Option<PathBuf>,
    pub model_root_dir: Option<PathBuf>,
    pub num_frames: u32,
    /// Whether `num_frames` came from the property or
    /// VLM_DEFAULT_NUM_FRAMES_PER_CHUNK (a custom model's manifest yields to it).
    pub num_frames_explicit: bool,
    pub frame_width: u32,
    pub frame_height: u32,
    /// Whether the frame size came from the properties or VLM_INPUT_WIDTH/HEIGHT.
    pub frame_size_explicit: bool,
    pub system_prompt: Option<String>,
    /// The Python interpreter for the custom backend.
    pub python: String,
    /// The environment as the element sees it (process + env-file).
    pub env: Env,
}

/// Most frames in one chunk (256): the maximum of the `num-frames-per-chunk`
/// property and of VLM_DEFAULT_NUM_FRAMES_PER_CHUNK; the same number as the
/// chunker's own limit, of which it is an alias.
pub const MAX_FRAMES_PER_CHUNK: u32 = crate::chunker::MAX_FRAMES_PER_CHUNK;
/// Largest frame width or height sent to the model: the maximum of the
/// `frame-width` / `frame-height` properties and of VLM_INPUT_WIDTH /
/// VLM_INPUT_HEIGHT.
pub const MAX_FRAME_SIZE: u32 = 16384;

/// A numeric variable with the same bounds as the property that overrides it.
struct NumVar {
    key: &'static str,
    property: &'static str,
    min: u32,
    max: u32,
    /// What 0 (or an empty value) means.
    zero: &'static str,
}

const NUM_FRAMES_VAR: NumVar = NumVar {
    key: "VLM_DEFAULT_NUM_FRAMES_PER_CHUNK",
    property: "num-frames-per-chunk",
    min: 1,
    max: MAX_FRAMES_PER_CHUNK,
    zero: "0 or empty: the backend's default",
};
const WIDTH_VAR: NumVar = NumVar {
    key: "VLM_INPUT_WIDTH",
    property: "frame-width",
    min: 0,
    max: MAX_FRAME_SIZE,
    zero: "0: native, or keep the aspect ratio",
};
const HEIGHT_VAR: NumVar = NumVar {
    key: "VLM_INPUT_HEIGHT",
    property: "frame-height",
    min: 0,
    max: MAX_FRAME_SIZE,
    zero: "0: native, or keep the aspect ratio",
};

/// The variable's value: None when unset or empty; 0 is passed through (its
/// meaning is the caller's); anything else must lie in `min..=max`.
fn parse_num_var(env: &Env, var: &NumVar) -> Result<Option<u32>, String> {
    let Some(raw) = env.get(var.key) else {
        return Ok(None);
    };
    let v = raw.trim();
    let shown = visible(&truncate(v, 40));
    let allowed = format!("{} to {} ({})", var.min, var.max, var.zero);
    let unsigned = v.strip_prefix('+').unwrap_or(v);
    let digits = !unsigned.is_empty() && unsigned.bytes().all(|b| b.is_ascii_digit());
    let n = match v.parse::<u32>() {
        Ok(n) => n,
        Err(_) if digits => u32::MAX, // too large for u32: out of range below
        Err(_) => {
            return Err(format!(
                "environment variable {}='{shown}' is not a non-negative integer (allowed: {allowed}); fix it or set the {} property, which overrides it",
                var.key, var.property
            ))
        }
    };
    if n != 0 && !(var.min..=var.max).contains(&n) {
        return Err(format!(
            "environment variable {}='{shown}' is out of range: allowed {allowed}; fix it or set the {} property, which overrides it",
            var.key, var.property
        ));
    }
    Ok(Some(n))
}

/// Resolves the user's settings against the environment. Errors name the
/// property or variable to fix and never contain the API key.
pub fn resolve(user: &UserSettings, process_env: Env) -> Result<Resolved, SettingsError> {
    let mut env = process_env;
    if let Some(f) = &user.env_file {
        if !f.is_empty() {
            env.overlay_file(Path::new(f))?;
        }
    }

    let backend = match user.backend {
        Some(b) => b,
        None => match env.get("VLM_MODEL_TO_USE") {
            Some(v) => v.parse::<BackendKind>().map_err(|e| {
                format!(
                    "{e} (from environment variable VLM_MODEL_TO_USE; or set the backend property)"
                )
            })?,
            None => BackendKind::OpenAiCompat,
        },
    };

    let endpoint = match backend {
        BackendKind::OpenAiCompat => Some(resolve_endpoint(user, &env)?),
        _ => None,
    };

    let (num_frames, num_frames_explicit) = match user.num_frames {
        Some(n) if n > 0 => (n, true),
        _ => match parse_num_var(&env, &NUM_FRAMES_VAR)? {
            Some(n) if n > 0 => (n, true),
            _ => (backend.default_frames(), false),
        },
    };
    let width = match user.frame_width {
        Some(w) => Some(w),
        None => parse_num_var(&env, &WIDTH_VAR)?,
    };
    let height = match user.frame_height {
        Some(h) => Some(h),
        None => parse_num_var(&env, &HEIGHT_VAR)?,
    };
    let frame_size_explicit = width.is_some_and(|w| w > 0) || height.is_some_and(|h| h > 0);
    let (frame_width, frame_height) = (width.unwrap_or(0), height.unwrap_or(0));
    let python = user
        .python
        .clone()
        .filter(|s| !s.trim().is_empty())
        .or_else(|| env.get("VSS_PYTHON").map(str::to_string))
        .unwrap_or_else(|| "python3".to_string());
    let system_prompt = user
        .system_prompt
        .clone()
        .or_else(|| env.get("VLM_SYSTEM_PROMPT").map(str::to_string))
        .filter(|s| !s.trim().is_empty());

    let model_path = user
        .model_path
        .clone()
        .or_else(|| env.get("MODEL_PATH").map(str::to_string))
        .filter(|s| !s.is_empty())
        .map(PathBuf::from);
    let model_root_dir = user
        .model_root_dir
        .clone()
        .or_else(|| env.get("MODEL_ROOT_DIR").map(str::to_string))
        .filter(|s| !s.is_empty())
        .map(PathBuf::from);

    Ok(Resolved {
        backend,
        endpoint_source: endpoint.as_ref().map(|_| endpoint_choice(user, &env).1),
        endpoint,
        model_path,
        model_root_dir,
        num_frames,
        num_frames_explicit,
        frame_width,
        frame_height,
        frame_size_explicit,
        system_prompt,
        python,
        env,
    })
}

/// Where the endpoint comes from: the property, then VSS's rule
/// (AZURE_OPENAI_ENDPOINT selects Azure), then VIA_VLM_ENDPOINT, then
/// OpenAI's API ([`DEFAULT_SOURCE`]). Returns (URL text, source).
fn endpoint_choice(user: &UserSettings, env: &Env) -> (String, &'static str) {
    if let Some(e) = user.endpoint.as_deref().filter(|s| !s.is_empty()) {
        (e.to_string(), "the endpoint property")
    } else if let Some(e) = env.get("AZURE_OPENAI_ENDPOINT") {
        (e.to_string(), "environment variable AZURE_OPENAI_ENDPOINT")
    } else if let Some(e) = env.get("VIA_VLM_ENDPOINT") {
        (e.to_string(), "environment variable VIA_VLM_ENDPOINT")
    } else {
        (DEFAULT_ENDPOINT.to_string(), DEFAULT_SOURCE)
    }
}

fn resolve_endpoint(user: &UserSettings, env: &Env) -> Result<EndpointConfig, SettingsError> {
    let azure_env = env.get("AZURE_OPENAI_ENDPOINT");
    let (raw, source) = endpoint_choice(user, env);
    // Several servers: `a,b,c`, each checked like one (crate::endpoints).
    let mut list = raw.split(',').map(str::trim).filter(|s| !s.is_empty());
    let first = list.next().unwrap_or_default().to_string();
    let mut more_urls = Vec::new();
    for other in list {
        let u = check_base_url(other, source)?;
        more_urls.push(chat_completions_url(&u));
    }
    let raw = first;
    let url = check_base_url(&raw, source)?;
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    let azure = host.ends_with(".openai.azure.com")
        || (user.endpoint.as_deref().unwrap_or("").is_empty() && azure_env.is_some());
    if azure && !more_urls.is_empty() {
        return Err(format!("endpoint from {source} lists several servers; a list is not supported for Azure OpenAI: name one").into());
    }
    resolve_one(user, env, raw, url, azure, source, more_urls)
}

/// One base URL of `endpoint`, checked.
fn check_base_url(raw: &str, source: &str) -> Result<url::Url, SettingsError> {
    let url = url::Url::parse(raw.trim()).map_err(|e| {
        format!("cannot parse endpoint '{raw}' from {source}: {e}; expected e.g. http://localhost:8000/v1")
    })?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(format!(
            "endpoint '{raw}' from {source} must be an http:// or https:// URL ending in the API's base path, e.g. http://localhost:8000/v1"
        ).into());
    }
    if url.host_str().is_none() {
        return Err(format!("endpoint '{raw}' from {source} has no host").into());
    }
    Ok(url)
}

fn resolve_one(
    user: &UserSettings,
    env: &Env,
    raw: String,
    url: url::Url,
    azure: bool,
    source: &str,
    more_urls: Vec<url::Url>,
) -> Result<EndpointConfig, SettingsError> {
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();

    let explicit_model = user
        .model_name
        .clone()
        .filter(|s| !s.is_empty())
        .or_else(|| {
            env.get("VIA_VLM_OPENAI_MODEL_DEPLOYMENT_NAME")
                .map(str::to_string)
        });
    let model_explicit = explicit_model.is_some();
    let model = explicit_model.unwrap_or_else(|| DEFAULT_MODEL.to_string());

    let api_key = user.api_key.clone().or_else(|| {
        let mut names = vec!["VIA_VLM_API_KEY"];
        if azure {
            names.insert(0, "AZURE_OPENAI_API_KEY");
        }
        names.push("OPENAI_API_KEY");
        names.iter().find_map(|n| env.get(n).and_then(ApiKey::new))
    });

    let needs_key = azure || is_openai_host(&host);
    if needs_key && api_key.is_none() {
        return Err(if azure {
            format!("no API key for Azure OpenAI endpoint {host}: set the api-key property or AZURE_OPENAI_API_KEY / VIA_VLM_API_KEY / OPENAI_API_KEY").into()
        } else {
            let local = if source == DEFAULT_SOURCE {
                " — or, for a local server (vLLM, NIM, transformers serve), set VIA_VLM_ENDPOINT or the endpoint property, e.g. http://localhost:8000/v1; nothing was set, so OpenAI's API was chosen"
            } else {
                ""
            };
            format!("no API key for {host}: set the api-key property or the VIA_VLM_API_KEY or OPENAI_API_KEY environment variable{local}").into()
        });
    }

    let chat_url = if azure {
        let api_version = user
            .api_version
            .clone()
            .filter(|s| !s.is_empty())
            .or_else(|| env.get("OPENAI_API_VERSION").map(str::to_string))
            .or_else(|| env.get("AZURE_OPENAI_API_VERSION").map(str::to_string))
            .unwrap_or_else(|| DEFAULT_AZURE_API_VERSION.to_string());
        let base = format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default());
        let base = match url.port() {
            Some(p) => format!("{base}:{p}"),
            None => base,
        };
        let mut u = url::Url::parse(&format!(
            "{base}/openai/deployments/{}/chat/completions",
            urlencode_segment(&model)
        ))
        .map_err(|e| format!("cannot build the Azure URL from endpoint '{raw}': {e}"))?;
        u.query_pairs_mut().append_pair("api-version", &api_version);
        u
    } else {
        chat_completions_url(&url)
    };

    Ok(EndpointConfig {
        chat_url,
        azure,
        api_key,
        model,
        model_explicit,
        more_urls,
    })
}

/// `{endpoint}/chat/completions`, unless the endpoint already names it.
pub fn chat_completions_url(endpoint: &url::Url) -> url::Url {
    let mut u = endpoint.clone();
    let path = u.path().trim_end_matches('/').to_string();
    if path.ends_with("/chat/completions") {
        u.set_path(&path);
    } else {
        u.set_path(&format!("{path}/chat/completions"));
    }
    u
}

fn urlencode_segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Seconds (as set on a double property) to a Duration, 0 and negatives → ZERO.
/// Values past a year are capped there (no setting here needs more, and
/// `Duration::from_secs_f64` panics on huge ones).
pub fn secs(s: f64) -> Duration {
    const YEAR: f64 = 365.0 * 86_400.0;
    if s.is_finite() && s > 0.0 {
        Duration::try_from_secs_f64(s.min(YEAR)).unwrap_or(Duration::ZERO)
    } else {
        Duration::ZERO
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> UserSettings {
        UserSettings::default()
    }

    #[test]
    fn env_file_parsing() {
        let text = "# comment\nexport A=1\nB = two \nC=\"quoted # not comment\"\nD='single'\nE=value # comment\n\nexport F=\"esc \\\" q\"\n";
        let v = parse_env_file(text).unwrap();
        let m: HashMap<_, _> = v.into_iter().collect();
        assert_eq!(m["A"], "1");
        assert_eq!(m["B"], "two");
        assert_eq!(m["C"], "quoted # not comment");
        assert_eq!(m["D"], "single");
        assert_eq!(m["E"], "value");
        assert_eq!(m["F"], "esc \" q");
        assert!(parse_env_file("novalue\n").unwrap_err().contains("line 1"));
        assert!(parse_env_file("X=\"open\n").is_err());
        assert!(parse_env_file("BAD-NAME=1\n").is_err());
    }

    #[test]
    fn env_file_bom_tabs_and_invisible_characters() {
        // A BOM (as written by Windows editors) and `export<TAB>`.
        let text = "\u{feff}export A=1\nexport\tB=2\nexport \t C=\"3\"\nD=v\t# comment\nexport=e\nexporter=x\n\u{feff}E=5\n";
        let m: HashMap<_, _> = parse_env_file(text).unwrap().into_iter().collect();
        assert_eq!(m["A"], "1");
        assert_eq!(m["B"], "2");
        assert_eq!(m["C"], "3");
        assert_eq!(m["D"], "v");
        assert_eq!(m["export"], "e");
        assert_eq!(m["exporter"], "x");
        assert_eq!(m["E"], "5");
        assert_eq!(m.len(), 7);
        assert!(parse_env_file("\u{feff}").unwrap().is_empty());
        assert_eq!(
            parse_env_file("\u{feff}# only a comment\r\nK=v\r\n").unwrap(),
            vec![("K".to_string(), "v".to_string())]
        );
        // Invisible characters in errors are shown, not printed raw.
        let err = parse_env_file("OK=1\nA\u{200b}=1\n").unwrap_err();
        assert!(
            err.contains("line 2") && err.contains("A\\u{200b}"),
            "{err}"
        );
        assert!(!err.contains('\u{200b}'), "{err}");
        let err = parse_env_file("\u{a0}\u{feff}novalue\n").unwrap_err();
        assert!(!err.contains('\u{feff}') && err.contains("line 1"), "{err}");
    }

    #[test]
    fn env_file_values_with_dollar_are_literal() {
        let text = "K=$NGC_API_KEY\nP=ab$1cd\nQ=\"x$HOME\"\nS='a$b'\nT=a$$b\nU=${HOME}\n";
        let m: HashMap<_, _> = parse_env_file(text).unwrap().into_iter().collect();
        assert_eq!(m["K"], "$NGC_API_KEY");
        assert_eq!(m["P"], "ab$1cd");
        assert_eq!(m["Q"], "x$HOME");
        assert_eq!(m["S"], "a$b");
        assert_eq!(m["T"], "a$$b");
        assert_eq!(m["U"], "${HOME}");
    }

    #[test]
    fn numeric_variables_have_the_property_bounds() {
        assert_eq!((MAX_FRAMES_PER_CHUNK, MAX_FRAME_SIZE), (256, 16384));
        let custom = |pairs: &[(&'static str, &'static str)]| {
            let mut v = vec![("VLM_MODEL_TO_USE", "custom")];
            v.extend_from_slice(pairs);
            Env::from_pairs(v)
        };
        // The hostile-testing case: accepted before, then aborted on allocation.
        let err = resolve(
            &user(),
            custom(&[("VLM_DEFAULT_NUM_FRAMES_PER_CHUNK", "4000000000")]),
        )
        .unwrap_err();
        for want in [
            "VLM_DEFAULT_NUM_FRAMES_PER_CHUNK",
            "'4000000000'",
            "1 to 256",
            "num-frames-per-chunk",
        ] {
            assert!(err.contains(want), "{want}: {err}");
        }
        for bad in ["257", "99999999999999999999", "+4000000000"] {
            let env = Env::from_pairs([
                ("VLM_MODEL_TO_USE", "custom"),
                ("VLM_DEFAULT_NUM_FRAMES_PER_CHUNK", bad),
            ]);
            let err = resolve(&user(), env).unwrap_err();
            assert!(err.contains("out of range") && err.contains(bad), "{err}");
        }
        for bad in ["-1", "many", "+", "1.5"] {
            let env = Env::from_pairs([
                ("VLM_MODEL_TO_USE", "custom"),
                ("VLM_DEFAULT_NUM_FRAMES_PER_CHUNK", bad),
            ]);
            let err = resolve(&user(), env).unwrap_err();
            assert!(
                err.contains("not a non-negative integer") && err.contains("num-frames-per-chunk"),
                "{err}"
            );
        }
        let r = resolve(
            &user(),
            custom(&[("VLM_DEFAULT_NUM_FRAMES_PER_CHUNK", " 256 ")]),
        )
        .unwrap();
        assert_eq!((r.num_frames, r.num_frames_explicit), (256, true));
        let r = resolve(
            &user(),
            custom(&[("VLM_DEFAULT_NUM_FRAMES_PER_CHUNK", "0")]),
        )
        .unwrap();
        assert_eq!((r.num_frames, r.num_frames_explicit), (1, false));
        let r = resolve(&user(), custom(&[("VLM_DEFAULT_NUM_FRAMES_PER_CHUNK", "")])).unwrap();
        assert_eq!((r.num_frames, r.num_frames_explicit), (1, false));

        // Width and height: 0..=16384.
        let err = resolve(&user(), custom(&[("VLM_INPUT_WIDTH", "16385")])).unwrap_err();
        for want in ["VLM_INPUT_WIDTH", "'16385'", "0 to 16384", "frame-width"] {
            assert!(err.contains(want), "{want}: {err}");
        }
        let err = resolve(&user(), custom(&[("VLM_INPUT_HEIGHT", "4294967295")])).unwrap_err();
        for want in [
            "VLM_INPUT_HEIGHT",
            "'4294967295'",
            "0 to 16384",
            "frame-height",
        ] {
            assert!(err.contains(want), "{want}: {err}");
        }
        let r = resolve(
            &user(),
            custom(&[("VLM_INPUT_WIDTH", "16384"), ("VLM_INPUT_HEIGHT", "0")]),
        )
        .unwrap();
        assert_eq!((r.frame_width, r.frame_height), (16384, 0));

        // The property overrides the variable, so a bad value does not matter then.
        let u = UserSettings {
            num_frames: Some(3),
            frame_width: Some(64),
            frame_height: Some(0),
            ..user()
        };
        let env = custom(&[
            ("VLM_DEFAULT_NUM_FRAMES_PER_CHUNK", "4000000000"),
            ("VLM_INPUT_WIDTH", "99999"),
            ("VLM_INPUT_HEIGHT", "99999"),
        ]);
        let r = resolve(&u, env).unwrap();
        assert_eq!((r.num_frames, r.frame_width, r.frame_height), (3, 64, 0));

        // The same bounds for a value from the env-file.
        let dir = std::env::temp_dir().join(format!("vss-envnum-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("num.env");
        std::fs::write(&f, "export VLM_INPUT_WIDTH=100000\n").unwrap();
        let u = UserSettings {
            env_file: Some(f.to_string_lossy().into_owned()),
            ..user()
        };
        let err = resolve(&u, custom(&[])).unwrap_err();
        assert!(
            err.contains("VLM_INPUT_WIDTH") && err.contains("100000"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn defaults_need_key_for_openai() {
        let err = resolve(&user(), Env::default()).unwrap_err();
        assert!(err.contains("OPENAI_API_KEY"), "{err}");
        assert!(err.contains("api-key"), "{err}");
        // Nothing set: the error also points at a local server.
        assert!(
            err.contains("set VIA_VLM_ENDPOINT") && err.contains("nothing was set"),
            "{err}"
        );
        // Named explicitly, OpenAI's API needs its key and nothing else.
        let mut u = user();
        u.endpoint = Some("https://api.openai.com/v1".into());
        let err = resolve(&u, Env::default()).unwrap_err();
        assert!(!err.contains("VIA_VLM_ENDPOINT or"), "{err}");
        assert!(!err.contains("nothing was set"), "{err}");
        let env = Env::from_pairs([("OPENAI_API_KEY", "sk-test-123")]);
        let r = resolve(&user(), env).unwrap();
        assert_eq!(r.endpoint_source, Some(DEFAULT_SOURCE));
        let ep = r.endpoint.as_ref().unwrap();
        assert_eq!(r.backend, BackendKind::OpenAiCompat);
        assert_eq!(
            ep.chat_url.as_str(),
            "https://api.openai.com/v1/chat/completions"
        );
        assert_eq!(ep.model, "gpt-4o");
        assert!(!ep.model_explicit && ep.is_openai());
        assert_eq!(ep.api_key.as_ref().unwrap().expose(), "sk-test-123");
        assert_eq!(r.num_frames, 10);
        assert!(!ep.azure);
    }

    #[test]
    fn vss_variables_are_defaults_and_properties_win() {
        let env = Env::from_pairs([
            ("VIA_VLM_ENDPOINT", "http://localhost:38011/v1/"),
            (
                "VIA_VLM_OPENAI_MODEL_DEPLOYMENT_NAME",
                "Qwen2.5VL-7B-instruct",
            ),
            ("VIA_VLM_API_KEY", "k1"),
            ("OPENAI_API_KEY", "k2"),
            ("VLM_INPUT_WIDTH", "640"),
            ("VLM_DEFAULT_NUM_FRAMES_PER_CHUNK", "6"),
            ("VLM_SYSTEM_PROMPT", "be brief"),
        ]);
        let r = resolve(&user(), env.clone()).unwrap();
        let ep = r.endpoint.as_ref().unwrap();
        assert_eq!(
            ep.chat_url.as_str(),
            "http://localhost:38011/v1/chat/completions"
        );
        assert_eq!(ep.model, "Qwen2.5VL-7B-instruct");
        assert!(ep.model_explicit && !ep.is_openai());
        assert_eq!(ep.api_key.as_ref().unwrap().expose(), "k1");
        assert_eq!((r.frame_width, r.frame_height), (640, 0));
        assert_eq!(r.num_frames, 6);
        assert_eq!(r.system_prompt.as_deref(), Some("be brief"));

        let u = UserSettings {
            endpoint: Some("http://127.0.0.1:9/v1/chat/completions".into()),
            model_name: Some("m".into()),
            api_key: ApiKey::new("prop"),
            num_frames: Some(3),
            frame_width: Some(0),
            ..user()
        };
        let r = resolve(&u, env).unwrap();
        assert_eq!(
            r.endpoint.as_ref().unwrap().chat_url.as_str(),
            "http://127.0.0.1:9/v1/chat/completions"
        );
        assert_eq!(r.endpoint.as_ref().unwrap().model, "m");
        assert_eq!(
            r.endpoint
                .as_ref()
                .unwrap()
                .api_key
                .as_ref()
                .unwrap()
                .expose(),
            "prop"
        );
        assert_eq!(r.num_frames, 3);
        assert_eq!(r.frame_width, 0);
    }

    #[test]
    fn local_endpoint_needs_no_key() {
        let env = Env::from_pairs([("VIA_VLM_ENDPOINT", "http://localhost:8000/v1")]);
        let r = resolve(&user(), env).unwrap();
        assert!(r.endpoint.as_ref().unwrap().api_key.is_none());
    }

    #[test]
    fn azure_by_env_and_by_host() {
        let env = Env::from_pairs([
            ("AZURE_OPENAI_ENDPOINT", "https://myres.example.com/"),
            ("AZURE_OPENAI_API_KEY", "az"),
            ("OPENAI_API_VERSION", "2024-06-01"),
            ("VIA_VLM_OPENAI_MODEL_DEPLOYMENT_NAME", "gpt-4o-dep"),
        ]);
        let r = resolve(&user(), env).unwrap();
        assert!(r.endpoint.as_ref().unwrap().azure);
        assert_eq!(
            r.endpoint.as_ref().unwrap().chat_url.as_str(),
            "https://myres.example.com/openai/deployments/gpt-4o-dep/chat/completions?api-version=2024-06-01"
        );
        assert_eq!(
            r.endpoint
                .as_ref()
                .unwrap()
                .api_key
                .as_ref()
                .unwrap()
                .expose(),
            "az"
        );

        let u = UserSettings {
            endpoint: Some("https://x.openai.azure.com".into()),
            model_name: Some("dep 1".into()),
            ..user()
        };
        let err = resolve(&u, Env::default()).unwrap_err();
        assert!(err.contains("AZURE_OPENAI_API_KEY"), "{err}");
        let r = resolve(&u, Env::from_pairs([("OPENAI_API_KEY", "k")])).unwrap();
        assert_eq!(
            r.endpoint.as_ref().unwrap().chat_url.as_str(),
            "https://x.openai.azure.com/openai/deployments/dep%201/chat/completions?api-version=2024-10-21"
        );
    }

    #[test]
    fn cosmos_backends_by_vss_name() {
        for (name, kind) in [
            ("cosmos-reason1", BackendKind::CosmosReason1),
            ("cosmos-reason2", BackendKind::CosmosReason2),
            ("cosmos-reason3", BackendKind::CosmosReason3),
        ] {
            assert_eq!(name.parse::<BackendKind>().unwrap(), kind);
            assert_eq!(kind.as_str(), name);
            assert!(kind.is_in_process());
            assert_eq!(kind.default_frames(), 20);
            let r = resolve(&user(), Env::from_pairs([("VLM_MODEL_TO_USE", name)])).unwrap();
            assert_eq!(r.backend, kind);
            assert!(r.endpoint.is_none());
        }
        assert!(!BackendKind::OpenAiCompat.is_in_process());
        assert!(!BackendKind::Custom.is_in_process());
        let e = "cosmos-reason4".parse::<BackendKind>().unwrap_err();
        assert!(e.contains("cosmos-reason2, cosmos-reason3"), "{e}");
    }

    #[test]
    fn bad_values_name_what_to_fix() {
        let u = UserSettings {
            endpoint: Some("not a url".into()),
            ..user()
        };
        let err = resolve(&u, Env::default()).unwrap_err();
        assert!(err.contains("endpoint property"), "{err}");
        let env = Env::from_pairs([("VIA_VLM_ENDPOINT", "ftp://x/v1")]);
        let err = resolve(&user(), env).unwrap_err();
        assert!(err.contains("VIA_VLM_ENDPOINT"), "{err}");
        let env = Env::from_pairs([("VLM_MODEL_TO_USE", "vila-9")]);
        let err = resolve(&user(), env).unwrap_err();
        assert!(
            err.contains("VLM_MODEL_TO_USE") && err.contains("vila-9"),
            "{err}"
        );
        let env = Env::from_pairs([
            ("VIA_VLM_ENDPOINT", "http://h/v1"),
            ("VLM_INPUT_WIDTH", "wide"),
        ]);
        let err = resolve(&user(), env).unwrap_err();
        assert!(err.contains("VLM_INPUT_WIDTH"), "{err}");
    }

    #[test]
    fn env_file_overrides_process_env() {
        let dir = std::env::temp_dir().join(format!("vss-envfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("test.env");
        std::fs::write(
            &f,
            "export VIA_VLM_ENDPOINT=http://file-host:1/v1\nexport VLM_MODEL_TO_USE=openai-compat\n",
        )
        .unwrap();
        let env = Env::from_pairs([("VIA_VLM_ENDPOINT", "http://proc-host:2/v1")]);
        let u = UserSettings {
            env_file: Some(f.to_string_lossy().into_owned()),
            ..user()
        };
        let r = resolve(&u, env).unwrap();
        assert_eq!(
            r.endpoint.as_ref().unwrap().chat_url.host_str(),
            Some("file-host")
        );
        let u = UserSettings {
            env_file: Some("/nonexistent/x.env".into()),
            ..user()
        };
        assert!(resolve(&u, Env::default())
            .unwrap_err()
            .contains("env-file"));
    }

    #[test]
    fn key_is_redacted() {
        let k = ApiKey::new("sk-secret-value").unwrap();
        assert!(!format!("{k:?}").contains("secret"));
        assert_eq!(
            k.scrub("bad key sk-secret-value given"),
            "bad key <redacted> given"
        );
    }

    #[test]
    fn key_start_at_a_cut_is_redacted() {
        let k = ApiKey::new("sk-0123456789abcdef").unwrap();
        // 8 characters or more of the key's start at the end: redacted.
        assert_eq!(k.scrub_cut("bad key sk-01234"), "bad key <redacted>");
        assert_eq!(k.scrub_cut("bad key sk-0123456789ab"), "bad key <redacted>");
        assert_eq!(k.scrub_cut("sk-0123456789abcdef"), "<redacted>");
        // Fewer, elsewhere, or not the key's start: kept.
        assert_eq!(k.scrub_cut("bad key sk-0123"), "bad key sk-0123");
        assert_eq!(k.scrub_cut("sk-01234 was bad"), "sk-01234 was bad");
        assert_eq!(k.scrub_cut("bad key 0123456789ab"), "bad key 0123456789ab");
        assert_eq!(k.scrub_cut(""), "");
        // The longest match wins; characters, not bytes, are counted.
        let k = ApiKey::new("ééééééééé-x").unwrap();
        assert_eq!(k.scrub_cut("a éééééééé"), "a <redacted>");
        assert_eq!(k.scrub_cut("a ééééééé"), "a ééééééé");
        // A short key: nothing to cut.
        let k = ApiKey::new("abc").unwrap();
        assert_eq!(k.scrub_cut("xabc"), "xabc");
    }

    #[test]
    fn custom_backend_needs_no_endpoint_and_tracks_explicit_values() {
        // No API key, a broken endpoint variable: irrelevant to `custom`.
        let env = Env::from_pairs([
            ("VLM_MODEL_TO_USE", "custom"),
            ("VIA_VLM_ENDPOINT", "not a url"),
            ("VSS_PYTHON", "/opt/venv/bin/python"),
        ]);
        let r = resolve(&user(), env).unwrap();
        assert_eq!(r.backend, BackendKind::Custom);
        assert!(r.endpoint.is_none());
        assert_eq!((r.num_frames, r.num_frames_explicit), (1, false));
        assert!(!r.frame_size_explicit);
        assert_eq!(r.python, "/opt/venv/bin/python");

        let env = Env::from_pairs([
            ("VLM_MODEL_TO_USE", "custom"),
            ("VLM_DEFAULT_NUM_FRAMES_PER_CHUNK", "4"),
            ("VLM_INPUT_WIDTH", "320"),
        ]);
        let u = UserSettings {
            python: Some("python3.11".into()),
            ..user()
        };
        let r = resolve(&u, env).unwrap();
        assert_eq!((r.num_frames, r.num_frames_explicit), (4, true));
        assert!(r.frame_size_explicit);
        assert_eq!((r.frame_width, r.frame_height), (320, 0));
        assert_eq!(r.python, "python3.11");
    }

    #[test]
    fn seconds_never_panic() {
        assert_eq!(secs(1.5), Duration::from_millis(1500));
        assert_eq!(secs(-1.0), Duration::ZERO);
        assert_eq!(secs(f64::NAN), Duration::ZERO);
        assert_eq!(secs(1e30), Duration::from_secs(365 * 86_400));
    }

    #[test]
    fn env_debug_shows_names_not_values() {
        let e = Env::from_pairs([("OPENAI_API_KEY", "sk-very-secret")]);
        let d = format!("{e:?}");
        assert!(
            d.contains("OPENAI_API_KEY") && !d.contains("sk-very-secret"),
            "{d}"
        );
    }
}
