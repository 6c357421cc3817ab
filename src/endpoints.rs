// SPDX-License-Identifier: MPL-2.0
//! Several servers behind one `endpoint` (a comma-separated list of base
//! URLs): which one takes a request, and when a failing one is taken out
//! and probed back. Plain Rust, free of GStreamer types; time is passed in.
//!
//! Rules:
//! 1. **Shared health.** A server's state (requests in flight, failures,
//!    out of service) is kept once per process, by its normalized URL
//!    ([`crate::budget::normalize`]): every element that lists it sees it go
//!    out and come back together ([`Servers::new`]).
//! 2. **Least in flight.** A request goes to the healthy server with the
//!    fewest requests in flight now; ties go to the one picked least often
//!    (so idle servers take turns), then to the one listed first.
//! 3. **Taken out.** After [`FAILS_TO_TAKE_OUT`] (3) consecutive failures —
//!    a connection that fails (refused, reset, closed early, DNS) or an
//!    HTTP 5xx — a server is out for [`FIRST_PROBE_DELAY`] (5 s). Any other
//!    HTTP answer (2xx, 4xx, 429) is a success and resets the count; a
//!    timeout counts neither way (a busy model is slow, not gone).
//! 4. **Probed back.** Once its time out has passed, an out server takes
//!    the next request (the probe; the others keep going elsewhere while it
//!    runs). A success puts it back at once; a failure takes it out again
//!    for twice as long as the time before, up to [`MAX_PROBE_DELAY`] (60 s): 5, 10,
//!    20, 40, 60, 60 … s.
//! 5. **Never refused.** When every server is out (and none is due for a
//!    probe), the request goes to the one due first: the retries and
//!    `server-wait` of [`crate::retry`] then apply as for one server.
//! 6. **RAII.** A [`Pick`] counts as in flight until dropped (an answer, a
//!    cancel, a timeout, a panic); a probe dropped without an outcome lets
//!    the next request probe.
//! 7. **Names.** [`Pick::name`] is the server's base URL without user info,
//!    query or fragment: what a record's `endpoint` says.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Rule 3.
pub const FAILS_TO_TAKE_OUT: u32 = 3;
/// Rule 3.
pub const FIRST_PROBE_DELAY: Duration = Duration::from_secs(5);
/// Rule 4.
pub const MAX_PROBE_DELAY: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
struct Health {
    in_flight: usize,
    picks: u64,
    fails: u32,
    /// Out of service until then (rule 3); `None`: healthy.
    out_until: Option<Instant>,
    /// The last time out (rule 4's doubling).
    delay: Duration,
    /// A probe is in flight (rule 4).
    probing: bool,
}

/// One server (shared by every element listing it, rule 1).
#[derive(Debug)]
pub struct Server {
    url: url::Url,
    name: String,
    health: Mutex<Health>,
}

impl Server {
    fn new(url: url::Url) -> Server {
        let mut base = url.clone();
        let path = base.path().trim_end_matches('/').to_string();
        base.set_path(path.strip_suffix("/chat/completions").unwrap_or(&path));
        let name = crate::backend::openai::url_for_log(&base)
            .trim_end_matches('/')
            .to_string();
        Server {
            url,
            name,
            health: Mutex::new(Health::default()),
        }
    }

    /// Whether it is out of service at `now` (rule 3).
    pub fn is_out(&self, now: Instant) -> bool {
        let h = self.health.lock();
        h.out_until.is_some_and(|t| now < t) || (h.out_until.is_some() && h.probing)
    }
}

static REGISTRY: Mutex<Option<HashMap<String, Weak<Server>>>> = Mutex::new(None);

fn shared(url: &url::Url) -> Arc<Server> {
    let key = crate::budget::normalize(url);
    let mut reg = REGISTRY.lock();
    let map = reg.get_or_insert_with(HashMap::new);
    map.retain(|_, w| w.strong_count() > 0);
    if let Some(s) = map.get(&key).and_then(Weak::upgrade) {
        return s;
    }
    let s = Arc::new(Server::new(url.clone()));
    map.insert(key, Arc::downgrade(&s));
    s
}

/// The servers of one `endpoint` list.
#[derive(Debug, Clone)]
pub struct Servers {
    list: Vec<Arc<Server>>,
}

/// How a request to a server ended (rule 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// An HTTP answer that is not 5xx.
    Answered,
    /// A failed connection or an HTTP 5xx.
    Failed,
    /// Neither (a timeout, a cancel).
    Unknown,
}

impl Servers {
    /// Rule 1: the process-wide servers of these chat URLs, in list order.
    pub fn new<'a>(urls: impl IntoIterator<Item = &'a url::Url>) -> Servers {
        Servers {
            list: urls.into_iter().map(shared).collect(),
        }
    }

    /// Servers of their own, not shared (tests).
    pub fn private<'a>(urls: impl IntoIterator<Item = &'a url::Url>) -> Servers {
        Servers {
            list: urls
                .into_iter()
                .map(|u| Arc::new(Server::new(u.clone())))
                .collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Whether another server than `but` could take a request now.
    pub fn other_healthy(&self, but: &str, now: Instant) -> bool {
        self.list.iter().any(|s| s.name != but && !s.is_out(now))
    }

    /// Rules 2, 4, 5: the server for the next request at `now`.
    pub fn pick(&self, now: Instant) -> Pick {
        // (rank, in flight, picks, due): a due probe 0 (it goes first, so
        // that a server comes back), healthy 1, out 2.
        let mut best: Option<((u8, usize, u64, Instant), usize)> = None;
        for (i, s) in self.list.iter().enumerate() {
            let h = s.health.lock();
            let rank = match h.out_until {
                None => (1, h.in_flight, h.picks, now),
                Some(t) if t <= now && !h.probing => (0, 0, 0, t),
                Some(t) => (2, 0, 0, t),
            };
            if best.as_ref().is_none_or(|(b, _)| rank < *b) {
                best = Some((rank, i));
            }
        }
        let ((rank, ..), i) = best.expect("an endpoint list is never empty");
        let server = self.list[i].clone();
        let probe = {
            let mut h = server.health.lock();
            h.in_flight += 1;
            h.picks += 1;
            let probe = rank == 0;
            if probe {
                h.probing = true;
            }
            probe
        };
        Pick {
            server,
            probe,
            done: false,
        }
    }
}

/// A request's server (rule 6): in flight until dropped.
#[derive(Debug)]
pub struct Pick {
    server: Arc<Server>,
    probe: bool,
    done: bool,
}

impl Pick {
    /// The chat-completions URL to post to.
    pub fn url(&self) -> &url::Url {
        &self.server.url
    }

    /// Rule 7.
    pub fn name(&self) -> &str {
        &self.server.name
    }

    pub fn is_probe(&self) -> bool {
        self.probe
    }

    /// Rules 3, 4: how the request ended, at `now`.
    pub fn report(&mut self, outcome: Outcome, now: Instant) {
        let mut h = self.server.health.lock();
        match outcome {
            Outcome::Answered => {
                h.fails = 0;
                h.out_until = None;
                h.delay = Duration::ZERO;
            }
            Outcome::Failed => {
                h.fails = h.fails.saturating_add(1);
                if self.probe || (h.out_until.is_none() && h.fails >= FAILS_TO_TAKE_OUT) {
                    h.delay = if h.delay.is_zero() {
                        FIRST_PROBE_DELAY
                    } else {
                        (h.delay * 2).min(MAX_PROBE_DELAY)
                    };
                    h.out_until = Some(now + h.delay);
                }
            }
            Outcome::Unknown => return,
        }
        if self.probe {
            h.probing = false;
        }
        self.done = true;
    }
}

impl Drop for Pick {
    fn drop(&mut self) {
        let mut h = self.server.health.lock();
        h.in_flight = h.in_flight.saturating_sub(1);
        if self.probe && !self.done {
            h.probing = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers(n: usize) -> Servers {
        let urls: Vec<url::Url> = (0..n)
            .map(|i| url::Url::parse(&format!("http://s{i}:8000/v1/chat/completions")).unwrap())
            .collect();
        Servers::private(&urls)
    }

    fn fail(s: &Servers, now: Instant) -> String {
        let mut p = s.pick(now);
        p.report(Outcome::Failed, now);
        p.name().to_string()
    }

    /// Rule 1: the same URL (spelled differently) is one server in a process.
    #[test]
    fn rule1_health_is_shared_by_url() {
        let a = url::Url::parse("http://rule1-host:8000/v1/chat/completions").unwrap();
        let b = url::Url::parse("HTTP://Rule1-Host:8000/v1/chat/completions").unwrap();
        let (x, y) = (Servers::new([&a]), Servers::new([&b]));
        assert!(Arc::ptr_eq(&x.list[0], &y.list[0]));
        let now = Instant::now();
        for _ in 0..FAILS_TO_TAKE_OUT {
            fail(&x, now);
        }
        assert!(y.list[0].is_out(now), "y sees x's failures");
    }

    /// Rule 2.
    #[test]
    fn rule2_least_in_flight_then_turns() {
        let s = servers(3);
        let now = Instant::now();
        let p0 = s.pick(now);
        let p1 = s.pick(now);
        let p2 = s.pick(now);
        let names: Vec<&str> = vec![p0.name(), p1.name(), p2.name()];
        assert_eq!(
            names,
            [
                "http://s0:8000/v1",
                "http://s1:8000/v1",
                "http://s2:8000/v1"
            ]
        );
        drop(p1);
        assert_eq!(s.pick(now).name(), "http://s1:8000/v1", "fewest in flight");
        // All idle: turns (fewest picks), not always the first.
        drop((p0, p2));
        let got: Vec<String> = (0..3).map(|_| s.pick(now).name().to_string()).collect();
        assert_eq!(
            got,
            [
                "http://s0:8000/v1",
                "http://s2:8000/v1",
                "http://s0:8000/v1"
            ]
        );
    }

    /// Rule 3: out after 3 consecutive failures; an answer resets the count;
    /// a timeout counts neither way.
    #[test]
    fn rule3_taken_out_after_consecutive_failures() {
        let s = servers(1);
        let t = Instant::now();
        fail(&s, t);
        fail(&s, t);
        let mut p = s.pick(t);
        p.report(Outcome::Answered, t);
        drop(p);
        fail(&s, t);
        fail(&s, t);
        let mut p = s.pick(t);
        p.report(Outcome::Unknown, t);
        drop(p);
        assert!(!s.list[0].is_out(t));
        fail(&s, t);
        assert!(s.list[0].is_out(t));
        assert!(!s.list[0].is_out(t + FIRST_PROBE_DELAY));
    }

    /// Rule 4: one probe once the time out passed; its failure doubles the
    /// time out (capped), its success puts the server back.
    #[test]
    fn rule4_probes_back_with_doubling_delays() {
        let s = servers(2);
        let mut t = Instant::now();
        // s0 fails until out; its requests then go to s1.
        while !s.list[0].is_out(t) {
            let mut p = s.pick(t);
            let failed = p.name() == "http://s0:8000/v1";
            p.report(
                if failed {
                    Outcome::Failed
                } else {
                    Outcome::Answered
                },
                t,
            );
        }
        let mut delays = Vec::new();
        for _ in 0..6 {
            assert_eq!(s.pick(t).name(), "http://s1:8000/v1", "out: not picked");
            let back = s.list[0].health.lock().out_until.unwrap();
            delays.push((back - t).as_secs());
            t = back;
            let mut probe = s.pick(t);
            assert!(probe.is_probe());
            assert_eq!(probe.name(), "http://s0:8000/v1");
            // While the probe runs, others go elsewhere.
            assert_eq!(s.pick(t).name(), "http://s1:8000/v1");
            probe.report(Outcome::Failed, t);
        }
        assert_eq!(delays, [5, 10, 20, 40, 60, 60]);
        t = s.list[0].health.lock().out_until.unwrap();
        let mut probe = s.pick(t);
        assert!(probe.is_probe());
        probe.report(Outcome::Answered, t);
        drop(probe);
        assert!(!s.list[0].is_out(t));
        assert!(!s.pick(t).is_probe());
    }

    /// Rule 5: all out: the one back first, never nothing.
    #[test]
    fn rule5_all_out_goes_to_the_first_due() {
        let s = servers(2);
        let t = Instant::now();
        for _ in 0..FAILS_TO_TAKE_OUT {
            let mut p = s.pick(t);
            p.report(Outcome::Failed, t);
            let mut q = s.pick(t);
            q.report(Outcome::Failed, t);
        }
        assert!(s.list.iter().all(|x| x.is_out(t)));
        // s1 went out later (a second after): s0 is due first.
        s.list[1].health.lock().out_until = Some(t + FIRST_PROBE_DELAY + Duration::from_secs(1));
        assert_eq!(s.pick(t).name(), "http://s0:8000/v1");
        assert!(!s.other_healthy("http://s0:8000/v1", t));
    }

    /// Rule 6: in flight until dropped; a probe dropped without an outcome
    /// (cancelled) lets the next request probe.
    #[test]
    fn rule6_picks_are_released_when_dropped() {
        let s = servers(1);
        let t = Instant::now();
        for _ in 0..FAILS_TO_TAKE_OUT {
            fail(&s, t);
        }
        assert_eq!(s.list[0].health.lock().in_flight, 0);
        let later = t + FIRST_PROBE_DELAY;
        let probe = s.pick(later);
        assert!(probe.is_probe());
        drop(probe);
        assert!(s.pick(later).is_probe(), "the next request probes");
        assert_eq!(s.list[0].health.lock().in_flight, 0);
    }

    /// Rule 7: no user info, query or fragment in a name.
    #[test]
    fn rule7_names_carry_no_credentials() {
        let u =
            url::Url::parse("https://user:secret@h:8443/v1/chat/completions?key=abc#f").unwrap();
        let s = Servers::private([&u]);
        let p = s.pick(Instant::now());
        assert_eq!(p.name(), "https://h:8443/v1");
        assert_eq!(p.url(), &u);
    }
}
