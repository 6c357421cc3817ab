// SPDX-License-Identifier: MPL-2.0
//! The in-process [`Backend`] (`cosmos-reason1/2/3`): one [`Engine`] per
//! (checkpoint, device, dtype) in the process, owned by an engine thread of
//! its own ([`serve`](super::serve)) and shared by the elements naming it. The
//! dispatcher's worker thread prepares a chunk's frames, queues the request
//! (captions before summary and event-check requests) and waits for its
//! answer; the model never runs on the tokio runtime or the streaming
//! thread.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, LazyLock, Weak};

use parking_lot::Mutex;
use std::time::Instant;

use candle_core::{DType, Device};
use tokio_util::sync::CancellationToken;

use super::engine::{Engine, Request, Video};
use super::error::CosmosError;
use super::preprocess::{PixelValues, VisionParams};
use super::sampling::{GenerationDefaults, SampleParams};
use super::serve::{Priority, ServeError, Server, StartError};
use crate::backend::{Backend, BackendError, Caption, ChunkJob};
use crate::config::BackendKind;
use crate::prep::FramePrep;
use crate::prompt::split_reasoning;

/// Cosmos-Reason1's reasoning instruction (as VSS appends it).
pub const REASONING_SUFFIX: &str = " Answer the question in the following format: <think>\nyour reasoning\n</think>\n\n<answer>\nyour answer\n</answer>.\n";
const DEFAULT_SYSTEM: &str = "You are a helpful assistant.";

/// Where the model runs (`device` property, shared with frame preparation).
pub use crate::prep::DeviceChoice;

/// Weight type (`dtype` property).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DTypeChoice {
    /// f32 on the CPU, bf16 on CUDA.
    Auto,
    F32,
    Bf16,
}

impl FromStr for DTypeChoice {
    type Err = CosmosError;
    fn from_str(s: &str) -> Result<Self, CosmosError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => Ok(DTypeChoice::Auto),
            "f32" | "float32" => Ok(DTypeChoice::F32),
            "bf16" | "bfloat16" => Ok(DTypeChoice::Bf16),
            other => Err(CosmosError::Setting(format!(
                "dtype '{other}' is not one of auto, f32, bf16 (f16 is not offered: Qwen2.5-VL overflows in f16)"
            ))),
        }
    }
}

impl DTypeChoice {
    fn resolve(self, device: &Device) -> DType {
        match self {
            DTypeChoice::F32 => DType::F32,
            DTypeChoice::Bf16 => DType::BF16,
            DTypeChoice::Auto if device.is_cuda() => DType::BF16,
            DTypeChoice::Auto => DType::F32,
        }
    }
}

/// The candle device for a choice, and its name for the read-back. One code
/// path for every build: candle's `Device::new_cuda` answers "not compiled
/// with CUDA" in a CPU build and reports the driver's error in a CUDA build.
pub fn select_device(choice: DeviceChoice) -> Result<(Device, String), CosmosError> {
    match choice {
        DeviceChoice::Cpu => Ok((Device::Cpu, "cpu".into())),
        DeviceChoice::Auto => match Device::new_cuda(0) {
            Ok(d) => Ok((d, "cuda:0".into())),
            Err(_) => Ok((Device::Cpu, "cpu".into())),
        },
        DeviceChoice::Cuda(n) => Device::new_cuda(n)
            .map(|d| (d, format!("cuda:{n}")))
            .map_err(|e| CosmosError::Setting(match e {
                candle_core::Error::NotCompiledWithCudaSupport => format!(
                    "device cuda:{n} needs a plugin built with the cuda feature (cargo build --release --features cuda, which needs the CUDA toolkit); this build runs on the CPU: set device=cpu or auto"
                ),
                e => format!(
                    "device cuda:{n} is not usable: {}; check the NVIDIA driver and that GPU {n} exists (nvidia-smi), or set device=cpu",
                    // candle may append a backtrace: keep the error itself.
                    e.to_string().lines().next().unwrap_or_default()
                ),
            })),
    }
}

/// Requests that may wait for one loaded model at a time (captions and text
/// requests of every element sharing it); a further one waits for room
/// ([`serve`](super::serve) rule 3). Each waiting caption holds its chunk's pixel values.
pub const ENGINE_QUEUE: usize = 32;

/// One loaded model: its engine thread and what callers need without it.
/// Dropping the last handle stops the thread ([`serve`](super::serve) rule
/// 5: it finishes the request it runs, drops the engine, exits; the drop
/// waits for it) and removes the registry entry.
struct LoadedModel {
    server: Server<Engine>,
    vision: VisionParams,
    defaults: GenerationDefaults,
    /// The device the model was loaded on (GPU frame preparation puts the
    /// pixel values there).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    device: Device,
}

impl Drop for LoadedModel {
    fn drop(&mut self) {
        // The `server` field is dropped after this body, on this thread.
        // The entry is already dead (no handle can be had from it); it is
        // removed here unless a load elsewhere holds the registry (this
        // element's READY→NULL does not wait for another's load), in which
        // case that load's insertion removes it.
        if let Some(mut map) = ENGINES.try_lock() {
            map.retain(|_, w| w.strong_count() > 0);
        }
    }
}

type Shared = Arc<LoadedModel>;

/// Loaded models by (checkpoint directory, "device/dtype").
type Registry = HashMap<(PathBuf, String), Weak<LoadedModel>>;
static ENGINES: LazyLock<Mutex<Registry>> = LazyLock::new(Default::default);
static LOADS: LazyLock<Mutex<HashMap<PathBuf, usize>>> = LazyLock::new(Default::default);

/// How many times the checkpoint in `dir` (canonical path) was loaded in
/// this process (for tests: elements naming the same checkpoint and device
/// share one model).
pub fn loads(dir: &Path) -> usize {
    LOADS.lock().get(dir).copied().unwrap_or(0)
}

/// The model for (dir, device, dtype), loaded once per process while in
/// use, on an engine thread of its own (`vss-engine`) that owns it.
fn shared_engine(
    dir: &Path,
    device: &Device,
    device_name: &str,
    dtype: DType,
    log: &(dyn Fn(&str) + Send + Sync),
) -> Result<Shared, CosmosError> {
    let key = (dir.to_path_buf(), format!("{device_name}/{dtype:?}"));
    // Held through the load: a second element naming the same model waits
    // for it rather than loading it again.
    let mut map = ENGINES.lock();
    if let Some(e) = map.get(&key).and_then(Weak::upgrade) {
        log(&format!("sharing the loaded model of '{}'", dir.display()));
        return Ok(e);
    }
    log(&format!(
        "loading '{}' on {device_name} in {dtype:?}",
        dir.display()
    ));
    let t = Instant::now();
    let (d, dev) = (dir.to_path_buf(), device.clone());
    let (server, (vision, defaults)) = Server::spawn("vss-engine", ENGINE_QUEUE, move || {
        let engine = Engine::load_as(&d, &dev, Some(dtype))?;
        let info = (engine.vision.clone(), engine.defaults.clone());
        Ok::<_, CosmosError>((engine, info))
    })
    .map_err(|e| match e {
        StartError::Load(e) => e,
        StartError::Panicked => CosmosError::Checkpoint(format!(
            "loading '{}' panicked (see the log)",
            dir.display()
        )),
        StartError::Spawn(e) => {
            CosmosError::Inference(format!("cannot start the model's engine thread: {e}"))
        }
    })?;
    *LOADS.lock().entry(dir.to_path_buf()).or_default() += 1;
    log(&format!(
        "loaded '{}' in {:.1} s",
        dir.display(),
        t.elapsed().as_secs_f64()
    ));
    let e = Arc::new(LoadedModel {
        server,
        vision,
        defaults,
        device: device.clone(),
    });
    map.retain(|_, w| w.strong_count() > 0);
    map.insert(key, Arc::downgrade(&e));
    Ok(e)
}

/// A serve error at the `Backend` / `TextLlm` boundary.
fn serve_error(e: ServeError) -> BackendError {
    match e {
        ServeError::Cancelled => BackendError::Cancelled,
        e @ ServeError::Stopped => BackendError::Failed(e.to_string()),
    }
}

/// Generation settings: `None` = the checkpoint's generation_config.json.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CosmosGen {
    pub max_tokens: u32,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<u32>,
    pub seed: Option<u64>,
    /// `no-repeat-ngram-size`; `None`: the backend's default
    /// ([`default_no_repeat_ngram_size`]).
    pub no_repeat_ngram_size: Option<u32>,
}

/// The no-repeat n-gram size when `no-repeat-ngram-size` is -1: 3 for
/// `cosmos-reason2/3` (VSS's default for Cosmos-Reason2/3; set 0 to match
/// vanilla vLLM/NIM), 0 (off) for `cosmos-reason1`.
pub fn default_no_repeat_ngram_size(backend: BackendKind) -> u32 {
    match backend {
        BackendKind::CosmosReason2 | BackendKind::CosmosReason3 => 3,
        _ => 0,
    }
}

pub struct CosmosOptions {
    /// `cosmos-reason1`, `cosmos-reason2` or `cosmos-reason3`: checked
    /// against the checkpoint's family before it loads
    /// ([`super::family::check_backend`]), and what records name.
    pub backend: BackendKind,
    pub model_dir: PathBuf,
    pub device: DeviceChoice,
    pub dtype: DTypeChoice,
    pub prompt: String,
    pub system_prompt: Option<String>,
    pub enable_reasoning: bool,
    pub gen: CosmosGen,
    /// Optional pre-scale of the frames (0 = native); the processor's own
    /// pixel budget applies afterwards.
    pub frame_width: u32,
    pub frame_height: u32,
    /// Where the frames become `pixel_values` (`device` property).
    pub prep: FramePrep,
    pub log: Arc<dyn Fn(&str) + Send + Sync>,
    /// How records name the model: the `hf:` repository or `ngc:` model
    /// ([`crate::download::model_name`]); `None`: the checkpoint
    /// directory's name.
    pub model_name: Option<String>,
}

/// The `model` field of the records: the remote model's name, else the
/// checkpoint directory's (an `hf:` snapshot directory is named by its
/// commit hash, which says nothing of the model).
fn model_label(model_name: Option<&str>, dir: &std::path::Path) -> String {
    model_name.map(str::to_string).unwrap_or_else(|| {
        dir.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "cosmos-reason1".into())
    })
}

pub struct CosmosBackend {
    engine: Shared,
    opts: CosmosOptions,
    model: String,
    device_name: String,
}

impl CosmosBackend {
    /// Picks the device and loads (or shares) the checkpoint.
    pub fn new(opts: CosmosOptions) -> Result<CosmosBackend, CosmosError> {
        // Before any weight is read: a checkpoint of the other family (or
        // one not run in process) fails here, naming the right backend.
        let detected = super::family::inspect(&opts.model_dir)?;
        super::family::check_backend(&opts.model_dir, &detected, opts.backend)?;
        let (device, device_name) = select_device(opts.device)?;
        let dtype = opts.dtype.resolve(&device);
        let engine = shared_engine(&opts.model_dir, &device, &device_name, dtype, &*opts.log)?;
        let model = model_label(opts.model_name.as_deref(), &opts.model_dir);
        Ok(CosmosBackend {
            engine,
            opts,
            model,
            device_name,
        })
    }

    /// The device in use (`cpu`, `cuda:0`).
    pub fn device_name(&self) -> &str {
        &self.device_name
    }

    /// The system and user prompts of a chunk ([`turns`]).
    fn prompts(&self, job: &ChunkJob) -> (Option<String>, String) {
        let (sys, prompt) = match &job.prompts {
            Some(p) => (p.system_prompt.clone(), p.prompt.clone()),
            None => (self.opts.system_prompt.clone(), self.opts.prompt.clone()),
        };
        turns(self.opts.backend, sys, prompt, self.opts.enable_reasoning)
    }
}

/// Cosmos-Reason2's reasoning instruction, appended to the user prompt
/// (`cosmos_reason2_utils.text.REASONING_PROMPT`, as its inference script
/// and VSS add it for Cosmos-Reason2).
pub const REASONING_PROMPT_CR2: &str = "Answer the question using the following format:\n\n<think>\nYour reasoning.\n</think>\n\nWrite your final answer immediately after the </think> tag.";

/// The system and user turns of a caption request, by backend:
/// 1. `cosmos-reason1`: the system prompt as set; with `enable-reasoning`,
///    Cosmos-Reason1's instruction appended to it (to "You are a helpful
///    assistant." when none is set), as VSS does, unless it already
///    mentions `<think>`.
/// 2. `cosmos-reason2` / `cosmos-reason3`: the system prompt as set, else
///    "You are a helpful assistant." (Cosmos-Reason2's own default; Qwen3's
///    template adds none); with `enable-reasoning`, Cosmos-Reason2's
///    instruction appended to the user prompt after a blank line, unless
///    the prompt already mentions `<think>`.
pub fn turns(
    backend: BackendKind,
    system: Option<String>,
    prompt: String,
    reasoning: bool,
) -> (Option<String>, String) {
    match backend {
        BackendKind::CosmosReason2 | BackendKind::CosmosReason3 => {
            let sys = system.unwrap_or_else(|| DEFAULT_SYSTEM.to_string());
            if reasoning && !prompt.contains("<think>") {
                let p = format!("{}\n\n{REASONING_PROMPT_CR2}", prompt.trim_end());
                (Some(sys), p)
            } else {
                (Some(sys), prompt)
            }
        }
        _ => {
            if !reasoning {
                return (system, prompt);
            }
            let base = system.unwrap_or_else(|| DEFAULT_SYSTEM.to_string());
            if base.contains("<think>") {
                (Some(base), prompt)
            } else {
                (Some(format!("{base}{REASONING_SUFFIX}")), prompt)
            }
        }
    }
}

/// The in-process model as the text LLM of summaries and event checks:
/// text-only generation on the same engine thread, queued behind every
/// waiting caption ([`serve`](super::serve) rule 2).
pub struct CosmosText {
    engine: Shared,
    model: String,
}

impl CosmosBackend {
    /// The text LLM sharing this backend's loaded model.
    pub fn text_llm(&self) -> CosmosText {
        CosmosText {
            engine: self.engine.clone(),
            model: self.model.clone(),
        }
    }
}

impl crate::summary::TextLlm for CosmosText {
    fn model(&self) -> &str {
        &self.model
    }

    // `String` errors: the `TextLlm` trait's signature (src/summary), as
    // the `Backend` trait's below; `CosmosError`s become their text by `?`.
    fn complete(
        &self,
        req: &crate::summary::TextRequest,
        cancel: &CancellationToken,
    ) -> Result<crate::summary::TextAnswer, BackendError> {
        if cancel.is_cancelled() {
            return Err(BackendError::Cancelled);
        }
        let d = &self.engine.defaults;
        let params = SampleParams {
            temperature: req.temperature,
            top_p: req.top_p,
            top_k: d.top_k,
            repetition_penalty: d.repetition_penalty,
            seed: 1,
            max_tokens: req.max_tokens as usize,
            // Summaries and event checks: off (see docs/backends.md).
            no_repeat_ngram_size: 0,
        };
        let (system, user) = (req.system.clone(), req.user.clone());
        let (c1, c2) = (cancel.clone(), cancel.clone());
        let out = self
            .engine
            .server
            .submit(
                Priority::Text,
                move || c1.is_cancelled(),
                move |engine: &mut Engine| {
                    engine.generate_text(system.as_deref(), &user, &params, &|| c2.is_cancelled())
                },
            )
            .map_err(serve_error)?
            .map_err(|e| engine_error(e.to_string(), cancel))?;
        Ok(crate::summary::TextAnswer {
            text: out.text,
            input_tokens: out.input_tokens,
            output_tokens: out.output_tokens,
        })
    }
}

/// An error of the engine, at the `Backend` / `TextLlm` boundary: the
/// engine stops with an error once `cancel` fires.
fn engine_error(text: String, cancel: &CancellationToken) -> BackendError {
    if cancel.is_cancelled() {
        BackendError::Cancelled
    } else {
        BackendError::Failed(text)
    }
}

/// A chunk's video as it travels to the engine thread.
enum OwnedVideo {
    Pixels(PixelValues),
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    Tensor(candle_core::Tensor, [u32; 3]),
}

impl OwnedVideo {
    fn as_video(&self) -> Video<'_> {
        match self {
            OwnedVideo::Pixels(pv) => Video::Pixels(pv),
            OwnedVideo::Tensor(px, grid_thw) => Video::Tensor {
                px: px.clone(),
                grid_thw: *grid_thw,
            },
        }
    }
}

impl Backend for CosmosBackend {
    fn kind(&self) -> BackendKind {
        self.opts.backend
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn max_concurrency(&self) -> Option<usize> {
        Some(1)
    }

    fn caption(&self, job: &ChunkJob, cancel: &CancellationToken) -> Result<Caption, BackendError> {
        if job.frames.is_empty() {
            return Err(BackendError::Failed("the chunk has no frames".into()));
        }
        if cancel.is_cancelled() {
            return Err(BackendError::Cancelled);
        }
        let loaded = &*self.engine;
        let vision = &loaded.vision;
        let (fw, fh) = (self.opts.frame_width, self.opts.frame_height);
        let prep_err = |e: crate::prep::PrepError| format!("cannot prepare frames: {e}");
        // The frames become pixel values here, on the worker thread; the
        // engine thread only runs the model.
        // Straight into a tensor on the model's GPU when it is the one that
        // prepares the frames.
        #[cfg(feature = "cuda")]
        let on_device = match &self.opts.prep {
            FramePrep::Gpu(g) => {
                // On an error the host path below retries, and falls back
                // to the CPU (marking the GPU broken) when the GPU fails.
                g.pixel_values_tensor(&loaded.device, &job.frames, fw, fh, vision)
                    .ok()
                    .flatten()
            }
            FramePrep::Cpu => None,
        };
        #[cfg(not(feature = "cuda"))]
        let on_device: Option<(candle_core::Tensor, [u32; 3])> = None;
        let video = match on_device {
            Some((px, grid_thw)) => OwnedVideo::Tensor(px, grid_thw),
            None => OwnedVideo::Pixels(
                self.opts
                    .prep
                    .pixel_values(&job.frames, fw, fh, vision)
                    .map_err(prep_err)?,
            ),
        };
        let vars = crate::prompt::PromptVars {
            labels: &job.frame_labels,
            stream_id: &job.stream_id,
        };
        // Prompts changed while running (steering) replace those set at
        // start; placeholders are filled in either.
        let (system, prompt) = self.prompts(job);
        let system = system.map(|s| vars.fill(&s));
        let prompt = vars.fill(&prompt);
        let d = &loaded.defaults;
        let g = &self.opts.gen;
        let params = SampleParams {
            temperature: g
                .temperature
                .unwrap_or(if d.do_sample { d.temperature } else { 0.0 }),
            top_p: g.top_p.unwrap_or(d.top_p),
            top_k: g.top_k.map(|k| k as usize).unwrap_or(d.top_k),
            repetition_penalty: d.repetition_penalty,
            seed: g.seed.unwrap_or(1),
            max_tokens: g.max_tokens as usize,
            no_repeat_ngram_size: g
                .no_repeat_ngram_size
                .unwrap_or_else(|| default_no_repeat_ngram_size(self.opts.backend))
                as usize,
        };
        let times = job.frame_times.clone();
        let (c1, c2) = (cancel.clone(), cancel.clone());
        let out = loaded
            .server
            .submit(
                Priority::Caption,
                move || c1.is_cancelled(),
                move |engine: &mut Engine| {
                    engine.generate(&Request {
                        video: video.as_video(),
                        times: &times,
                        prompt: &prompt,
                        system: system.as_deref(),
                        params,
                        cancelled: &|| c2.is_cancelled(),
                    })
                },
            )
            .map_err(serve_error)?
            .map_err(|e| engine_error(e.to_string(), cancel))?;
        let (text, reasoning) = split_reasoning(&out.text);
        Ok(Caption {
            text,
            reasoning,
            input_tokens: out.input_tokens,
            output_tokens: out.output_tokens,
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{turns, REASONING_PROMPT_CR2, REASONING_SUFFIX};
    use crate::config::BackendKind;

    #[test]
    fn reasoning_goes_where_each_model_family_expects_it() {
        let p = || "Describe.".to_string();
        // Rule 1: Cosmos-Reason1, in the system turn.
        let (s, u) = turns(BackendKind::CosmosReason1, None, p(), true);
        assert_eq!(
            s.unwrap(),
            format!("You are a helpful assistant.{REASONING_SUFFIX}")
        );
        assert_eq!(u, "Describe.");
        assert_eq!(
            turns(BackendKind::CosmosReason1, None, p(), false),
            (None, p())
        );
        // Rule 2: Cosmos-Reason2/3, after the user prompt; a default system.
        for b in [BackendKind::CosmosReason2, BackendKind::CosmosReason3] {
            let (s, u) = turns(b, None, p(), true);
            assert_eq!(s.as_deref(), Some("You are a helpful assistant."));
            assert_eq!(u, format!("Describe.\n\n{REASONING_PROMPT_CR2}"));
            let (s, u) = turns(b, Some("Be brief.".into()), p(), false);
            assert_eq!((s.as_deref(), u.as_str()), (Some("Be brief."), "Describe."));
            // A prompt that asks for <think> itself is left alone.
            let own = "Think in <think></think> first.".to_string();
            assert_eq!(turns(b, None, own.clone(), true).1, own);
        }
    }

    #[test]
    fn records_name_a_remote_model_by_its_repository() {
        let snap = std::path::Path::new("/c/models--nvidia--X/snapshots/0123abcd");
        assert_eq!(model_label(Some("nvidia/X@v1"), snap), "nvidia/X@v1");
        assert_eq!(model_label(None, std::path::Path::new("/m/tiny")), "tiny");
    }
    use super::*;

    #[test]
    fn device_names() {
        assert_eq!("auto".parse::<DeviceChoice>().unwrap(), DeviceChoice::Auto);
        assert_eq!("CPU".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cpu);
        assert_eq!(
            "cuda:1".parse::<DeviceChoice>().unwrap(),
            DeviceChoice::Cuda(1)
        );
        assert!("gpu"
            .parse::<DeviceChoice>()
            .unwrap_err()
            .to_string()
            .contains("auto, cpu, cuda:N"));
        assert_eq!(select_device(DeviceChoice::Cpu).unwrap().1, "cpu");
        #[cfg(not(feature = "cuda"))]
        {
            assert_eq!(select_device(DeviceChoice::Auto).unwrap().1, "cpu");
            let e = select_device(DeviceChoice::Cuda(0)).unwrap_err();
            assert!(matches!(e, CosmosError::Setting(_)), "{e}");
            let e = e.to_string();
            assert!(
                e.contains("cuda feature") && e.contains("device=cpu"),
                "{e}"
            );
        }
    }
}
