// SPDX-License-Identifier: MPL-2.0
/**
 * SECTION:element-vssbrokersink
 *
 * `vssbrokersink` publishes `vsssummarize`'s records (one JSON object per
 * buffer, `summary_src`'s JSON) to an MQTT or Kafka broker. The topic is a
 * template of the record's `stream-id` and `kind`; Kafka's key is the
 * stream-id. Records wait in a bounded queue while the broker is away and
 * leave in order when it returns; `render` never waits on the network.
 *
 * ```bash
 * gst-launch-1.0 filesrc location=warehouse.mp4 ! decodebin ! videoconvert ! \
 *   vsssummarize name=s s.summary_src ! vssbrokersink url=mqtt://127.0.0.1:1883 \
 *   s.src ! fakesink
 * ```
 *
 * See docs/fleet.md for delivery guarantees, overflow and formats.
 */
use gst::glib;
use gst::prelude::*;

mod imp;

#[derive(Debug, Eq, PartialEq, Clone, Copy, glib::Enum, Default)]
#[repr(u32)]
#[enum_type(name = "GstVssBrokerFormat")]
pub enum FormatProp {
    #[default]
    #[enum_value(name = "The record's JSON as summary_src sent it", nick = "json")]
    Json = 0,
    #[enum_value(
        name = "NVIDIA VisionLLM metadata (nv.VisionLLM as JSON)",
        nick = "nvidia"
    )]
    Nvidia = 1,
}

#[derive(Debug, Eq, PartialEq, Clone, Copy, glib::Enum, Default)]
#[repr(u32)]
#[enum_type(name = "GstVssBrokerOverflow")]
pub enum OverflowProp {
    #[default]
    #[enum_value(name = "Discard the oldest unsent record", nick = "drop-oldest")]
    DropOldest = 0,
    #[enum_value(name = "Discard the arriving record", nick = "drop-newest")]
    DropNewest = 1,
    #[enum_value(
        name = "Wait for room (stalls the records, never the video)",
        nick = "block"
    )]
    Block = 2,
}

glib::wrapper! {
    pub struct VssBrokerSink(ObjectSubclass<imp::VssBrokerSink>) @extends gst_base::BaseSink, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    #[cfg(feature = "doc")]
    {
        FormatProp::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
        OverflowProp::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    }
    gst::Element::register(
        Some(plugin),
        "vssbrokersink",
        gst::Rank::NONE,
        VssBrokerSink::static_type(),
    )
}
