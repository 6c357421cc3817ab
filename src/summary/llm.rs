// SPDX-License-Identifier: MPL-2.0
//! The interface to a text LLM (the summarizer and the event checker).
//!
//! Implemented outside this module: the openai-compat HTTP client and the
//! in-process model. Everything in [`crate::summary`] only sees this trait.

use tokio_util::sync::CancellationToken;

use crate::backend::BackendError;

/// One text-only chat request: an optional system message and one user
/// message.
#[derive(Clone, Debug, PartialEq)]
pub struct TextRequest {
    pub system: Option<String>,
    pub user: String,
    pub max_tokens: u32,
    pub temperature: f64,
    pub top_p: f64,
    /// Ask for a JSON object (`response_format`) where the server supports it.
    pub json: bool,
}

/// The model's answer (raw: `<think>` blocks are removed by the callers) and
/// the token counts the server reported.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TextAnswer {
    pub text: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// A text LLM. `complete` blocks the calling thread; it must return promptly
/// (with any error, [`BackendError::Cancelled`] where it can tell) once
/// `cancel` is cancelled. Its errors are the backends' typed outcome: the
/// kind says what failed, the text is what records show. It may be called from several
/// threads at once (an aggregation level runs its batches in parallel, see
/// [`SummaryConfig::max_parallel`](crate::summary::SummaryConfig::max_parallel));
/// an implementation that must bound its own concurrency does so itself.
pub trait TextLlm: Send + Sync {
    /// The model name, as written in the records.
    fn model(&self) -> &str;
    fn complete(
        &self,
        req: &TextRequest,
        cancel: &CancellationToken,
    ) -> Result<TextAnswer, BackendError>;
}

#[cfg(test)]
pub(crate) mod fake {
    //! A scripted [`TextLlm`] for the unit tests.
    use super::*;
    use crate::summary::tokens;
    use std::collections::BTreeSet;
    use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
    use std::sync::Mutex;

    /// A script answers a text or an error text: a plain `String` (issue 20,
    /// justified: test-only, so that the tests write
    /// `Err("HTTP 503".into())`); [`FakeLlm`] turns the text into
    /// [`BackendError::Failed`], whose `Display` is that text.
    type ScriptResult = Result<String, String>;
    type Script = Box<dyn Fn(&TextRequest, u32, &CancellationToken) -> ScriptResult + Send + Sync>;

    /// Answers with `script(request, call_number, cancel)`, counts the calls
    /// and remembers every request and the largest request estimate.
    pub(crate) struct FakeLlm {
        script: Script,
        pub calls: AtomicU32,
        pub max_request_tokens: AtomicU64,
        pub requests: Mutex<Vec<TextRequest>>,
    }

    impl FakeLlm {
        pub fn new(
            script: impl Fn(&TextRequest, u32, &CancellationToken) -> ScriptResult
                + Send
                + Sync
                + 'static,
        ) -> FakeLlm {
            FakeLlm {
                script: Box::new(script),
                calls: AtomicU32::new(0),
                max_request_tokens: AtomicU64::new(0),
                requests: Mutex::new(Vec::new()),
            }
        }

        /// A "summarizer" that answers the ids (`#N`, `#A-B`) found in its
        /// user text as merged ranges (`#0-4 #7`), so tests can tell which
        /// captions reached a summary.
        pub fn id_ranges() -> FakeLlm {
            FakeLlm::new(|req, _, _| Ok(format_ranges(&ids_in(&req.user))))
        }

        /// Answers its whole user text (a model that does not compress).
        pub fn parrot() -> FakeLlm {
            FakeLlm::new(|req, _, _| Ok(req.user.clone()))
        }

        pub fn calls(&self) -> u32 {
            self.calls.load(Ordering::SeqCst)
        }

        pub fn max_request_tokens(&self) -> u64 {
            self.max_request_tokens.load(Ordering::SeqCst)
        }

        pub fn requests(&self) -> Vec<TextRequest> {
            self.requests.lock().unwrap().clone()
        }
    }

    impl TextLlm for FakeLlm {
        fn model(&self) -> &str {
            "fake-llm"
        }

        fn complete(
            &self,
            req: &TextRequest,
            cancel: &CancellationToken,
        ) -> Result<TextAnswer, BackendError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            let est = tokens::estimate_request(req);
            self.max_request_tokens.fetch_max(est, Ordering::SeqCst);
            self.requests.lock().unwrap().push(req.clone());
            let text = (self.script)(req, n, cancel).map_err(BackendError::Failed)?;
            Ok(TextAnswer {
                output_tokens: tokens::estimate(&text),
                text,
                input_tokens: est,
            })
        }
    }

    /// Every id written `#N` or `#A-B` in `text`.
    pub(crate) fn ids_in(text: &str) -> BTreeSet<u64> {
        let mut ids = BTreeSet::new();
        let b = text.as_bytes();
        let mut i = 0;
        let number = |i: &mut usize| -> Option<u64> {
            let s = *i;
            while *i < b.len() && b[*i].is_ascii_digit() {
                *i += 1;
            }
            text[s..*i].parse().ok()
        };
        while i < b.len() {
            if b[i] == b'#' {
                i += 1;
                if let Some(a) = number(&mut i) {
                    if i + 1 < b.len() && b[i] == b'-' && b[i + 1].is_ascii_digit() {
                        i += 1;
                        let z = number(&mut i).unwrap();
                        ids.extend(a..=z);
                    } else {
                        ids.insert(a);
                    }
                }
            } else {
                i += 1;
            }
        }
        ids
    }

    /// `{0,1,2,4}` → `#0-2 #4`.
    pub(crate) fn format_ranges(ids: &BTreeSet<u64>) -> String {
        let mut out: Vec<String> = Vec::new();
        let mut it = ids.iter().copied().peekable();
        while let Some(a) = it.next() {
            let mut z = a;
            while it.peek() == Some(&(z + 1)) {
                z = it.next().unwrap();
            }
            out.push(if a == z {
                format!("#{a}")
            } else {
                format!("#{a}-{z}")
            });
        }
        if out.is_empty() {
            "no ids".into()
        } else {
            out.join(" ")
        }
    }

    #[test]
    fn ranges_round_trip() {
        let ids: BTreeSet<u64> = [0, 1, 2, 4, 9, 10].into_iter().collect();
        assert_eq!(format_ranges(&ids), "#0-2 #4 #9-10");
        assert_eq!(ids_in("<1.00> <2.00> x #0-2 y #4 #9-10 #z"), ids);
        assert_eq!(ids_in("time 12.5 no hash"), BTreeSet::new());
    }
}
