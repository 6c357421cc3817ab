// SPDX-License-Identifier: MPL-2.0
//! Summaries and alerts of a session: the text LLM chosen at NULL→READY
//! (`llm-endpoint`, else the VLM's endpoint, else the loaded model), and the
//! summary engine and event-check stage built for each run. The logic is in
//! [`crate::summary`].

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{Counters, Event, Level, Observer, Problem, SessionError, Settings};
use crate::backend::openai::{OpenAiOptions, OpenAiText};
use crate::backend::{FrameOptions, GenParams};
use crate::config::{self, Resolved};
use crate::dispatcher::{AfterCaption, Stage};
use crate::evidence::Evidence;
use crate::flow::{IncidentOut, SummaryOut};
use crate::prep::FramePrep;
use crate::summary::incidents::{self, IncidentStage, Incidents};
use crate::summary::{
    alerts, parse_summary_duration, Alert, AlertChecker, EngineConfig, SummaryConfig,
    SummaryEngine, TextLlm, Webhook,
};

const NO_EVENTS_FOR_EVIDENCE: &str =
    "vsssummarize: evidence-dir is set but events is empty: there will be no alerts to keep evidence of";
const NO_EVENTS_FOR_WEBHOOK: &str =
    "vsssummarize: alert-webhook is set but events is empty: there will be no alerts";

/// What NULL→READY decided about summaries and alerts.
pub struct TextPlan {
    pub llm: Arc<dyn TextLlm>,
    /// `None`: `summarize=false`.
    pub summary: Option<EngineConfig>,
    /// Empty: no alerts.
    pub events: Vec<String>,
    pub webhook: Option<Arc<Webhook>>,
    pub concurrency: usize,
    pub temperature: f64,
    pub top_p: f64,
    /// `incident-gap`.
    pub incident_gap: f64,
    /// `alert-webhook-mode=incident`.
    pub webhook_per_incident: bool,
    /// `evidence-dir` and the clip ring; `None`: no evidence.
    pub evidence: Option<Arc<Evidence>>,
    pub stream_id: String,
}

/// `a` and `b` are the same origin (scheme, host, port): the VLM's key may go
/// to `b`.
fn same_origin(a: &url::Url, b: &url::Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// The text LLM and what uses it. `vlm`: the openai-compat endpoint as
/// checked; `local`: the in-process model's text path (cosmos-reason1/2/3).
pub(super) fn prepare(
    settings: &Settings,
    resolved: &Resolved,
    vlm: Option<&config::EndpointConfig>,
    local: Option<Arc<dyn TextLlm>>,
    stream_id: &str,
    counters: &Counters,
    observer: &Arc<dyn Observer>,
) -> Result<Option<TextPlan>, SessionError> {
    let obs = &**observer;
    let t = &settings.text;
    let err = |e: String| SessionError::settings(format!("vsssummarize: {e}"));
    let events = alerts::parse_events(&t.events).map_err(err)?;
    let window = parse_summary_duration(t.summary_duration).map_err(|e| err(e.into()))?;
    if events.is_empty() && t.evidence.dir.is_some() {
        obs.event(Event::Warning(Problem::Settings, NO_EVENTS_FOR_EVIDENCE));
    }
    if !t.summarize && events.is_empty() {
        if t.alert_webhook.is_some() {
            obs.event(Event::Warning(Problem::Settings, NO_EVENTS_FOR_WEBHOOK));
        }
        return Ok(None);
    }
    let llm: Option<Arc<dyn TextLlm>> = match (&t.llm_endpoint, vlm, local) {
        (Some(ep), _, _) => Some(llm_client(settings, ep, vlm, obs)?),
        (None, Some(vlm), _) => {
            let mut endpoint = vlm.clone();
            if let Some(m) = &t.llm_model_name {
                endpoint.model = m.clone();
            }
            Some(Arc::new(openai_text(settings, endpoint)?))
        }
        (None, None, Some(local)) => Some(local),
        (None, None, None) => None,
    };
    let Some(llm) = llm else {
        if !events.is_empty() {
            return Err(err(format!(
                "events needs a text LLM, and backend={} has none of its own: set llm-endpoint (and llm-model-name) to an OpenAI-compatible server",
                resolved.backend.as_str()
            )));
        }
        obs.event(Event::Info(
            Problem::Settings,
            &format!("vsssummarize: no summaries: backend={} has no text LLM of its own; set llm-endpoint (and llm-model-name) to an OpenAI-compatible server to get them, or summarize=false to silence this", resolved.backend.as_str()),
        ));
        return Ok(None);
    };
    let concurrency = t.llm_max_concurrency.max(1) as usize;
    let summary = if t.summarize {
        let cfg = SummaryConfig {
            caption_prompt: t.caption_prompt.clone(),
            aggregation_prompt: t.aggregation_prompt.clone(),
            max_tokens: t.llm_max_tokens,
            temperature: t.llm_temperature,
            top_p: t.llm_top_p,
            context_tokens: t.llm_context_tokens,
            max_parallel: concurrency,
        };
        cfg.validate().map_err(|e| err(e.into()))?;
        Some(EngineConfig {
            summary: cfg,
            window,
            stream_id: stream_id.to_string(),
        })
    } else {
        None
    };
    let webhook = match &t.alert_webhook {
        None => None,
        Some(_) if events.is_empty() => {
            obs.event(Event::Warning(Problem::Settings, NO_EVENTS_FOR_WEBHOOK));
            None
        }
        Some(u) => {
            let weak = Arc::downgrade(observer);
            let log = Arc::new(move |m: &str| {
                if let Some(o) = weak.upgrade() {
                    o.event(Event::Warning(
                        Problem::Write,
                        &format!("vsssummarize: {m}"),
                    ));
                }
            });
            let w = Webhook::new(
                u,
                t.alert_webhook_token.clone(),
                counters.webhook.clone(),
                log,
            )
            .map_err(|e| err(e.to_string()))?;
            obs.event(Event::Log(
                Level::Info,
                &format!("alerts go to {}", w.url_for_log()),
            ));
            Some(Arc::new(w))
        }
    };
    obs.event(Event::Log(
        Level::Info,
        &format!(
            "text LLM '{}': {}{}",
            llm.model(),
            match (&summary, window) {
                (None, _) => "no summaries".to_string(),
                (Some(_), Some(d)) => format!("a summary every {d} s and a final summary"),
                (Some(_), None) => "a final summary only".to_string(),
            },
            if events.is_empty() {
                String::new()
            } else {
                format!(", alerts on {} events", events.len())
            }
        ),
    ));
    let evidence = match (&t.evidence.dir, events.is_empty()) {
        (Some(dir), false) => {
            let ev = Evidence::new(crate::evidence::EvidenceConfig {
                dir: dir.into(),
                stream_id: stream_id.to_string(),
                max_bytes: t.evidence.max_bytes,
                clip_pre: t.evidence.clip_pre,
                clip_post: t.evidence.clip_post,
                ring_bytes: t.evidence.ring_bytes,
            })
            .map_err(err)?;
            obs.event(Event::Log(
                Level::Info,
                &format!("evidence goes to {dir}: {}", ev.describe()),
            ));
            let weak = Arc::downgrade(observer);
            ev.set_log(Arc::new(move |m: &str| {
                if let Some(o) = weak.upgrade() {
                    o.event(Event::Warning(
                        Problem::Write,
                        &format!("vsssummarize: {m}"),
                    ));
                }
            }));
            Some(Arc::new(ev))
        }
        _ => None,
    };
    Ok(Some(TextPlan {
        llm,
        summary,
        events,
        webhook,
        concurrency,
        temperature: t.llm_temperature,
        top_p: t.llm_top_p,
        incident_gap: t.incident_gap,
        webhook_per_incident: t.webhook_per_incident,
        evidence,
        stream_id: stream_id.to_string(),
    }))
}

/// An HTTP text client for `llm-endpoint`.
fn llm_client(
    settings: &Settings,
    ep: &str,
    vlm: Option<&config::EndpointConfig>,
    obs: &dyn Observer,
) -> Result<Arc<dyn TextLlm>, SessionError> {
    let t = &settings.text;
    let err = |e: String| SessionError::settings(format!("vsssummarize: {e}"));
    let base = url::Url::parse(ep.trim()).map_err(|e| {
        err(format!(
            "llm-endpoint '{}' is not a URL ({e}); use e.g. http://localhost:8000/v1",
            ep.trim()
        ))
    })?;
    if !matches!(base.scheme(), "http" | "https") {
        return Err(err("llm-endpoint must be an http:// or https:// URL".into()));
    }
    let chat_url = config::chat_completions_url(&base);
    // The VLM's key only goes to the VLM's own server.
    let api_key = t.llm_api_key.clone().or_else(|| {
        vlm.filter(|v| same_origin(&v.chat_url, &chat_url))
            .and_then(|v| v.api_key.clone())
    });
    let mut endpoint = config::EndpointConfig {
        chat_url,
        azure: false,
        api_key,
        model: t.llm_model_name.clone().unwrap_or_default(),
        model_explicit: t.llm_model_name.is_some(),
        more_urls: Vec::new(),
    };
    super::check_endpoint(&mut endpoint, settings, obs)?;
    if !endpoint.model_explicit {
        return Err(err(format!(
            "llm-model-name is not set and llm-endpoint {} does not name exactly one served model: set llm-model-name",
            crate::backend::openai::url_for_log(&endpoint.chat_url)
        )));
    }
    Ok(Arc::new(openai_text(settings, endpoint)?))
}

fn openai_text(
    settings: &Settings,
    endpoint: config::EndpointConfig,
) -> Result<OpenAiText, SessionError> {
    OpenAiText::new(OpenAiOptions {
        endpoint,
        gen: GenParams::default(),
        frames: FrameOptions {
            width: 0,
            height: 0,
            jpeg_quality: 90,
        },
        prep: FramePrep::Cpu,
        request_timeout: config::secs(settings.request_timeout),
        max_retries: settings.max_retries,
        server_wait: config::secs(settings.server_wait),
        vision: Default::default(),
    })
    .map_err(|e| SessionError::settings(format!("vsssummarize: text LLM: {e}")))
}

/// What READY→PAUSED builds for the dispatcher.
pub(super) type Started = (
    Option<Stage>,
    Option<Arc<SummaryEngine>>,
    Option<Arc<IncidentStage>>,
);

/// READY→PAUSED: the event-check stage for the dispatcher, the summary
/// engine, which puts its records into `out`, and the incident stage,
/// which puts its records into `incident_out`.
pub(super) fn start(
    plan: Option<&TextPlan>,
    out: Arc<dyn SummaryOut>,
    incident_out: Arc<dyn IncidentOut>,
    counters: &Counters,
    observer: &Arc<dyn Observer>,
    steering: &Arc<crate::steer::Steering>,
) -> Result<Started, SessionError> {
    counters.summaries.reset();
    counters.alerts_raised.store(0, Ordering::Relaxed);
    let Some(plan) = plan else {
        return Ok((None, None, None));
    };
    if let Some(e) = &plan.evidence {
        e.start_run();
    }
    // Also without events: `events` can be set while running
    // (docs/monitoring.md); with an empty list a caption passes unchecked.
    let stage = Some(()).map(|()| {
        let weak = Arc::downgrade(observer);
        let webhook = plan.webhook.clone().filter(|_| !plan.webhook_per_incident);
        let on_alert = Arc::new(move |a: &Alert| {
            if let Some(o) = weak.upgrade() {
                o.event(Event::Alert(a));
            }
            if let Some(w) = &webhook {
                w.send(a.alert_id(), a.webhook_body());
            }
        });
        let weak = Arc::downgrade(observer);
        let on_error = Arc::new(move |chunk: u64, msg: &str| {
            if let Some(o) = weak.upgrade() {
                o.event(Event::AlertError { chunk, text: msg });
            }
        });
        let checker = AlertChecker {
            llm: plan.llm.clone(),
            events: plan.events.clone(),
            temperature: plan.temperature,
            top_p: plan.top_p,
            on_alert,
            on_error,
            raised: counters.alerts_raised.clone(),
            steering: Some(steering.clone()),
            evidence: plan.evidence.clone(),
        };
        (Arc::new(checker) as Arc<dyn AfterCaption>, plan.concurrency)
    });
    let engine = match &plan.summary {
        Some(cfg) => Some(Arc::new(
            SummaryEngine::new(
                plan.llm.clone(),
                cfg.clone(),
                counters.summaries.clone(),
                out,
            )
            .map_err(|e| SessionError::settings(format!("vsssummarize: {e}")))?,
        )),
        None => None,
    };
    // Also without events, which can be set while running.
    let incidents = Some(()).map(|()| {
        let weak = Arc::downgrade(observer);
        let webhook = plan.webhook.clone().filter(|_| plan.webhook_per_incident);
        let on_incident = Arc::new(move |r: &crate::record::IncidentRecord| {
            if let Some(o) = weak.upgrade() {
                o.event(Event::Incident(r));
            }
            if let Some(w) = &webhook {
                let id = format!(
                    "{} ({})",
                    r.incident_id,
                    if r.kind == "incident-end" {
                        "close"
                    } else {
                        "open"
                    }
                );
                w.send(id, incidents::webhook_body(r));
            }
        });
        let clip = plan.evidence.clone().filter(|e| e.clips()).map(|e| {
            Arc::new(move |r: &mut crate::record::IncidentRecord| e.clip(r)) as incidents::ClipHook
        });
        Arc::new(IncidentStage::new(
            Incidents::new(&plan.stream_id, plan.incident_gap),
            incident_out,
            on_incident,
            clip,
        ))
    });
    Ok((stage, engine, incidents))
}
