// SPDX-License-Identifier: MPL-2.0
//! Sessions built without GStreamer, against no server at all (a port on
//! which nothing listens refuses at once) and a recording observer.

use super::*;
use std::sync::Mutex;

/// Keeps what a session tells its element.
#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl Observer for Recorder {
    fn event(&self, e: Event<'_>) {
        let line = match e {
            Event::Log(l, m) => format!("log {l:?}: {m}"),
            Event::Warning(p, m) => format!("warning {p:?}: {m}"),
            Event::Info(p, m) => format!("info {p:?}: {m}"),
            Event::Progress(p) => format!("progress {}", p.file),
            Event::DownloadDone(t) => format!("download done: {t}"),
            Event::DownloadFailed(t) => format!("download failed: {t}"),
            Event::Alert(a) => format!("alert {}", a.chunk_index),
            Event::AlertError { chunk, text } => format!("alert-error {chunk}: {text}"),
            Event::Incident(r) => format!("incident {} {}", r.kind, r.incident_id),
        };
        self.0.lock().unwrap().push(line);
    }
}

impl Recorder {
    fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// A port nothing listens on (bound, then closed: refused at once).
fn refused_endpoint() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}/v1")
}

fn settings(endpoint: &str) -> Settings {
    let mut s = Settings::default();
    s.user.endpoint = Some(endpoint.to_string());
    s.user.model_name = Some("m".into());
    s.server_wait = 0.0;
    s.text.summarize = false;
    s
}

fn build(s: &Settings) -> (Result<Session, SessionError>, Arc<Recorder>) {
    let rec = Arc::new(Recorder::default());
    let obs: Arc<dyn Observer> = rec.clone();
    let r = Session::build(s, Env::from_pairs([]), "cam-7", &Counters::default(), obs);
    (r, rec)
}

/// Rules 1–4: an openai-compat session whose server is down is built, says
/// so as a bus warning (not a log line), and captures its record constants
/// once; the default stream id is the element's name.
#[test]
fn a_session_is_built_and_tells_its_observer() {
    let (r, rec) = build(&settings(&refused_endpoint()));
    let session = r.expect("a server that is down is a warning, not an error");
    let lines = rec.lines();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("warning OpenRead: vsssummarize: endpoint check:")),
        "{lines:#?}"
    );
    assert!(lines
        .iter()
        .any(|l| l.starts_with("log Info: backend openai-compat model 'm'")));
    let c = session.record_constants();
    assert_eq!(
        (c.backend.as_str(), c.model.as_str(), c.stream_id.as_str()),
        ("openai-compat", "m", "cam-7")
    );
    assert!(session.text.is_none(), "summarize=false and no events");
}

/// Rule 3: settings that cannot work are a `Settings` error with the text
/// the user reads, before anything loads.
#[test]
fn settings_that_cannot_work_are_settings_errors() {
    let mut s = settings(&refused_endpoint());
    s.text.summarize = true;
    s.text.summary_duration = 1e-300;
    let (r, _) = build(&s);
    let e = r.err().expect("refused");
    assert_eq!(e.kind, ErrorKind::Settings);
    assert!(
        e.message
            .starts_with("vsssummarize: summary-duration must be at least 0.1"),
        "{e}"
    );

    let mut s = settings(&refused_endpoint());
    s.user.backend = Some(BackendKind::Custom);
    s.text.events = "a person falls".into();
    let (r, _) = build(&s);
    let e = r.err().expect("refused");
    assert_eq!(e.kind, ErrorKind::Settings);
    assert!(e.message.contains("events needs a text LLM"), "{e}");
}

/// Rule 5: each run gets a dispatcher, counters start from 0, and a
/// concurrency above the pending bound is capped with a note.
#[test]
fn start_builds_a_dispatcher_per_run() {
    let (r, _) = build(&settings(&refused_endpoint()));
    let session = r.unwrap();
    let counters = Counters::default();
    counters
        .chunks
        .submitted
        .store(5, std::sync::atomic::Ordering::Relaxed);
    let mut s = settings("http://unused");
    s.max_concurrency = 8;
    s.max_pending = 2;
    let (d, note) = session.start::<()>(&s, &counters).unwrap();
    assert!(note.unwrap().contains("raise max-pending-chunks"));
    assert_eq!(
        counters
            .chunks
            .submitted
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    assert_eq!(d.pending(), 0);
    assert!(d.engine().is_none());
}
