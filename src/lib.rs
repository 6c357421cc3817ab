// SPDX-License-Identifier: MPL-2.0
#![allow(clippy::non_send_fields_in_send_ty, unused_doc_comments)]

//! # vsssummarize
//!
//! A GStreamer element that cuts a video stream into chunks, samples frames
//! from each chunk, asks a vision-language model for a caption and emits the
//! captions as JSON/text buffers, as `VssSummaryMeta` custom metas on the
//! video buffers and as `vss-summary` bus messages, while the video passes
//! through untouched.
//!
//! Everything except `vsssummarize/` and `meta.rs` is plain Rust without
//! GStreamer types, unit tested on its own.

pub mod backend;
pub mod broker;

/// With cosmos-reason1 built in, the plugin's Rust code allocates through
/// mimalloc: candle gives every op a fresh buffer, and glibc's malloc returns
/// the large ones to the kernel on free and page-faults them back on the
/// next op (about 8 % of a CPU prefill in `cargo bench --bench cosmos`).
/// Only memory the plugin's own code allocates is affected; GStreamer's and
/// the host application's stay with their allocator. When a model loads,
/// mimalloc is told to reset rather than decommit what it purges
/// ([`backend::cosmos::alloc`]), for the same reason.
#[cfg(feature = "cosmos")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
pub mod budget;
pub mod chunker;
pub mod config;
pub mod dispatcher;
pub mod download;
pub mod endpoints;
pub mod evidence;
pub mod flow;
pub mod frames;
pub mod gate;
pub mod meta;
pub mod mp4;
pub mod pool;
pub mod prep;
/// The former name of [`prep`] (tests and examples written against it).
#[doc(hidden)]
pub use prep as gpu;
pub mod process;
pub mod prompt;
pub mod record;
pub mod redact;
pub mod retry;
pub mod runtime;
pub mod session;
pub mod steer;
pub mod summary;
mod vssbrokersink;
mod vsssummarize;

pub use vssbrokersink::VssBrokerSink;
pub use vsssummarize::VssSummarize;

use gst::glib;

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    meta::register();
    vsssummarize::register(plugin)?;
    vssbrokersink::register(plugin)
}

gst::plugin_define!(
    vsssummarize,
    env!("CARGO_PKG_DESCRIPTION"),
    plugin_init,
    concat!(env!("CARGO_PKG_VERSION"), "-", env!("COMMIT_ID")),
    "MPL",
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_NAME"),
    // No public home yet: say so rather than show a made-up URL.
    "unpublished (no public repository yet; see README.md of the source)",
    env!("BUILD_REL_DATE")
);
