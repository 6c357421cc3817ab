// SPDX-License-Identifier: MPL-2.0
//! Properties: the defaults, what each one is read at (and so when it can
//! change), their specs, and setting / reading them.

use super::*;

use crate::session::settings::*;

/// When a property can change is its pspec's flags, as in every GStreamer
/// element: none — read at NULL→READY, so fixed once the element leaves NULL
/// (a change is refused with a warning, and the value in effect reads
/// back), and its blurb says so ([`fixed!`]); `mutable_ready` — read at
/// READY→PAUSED; `mutable_playing` — applies whenever it is set.
/// The blurb of a property without a `mutable_*` flag: says when it is
/// fixed (gst-inspect shows no "changeable in READY" flag for them).
macro_rules! fixed {
    ($blurb:literal) => {
        concat!($blurb, " (fixed once the element leaves NULL)")
    };
}

/// A string property read at NULL→READY.
macro_rules! sf {
    ($name:literal, $blurb:literal) => {
        glib::ParamSpecString::builder($name)
            .blurb(fixed!($blurb))
            .build()
    };
}

impl VssSummarize {
    pub(super) fn property_specs() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecEnum::builder_with_default("backend", BackendProp::OpenAiCompat)
                    .nick("Backend")
                    .blurb(fixed!("Model backend (default from VLM_MODEL_TO_USE); fixed once the element leaves NULL"))
                    .build(),
                sf!("endpoint", "OpenAI-compatible base URL, e.g. http://localhost:8000/v1 (default from VIA_VLM_ENDPOINT, else https://api.openai.com/v1)"),
                sf!("model-name", "Model / deployment name sent as 'model' (default from VIA_VLM_OPENAI_MODEL_DEPLOYMENT_NAME, else gpt-4o)"),
                glib::ParamSpecString::builder("api-key")
                    .blurb(fixed!("API key (write-only; default from VIA_VLM_API_KEY, else OPENAI_API_KEY; AZURE_OPENAI_API_KEY for Azure)"))
                    .write_only()
                    .build(),
                sf!("api-version", "Azure OpenAI api-version (default from OPENAI_API_VERSION)"),
                sf!("model-path", "Model directory for local backends (default from MODEL_PATH)"),
                sf!("model-root-dir", "Directory local models must lie in (default from MODEL_ROOT_DIR)"),
                sf!("python", "Python interpreter that runs a custom model (default from VSS_PYTHON, else python3); point it at a virtualenv's bin/python"),
                sf!("env-file", "VSS .env file of 'export KEY=VALUE' lines used as defaults (wins over the process environment)"),
                glib::ParamSpecDouble::builder("chunk-duration")
                    .blurb("Chunk length in seconds (chunk-duration minus chunk-overlap must be at least 0.1 s and 1/16 of chunk-duration)")
                    .minimum(crate::chunker::MIN_STRIDE_NS as f64 / 1e9)
                    .maximum(86_400.0)
                    .default_value(DEFAULT_CHUNK_DURATION)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecDouble::builder("chunk-overlap")
                    .blurb("Overlap between consecutive chunks in seconds (must be < chunk-duration)")
                    .minimum(0.0)
                    .maximum(86_400.0)
                    .default_value(0.0)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("num-frames-per-chunk")
                    .blurb(fixed!("Frames sampled per chunk (0 = VLM_DEFAULT_NUM_FRAMES_PER_CHUNK, else the backend default: 10 for openai-compat, the manifest's number_of_frames for custom)"))
                    .maximum(crate::chunker::MAX_FRAMES_PER_CHUNK)
                    .default_value(0)
                    .build(),
                glib::ParamSpecUInt::builder("frame-width")
                    .blurb(fixed!("Width of frames sent to the model (0 = native, or keep the aspect ratio if frame-height is set; default from VLM_INPUT_WIDTH)"))
                    .maximum(config::MAX_FRAME_SIZE)
                    .default_value(0)
                    .build(),
                glib::ParamSpecUInt::builder("frame-height")
                    .blurb(fixed!("Height of frames sent to the model (0 = native, or keep the aspect ratio if frame-width is set; default from VLM_INPUT_HEIGHT)"))
                    .maximum(config::MAX_FRAME_SIZE)
                    .default_value(0)
                    .build(),
                glib::ParamSpecUInt::builder("jpeg-quality")
                    .blurb(fixed!("JPEG quality of frames sent to the model"))
                    .minimum(1)
                    .maximum(100)
                    .default_value(DEFAULT_JPEG_QUALITY)
                    .build(),
                glib::ParamSpecString::builder("prompt")
                    .blurb("Caption prompt (after the frame timestamp list); can change while running: applies from the next chunk not yet sent (see prompt-id)")
                    .default_value(Some(prompt::DEFAULT_PROMPT))
                    .mutable_playing()
                    .build(),
                glib::ParamSpecString::builder("system-prompt")
                    .blurb("System message (default from VLM_SYSTEM_PROMPT; none if empty); can change while running like prompt")
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("max-tokens")
                    .blurb(fixed!("max_tokens of each request"))
                    .minimum(1)
                    .maximum(1 << 20)
                    .default_value(1024)
                    .build(),
                glib::ParamSpecDouble::builder("temperature")
                    .blurb(fixed!("Sampling temperature of each request (0 = greedy)"))
                    .minimum(0.0)
                    .maximum(2.0)
                    .default_value(0.2)
                    .build(),
                glib::ParamSpecDouble::builder("top-p")
                    .blurb(fixed!("Nucleus sampling top_p of each request"))
                    .minimum(0.0)
                    .maximum(1.0)
                    .default_value(1.0)
                    .build(),
                glib::ParamSpecUInt::builder("top-k")
                    .blurb(fixed!("top_k (0 = not sent)"))
                    .maximum(100_000)
                    .default_value(0)
                    .build(),
                glib::ParamSpecInt64::builder("seed")
                    .blurb(fixed!("seed (-1 = not sent)"))
                    .minimum(-1)
                    .default_value(1)
                    .build(),
                glib::ParamSpecInt::builder("no-repeat-ngram-size")
                    .blurb(fixed!("In-process backends: ban a token that would repeat an n-gram of this size already in the prompt or the answer (as transformers' no_repeat_ngram_size); 0 = off (vanilla vLLM/NIM), -1 = the backend's default: 3 for cosmos-reason2/3 (as VSS), 0 for cosmos-reason1; not sent to openai-compat servers"))
                    .minimum(-1)
                    .maximum(64)
                    .default_value(-1)
                    .build(),
                glib::ParamSpecUInt::builder("max-concurrency")
                    .blurb("Requests in flight at most (capped at max-pending-chunks)")
                    .minimum(1)
                    .maximum(256)
                    .default_value(DEFAULT_MAX_CONCURRENCY)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("max-pending-chunks")
                    .blurb("Chunks queued or in flight at most; then non-live input is slowed down and live input drops a chunk not sent yet (the oldest queued, else the new one; requests in flight always finish)")
                    .minimum(1)
                    .maximum(4096)
                    .default_value(DEFAULT_MAX_PENDING)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecDouble::builder("request-timeout")
                    .blurb(fixed!("Seconds per request attempt (0 = no timeout)"))
                    .minimum(0.0)
                    .maximum(86_400.0)
                    .default_value(DEFAULT_REQUEST_TIMEOUT)
                    .build(),
                glib::ParamSpecUInt::builder("max-retries")
                    .blurb(fixed!("Retries of a request after 429, 5xx or a timeout"))
                    .maximum(100)
                    .default_value(DEFAULT_MAX_RETRIES)
                    .build(),
                glib::ParamSpecDouble::builder("drain-timeout")
                    .blurb("Seconds EOS waits for pending chunks before reporting them as errors (applies when set)")
                    .minimum(0.0)
                    .maximum(86_400.0)
                    .default_value(DEFAULT_DRAIN_TIMEOUT)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecDouble::builder("server-wait")
                    .blurb(fixed!("openai-compat: seconds a chunk keeps retrying an endpoint that refuses connections (not up yet, restarting) before it fails; 0 = retry like other errors"))
                    .minimum(0.0)
                    .maximum(86_400.0)
                    .default_value(DEFAULT_SERVER_WAIT_S)
                    .build(),
                glib::ParamSpecString::builder("device")
                    .blurb(fixed!("Where sampled frames are converted/resized (and, for cosmos-reason1/2/3 in a cuda build, where the model runs): auto (GPU 0 when the NVIDIA driver, a GPU and NVRTC are present, else CPU), cpu, cuda:N (fails at NULL->READY without a usable GPU); reads back the device in use once READY"))
                    .default_value(Some("auto"))
                    .build(),
                glib::ParamSpecString::builder("dtype")
                    .blurb(fixed!("cosmos-reason1/2/3: weight type: auto (f32 on the CPU, bf16 on CUDA), f32, bf16 (half the memory; on the CPU slower than f32)"))
                    .default_value(Some("auto"))
                    .build(),
                glib::ParamSpecBoolean::builder("enable-reasoning")
                    .blurb(fixed!("cosmos-reason1/2/3: ask for <think>…</think><answer>…</answer> and put the thinking in the record's reasoning field"))
                    .default_value(false)
                    .build(),
                glib::ParamSpecUInt::builder("max-restarts")
                    .blurb(fixed!("custom backend: model process restarts after crashes in a row before the element fails"))
                    .maximum(1000)
                    .default_value(DEFAULT_MAX_RESTARTS)
                    .build(),
                glib::ParamSpecBoolean::builder("summarize")
                    .blurb(fixed!("Make summary records (one per summary-duration of video) and a final-summary record before EOS with the text LLM (llm-*); false: captions only"))
                    .default_value(true)
                    .build(),
                glib::ParamSpecDouble::builder("summary-duration")
                    .blurb(fixed!("Seconds of video per summary window: window w holds the chunks whose start lies in [w*D, (w+1)*D) of stream time; -1: no windows, only the final summary"))
                    .minimum(-1.0)
                    .maximum(31_536_000.0)
                    .default_value(DEFAULT_SUMMARY_DURATION)
                    .build(),
                sf!("llm-endpoint", "OpenAI-compatible base URL of the text LLM for summaries and event checks (default: the VLM's endpoint for openai-compat, the loaded model for cosmos-reason1/2/3, none for custom)"),
                sf!("llm-model-name", "Text LLM model name (default: the VLM's model on its endpoint; on llm-endpoint, the only model it serves)"),
                glib::ParamSpecString::builder("llm-api-key")
                    .blurb(fixed!("Text LLM API key (write-only; default: the VLM's key when llm-endpoint is unset or on the same host and port)"))
                    .write_only()
                    .build(),
                glib::ParamSpecUInt::builder("llm-max-tokens")
                    .blurb(fixed!("Most tokens the text LLM may answer per call"))
                    .minimum(16)
                    .maximum(65_536)
                    .default_value(DEFAULT_LLM_MAX_TOKENS)
                    .build(),
                glib::ParamSpecDouble::builder("llm-temperature")
                    .blurb(fixed!("Text LLM sampling temperature"))
                    .minimum(0.0)
                    .maximum(2.0)
                    .default_value(DEFAULT_LLM_TEMPERATURE)
                    .build(),
                glib::ParamSpecDouble::builder("llm-top-p")
                    .blurb(fixed!("Text LLM nucleus sampling top-p"))
                    .minimum(0.0)
                    .maximum(1.0)
                    .default_value(DEFAULT_LLM_TOP_P)
                    .build(),
                glib::ParamSpecUInt64::builder("llm-context-tokens")
                    .blurb(fixed!("Input budget of one text LLM call, in tokens (estimated conservatively); summaries of more split and aggregate recursively. The model's context must hold this plus llm-max-tokens"))
                    .minimum(256)
                    .maximum(10_000_000)
                    .default_value(crate::summary::aggregate::DEFAULT_CONTEXT_TOKENS)
                    .build(),
                glib::ParamSpecUInt::builder("llm-max-concurrency")
                    .blurb(fixed!("Text LLM calls at once for event checks, and for the batches of one summary (summaries and event checks have separate budgets)"))
                    .minimum(1)
                    .maximum(64)
                    .default_value(DEFAULT_LLM_MAX_CONCURRENCY)
                    .build(),
                sf!("caption-summarization-prompt", "Prompt that turns '<start> <end> caption' lines into a summary (empty: the built-in one)"),
                sf!("summary-aggregation-prompt", "Prompt that merges partial summaries into one (empty: the built-in one)"),
                glib::ParamSpecString::builder("events")
                    .blurb("Events to raise alerts on, ';'-separated (e.g. 'a person falls;smoke or fire'); each caption is checked with one text LLM call; can change while running (needs a text LLM at start: summarize=true or events set)")
                    .mutable_playing()
                    .build(),
                sf!("alert-webhook", "http(s) URL that receives one JSON POST per alert (streamId, alertId, ntpTimestamp, alertDetails, detectedEvents)"),
                glib::ParamSpecString::builder("alert-webhook-token")
                    .blurb(fixed!("Bearer token sent to alert-webhook (write-only)"))
                    .write_only()
                    .build(),
                sf!("stream-id", "Stream name written in every record and alert (default: the element's name)"),
                glib::ParamSpecUInt64::builder("summaries-completed")
                    .blurb("Summary and final-summary records made")
                    .read_only()
                    .build(),
                glib::ParamSpecUInt64::builder("summaries-failed")
                    .blurb("Summary and final-summary records that carry an error")
                    .read_only()
                    .build(),
                glib::ParamSpecUInt64::builder("alerts-raised")
                    .blurb("Alerts decided (captions in which an event of 'events' was detected)")
                    .read_only()
                    .build(),
                glib::ParamSpecUInt64::builder("alerts-webhook-failed")
                    .blurb("Alerts that could not be delivered to alert-webhook")
                    .read_only()
                    .build(),
                glib::ParamSpecUInt64::builder("chunks-submitted")
                    .blurb("Chunks handed to the model since READY→PAUSED")
                    .read_only()
                    .build(),
                glib::ParamSpecUInt64::builder("chunks-completed")
                    .blurb("Chunks that ended as a caption")
                    .read_only()
                    .build(),
                glib::ParamSpecUInt64::builder("chunks-failed")
                    .blurb("Chunks that ended as an error record (dropped ones included)")
                    .read_only()
                    .build(),
                glib::ParamSpecUInt64::builder("chunks-dropped")
                    .blurb("Live chunks dropped because the model was behind (also counted in chunks-failed)")
                    .read_only()
                    .build(),
                // Video mode (docs/video-mode.md).
                glib::ParamSpecString::builder("vision-mode")
                    .blurb(fixed!("openai-compat: how frames are sent: images (default: every server takes them), video (one MP4 per chunk, never falls back), auto (video, images for the rest of the session once the server refuses video; images from the start for OpenAI and Azure)"))
                    .default_value(Some("images"))
                    .build(),
                glib::ParamSpecString::builder("image-detail")
                    .blurb(fixed!("openai-compat images: each image's 'detail': auto, low (OpenAI: 85 tokens an image), high"))
                    .default_value(Some("auto"))
                    .build(),
                glib::ParamSpecUInt::builder("max-images-per-request")
                    .blurb(fixed!("openai-compat images: at most this many frames per request, chosen uniformly (0 = no cap; NIM takes 10); frame_times lists those sent"))
                    .build(),
                sf!("extra-body", "JSON object whose keys are added to every caption request (e.g. {\"mm_processor_kwargs\": {\"fps\": 2}, \"top_k\": 20}); no credentials"),
                glib::ParamSpecBoolean::builder("timestamp-line")
                    .blurb(fixed!("Add the line naming the frames' timestamps to the prompt (VSS's layout); prompt placeholders {timestamps} {first_ts} {last_ts} {num_frames} {stream_id} work either way"))
                    .default_value(true)
                    .build(),
                glib::ParamSpecUInt::builder("endpoint-concurrency")
                    .blurb("openai-compat: requests in flight at once to one server from the whole process, shared by every element using the same endpoint and model, with fair turns between them (0 = no shared budget; per element, max-concurrency still applies)")
                    .maximum(crate::budget::MAX_ENDPOINT_CONCURRENCY)
                    .default_value(crate::budget::DEFAULT_ENDPOINT_CONCURRENCY)
                    .mutable_ready()
                    .build(),
                // Change gating, triggers (docs/monitoring.md).
                glib::ParamSpecBoolean::builder("skip-unchanged")
                    .blurb("Do not caption a chunk whose sampled frames show no change since the last captioned chunk: it becomes an 'unchanged' record naming that chunk (same-as)")
                    .default_value(false)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecDouble::builder("change-threshold")
                    .blurb("skip-unchanged: least change that gets a caption, in grey levels (0-255) of the most changed block of a 64-pixel-wide grey thumbnail, after removing the global brightness change")
                    .minimum(0.0)
                    .maximum(255.0)
                    .default_value(crate::gate::DEFAULT_THRESHOLD)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecDouble::builder("heartbeat")
                    .blurb("With skip-unchanged or trigger-classes: caption a chunk at least every this many seconds (0 = never forced)")
                    .minimum(0.0)
                    .maximum(86_400.0)
                    .default_value(0.0)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecString::builder("trigger-classes")
                    .blurb("Caption only chunks whose video buffers carry GstVideoRegionOfInterestMeta of these classes (',' or ';' separated; empty = no triggers); other chunks become 'skipped' records")
                    .mutable_playing()
                    .build(),
                glib::ParamSpecString::builder("trigger-mode")
                    .blurb("any: one listed class detected in the chunk; all: every listed class detected")
                    .default_value(Some("any"))
                    .mutable_playing()
                    .build(),
                glib::ParamSpecDouble::builder("trigger-cooldown")
                    .blurb("Seconds after a chunk captioned for a trigger before the next triggered chunk is captioned")
                    .minimum(0.0)
                    .maximum(86_400.0)
                    .default_value(0.0)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecDouble::builder("trigger-min-confidence")
                    .blurb("Detections whose ROI meta params carry a confidence below this do not trigger")
                    .minimum(0.0)
                    .maximum(1.0)
                    .default_value(0.0)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt64::builder("chunks-gated")
                    .blurb("Chunks not sent to the model (unchanged or skipped records)")
                    .read_only()
                    .build(),
                glib::ParamSpecUInt64::builder("calls-saved")
                    .blurb("Model calls, and event-check calls, not made for gated chunks")
                    .read_only()
                    .build(),
                glib::ParamSpecDouble::builder("incident-gap")
                    .blurb(fixed!("Seconds without an event before its incident closes (0: the first chunk without it closes it); consecutive alerts of one event form one incident"))
                    .minimum(0.0)
                    .maximum(86_400.0)
                    .default_value(crate::summary::incidents::DEFAULT_INCIDENT_GAP)
                    .build(),
                glib::ParamSpecEnum::builder_with_default("alert-webhook-mode", crate::vsssummarize::WebhookModeProp::Alert)
                    .blurb(fixed!("alert: one POST per alert; incident: one POST when an incident opens and one when it closes"))
                    .build(),
                sf!("evidence-dir", "Directory for alert snapshots (JPEG) and incident clips (MP4); empty: no evidence is kept"),
                glib::ParamSpecDouble::builder("clip-pre")
                    .blurb(fixed!("Seconds of video before an incident in its clip (clip-pre=0 and clip-post=0: no clips)"))
                    .minimum(0.0)
                    .maximum(600.0)
                    .default_value(DEFAULT_CLIP_PRE)
                    .build(),
                glib::ParamSpecDouble::builder("clip-post")
                    .blurb(fixed!("Seconds of video after an incident in its clip (at most what arrived when it closed, at least incident-gap)"))
                    .minimum(0.0)
                    .maximum(600.0)
                    .default_value(DEFAULT_CLIP_POST)
                    .build(),
                glib::ParamSpecUInt64::builder("evidence-max-bytes")
                    .blurb(fixed!("Disk budget of evidence-dir's snapshots and clips; the oldest are deleted first"))
                    .minimum(1024)
                    .default_value(DEFAULT_EVIDENCE_MAX_BYTES)
                    .build(),
                glib::ParamSpecUInt64::builder("clip-ring-bytes")
                    .blurb(fixed!("Memory bound of the ring of downscaled frames that clips are made of"))
                    .minimum(1 << 20)
                    .maximum(1 << 34)
                    .default_value(DEFAULT_CLIP_RING_BYTES)
                    .build(),
                glib::ParamSpecUInt64::builder("clips-written")
                    .blurb("Incident clips written to evidence-dir (since NULL→READY)")
                    .read_only()
                    .build(),
                glib::ParamSpecUInt64::builder("clips-failed")
                    .blurb("Incident clips not written: the encoder queue was full, encoding failed, or the clip exceeded evidence-max-bytes (each with a warning)")
                    .read_only()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    pub(super) fn set_prop(&self, value: &glib::Value, pspec: &glib::ParamSpec) {
        let name = pspec.name();
        let state = self.obj().current_state();
        let flags = pspec.flags();
        let refused = if flags.contains(gst::PARAM_FLAG_MUTABLE_PLAYING) {
            None
        } else if flags.contains(gst::PARAM_FLAG_MUTABLE_PAUSED) {
            (state > gst::State::Paused).then_some("NULL, READY or PAUSED")
        } else if flags.contains(gst::PARAM_FLAG_MUTABLE_READY) {
            (state > gst::State::Ready).then_some("NULL or READY")
        } else {
            (state != gst::State::Null).then_some("NULL")
        };
        if let Some(when) = refused {
            gst::warning!(
                CAT,
                imp = self,
                "property '{name}' can only be changed in the {when} state (it is read when the element leaves it); change refused, the value in effect stays"
            );
            return;
        }
        let mut s = self.settings.lock();
        let opt_str = |v: &glib::Value| {
            v.get::<Option<String>>()
                .expect("type checked upstream")
                .filter(|s| !s.is_empty())
        };
        match name {
            "backend" => s.user.backend = Some(value.get::<BackendProp>().expect("type").into()),
            "endpoint" => s.user.endpoint = opt_str(value),
            "model-name" => s.user.model_name = opt_str(value),
            "api-key" => s.user.api_key = opt_str(value).and_then(ApiKey::new),
            "api-version" => s.user.api_version = opt_str(value),
            "model-path" => s.user.model_path = opt_str(value),
            "model-root-dir" => s.user.model_root_dir = opt_str(value),
            "env-file" => s.user.env_file = opt_str(value),
            "python" => s.user.python = opt_str(value),
            "max-restarts" => s.max_restarts = value.get().expect("type"),
            "device" => {
                s.device = value
                    .get::<Option<String>>()
                    .expect("type")
                    .unwrap_or_else(|| "auto".into())
            }
            "enable-reasoning" => s.enable_reasoning = value.get().expect("type"),
            "dtype" => {
                s.dtype = value
                    .get::<Option<String>>()
                    .expect("type")
                    .unwrap_or_else(|| "auto".into())
            }
            "chunk-duration" => s.chunk_duration = value.get().expect("type"),
            "chunk-overlap" => s.chunk_overlap = value.get().expect("type"),
            "num-frames-per-chunk" => {
                let n: u32 = value.get().expect("type");
                s.user.num_frames = (n > 0).then_some(n);
            }
            "frame-width" => s.user.frame_width = Some(value.get().expect("type")),
            "frame-height" => s.user.frame_height = Some(value.get().expect("type")),
            "jpeg-quality" => s.jpeg_quality = value.get().expect("type"),
            "prompt" => {
                s.prompt = value
                    .get::<Option<String>>()
                    .expect("type")
                    .unwrap_or_default()
            }
            "system-prompt" => s.user.system_prompt = value.get::<Option<String>>().expect("type"),
            "max-tokens" => {
                s.max_tokens = value.get().expect("type");
                s.gen_set.insert("max-tokens");
            }
            "temperature" => {
                s.temperature = value.get().expect("type");
                s.gen_set.insert("temperature");
            }
            "top-p" => {
                s.top_p = value.get().expect("type");
                s.gen_set.insert("top-p");
            }
            "top-k" => {
                s.top_k = value.get().expect("type");
                s.gen_set.insert("top-k");
            }
            "seed" => {
                s.seed = value.get().expect("type");
                s.gen_set.insert("seed");
            }
            "no-repeat-ngram-size" => s.no_repeat_ngram_size = value.get().expect("type"),
            "max-concurrency" => s.max_concurrency = value.get().expect("type"),
            "max-pending-chunks" => s.max_pending = value.get().expect("type"),
            "request-timeout" => s.request_timeout = value.get().expect("type"),
            "max-retries" => s.max_retries = value.get().expect("type"),
            "drain-timeout" => s.drain_timeout = value.get().expect("type"),
            "server-wait" => s.server_wait = value.get().expect("type"),
            "summarize" => s.text.summarize = value.get().expect("type"),
            "summary-duration" => s.text.summary_duration = value.get().expect("type"),
            "llm-endpoint" => s.text.llm_endpoint = opt_str(value),
            "llm-model-name" => s.text.llm_model_name = opt_str(value),
            "llm-api-key" => s.text.llm_api_key = opt_str(value).and_then(ApiKey::new),
            "llm-max-tokens" => s.text.llm_max_tokens = value.get().expect("type"),
            "llm-temperature" => s.text.llm_temperature = value.get().expect("type"),
            "llm-top-p" => s.text.llm_top_p = value.get().expect("type"),
            "llm-context-tokens" => s.text.llm_context_tokens = value.get().expect("type"),
            "llm-max-concurrency" => s.text.llm_max_concurrency = value.get().expect("type"),
            "caption-summarization-prompt" => {
                s.text.caption_prompt = opt_str(value).unwrap_or_default()
            }
            "summary-aggregation-prompt" => {
                s.text.aggregation_prompt = opt_str(value).unwrap_or_default()
            }
            "events" => s.text.events = opt_str(value).unwrap_or_default(),
            "alert-webhook" => s.text.alert_webhook = opt_str(value),
            "alert-webhook-token" => {
                s.text.alert_webhook_token = opt_str(value).and_then(ApiKey::new)
            }
            "stream-id" => s.text.stream_id = opt_str(value),
            "vision-mode" => s.vision_mode = opt_str(value).unwrap_or_else(|| "images".into()),
            "image-detail" => s.image_detail = opt_str(value).unwrap_or_else(|| "auto".into()),
            "max-images-per-request" => s.max_images = value.get().expect("type"),
            "extra-body" => s.extra_body = opt_str(value),
            "timestamp-line" => s.timestamp_line = value.get().expect("type"),
            "endpoint-concurrency" => s.endpoint_concurrency = value.get().expect("type"),
            "skip-unchanged" => s.gate.skip_unchanged = value.get().expect("type"),
            "change-threshold" => s.gate.threshold = value.get().expect("type"),
            "heartbeat" => s.gate.heartbeat = value.get().expect("type"),
            "trigger-classes" => {
                s.gate.trigger_classes =
                    crate::gate::GateConfig::parse_classes(&opt_str(value).unwrap_or_default())
            }
            "trigger-mode" => {
                let v = opt_str(value).unwrap_or_default();
                s.gate.trigger_mode = match v.trim() {
                    "all" => crate::gate::TriggerMode::All,
                    "any" | "" => crate::gate::TriggerMode::Any,
                    other => {
                        gst::warning!(
                            CAT,
                            imp = self,
                            "trigger-mode '{other}' is not any or all; using any"
                        );
                        crate::gate::TriggerMode::Any
                    }
                }
            }
            "trigger-cooldown" => s.gate.trigger_cooldown = value.get().expect("type"),
            "trigger-min-confidence" => s.gate.min_confidence = value.get().expect("type"),
            "incident-gap" => s.text.incident_gap = value.get().expect("type"),
            "alert-webhook-mode" => {
                s.text.webhook_per_incident = value
                    .get::<crate::vsssummarize::WebhookModeProp>()
                    .expect("type")
                    == crate::vsssummarize::WebhookModeProp::Incident
            }
            "evidence-dir" => s.text.evidence.dir = opt_str(value),
            "clip-pre" => s.text.evidence.clip_pre = value.get().expect("type"),
            "clip-post" => s.text.evidence.clip_post = value.get().expect("type"),
            "evidence-max-bytes" => s.text.evidence.max_bytes = value.get().expect("type"),
            "clip-ring-bytes" => s.text.evidence.ring_bytes = value.get().expect("type"),
            _ => unimplemented!("property {name}"),
        }
        let settings = s.clone();
        drop(s);
        self.steer(name, &settings);
    }

    pub(super) fn get_prop(&self, pspec: &glib::ParamSpec) -> glib::Value {
        let state = self.state.lock();
        let prepared = state.session.as_ref();
        let resolved = prepared.map(|p| &p.resolved);
        let s = self.settings.lock();
        let u = &s.user;
        match pspec.name() {
            "backend" => BackendProp::from(
                resolved
                    .map(|r| r.backend)
                    .or(u.backend)
                    .unwrap_or_default(),
            )
            .to_value(),
            "endpoint" => u.endpoint.to_value(),
            "model-name" => prepared
                .map(|p| p.backend.model().to_string())
                .or_else(|| u.model_name.clone())
                .to_value(),
            "python" => resolved
                .map(|r| r.python.clone())
                .or_else(|| u.python.clone())
                .to_value(),
            "max-restarts" => s.max_restarts.to_value(),
            "device" => prepared
                .map(|p| p.device.clone())
                .unwrap_or_else(|| s.device.clone())
                .to_value(),
            "enable-reasoning" => s.enable_reasoning.to_value(),
            "dtype" => s.dtype.to_value(),
            "api-version" => u.api_version.to_value(),
            "model-path" => u.model_path.to_value(),
            "model-root-dir" => u.model_root_dir.to_value(),
            "env-file" => u.env_file.to_value(),
            "chunk-duration" => s.chunk_duration.to_value(),
            "chunk-overlap" => s.chunk_overlap.to_value(),
            "num-frames-per-chunk" => resolved
                .map(|r| r.num_frames)
                .or(u.num_frames)
                .unwrap_or(0)
                .to_value(),
            "frame-width" => resolved
                .map(|r| r.frame_width)
                .or(u.frame_width)
                .unwrap_or(0)
                .to_value(),
            "frame-height" => resolved
                .map(|r| r.frame_height)
                .or(u.frame_height)
                .unwrap_or(0)
                .to_value(),
            "jpeg-quality" => s.jpeg_quality.to_value(),
            "prompt" => s.prompt.to_value(),
            "system-prompt" => match prepared {
                // What the next chunk is sent with (changes while running).
                Some(p) => p.steering.prompts().system_prompt.clone(),
                None => resolved
                    .and_then(|r| r.system_prompt.clone())
                    .or_else(|| u.system_prompt.clone()),
            }
            .to_value(),
            "max-tokens" => s.max_tokens.to_value(),
            "temperature" => s.temperature.to_value(),
            "top-p" => s.top_p.to_value(),
            "top-k" => s.top_k.to_value(),
            "seed" => s.seed.to_value(),
            "no-repeat-ngram-size" => s.no_repeat_ngram_size.to_value(),
            "max-concurrency" => s.max_concurrency.to_value(),
            "max-pending-chunks" => s.max_pending.to_value(),
            "request-timeout" => s.request_timeout.to_value(),
            "max-retries" => s.max_retries.to_value(),
            "drain-timeout" => s.drain_timeout.to_value(),
            "server-wait" => s.server_wait.to_value(),
            "summarize" => s.text.summarize.to_value(),
            "summary-duration" => s.text.summary_duration.to_value(),
            "llm-endpoint" => s.text.llm_endpoint.to_value(),
            "llm-model-name" => prepared
                .and_then(|p| p.text.as_ref().map(|t| t.llm.model().to_string()))
                .or_else(|| s.text.llm_model_name.clone())
                .to_value(),
            "llm-max-tokens" => s.text.llm_max_tokens.to_value(),
            "llm-temperature" => s.text.llm_temperature.to_value(),
            "llm-top-p" => s.text.llm_top_p.to_value(),
            "llm-context-tokens" => s.text.llm_context_tokens.to_value(),
            "llm-max-concurrency" => s.text.llm_max_concurrency.to_value(),
            "caption-summarization-prompt" => s.text.caption_prompt.to_value(),
            "summary-aggregation-prompt" => s.text.aggregation_prompt.to_value(),
            "events" => s.text.events.to_value(),
            "alert-webhook" => s
                .text
                .alert_webhook
                .as_deref()
                .map(|u| match url::Url::parse(u) {
                    Ok(u) => crate::backend::openai::url_for_log(&u),
                    Err(_) => u.to_string(),
                })
                .to_value(),
            "skip-unchanged" => s.gate.skip_unchanged.to_value(),
            "change-threshold" => s.gate.threshold.to_value(),
            "heartbeat" => s.gate.heartbeat.to_value(),
            "trigger-classes" => s.gate.trigger_classes.join(",").to_value(),
            "trigger-mode" => match s.gate.trigger_mode {
                crate::gate::TriggerMode::Any => "any",
                crate::gate::TriggerMode::All => "all",
            }
            .to_value(),
            "trigger-cooldown" => s.gate.trigger_cooldown.to_value(),
            "trigger-min-confidence" => s.gate.min_confidence.to_value(),
            "chunks-gated" => self
                .counters
                .chunks
                .gated
                .load(Ordering::Relaxed)
                .to_value(),
            "calls-saved" => self
                .counters
                .chunks
                .calls_saved
                .load(Ordering::Relaxed)
                .to_value(),
            "stream-id" => prepared
                .map(|p| p.stream_id.clone())
                .or_else(|| s.text.stream_id.clone())
                .unwrap_or_else(|| self.obj().name().to_string())
                .to_value(),
            "summaries-completed" => self
                .counters
                .summaries
                .completed
                .load(Ordering::Relaxed)
                .to_value(),
            "summaries-failed" => self
                .counters
                .summaries
                .failed
                .load(Ordering::Relaxed)
                .to_value(),
            "alerts-raised" => self
                .counters
                .alerts_raised
                .load(Ordering::Relaxed)
                .to_value(),
            "alerts-webhook-failed" => self
                .counters
                .webhook
                .failed
                .load(Ordering::Relaxed)
                .to_value(),
            "chunks-submitted" => self
                .counters
                .chunks
                .submitted
                .load(std::sync::atomic::Ordering::Relaxed)
                .to_value(),
            "chunks-completed" => self
                .counters
                .chunks
                .completed
                .load(std::sync::atomic::Ordering::Relaxed)
                .to_value(),
            "chunks-failed" => self
                .counters
                .chunks
                .failed
                .load(std::sync::atomic::Ordering::Relaxed)
                .to_value(),
            "chunks-dropped" => self
                .counters
                .chunks
                .dropped
                .load(std::sync::atomic::Ordering::Relaxed)
                .to_value(),
            "vision-mode" => s.vision_mode.to_value(),
            "image-detail" => s.image_detail.to_value(),
            "max-images-per-request" => s.max_images.to_value(),
            "extra-body" => s
                .extra_body
                .as_deref()
                .map(|t| crate::backend::vision::redacted_extra_body(t, u.api_key.as_ref()))
                .to_value(),
            "timestamp-line" => s.timestamp_line.to_value(),
            "endpoint-concurrency" => s.endpoint_concurrency.to_value(),
            "incident-gap" => s.text.incident_gap.to_value(),
            "alert-webhook-mode" => if s.text.webhook_per_incident {
                crate::vsssummarize::WebhookModeProp::Incident
            } else {
                crate::vsssummarize::WebhookModeProp::Alert
            }
            .to_value(),
            "evidence-dir" => s.text.evidence.dir.to_value(),
            "clip-pre" => s.text.evidence.clip_pre.to_value(),
            "clip-post" => s.text.evidence.clip_post.to_value(),
            "evidence-max-bytes" => s.text.evidence.max_bytes.to_value(),
            "clip-ring-bytes" => s.text.evidence.ring_bytes.to_value(),
            "clips-written" | "clips-failed" => {
                let st = prepared
                    .and_then(|p| p.evidence())
                    .map(|e| e.stats.clone())
                    .unwrap_or_default();
                let n = if pspec.name() == "clips-written" {
                    st.clips.load(Ordering::Relaxed)
                } else {
                    st.clips_failed.load(Ordering::Relaxed)
                        + st.clips_skipped.load(Ordering::Relaxed)
                };
                n.to_value()
            }
            name => unimplemented!("property {name}"),
        }
    }
}
