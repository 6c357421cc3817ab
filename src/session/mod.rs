// SPDX-License-Identifier: MPL-2.0
//! One element's session, free of GStreamer types: built at NULL→READY from
//! the settings, the environment and an [`Observer`], started at
//! READY→PAUSED, dropped at READY→NULL.
//!
//! Rules:
//! 1. [`Session::build`] resolves the settings against the environment
//!    (`env-file` included), picks the frame-preparation device, checks the
//!    endpoint (openai-compat), downloads (`ngc:`/`hf:`) and loads the model
//!    (cosmos-reason1) or starts the custom worker, and decides the text LLM
//!    for summaries and alerts ([`text`]). It may take as long as a
//!    download or a model load; [`Session::build_cancellable`] ends a
//!    download early when its token is cancelled, and
//!    [`Session::prepares_slowly`] says when a build downloads (the element
//!    then builds on a thread of its own and prerolls asynchronously, so
//!    that a state change can cancel it).
//! 2. Everything worth telling goes to the [`Observer`] as an [`Event`]: log
//!    lines at a level, warnings and infos for the bus (with their kind of
//!    problem), download progress, alerts as they are decided. The element
//!    turns them into its debug category, bus messages and
//!    `gst::message::Progress`. Nothing here logs by itself.
//! 3. Failures are [`SessionError`]s: the kind (a setting that cannot work,
//!    or a backend that could not start) and the text the user reads.
//! 4. The per-session constants that every record carries (backend, model,
//!    stream id) are captured once ([`Session::record_constants`]); the
//!    streaming thread never asks the backend per chunk.
//! 5. [`Session::start`] builds the caption dispatcher with its event-check
//!    stage, output stream and summary engine, for one run
//!    (READY→PAUSED … PAUSED→READY).

pub mod settings;
pub mod text;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

#[cfg(feature = "cosmos")]
use crate::backend::cosmos::backend::{CosmosBackend, CosmosGen, CosmosOptions, DTypeChoice};
use crate::backend::custom::manifest;
use crate::backend::custom::{CustomBackend, CustomOptions, LogFn, LogLevel};
use crate::backend::openai::{OpenAiBackend, OpenAiOptions};
use crate::backend::{Backend, FrameOptions, GenParams};
use crate::config::{self, BackendKind, Env, Resolved};
use crate::dispatcher::{Dispatcher, Parts, Stats};
use crate::download::Progress;
use crate::flow::Outbox;
use crate::prep::{self, DeviceChoice, FramePrep};
use crate::prompt;
use crate::summary::{Alert, SummaryStats, WebhookStats};

pub use settings::{Settings, TextSettings};
use text::TextPlan;

/// Longest a custom model may take to load (`import inference; Inference()`).
const CUSTOM_LOAD_TIMEOUT: Duration = Duration::from_secs(600);

/// A log line's level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Warning,
}

/// The kind of problem a bus message reports (the element maps it to
/// GStreamer's error domains).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Problem {
    /// A setting (`ResourceError::Settings`).
    Settings,
    /// A server that cannot be read from (`ResourceError::OpenRead`).
    OpenRead,
    /// Somewhere records go (`ResourceError::Write`).
    Write,
    /// A library or device (`LibraryError::Failed`).
    Library,
    /// The stream's processing (`StreamError::Failed`).
    Stream,
}

/// What a session tells its element.
#[derive(Debug)]
pub enum Event<'a> {
    Log(Level, &'a str),
    /// A warning message on the bus.
    Warning(Problem, &'a str),
    /// An info message on the bus.
    Info(Problem, &'a str),
    /// A download's progress (`ngc:` / `hf:`).
    Progress(&'a Progress),
    /// The model is in the cache (downloaded or found there).
    DownloadDone(&'a str),
    /// The download failed: why.
    DownloadFailed(&'a str),
    /// An alert was decided (before its record leaves in order).
    Alert(&'a Alert),
    /// The event check of a chunk's caption failed.
    AlertError {
        chunk: u64,
        text: &'a str,
    },
    /// An incident opened or closed (`vss-incident`).
    Incident(&'a crate::record::IncidentRecord),
}

/// Where a session's events go (the element's debug category and bus).
pub trait Observer: Send + Sync {
    fn event(&self, e: Event<'_>);
}

/// What kind of failure stopped a session from being built or started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// A setting (or the environment) that cannot work.
    Settings,
    /// The backend could not start (a model that does not load).
    Init,
}

/// A session failure: its kind and the text the user reads.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SessionError {
    pub kind: ErrorKind,
    pub message: String,
}

impl SessionError {
    pub fn settings(message: impl Into<String>) -> SessionError {
        SessionError {
            kind: ErrorKind::Settings,
            message: message.into(),
        }
    }
    pub fn init(message: impl Into<String>) -> SessionError {
        SessionError {
            kind: ErrorKind::Init,
            message: message.into(),
        }
    }
}

/// The element's counters a session updates (read by its properties).
#[derive(Default)]
pub struct Counters {
    pub chunks: Arc<Stats>,
    pub summaries: Arc<SummaryStats>,
    pub alerts_raised: Arc<AtomicU64>,
    pub webhook: Arc<WebhookStats>,
}

/// The fields every caption record of a session carries.
#[derive(Clone, Debug, Default)]
pub struct RecordConstants {
    pub backend: String,
    pub model: String,
    pub stream_id: String,
}

/// Built at NULL→READY, dropped at READY→NULL.
pub struct Session {
    pub resolved: Resolved,
    pub backend: Arc<dyn Backend>,
    /// Where model input is prepared / the model runs (`device` read-back).
    pub device: String,
    /// Summaries and alerts; `None` when neither is made.
    pub text: Option<TextPlan>,
    /// `stream-id` in effect.
    pub stream_id: String,
    observer: Arc<dyn Observer>,
    /// Prompts, gate and `events` while running ([`crate::steer`]).
    pub steering: Arc<crate::steer::Steering>,
}

impl Session {
    /// Rule 1. `element_name` is the default `stream-id`.
    pub fn build(
        settings: &Settings,
        env: Env,
        element_name: &str,
        counters: &Counters,
        observer: Arc<dyn Observer>,
    ) -> Result<Session, SessionError> {
        let never = crate::download::CancellationToken::new();
        Self::build_cancellable(settings, env, element_name, counters, observer, &never)
    }

    /// Rule 1: whether [`Session::build`] would download the model
    /// (`model-path=ngc:…` / `hf:…` for an in-process model), which can take
    /// any time. Settings that do not resolve say `false`: the build then
    /// fails at once with their error.
    pub fn prepares_slowly(settings: &Settings, env: Env) -> bool {
        let Ok(resolved) = config::resolve(&settings.user, env) else {
            return false;
        };
        if !resolved.backend.is_in_process() {
            return false;
        }
        let Some(raw) = resolved.model_path.as_deref().and_then(|p| p.to_str()) else {
            return false;
        };
        matches!(
            crate::download::parse_model_path(raw),
            Ok(s) if !matches!(s, crate::download::ModelSource::Local(_))
        )
    }

    /// Rule 1, with a download that ends (as a `Cancelled` error, the NGC
    /// CLI and its children killed) when `cancel` is cancelled.
    pub fn build_cancellable(
        settings: &Settings,
        env: Env,
        element_name: &str,
        counters: &Counters,
        observer: Arc<dyn Observer>,
        cancel: &crate::download::CancellationToken,
    ) -> Result<Session, SessionError> {
        #[cfg(not(feature = "cosmos"))]
        let _ = cancel;
        let obs = &*observer;
        let settings_err = |e: String| SessionError::settings(format!("vsssummarize: {e}"));
        let mut resolved =
            config::resolve(&settings.user, env).map_err(|e| settings_err(e.to_string()))?;
        if resolved.backend == BackendKind::Custom
            && settings.text.llm_endpoint.is_none()
            && !crate::summary::parse_events(&settings.text.events)
                .map_err(settings_err)?
                .is_empty()
        {
            // Before the model loads: this cannot work whatever it does.
            return Err(settings_err(
                "events needs a text LLM, and backend=custom has none of its own: set llm-endpoint (and llm-model-name) to an OpenAI-compatible server".into(),
            ));
        }
        let choice: DeviceChoice = settings
            .device
            .parse()
            .map_err(|e: prep::PrepError| settings_err(e.to_string()))?;
        let selected = prep::select(choice).map_err(|e| settings_err(e.to_string()))?;
        obs.event(Event::Log(Level::Info, &selected.reason));
        let prep = selected.prep;
        if let FramePrep::Gpu(g) = &prep {
            let weak = Arc::downgrade(&observer);
            g.on_broken(Arc::new(move |msg: &str| {
                if let Some(o) = weak.upgrade() {
                    o.event(Event::Warning(
                        Problem::Library,
                        &format!("vsssummarize: {msg}"),
                    ));
                }
            }));
        }
        #[cfg_attr(not(feature = "cosmos"), allow(unused_mut))]
        let mut device = prep.name().to_string();
        // What the text LLM defaults to: the VLM's endpoint, or the loaded model.
        let mut vlm_endpoint: Option<config::EndpointConfig> = None;
        #[cfg_attr(not(feature = "cosmos"), allow(unused_mut))]
        let mut local_text: Option<Arc<dyn crate::summary::TextLlm>> = None;
        let backend: Arc<dyn Backend> = match resolved.backend {
            BackendKind::OpenAiCompat => {
                let mut endpoint = resolved
                    .endpoint
                    .clone()
                    .expect("resolved for openai-compat");
                check_endpoint(&mut endpoint, settings, obs)?;
                if !endpoint.model_explicit && !endpoint.is_openai() {
                    obs.event(Event::Log(
                        Level::Warning,
                        &format!(
                            "model-name / VIA_VLM_OPENAI_MODEL_DEPLOYMENT_NAME not set: sending the default '{}' to {}; most servers (vLLM, NIM) need the served model name",
                            config::DEFAULT_MODEL,
                            endpoint.chat_url.host_str().unwrap_or_default()
                        ),
                    ));
                }
                obs.event(Event::Log(
                    Level::Info,
                    &format!(
                        "endpoint {}://{}{} (from {}), model '{}'",
                        endpoint.chat_url.scheme(),
                        endpoint.chat_url.host_str().unwrap_or_default(),
                        endpoint
                            .chat_url
                            .port()
                            .map(|p| format!(":{p}"))
                            .unwrap_or_default(),
                        resolved.endpoint_source.unwrap_or("?"),
                        endpoint.model
                    ),
                ));
                vlm_endpoint = Some(endpoint.clone());
                let endpoint_key = endpoint.api_key.clone();
                let opts = OpenAiOptions {
                    endpoint,
                    gen: GenParams {
                        prompt: settings.prompt.clone(),
                        system_prompt: resolved.system_prompt.clone(),
                        max_tokens: settings.max_tokens,
                        temperature: settings.temperature,
                        top_p: settings.top_p,
                        top_k: settings.top_k,
                        seed: (settings.seed >= 0).then_some(settings.seed),
                    },
                    frames: FrameOptions {
                        width: resolved.frame_width,
                        height: resolved.frame_height,
                        jpeg_quality: settings.jpeg_quality.clamp(1, 100) as u8,
                    },
                    prep: prep.clone(),
                    request_timeout: config::secs(settings.request_timeout),
                    max_retries: settings.max_retries,
                    server_wait: config::secs(settings.server_wait),
                    vision: vision_options(settings, &endpoint_key)?,
                };
                if opts.vision.mode != crate::backend::vision::VisionMode::Images
                    && resolved.num_frames % 2 == 1
                {
                    obs.event(Event::Log(
                        Level::Info,
                        &format!(
                            "vision-mode={}: {} frames per chunk is odd; Qwen-VL-style servers pad a video to an even count and pay for the extra frame (an even num-frames-per-chunk costs half the visual tokens of images)",
                            opts.vision.mode.as_str(),
                            resolved.num_frames
                        ),
                    ));
                }
                let weak = Arc::downgrade(&observer);
                let warn = Arc::new(move |msg: &str| {
                    if let Some(o) = weak.upgrade() {
                        o.event(Event::Warning(Problem::Settings, msg));
                    }
                });
                Arc::new(
                    OpenAiBackend::new(opts)
                        .map_err(|e| settings_err(e.to_string()))?
                        .with_warnings(warn),
                )
            }
            BackendKind::Custom => Arc::new(prepare_custom(
                settings,
                &mut resolved,
                prep.clone(),
                &observer,
            )?),
            #[cfg(feature = "cosmos")]
            BackendKind::CosmosReason1 | BackendKind::CosmosReason2 | BackendKind::CosmosReason3 => {
                let b = prepare_cosmos(settings, &resolved, prep.clone(), &observer, cancel)?;
                if b.device_name() != device {
                    obs.event(Event::Log(
                        Level::Info,
                        &format!("the model runs on {}", b.device_name()),
                    ));
                    device = format!("{device} (model on {})", b.device_name());
                }
                local_text = Some(Arc::new(b.text_llm()));
                Arc::new(b)
            }
            #[cfg(not(feature = "cosmos"))]
            b @ (BackendKind::CosmosReason1
            | BackendKind::CosmosReason2
            | BackendKind::CosmosReason3) => {
                return Err(settings_err(format!(
                    "backend={} needs a plugin built with the cosmos feature (the default: cargo build --release); this one was built with --no-default-features",
                    b.as_str()
                )))
            }
        };
        obs.event(Event::Log(
            Level::Info,
            &format!(
                "backend {} model '{}' ({} frames per chunk)",
                resolved.backend.as_str(),
                backend.model(),
                resolved.num_frames
            ),
        ));
        let stream_id = settings
            .text
            .stream_id
            .clone()
            .unwrap_or_else(|| element_name.to_string());
        let text = text::prepare(
            settings,
            &resolved,
            vlm_endpoint.as_ref(),
            local_text,
            &stream_id,
            counters,
            &observer,
        )?;
        let steering = Arc::new(crate::steer::Steering::new(
            if settings.prompt.trim().is_empty() {
                prompt::DEFAULT_PROMPT.to_string()
            } else {
                settings.prompt.clone()
            },
            resolved.system_prompt.clone(),
            text.as_ref().map(|t| t.events.clone()).unwrap_or_default(),
        ));
        Ok(Session {
            resolved,
            backend,
            device,
            text,
            stream_id,
            observer,
            steering,
        })
    }

    /// Rule 4.
    pub fn record_constants(&self) -> RecordConstants {
        RecordConstants {
            backend: self.resolved.backend.as_str().to_string(),
            model: self.backend.model().to_string(),
            stream_id: self.stream_id.clone(),
        }
    }

    /// Rule 5: the dispatcher for one run, with `max-concurrency` capped by
    /// the backend and by `max-pending-chunks`; the note says when the cap
    /// applied.
    pub fn start<M: Send + 'static>(
        &self,
        settings: &Settings,
        counters: &Counters,
    ) -> Result<(Dispatcher<M>, Option<String>), SessionError> {
        counters.chunks.reset();
        let workers = (settings.max_concurrency as usize)
            .min(self.backend.max_concurrency().unwrap_or(usize::MAX))
            .max(1);
        let (workers, note) =
            crate::dispatcher::effective_workers(workers, settings.max_pending as usize);
        let outbox = Arc::new(Outbox::default());
        self.steering.reset();
        self.steering.set_gate(settings.gate.clone());
        let (stage, engine, incidents) = text::start(
            self.text.as_ref(),
            outbox.clone(),
            outbox.clone(),
            counters,
            &self.observer,
            &self.steering,
        )?;
        let d = Dispatcher::with_parts(
            self.backend.clone(),
            Parts {
                max_concurrency: workers,
                max_pending: settings.max_pending as usize,
                stats: counters.chunks.clone(),
                stage,
                outbox,
                engine,
                admission: self.admission(settings),
                steering: Some(self.steering.clone()),
                incidents,
            },
        );
        Ok((d, note))
    }

    /// `endpoint-concurrency`: this element's lane of the process-wide
    /// budget of its endpoint (servers and model), or none (0, or a backend
    /// without an endpoint). See [`crate::budget`].
    fn admission(&self, settings: &Settings) -> Option<Arc<dyn crate::pool::Admission>> {
        let per_server = settings.endpoint_concurrency as usize;
        let (key, servers) = self.backend.budget_key().filter(|_| per_server > 0)?;
        Some(Arc::new(crate::budget::lane(
            &key,
            per_server * servers.max(1),
        )))
    }

    /// The evidence store and clip ring, if `evidence-dir` is set.
    pub fn evidence(&self) -> Option<Arc<crate::evidence::Evidence>> {
        self.text.as_ref().and_then(|t| t.evidence.clone())
    }

    /// The alert webhook, if alerts are posted to one.
    pub fn webhook(&self) -> Option<Arc<crate::summary::Webhook>> {
        self.text.as_ref().and_then(|t| t.webhook.clone())
    }
}

/// `openai-compat`: asks the endpoint once for its models (bounded, on the
/// application thread that changes the state). A model-name the server does
/// not serve fails with the served names; an unset one is replaced by the
/// only served model; a server that is down or refuses the key is a warning
/// (chunks wait for it up to `server-wait`). A server without `/models` is
/// fine.
pub(crate) fn check_endpoint(
    endpoint: &mut config::EndpointConfig,
    settings: &Settings,
    obs: &dyn Observer,
) -> Result<(), SessionError> {
    use crate::backend::model_check as probe;
    if !endpoint.azure && endpoint.chat_url.path() == "/chat/completions" {
        // The most common mistake: vLLM, NIM and transformers serve
        // answer 404 here.
        let u = &endpoint.chat_url;
        let hostport = format!(
            "{}://{}{}",
            u.scheme(),
            u.host_str().unwrap_or_default(),
            u.port().map(|p| format!(":{p}")).unwrap_or_default()
        );
        obs.event(Event::Warning(
            Problem::Settings,
            &format!("vsssummarize: endpoint {hostport} has no path; OpenAI-compatible servers (vLLM, NIM, transformers serve) serve under /v1: did you mean {hostport}/v1?"),
        ));
    }
    let timeout = match config::secs(settings.request_timeout) {
        t if t.is_zero() => probe::DEFAULT_PROBE_TIMEOUT,
        t => t.min(probe::DEFAULT_PROBE_TIMEOUT),
    };
    // Every server of the list is checked (crate::endpoints); a model
    // found on the first is then checked on the others.
    let urls: Vec<url::Url> = endpoint.chat_urls().cloned().collect();
    for url in urls {
        let mut one = endpoint.clone();
        one.chat_url = url;
        one.more_urls.clear();
        check_one(endpoint, &one, timeout, settings, obs)?;
    }
    Ok(())
}

/// [`check_endpoint`] against one server (`one`); `endpoint` takes the
/// model it finds.
fn check_one(
    endpoint: &mut config::EndpointConfig,
    one: &config::EndpointConfig,
    timeout: std::time::Duration,
    settings: &Settings,
    obs: &dyn Observer,
) -> Result<(), SessionError> {
    use crate::backend::model_check::{self as probe, ProbeOutcome};
    let outcome = probe::probe_models(one, timeout);
    let msg = outcome.message();
    match outcome {
        ProbeOutcome::ModelNotServed { .. } => {
            return Err(SessionError::settings(format!("vsssummarize: {msg}")));
        }
        ProbeOutcome::UseModel { model } => {
            obs.event(Event::Log(Level::Info, &msg));
            endpoint.model = model;
            endpoint.model_explicit = true;
        }
        ProbeOutcome::Unreachable { .. } => {
            let wait = if settings.server_wait > 0.0 {
                format!(
                    "; chunks wait up to server-wait ({} s) for it to come up",
                    settings.server_wait
                )
            } else {
                String::new()
            };
            obs.event(Event::Warning(
                Problem::OpenRead,
                &format!("vsssummarize: endpoint check: {msg}{wait}"),
            ));
        }
        ProbeOutcome::DefaultNotServed { .. } | ProbeOutcome::Unauthorized { .. } => {
            obs.event(Event::Warning(
                Problem::Settings,
                &format!("vsssummarize: endpoint check: {msg}"),
            ));
        }
        ProbeOutcome::Served { .. } => obs.event(Event::Log(Level::Info, &msg)),
        ProbeOutcome::NoModelList { .. } | ProbeOutcome::Skipped { .. } => {
            obs.event(Event::Log(Level::Debug, &msg))
        }
    }
    Ok(())
}

/// `backend=custom`: checks the model directory, applies its manifest to
/// `resolved` (frames per chunk, frame size) and loads the model.
fn prepare_custom(
    settings: &Settings,
    resolved: &mut Resolved,
    prep: FramePrep,
    observer: &Arc<dyn Observer>,
) -> Result<CustomBackend, SessionError> {
    let settings_err = |e: String| SessionError::settings(format!("vsssummarize: {e}"));
    let dir = manifest::resolve_model_dir(
        resolved.model_path.as_deref(),
        resolved.model_root_dir.as_deref(),
    )
    .map_err(settings_err)?;
    let (man, warnings) = manifest::load(&dir).map_err(settings_err)?;
    for w in warnings {
        observer.event(Event::Warning(
            Problem::Settings,
            &format!("{}/manifest.yaml: {w}", dir.display()),
        ));
    }
    if !resolved.num_frames_explicit {
        resolved.num_frames = man.number_of_frames.unwrap_or(1);
    }
    if !resolved.frame_size_explicit {
        if let Some((w, h)) = man.resolution {
            (resolved.frame_width, resolved.frame_height) = (w, h);
        }
    }
    let mut configs = serde_json::Map::new();
    let set = |k: &str| settings.gen_set.contains(k);
    if set("max-tokens") {
        configs.insert("max_new_tokens".into(), settings.max_tokens.into());
    }
    if set("temperature") {
        configs.insert("temperature".into(), settings.temperature.into());
    }
    if set("top-p") {
        configs.insert("top_p".into(), settings.top_p.into());
    }
    if set("top-k") && settings.top_k > 0 {
        configs.insert("top_k".into(), settings.top_k.into());
    }
    if set("seed") && settings.seed >= 0 {
        configs.insert("seed".into(), settings.seed.into());
    }
    let weak = Arc::downgrade(observer);
    let log: LogFn = Arc::new(move |level, msg| {
        let Some(o) = weak.upgrade() else { return };
        let level = match level {
            LogLevel::Debug => Level::Debug,
            LogLevel::Info => Level::Info,
            LogLevel::Warning => Level::Warning,
        };
        o.event(Event::Log(level, msg));
    });
    let timeout = if settings.request_timeout > 0.0 {
        config::secs(settings.request_timeout)
    } else {
        Duration::from_secs(365 * 86_400)
    };
    let opts = CustomOptions {
        model_dir: dir,
        python: resolved.python.clone(),
        manifest: man,
        prompt: if settings.prompt.trim().is_empty() {
            prompt::DEFAULT_PROMPT.to_string()
        } else {
            settings.prompt.clone()
        },
        configs,
        frames: FrameOptions {
            width: resolved.frame_width,
            height: resolved.frame_height,
            jpeg_quality: settings.jpeg_quality.clamp(1, 100) as u8,
        },
        prep,
        env: resolved
            .env
            .vars()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        call_timeout: timeout,
        load_timeout: CUSTOM_LOAD_TIMEOUT,
        max_restarts: settings.max_restarts,
        log,
    };
    CustomBackend::new(opts).map_err(|e| SessionError::init(format!("vsssummarize: {e}")))
}

/// `model-path=ngc:…` / `hf:…`: the local directory, downloaded once into
/// the cache (progress goes to the observer); `None` for a local path.
#[cfg(feature = "cosmos")]
fn fetch_model(
    resolved: &Resolved,
    obs: &dyn Observer,
    cancel: &crate::download::CancellationToken,
) -> Result<Option<std::path::PathBuf>, SessionError> {
    use crate::download::{self, DownloadEnv, ModelSource};
    let Some(raw) = resolved.model_path.as_deref().and_then(|p| p.to_str()) else {
        return Ok(None);
    };
    let settings_err = |e: String| SessionError::settings(format!("vsssummarize: model-path: {e}"));
    let source = download::parse_model_path(raw).map_err(|e| settings_err(e.to_string()))?;
    if matches!(source, ModelSource::Local(_)) {
        return Ok(None);
    }
    let env = DownloadEnv {
        vars: resolved
            .env
            .vars()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        model_root_dir: resolved.model_root_dir.clone(),
    };
    obs.event(Event::Log(
        Level::Info,
        &format!("model-path {raw}: looking in the download cache"),
    ));
    let progress = |p: &Progress| obs.event(Event::Progress(p));
    let dir = match download::resolve_cancellable(&source, &env, &progress, cancel) {
        Ok(dir) => dir,
        Err(e) => {
            let e = settings_err(e.to_string());
            obs.event(Event::DownloadFailed(&e.message));
            return Err(e);
        }
    };
    let done = format!("model-path {raw} is {}", dir.display());
    obs.event(Event::Log(Level::Info, &done));
    obs.event(Event::DownloadDone(&done));
    Ok(Some(dir))
}

/// `backend=cosmos-reason1/2/3`: checks the checkpoint directory (its model
/// family against the backend, [`crate::backend::cosmos::family`]) and
/// loads (or shares) the model on the chosen device.
#[cfg(feature = "cosmos")]
fn prepare_cosmos(
    settings: &Settings,
    resolved: &Resolved,
    prep: FramePrep,
    observer: &Arc<dyn Observer>,
    cancel: &crate::download::CancellationToken,
) -> Result<CosmosBackend, SessionError> {
    let settings_err = |e: String| SessionError::settings(format!("vsssummarize: {e}"));
    let fetched = fetch_model(resolved, &**observer, cancel)?;
    let dir = manifest::contained_dir(
        fetched.as_deref().or(resolved.model_path.as_deref()),
        resolved.model_root_dir.as_deref(),
        resolved.backend.as_str(),
        match resolved.backend {
            BackendKind::CosmosReason1 => "a Hugging Face Qwen2.5-VL / Cosmos-Reason1 checkpoint (config.json, *.safetensors, tokenizer.json)",
            _ => "a Hugging Face Qwen3-VL / Cosmos-Reason2 checkpoint (config.json, *.safetensors, tokenizer.json) or a Cosmos3 Nano Reasoner directory (config.json, transformer/, vision_encoder/)",
        },
    )
    .map_err(settings_err)?;
    let device: DeviceChoice = settings
        .device
        .parse()
        .map_err(|e: prep::PrepError| settings_err(e.to_string()))?;
    let dtype: DTypeChoice = settings
        .dtype
        .parse()
        .map_err(|e: crate::backend::cosmos::CosmosError| settings_err(e.to_string()))?;
    let set = |k: &str| settings.gen_set.contains(k);
    let weak = Arc::downgrade(observer);
    let log = Arc::new(move |msg: &str| {
        if let Some(o) = weak.upgrade() {
            o.event(Event::Log(Level::Info, msg));
        }
    });
    let opts = CosmosOptions {
        backend: resolved.backend,
        model_dir: dir,
        device,
        dtype,
        prompt: if settings.prompt.trim().is_empty() {
            prompt::DEFAULT_PROMPT.to_string()
        } else {
            settings.prompt.clone()
        },
        system_prompt: resolved.system_prompt.clone(),
        enable_reasoning: settings.enable_reasoning,
        gen: CosmosGen {
            max_tokens: settings.max_tokens,
            temperature: set("temperature").then_some(settings.temperature),
            top_p: set("top-p").then_some(settings.top_p),
            top_k: (set("top-k") && settings.top_k > 0).then_some(settings.top_k),
            seed: (settings.seed >= 0).then_some(settings.seed as u64),
            no_repeat_ngram_size: u32::try_from(settings.no_repeat_ngram_size).ok(),
        },
        frame_width: resolved.frame_width,
        frame_height: resolved.frame_height,
        prep,
        log,
        model_name: resolved
            .model_path
            .as_deref()
            .and_then(|p| p.to_str())
            .and_then(|raw| crate::download::parse_model_path(raw).ok())
            .and_then(|src| crate::download::model_name(&src)),
    };
    CosmosBackend::new(opts).map_err(|e| SessionError::init(format!("vsssummarize: {e}")))
}

/// The video-mode properties, checked (src/backend/vision.rs).
fn vision_options(
    settings: &Settings,
    key: &Option<config::ApiKey>,
) -> Result<crate::backend::vision::VisionOptions, SessionError> {
    use crate::backend::vision::{parse_extra_body, ImageDetail, VisionMode, VisionOptions};
    let err = |m: String| SessionError::settings(format!("vsssummarize: {m}"));
    Ok(VisionOptions {
        mode: VisionMode::parse(&settings.vision_mode).map_err(err)?,
        detail: ImageDetail::parse(&settings.image_detail).map_err(err)?,
        max_images: settings.max_images,
        extra_body: parse_extra_body(
            settings.extra_body.as_deref().unwrap_or(""),
            key.as_ref().map(|k| k.expose()),
        )
        .map_err(err)?,
        timestamp_line: settings.timestamp_line,
    })
}

#[cfg(test)]
mod tests;
