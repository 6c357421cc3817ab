// SPDX-License-Identifier: MPL-2.0
/**
 * SECTION:element-vsssummarize
 *
 * `vsssummarize` turns a video pipeline into a video summarizer. Decoded
 * frames pass through `src` untouched. The stream is cut into chunks of
 * `chunk-duration` seconds (optionally overlapping by `chunk-overlap`),
 * `num-frames-per-chunk` equidistant frames of each chunk are copied,
 * converted and sent with the prompt to a vision-language model, and each
 * chunk's caption leaves, in chunk order:
 *
 * - on `summary_src` as one buffer per chunk (`application/x-json`, one JSON
 *   object per line, or `text/x-raw,format=utf8`, the caption alone — whichever
 *   downstream accepts, JSON first), PTS = chunk start, duration = chunk length;
 * - as a `VssSummaryMeta` custom meta (structure `vss-summary`) on the next
 *   video buffer that leaves `src` (one record per buffer);
 * - as a `vss-summary` element message on the bus.
 *
 * ```bash
 * gst-launch-1.0 filesrc location=warehouse.mp4 ! decodebin ! videoconvert ! \
 *   vsssummarize chunk-duration=10 num-frames-per-chunk=8 name=s \
 *   s.summary_src ! filesink location=captions.jsonl  s.src ! fakesink
 * ```
 *
 * See README.md for every property, the environment variables used as
 * defaults, the threading and queueing rules and the error behaviour.
 */
use gst::glib;
use gst::prelude::*;

mod imp;

#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum, Default)]
#[repr(u32)]
#[enum_type(name = "GstVssSummarizeBackend")]
pub enum BackendProp {
    #[default]
    #[enum_value(
        name = "OpenAI-compatible chat-completions endpoint",
        nick = "openai-compat"
    )]
    OpenAiCompat = 0,
    #[enum_value(
        name = "Cosmos-Reason1 / Qwen2.5-VL in-process (candle)",
        nick = "cosmos-reason1"
    )]
    CosmosReason1 = 1,
    #[enum_value(
        name = "VSS custom model directory (inference.py + manifest.yaml)",
        nick = "custom"
    )]
    Custom = 2,
    #[enum_value(
        name = "Cosmos-Reason2 / Qwen3-VL in-process (candle)",
        nick = "cosmos-reason2"
    )]
    CosmosReason2 = 3,
    #[enum_value(
        name = "Cosmos3 Nano Reasoner (Qwen3-VL) in-process (candle)",
        nick = "cosmos-reason3"
    )]
    CosmosReason3 = 4,
}

impl From<BackendProp> for crate::config::BackendKind {
    fn from(b: BackendProp) -> Self {
        match b {
            BackendProp::OpenAiCompat => crate::config::BackendKind::OpenAiCompat,
            BackendProp::CosmosReason1 => crate::config::BackendKind::CosmosReason1,
            BackendProp::Custom => crate::config::BackendKind::Custom,
            BackendProp::CosmosReason2 => crate::config::BackendKind::CosmosReason2,
            BackendProp::CosmosReason3 => crate::config::BackendKind::CosmosReason3,
        }
    }
}

impl From<crate::config::BackendKind> for BackendProp {
    fn from(b: crate::config::BackendKind) -> Self {
        match b {
            crate::config::BackendKind::OpenAiCompat => BackendProp::OpenAiCompat,
            crate::config::BackendKind::CosmosReason1 => BackendProp::CosmosReason1,
            crate::config::BackendKind::Custom => BackendProp::Custom,
            crate::config::BackendKind::CosmosReason2 => BackendProp::CosmosReason2,
            crate::config::BackendKind::CosmosReason3 => BackendProp::CosmosReason3,
        }
    }
}

/// `alert-webhook-mode`.
#[derive(Debug, Eq, PartialEq, Clone, Copy, glib::Enum, Default)]
#[repr(u32)]
#[enum_type(name = "GstVssSummarizeWebhookMode")]
pub enum WebhookModeProp {
    #[default]
    #[enum_value(name = "One POST per alert (chunk)", nick = "alert")]
    Alert = 0,
    #[enum_value(
        name = "One POST when an incident opens and one when it closes",
        nick = "incident"
    )]
    Incident = 1,
}

glib::wrapper! {
    pub struct VssSummarize(ObjectSubclass<imp::VssSummarize>) @extends gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    #[cfg(feature = "doc")]
    BackendProp::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    #[cfg(feature = "doc")]
    WebhookModeProp::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    gst::Element::register(
        Some(plugin),
        "vsssummarize",
        gst::Rank::NONE,
        VssSummarize::static_type(),
    )
}
