// SPDX-License-Identifier: MPL-2.0
//! What a [`Session`] tells the element, turned into GStreamer: log lines
//! into the debug category, warnings and infos onto the bus, download
//! progress as `gst::message::Progress`, alerts as `vss-alert` messages.

use super::*;
use crate::session::{ErrorKind, Event, Level, Observer, Problem, SessionError};

/// The progress code of model downloads (`ngc:` / `hf:`).
const DOWNLOAD_CODE: &str = "download";

pub(super) struct ElementObserver {
    obj: glib::WeakRef<super::super::VssSummarize>,
    /// (file, 5 % step) of the last progress reported, and whether a
    /// download started: INFO lines and messages at each file's end and
    /// every 5 %, not for every block.
    progress: Mutex<(String, i64, bool)>,
}

impl ElementObserver {
    pub(super) fn for_element(obj: &super::super::VssSummarize) -> Arc<dyn Observer> {
        Arc::new(ElementObserver {
            obj: obj.downgrade(),
            progress: Mutex::new((String::new(), -1, false)),
        })
    }

    fn progress(&self, obj: &super::super::VssSummarize, p: &crate::download::Progress) {
        let pct = p
            .all_total
            .filter(|t| *t > 0)
            .map(|t| p.all_done as f64 * 100.0 / t as f64);
        let step = pct
            .map(|x| (x / 5.0) as i64)
            .unwrap_or((p.all_done >> 26) as i64);
        let file_done = p.total.is_some_and(|t| p.done >= t);
        let started = {
            let mut l = self.progress.lock();
            if l.0 == p.file && l.1 == step && !file_done {
                return;
            }
            let started = !l.2;
            *l = (p.file.clone(), step, true);
            started
        };
        let total = p
            .all_total
            .map(|t| t.to_string())
            .unwrap_or_else(|| "?".into());
        let pct_text = pct.map(|x| format!(" ({x:.0} %)")).unwrap_or_default();
        let text = format!(
            "downloading {}: {} of {total} bytes{pct_text}",
            p.file, p.all_done
        );
        gst::info!(CAT, obj = obj, "{text}");
        if started {
            post_progress(obj, gst::ProgressType::Start, "downloading the model", None);
        }
        post_progress(
            obj,
            gst::ProgressType::Continue,
            &text,
            pct.map(|x| x.clamp(0.0, 100.0) as i32),
        );
    }
}

fn post_progress(
    obj: &super::super::VssSummarize,
    kind: gst::ProgressType,
    text: &str,
    percent: Option<i32>,
) {
    let mut b = gst::message::Progress::builder(kind, DOWNLOAD_CODE, text).src(obj);
    if let Some(p) = percent {
        b = b.other_field("percent", p);
    }
    let _ = obj.post_message(b.build());
}

impl Observer for ElementObserver {
    fn event(&self, e: Event<'_>) {
        let Some(obj) = self.obj.upgrade() else {
            return;
        };
        match e {
            Event::Log(Level::Debug, m) => gst::debug!(CAT, obj = obj, "{m}"),
            Event::Log(Level::Info, m) => gst::info!(CAT, obj = obj, "{m}"),
            Event::Log(Level::Warning, m) => gst::warning!(CAT, obj = obj, "{m}"),
            Event::Warning(p, m) => match p {
                Problem::Settings => {
                    gst::element_warning!(obj, gst::ResourceError::Settings, ("{m}"))
                }
                Problem::OpenRead => {
                    gst::element_warning!(obj, gst::ResourceError::OpenRead, ("{m}"))
                }
                Problem::Write => gst::element_warning!(obj, gst::ResourceError::Write, ("{m}")),
                Problem::Library => gst::element_warning!(obj, gst::LibraryError::Failed, ("{m}")),
                Problem::Stream => gst::element_warning!(obj, gst::StreamError::Failed, ("{m}")),
            },
            Event::Info(p, m) => match p {
                Problem::Settings => gst::element_info!(obj, gst::ResourceError::Settings, ("{m}")),
                Problem::OpenRead => gst::element_info!(obj, gst::ResourceError::OpenRead, ("{m}")),
                Problem::Write => gst::element_info!(obj, gst::ResourceError::Write, ("{m}")),
                Problem::Library => gst::element_info!(obj, gst::LibraryError::Failed, ("{m}")),
                Problem::Stream => gst::element_info!(obj, gst::StreamError::Failed, ("{m}")),
            },
            Event::Progress(p) => self.progress(&obj, p),
            Event::DownloadDone(text) => {
                if std::mem::take(&mut self.progress.lock().2) {
                    post_progress(&obj, gst::ProgressType::Complete, text, Some(100));
                }
            }
            Event::DownloadFailed(text) => {
                if std::mem::take(&mut self.progress.lock().2) {
                    post_progress(&obj, gst::ProgressType::Error, text, None);
                }
            }
            Event::Alert(a) => {
                let rec = serde_json::to_value(a.record()).unwrap_or_default();
                let s = meta::structure_from_json("vss-alert", &rec);
                let _ = obj.post_message(gst::message::Element::builder(s).src(&obj).build());
            }
            Event::Incident(r) => {
                let rec = serde_json::to_value(r).unwrap_or_default();
                let s = meta::structure_from_json("vss-incident", &rec);
                let _ = obj.post_message(gst::message::Element::builder(s).src(&obj).build());
            }
            Event::AlertError { chunk, text } => gst::element_warning!(
                obj,
                gst::StreamError::Failed,
                ("chunk {chunk}: {text}"),
                details: gst::Structure::builder("vss-alert-error").field("chunk-index", chunk).build()
            ),
        }
    }
}

/// A session failure as the element's error message.
pub(super) fn error_message(e: SessionError) -> gst::ErrorMessage {
    let m = e.message;
    match e.kind {
        ErrorKind::Settings => gst::error_msg!(gst::ResourceError::Settings, ("{m}")),
        ErrorKind::Init => gst::error_msg!(gst::LibraryError::Init, ("{m}")),
    }
}
