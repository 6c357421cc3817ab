// SPDX-License-Identifier: MPL-2.0
//! The element's settings as plain data: what the properties hold, their
//! defaults. The element's property specs, and when each one can change,
//! are in the element (`src/vsssummarize/imp/settings.rs`).

use crate::backend::GenParams;
use crate::config::{ApiKey, UserSettings};
use crate::prompt;

pub const DEFAULT_CHUNK_DURATION: f64 = 10.0;
pub const DEFAULT_JPEG_QUALITY: u32 = 90;
pub const DEFAULT_MAX_CONCURRENCY: u32 = 4;
pub const DEFAULT_MAX_PENDING: u32 = 16;
pub const DEFAULT_REQUEST_TIMEOUT: f64 = 120.0;
pub const DEFAULT_MAX_RETRIES: u32 = 3;
pub const DEFAULT_DRAIN_TIMEOUT: f64 = 300.0;
pub const DEFAULT_SERVER_WAIT_S: f64 = 120.0;
pub const DEFAULT_MAX_RESTARTS: u32 = 3;
pub const DEFAULT_SUMMARY_DURATION: f64 = 60.0;
pub const DEFAULT_LLM_MAX_TOKENS: u32 = 2048;
pub const DEFAULT_LLM_TEMPERATURE: f64 = 0.2;
pub const DEFAULT_LLM_TOP_P: f64 = 0.7;
pub const DEFAULT_LLM_MAX_CONCURRENCY: u32 = 2;

/// The summary and alert properties.
#[derive(Debug, Clone)]
pub struct TextSettings {
    pub summarize: bool,
    pub summary_duration: f64,
    pub llm_endpoint: Option<String>,
    pub llm_model_name: Option<String>,
    pub llm_api_key: Option<ApiKey>,
    pub llm_max_tokens: u32,
    pub llm_temperature: f64,
    pub llm_top_p: f64,
    pub llm_context_tokens: u64,
    pub llm_max_concurrency: u32,
    pub caption_prompt: String,
    pub aggregation_prompt: String,
    pub events: String,
    pub alert_webhook: Option<String>,
    pub alert_webhook_token: Option<ApiKey>,
    pub stream_id: Option<String>,
    /// `incident-gap`, seconds.
    pub incident_gap: f64,
    /// `alert-webhook-mode=incident`: post at incident open and close
    /// instead of per alert.
    pub webhook_per_incident: bool,
    /// Evidence (`evidence-dir`, …); `dir` `None`: none is kept.
    pub evidence: EvidenceSettings,
}

pub const DEFAULT_CLIP_PRE: f64 = 5.0;
pub const DEFAULT_CLIP_POST: f64 = 5.0;
pub const DEFAULT_EVIDENCE_MAX_BYTES: u64 = 1 << 30;
pub const DEFAULT_CLIP_RING_BYTES: u64 = 128 << 20;

/// `evidence-dir`, `clip-pre`, `clip-post`, `evidence-max-bytes`,
/// `clip-ring-bytes`.
#[derive(Debug, Clone, PartialEq)]
pub struct EvidenceSettings {
    pub dir: Option<String>,
    pub clip_pre: f64,
    pub clip_post: f64,
    pub max_bytes: u64,
    pub ring_bytes: u64,
}

impl Default for EvidenceSettings {
    fn default() -> Self {
        EvidenceSettings {
            dir: None,
            clip_pre: DEFAULT_CLIP_PRE,
            clip_post: DEFAULT_CLIP_POST,
            max_bytes: DEFAULT_EVIDENCE_MAX_BYTES,
            ring_bytes: DEFAULT_CLIP_RING_BYTES,
        }
    }
}

impl Default for TextSettings {
    fn default() -> Self {
        TextSettings {
            summarize: true,
            summary_duration: DEFAULT_SUMMARY_DURATION,
            llm_endpoint: None,
            llm_model_name: None,
            llm_api_key: None,
            llm_max_tokens: DEFAULT_LLM_MAX_TOKENS,
            llm_temperature: DEFAULT_LLM_TEMPERATURE,
            llm_top_p: DEFAULT_LLM_TOP_P,
            llm_context_tokens: crate::summary::aggregate::DEFAULT_CONTEXT_TOKENS,
            llm_max_concurrency: DEFAULT_LLM_MAX_CONCURRENCY,
            caption_prompt: String::new(),
            aggregation_prompt: String::new(),
            events: String::new(),
            alert_webhook: None,
            alert_webhook_token: None,
            stream_id: None,
            incident_gap: crate::summary::incidents::DEFAULT_INCIDENT_GAP,
            webhook_per_incident: false,
            evidence: EvidenceSettings::default(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub user: UserSettings,
    pub chunk_duration: f64,
    pub chunk_overlap: f64,
    pub jpeg_quality: u32,
    pub prompt: String,
    pub max_tokens: u32,
    pub temperature: f64,
    pub top_p: f64,
    pub top_k: u32,
    pub seed: i64,
    /// `no-repeat-ngram-size`: in-process backends only; -1 = the
    /// backend's default (3 for cosmos-reason2/3, 0 for cosmos-reason1).
    pub no_repeat_ngram_size: i32,
    pub max_concurrency: u32,
    pub max_pending: u32,
    pub request_timeout: f64,
    pub max_retries: u32,
    pub drain_timeout: f64,
    pub server_wait: f64,
    pub max_restarts: u32,
    pub device: String,
    pub dtype: String,
    pub enable_reasoning: bool,
    /// Generation properties the user set (a custom model's `configs` holds
    /// only these).
    pub gen_set: std::collections::BTreeSet<&'static str>,
    pub text: TextSettings,
    /// Video mode (src/backend/vision.rs), as set; checked at NULL→READY.
    pub vision_mode: String,
    pub image_detail: String,
    pub max_images: u32,
    pub extra_body: Option<String>,
    pub timestamp_line: bool,
    /// `endpoint-concurrency` (see [`crate::budget`]); 0: no shared budget.
    pub endpoint_concurrency: u32,
    /// `skip-unchanged`, `change-threshold`, `heartbeat`, `trigger-*`
    /// ([`crate::gate`]).
    pub gate: crate::gate::GateConfig,
}

impl Default for Settings {
    fn default() -> Self {
        let g = GenParams::default();
        Settings {
            user: UserSettings::default(),
            chunk_duration: DEFAULT_CHUNK_DURATION,
            chunk_overlap: 0.0,
            jpeg_quality: DEFAULT_JPEG_QUALITY,
            prompt: prompt::DEFAULT_PROMPT.to_string(),
            max_tokens: g.max_tokens,
            temperature: g.temperature,
            top_p: g.top_p,
            top_k: 0,
            seed: 1,
            no_repeat_ngram_size: -1,
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
            max_pending: DEFAULT_MAX_PENDING,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_retries: DEFAULT_MAX_RETRIES,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            server_wait: DEFAULT_SERVER_WAIT_S,
            max_restarts: DEFAULT_MAX_RESTARTS,
            device: "auto".into(),
            dtype: "auto".into(),
            enable_reasoning: false,
            gen_set: Default::default(),
            text: TextSettings::default(),
            vision_mode: "images".into(),
            image_detail: "auto".into(),
            max_images: 0,
            extra_body: None,
            timestamp_line: true,
            endpoint_concurrency: crate::budget::DEFAULT_ENDPOINT_CONCURRENCY,
            gate: crate::gate::GateConfig::default(),
        }
    }
}
