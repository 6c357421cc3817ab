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
    CosmosReason1,
    Custom,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::OpenAiCompat => "openai-compat",
            BackendKind::CosmosReason1 => "cosmos-reason1",
            BackendKind::Custom => "custom",
        }
    }

    /// Frames per chunk when `num-frames-per-chunk` is 0 (VSS defaults).
    pub fn default_frames(self) -> u32 {
        match self {
            BackendKind::OpenAiCompat => 10,
            BackendKind::CosmosReason1 => 20,
            BackendKind::Custom => 1,
        }
    }
}

impl FromStr for BackendKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "openai-compat" | "openai" => Ok(BackendKind::OpenAiCompat),
            "cosmos-reason1" => Ok(BackendKind::CosmosReason1),
            "custom" => Ok(BackendKind::Custom),
            other => Err(format!(
                "unknown backend '{other}': use one of openai-compat, cosmos-reason1, custom"
            )),
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
    pub fn overlay_file(&mut self, path: &Path) -> Result<(), String> {
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

/// Parses `.env` text: `export KEY=VALUE` or `KEY=VALUE` lines, `#` comments,
/// blank lines, values optionally in single or double quotes (double quotes
/// understand `\"` and `\\`). Unquoted values end at ` #`.
pub fn parse_env_file(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (lineno, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line
            .strip_prefix("export ")
            .map(str::trim_start)
            .unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!(
                "line {}: expected KEY=VALUE, found '{}'",
                lineno + 1,
                truncate(line, 40)
            ));
        };
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "line {}: invalid variable name '{key}'",
                lineno + 1
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
            match value.find(" #") {
                Some(i) => value[..i].trim_end().to_string(),
                None => value.to_string(),
            }
        };
        out.push((key.to_string(), value));
    }
    Ok(out)
}

fn truncate(s: &str, n: usize) -> String {
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

fn parse_u32_var(env: &Env, key: &str) -> Result<Option<u32>, String> {
    match env.get(key) {
        None => Ok(None),
        Some(v) => {
            v.trim().parse::<u32>().map(Some).map_err(|_| {
                format!("environment variable {key}='{v}' is not a non-negative integer")
            })
        }
    }
}

/// Resolves the user's settings against the environment. Errors name the
/// property or variable to fix and never contain the API key.
pub fn resolve(user: &UserSettings, process_env: Env) -> Result<Resolved, String> {
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
        _ => match parse_u32_var(&env, "VLM_DEFAULT_NUM_FRAMES_PER_CHUNK")? {
            Some(n) if n > 0 => (n, true),
            _ => (backend.default_frames(), false),
        },
    };
    let width = match user.frame_width {
        Some(w) => Some(w),
        None => parse_u32_var(&env, "VLM_INPUT_WIDTH")?,
    };
    let height = match user.frame_height {
        Some(h) => Some(h),
        None => parse_u32_var(&env, "VLM_INPUT_HEIGHT")?,
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

fn resolve_endpoint(user: &UserSettings, env: &Env) -> Result<EndpointConfig, String> {
    let azure_env = env.get("AZURE_OPENAI_ENDPOINT");
    // The endpoint property wins; then VSS's rule (AZURE_OPENAI_ENDPOINT selects
    // Azure), then VIA_VLM_ENDPOINT, then OpenAI.
    let (raw, source) = if let Some(e) = user.endpoint.as_deref().filter(|s| !s.is_empty()) {
        (e.to_string(), "the endpoint property")
    } else if let Some(e) = azure_env {
        (e.to_string(), "environment variable AZURE_OPENAI_ENDPOINT")
    } else if let Some(e) = env.get("VIA_VLM_ENDPOINT") {
        (e.to_string(), "environment variable VIA_VLM_ENDPOINT")
    } else {
        (DEFAULT_ENDPOINT.to_string(), "the default endpoint")
    };

    let url = url::Url::parse(raw.trim()).map_err(|e| {
        format!("cannot parse endpoint '{raw}' from {source}: {e}; expected e.g. http://localhost:8000/v1")
    })?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(format!(
            "endpoint '{raw}' from {source} must be an http:// or https:// URL"
        ));
    }
    if url.host_str().is_none() {
        return Err(format!("endpoint '{raw}' from {source} has no host"));
    }
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    let azure = host.ends_with(".openai.azure.com")
        || (user.endpoint.as_deref().unwrap_or("").is_empty() && azure_env.is_some());

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
            format!("no API key for Azure OpenAI endpoint {host}: set the api-key property or AZURE_OPENAI_API_KEY / VIA_VLM_API_KEY / OPENAI_API_KEY")
        } else {
            format!("no API key for {host}: set the api-key property or the VIA_VLM_API_KEY or OPENAI_API_KEY environment variable")
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
pub fn secs(s: f64) -> Duration {
    if s.is_finite() && s > 0.0 {
        Duration::from_secs_f64(s)
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
    fn defaults_need_key_for_openai() {
        let err = resolve(&user(), Env::default()).unwrap_err();
        assert!(err.contains("OPENAI_API_KEY"), "{err}");
        assert!(err.contains("api-key"), "{err}");
        let env = Env::from_pairs([("OPENAI_API_KEY", "sk-test-123")]);
        let r = resolve(&user(), env).unwrap();
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
    fn env_debug_shows_names_not_values() {
        let e = Env::from_pairs([("OPENAI_API_KEY", "sk-very-secret")]);
        let d = format!("{e:?}");
        assert!(
            d.contains("OPENAI_API_KEY") && !d.contains("sk-very-secret"),
            "{d}"
        );
    }
}
