// SPDX-License-Identifier: MPL-2.0
//! NULL→READY: settings resolved against the environment, the device
//! chosen, the endpoint checked and the backend built (or its model loaded).

use super::*;

/// Longest a custom model may take to load (`import inference; Inference()`).
const CUSTOM_LOAD_TIMEOUT: Duration = Duration::from_secs(600);

impl VssSummarize {
    pub(super) fn prepare(&self) -> Result<(), gst::ErrorMessage> {
        let settings = lock(&self.settings).clone();
        let settings_err =
            |e: String| gst::error_msg!(gst::ResourceError::Settings, ("vsssummarize: {e}"));
        let mut resolved =
            config::resolve(&settings.user, Env::from_process()).map_err(settings_err)?;
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
        let choice: DeviceChoice = settings.device.parse().map_err(settings_err)?;
        let selected = gpu::select(choice).map_err(settings_err)?;
        gst::info!(CAT, imp = self, "{}", selected.reason);
        let prep = selected.prep;
        if let FramePrep::Gpu(g) = &prep {
            let weak = self.obj().downgrade();
            g.on_broken(Arc::new(move |msg: &str| {
                if let Some(obj) = weak.upgrade() {
                    gst::element_warning!(obj, gst::LibraryError::Failed, ("vsssummarize: {msg}"));
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
                self.check_endpoint(&mut endpoint, &settings)?;
                if !endpoint.model_explicit && !endpoint.is_openai() {
                    gst::warning!(
                        CAT,
                        imp = self,
                        "model-name / VIA_VLM_OPENAI_MODEL_DEPLOYMENT_NAME not set: sending the default '{}' to {}; most servers (vLLM, NIM) need the served model name",
                        config::DEFAULT_MODEL,
                        endpoint.chat_url.host_str().unwrap_or_default()
                    );
                }
                gst::info!(
                    CAT,
                    imp = self,
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
                );
                vlm_endpoint = Some(endpoint.clone());
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
                };
                Arc::new(OpenAiBackend::new(opts).map_err(settings_err)?)
            }
            BackendKind::Custom => {
                Arc::new(self.prepare_custom(&settings, &mut resolved, prep.clone())?)
            }
            #[cfg(feature = "cosmos")]
            BackendKind::CosmosReason1 => {
                let b = self.prepare_cosmos(&settings, &resolved, prep.clone())?;
                if b.device_name() != device {
                    gst::info!(CAT, imp = self, "the model runs on {}", b.device_name());
                    device = format!("{device} (model on {})", b.device_name());
                }
                local_text = Some(Arc::new(b.text_llm()));
                Arc::new(b)
            }
            #[cfg(not(feature = "cosmos"))]
            BackendKind::CosmosReason1 => {
                return Err(settings_err(
                    "backend=cosmos-reason1 needs a plugin built with the cosmos feature (the default: cargo build --release); this one was built with --no-default-features".into(),
                ))
            }
        };
        gst::info!(
            CAT,
            imp = self,
            "backend {} model '{}' ({} frames per chunk)",
            resolved.backend.as_str(),
            backend.model(),
            resolved.num_frames
        );
        let stream_id = settings
            .text
            .stream_id
            .clone()
            .unwrap_or_else(|| self.obj().name().to_string());
        let text = self.prepare_text(
            &settings,
            &resolved,
            vlm_endpoint.as_ref(),
            local_text,
            &stream_id,
        )?;
        self.fatal_posted.store(false, Ordering::Release);
        *lock(&self.prepared) = Some(Prepared {
            resolved,
            backend,
            device,
            text,
            stream_id,
        });
        Ok(())
    }

    /// `openai-compat`: asks the endpoint once for its models (bounded, on
    /// the application thread that changes the state). A model-name the
    /// server does not serve fails NULL→READY with the served names; an
    /// unset one is replaced by the only served model; a server that is down
    /// or refuses the key is a warning (chunks wait for it up to
    /// `server-wait`). A server without `/models` is fine.
    pub(super) fn check_endpoint(
        &self,
        endpoint: &mut config::EndpointConfig,
        settings: &Settings,
    ) -> Result<(), gst::ErrorMessage> {
        use crate::backend::probe::{self, ProbeOutcome};
        if !endpoint.azure && endpoint.chat_url.path() == "/chat/completions" {
            // The most common mistake: vLLM, NIM and transformers serve
            // answer 404 here.
            let u = &endpoint.chat_url;
            gst::element_imp_warning!(
                self,
                gst::ResourceError::Settings,
                ("vsssummarize: endpoint {}://{}{} has no path; OpenAI-compatible servers (vLLM, NIM, transformers serve) serve under /v1: did you mean {}://{}{}/v1?",
                    u.scheme(), u.host_str().unwrap_or_default(), u.port().map(|p| format!(":{p}")).unwrap_or_default(),
                    u.scheme(), u.host_str().unwrap_or_default(), u.port().map(|p| format!(":{p}")).unwrap_or_default())
            );
        }
        let timeout = match config::secs(settings.request_timeout) {
            t if t.is_zero() => probe::DEFAULT_PROBE_TIMEOUT,
            t => t.min(probe::DEFAULT_PROBE_TIMEOUT),
        };
        let outcome = probe::probe_models(endpoint, timeout);
        let msg = outcome.message();
        match outcome {
            ProbeOutcome::ModelNotServed { .. } => {
                return Err(gst::error_msg!(
                    gst::ResourceError::Settings,
                    ("vsssummarize: {msg}")
                ));
            }
            ProbeOutcome::UseModel { model } => {
                gst::info!(CAT, imp = self, "{msg}");
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
                gst::element_imp_warning!(
                    self,
                    gst::ResourceError::OpenRead,
                    ("vsssummarize: endpoint check: {msg}{wait}")
                );
            }
            ProbeOutcome::DefaultNotServed { .. } | ProbeOutcome::Unauthorized { .. } => {
                gst::element_imp_warning!(
                    self,
                    gst::ResourceError::Settings,
                    ("vsssummarize: endpoint check: {msg}")
                );
            }
            ProbeOutcome::Served { .. } => gst::info!(CAT, imp = self, "{msg}"),
            ProbeOutcome::NoModelList { .. } | ProbeOutcome::Skipped { .. } => {
                gst::debug!(CAT, imp = self, "{msg}")
            }
        }
        Ok(())
    }

    /// `backend=custom`: checks the model directory, applies its manifest to
    /// `resolved` (frames per chunk, frame size) and loads the model.
    pub(super) fn prepare_custom(
        &self,
        settings: &Settings,
        resolved: &mut Resolved,
        prep: FramePrep,
    ) -> Result<CustomBackend, gst::ErrorMessage> {
        let settings_err =
            |e: String| gst::error_msg!(gst::ResourceError::Settings, ("vsssummarize: {e}"));
        let dir = manifest::resolve_model_dir(
            resolved.model_path.as_deref(),
            resolved.model_root_dir.as_deref(),
        )
        .map_err(settings_err)?;
        let (man, warnings) = manifest::load(&dir).map_err(settings_err)?;
        for w in warnings {
            gst::element_imp_warning!(
                self,
                gst::ResourceError::Settings,
                ("{}/manifest.yaml: {w}", dir.display())
            );
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
        let weak = self.obj().downgrade();
        let log: LogFn = Arc::new(move |level, msg| {
            let Some(obj) = weak.upgrade() else { return };
            match level {
                LogLevel::Debug => gst::debug!(CAT, obj = obj, "{msg}"),
                LogLevel::Info => gst::info!(CAT, obj = obj, "{msg}"),
                LogLevel::Warning => gst::warning!(CAT, obj = obj, "{msg}"),
            }
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
        CustomBackend::new(opts)
            .map_err(|e| gst::error_msg!(gst::LibraryError::Init, ("vsssummarize: {e}")))
    }

    /// `model-path=ngc:…` / `hf:…`: the local directory, downloaded once into
    /// the cache (INFO lines and `vss-download` bus messages report the
    /// progress); `None` for a local path.
    #[cfg(feature = "cosmos")]
    fn fetch_model(
        &self,
        resolved: &Resolved,
    ) -> Result<Option<std::path::PathBuf>, gst::ErrorMessage> {
        use crate::download::{self, DownloadEnv, ModelSource, Progress};
        let Some(raw) = resolved.model_path.as_deref().and_then(|p| p.to_str()) else {
            return Ok(None);
        };
        let settings_err = |e: String| {
            gst::error_msg!(
                gst::ResourceError::Settings,
                ("vsssummarize: model-path: {e}")
            )
        };
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
        gst::info!(
            CAT,
            imp = self,
            "model-path {raw}: looking in the download cache"
        );
        // INFO lines at each file's end and every 5 %; a bus message each time.
        let last = Mutex::new((String::new(), -1i64));
        let weak = self.obj().downgrade();
        let progress = move |p: &Progress| {
            let Some(obj) = weak.upgrade() else { return };
            let pct = p
                .all_total
                .filter(|t| *t > 0)
                .map(|t| p.all_done as f64 * 100.0 / t as f64);
            let step = pct
                .map(|x| (x / 5.0) as i64)
                .unwrap_or((p.all_done >> 26) as i64);
            let file_done = p.total.is_some_and(|t| p.done >= t);
            {
                let mut l = lock(&last);
                if l.0 == p.file && l.1 == step && !file_done {
                    return;
                }
                *l = (p.file.clone(), step);
            }
            let pct_text = pct.map(|x| format!(" ({x:.0} %)")).unwrap_or_default();
            gst::info!(
                CAT,
                obj = obj,
                "downloading {}: {} of {} bytes{pct_text}",
                p.file,
                p.all_done,
                p.all_total
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| "?".into())
            );
            let mut s = gst::Structure::builder("vss-download")
                .field("file", p.file.as_str())
                .field("bytes-done", p.all_done)
                .field("file-bytes-done", p.done);
            if let Some(t) = p.all_total {
                s = s.field("bytes-total", t);
            }
            if let Some(x) = pct {
                s = s.field("percent", x);
            }
            let _ = obj.post_message(gst::message::Element::builder(s.build()).src(&obj).build());
        };
        let dir =
            download::resolve(&source, &env, &progress).map_err(|e| settings_err(e.to_string()))?;
        gst::info!(CAT, imp = self, "model-path {raw} is {}", dir.display());
        Ok(Some(dir))
    }

    /// `backend=cosmos-reason1`: checks the checkpoint directory and loads
    /// (or shares) the model on the chosen device.
    #[cfg(feature = "cosmos")]
    pub(super) fn prepare_cosmos(
        &self,
        settings: &Settings,
        resolved: &Resolved,
        prep: FramePrep,
    ) -> Result<CosmosBackend, gst::ErrorMessage> {
        let settings_err =
            |e: String| gst::error_msg!(gst::ResourceError::Settings, ("vsssummarize: {e}"));
        let fetched = self.fetch_model(resolved)?;
        let dir = manifest::contained_dir(
            fetched.as_deref().or(resolved.model_path.as_deref()),
            resolved.model_root_dir.as_deref(),
            "cosmos-reason1",
            "a Hugging Face Qwen2.5-VL / Cosmos-Reason1 checkpoint (config.json, *.safetensors, tokenizer.json)",
        )
        .map_err(settings_err)?;
        let device: DeviceChoice = settings.device.parse().map_err(settings_err)?;
        let dtype: DTypeChoice = settings
            .dtype
            .parse()
            .map_err(|e: crate::backend::cosmos::CosmosError| settings_err(e.to_string()))?;
        let set = |k: &str| settings.gen_set.contains(k);
        let weak = self.obj().downgrade();
        let log = Arc::new(move |msg: &str| {
            if let Some(obj) = weak.upgrade() {
                gst::info!(CAT, obj = obj, "{msg}");
            }
        });
        let opts = CosmosOptions {
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
        CosmosBackend::new(opts)
            .map_err(|e| gst::error_msg!(gst::LibraryError::Init, ("vsssummarize: {e}")))
    }
}
