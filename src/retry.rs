// SPDX-License-Identifier: MPL-2.0
//! One retry loop for the plugin's network clients: the openai-compat
//! captions and text LLM ([`crate::backend::openai`]) and the alert webhook
//! ([`crate::summary::webhook`]). Nothing here knows HTTP beyond the
//! `Retry-After` header, so a third client (the `hf:` downloader) can adopt
//! it as is: its attempt future returns an [`Attempt`].
//!
//! Rules:
//! 1. Each attempt says what it wants ([`Attempt`]): `Done` (a success, or a
//!    failure that repeating will not cure), `Retry` (a transient failure:
//!    spends one of `max_retries`), or `Wait` (try again after a delay the
//!    caller chose, *without* spending a retry: a failure with a budget of
//!    its own, e.g. a server that is still starting).
//! 2. The wait before retry `n` (1-based) is [`Backoff::first`] doubled
//!    `n - 1` times, capped at [`Backoff::max`]; a server's `Retry-After`
//!    replaces it, capped at [`Backoff::retry_after_cap`].
//! 3. When a `Retry` finds no retry left, the loop stops with that error and
//!    the number of attempts made ([`Stop::Exhausted`]); a `Done(Err)` stops
//!    it with [`Stop::Permanent`].
//! 4. Waits are `tokio::time::sleep`s: a caller cancels by dropping the
//!    future (`select!` on its token), and tests run on paused (virtual)
//!    time.
//!
//! Why not the `backon` crate: its builders count one kind of retry with one
//! backoff. The openai-compat client needs a second, time-bounded kind (rule
//! 1's `Wait`: refused connections while the server loads, bounded by
//! `server-wait` across all chunks, not by `max-retries`), a `Retry-After`
//! that replaces the backoff, and the attempt count for its error texts
//! ("gave up after N attempts"); wrapped around backon, each would be
//! state kept beside the loop. This module is that loop, in about sixty
//! lines.

use std::future::Future;
use std::time::Duration;

/// Backoff between attempts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Before the first retry; doubled for each further one …
    pub first: Duration,
    /// … up to this.
    pub max: Duration,
    /// A server's `Retry-After` is honoured up to this.
    pub retry_after_cap: Duration,
}

impl Default for Backoff {
    /// 0.5 s, 1 s, 2 s, 4 s, 8 s, 8 s …; `Retry-After` up to 60 s.
    fn default() -> Self {
        Backoff {
            first: Duration::from_millis(500),
            max: Duration::from_secs(8),
            retry_after_cap: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// The wait before retry `retry` (1-based), or the server's
    /// `retry_after` (capped) when it sent one.
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(ra) = retry_after {
            return ra.min(self.retry_after_cap);
        }
        let doubled = self
            .first
            .saturating_mul(1u32 << retry.saturating_sub(1).min(20));
        doubled.min(self.max)
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not used by the servers
/// we talk to): not a finite number ≥ 0 is ignored; capped at `cap`.
pub fn parse_retry_after(v: &str, cap: Duration) -> Option<Duration> {
    let s = v.trim().parse::<f64>().ok()?;
    if !(s.is_finite() && s >= 0.0) {
        return None;
    }
    Duration::try_from_secs_f64(s.min(cap.as_secs_f64())).ok()
}

/// The `Retry-After` of an answer's headers (see [`parse_retry_after`]).
pub fn retry_after(headers: &reqwest::header::HeaderMap, cap: Duration) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, cap))
}

/// What one attempt asks of the loop (rule 1).
#[derive(Debug)]
pub enum Attempt<T, E> {
    /// Finished: a success, or a failure that repeating will not cure.
    Done(Result<T, E>),
    /// A transient failure: try again after the backoff (or the server's
    /// `Retry-After`) while retries are left.
    Retry {
        error: E,
        retry_after: Option<Duration>,
    },
    /// Try again after this long without spending a retry.
    Wait(Duration),
}

/// Attempts so far, handed to each attempt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tries {
    /// Retries spent (of `max_retries`).
    pub retries: u32,
    /// [`Attempt::Wait`]s so far.
    pub waits: u32,
}

impl Tries {
    /// Attempts made, counting the one in progress.
    pub fn attempts(&self) -> u32 {
        self.retries + self.waits + 1
    }
}

/// Why the loop stopped without a success (rule 3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stop<E> {
    /// An attempt returned `Done(Err)`.
    Permanent(E),
    /// An attempt asked for a retry with none left; `attempts` were made in
    /// all (1 when `max_retries` is 0 and nothing waited).
    Exhausted { error: E, attempts: u32 },
}

/// Runs `attempt` until it is done, retrying as it asks (see the rules).
pub async fn run<T, E, F, Fut>(
    backoff: &Backoff,
    max_retries: u32,
    mut attempt: F,
) -> Result<T, Stop<E>>
where
    F: FnMut(Tries) -> Fut,
    Fut: Future<Output = Attempt<T, E>>,
{
    let mut tries = Tries::default();
    loop {
        match attempt(tries).await {
            Attempt::Done(Ok(v)) => return Ok(v),
            Attempt::Done(Err(e)) => return Err(Stop::Permanent(e)),
            Attempt::Wait(d) => {
                tries.waits += 1;
                tokio::time::sleep(d).await;
            }
            Attempt::Retry { error, retry_after } => {
                if tries.retries >= max_retries {
                    return Err(Stop::Exhausted {
                        error,
                        attempts: tries.attempts(),
                    });
                }
                tries.retries += 1;
                tokio::time::sleep(backoff.delay(tries.retries, retry_after)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tokio::time::Instant;

    const B: Backoff = Backoff {
        first: Duration::from_millis(500),
        max: Duration::from_secs(8),
        retry_after_cap: Duration::from_secs(60),
    };

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap()
    }

    /// Runs a scripted attempt sequence on virtual time; returns the result
    /// and the virtual instants (from the start) of each attempt.
    fn scripted(
        max_retries: u32,
        script: Vec<Attempt<u32, String>>,
    ) -> (Result<u32, Stop<String>>, Vec<Duration>) {
        rt().block_on(async move {
            let t0 = Instant::now();
            let at = Arc::new(Mutex::new(Vec::new()));
            let script = Arc::new(Mutex::new(script.into_iter()));
            let (at2, s2) = (at.clone(), script.clone());
            let r = run(&B, max_retries, move |_| {
                at2.lock().unwrap().push(t0.elapsed());
                let next = s2.lock().unwrap().next().expect("script too short");
                async move { next }
            })
            .await;
            let at = at.lock().unwrap().clone();
            (r, at)
        })
    }

    fn retry(e: &str) -> Attempt<u32, String> {
        Attempt::Retry {
            error: e.into(),
            retry_after: None,
        }
    }

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let d = |n| B.delay(n, None);
        assert_eq!(d(1), Duration::from_millis(500));
        assert_eq!(d(2), Duration::from_secs(1));
        assert_eq!(d(3), Duration::from_secs(2));
        assert_eq!(d(5), Duration::from_secs(8));
        assert_eq!(d(6), Duration::from_secs(8));
        assert_eq!(d(u32::MAX), Duration::from_secs(8));
        assert_eq!(
            B.delay(1, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        assert_eq!(
            B.delay(9, Some(Duration::from_secs(600))),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn retry_after_values() {
        let cap = Duration::from_secs(60);
        let p = |v| parse_retry_after(v, cap);
        assert_eq!(p(" 2 "), Some(Duration::from_secs(2)));
        assert_eq!(p("0.25"), Some(Duration::from_millis(250)));
        assert_eq!(p("3600"), Some(cap));
        assert_eq!(p("1e30"), Some(cap));
        for bad in [
            "1e400",
            "inf",
            "-inf",
            "nan",
            "-1",
            "Wed, 21 Oct 2015 07:28:00 GMT",
        ] {
            assert_eq!(p(bad), None, "{bad}");
        }
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&h, cap), None);
        h.insert(reqwest::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h, cap), Some(Duration::from_secs(7)));
    }

    #[test]
    fn retries_wait_the_backoff_on_virtual_time() {
        let (r, at) = scripted(
            3,
            vec![retry("a"), retry("b"), retry("c"), Attempt::Done(Ok(7))],
        );
        assert_eq!(r, Ok(7));
        assert_eq!(at, ms(&[0, 500, 1500, 3500]));
    }

    #[test]
    fn exhausted_retries_return_the_last_error_and_the_attempts() {
        let (r, at) = scripted(2, vec![retry("a"), retry("b"), retry("c")]);
        assert_eq!(
            r,
            Err(Stop::Exhausted {
                error: "c".into(),
                attempts: 3
            })
        );
        assert_eq!(at, ms(&[0, 500, 1500]));
        // No retries: one attempt, no wait.
        let (r, at) = scripted(0, vec![retry("only")]);
        assert_eq!(
            r,
            Err(Stop::Exhausted {
                error: "only".into(),
                attempts: 1
            })
        );
        assert_eq!(at, ms(&[0]));
    }

    #[test]
    fn retry_after_replaces_the_backoff_and_is_capped() {
        let (r, at) = scripted(
            2,
            vec![
                Attempt::Retry {
                    error: "429".into(),
                    retry_after: Some(Duration::from_secs(3)),
                },
                Attempt::Retry {
                    error: "429".into(),
                    retry_after: Some(Duration::from_secs(3600)),
                },
                Attempt::Done(Ok(1)),
            ],
        );
        assert_eq!(r, Ok(1));
        assert_eq!(at, ms(&[0, 3000, 63000]));
    }

    #[test]
    fn permanent_failures_stop_at_once() {
        let (r, at) = scripted(5, vec![retry("a"), Attempt::Done(Err("bad".into()))]);
        assert_eq!(r, Err(Stop::Permanent("bad".into())));
        assert_eq!(at, ms(&[0, 500]));
    }

    #[test]
    fn waits_spend_no_retry_but_count_as_attempts() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let (r, at) = rt().block_on(async move {
            let t0 = Instant::now();
            let mut at = Vec::new();
            let r = run(&B, 1, |tries| {
                at.push(t0.elapsed());
                s2.lock().unwrap().push(tries);
                async move {
                    match tries.attempts() {
                        1 | 2 => Attempt::Wait(Duration::from_millis(250)),
                        _ => Attempt::Retry {
                            error: "down".to_string(),
                            retry_after: None,
                        },
                    }
                }
            })
            .await;
            (r, at)
        });
        assert_eq!(
            r,
            Err::<(), _>(Stop::Exhausted {
                error: "down".into(),
                attempts: 4
            })
        );
        assert_eq!(at, ms(&[0, 250, 500, 1000]));
        let seen = seen.lock().unwrap();
        assert_eq!(
            seen[3],
            Tries {
                retries: 1,
                waits: 2
            }
        );
    }

    #[test]
    fn dropping_the_loop_cancels_its_wait() {
        rt().block_on(async {
            let cancel = tokio_util::sync::CancellationToken::new();
            let c2 = cancel.clone();
            let t0 = Instant::now();
            let r = tokio::select! {
                _ = cancel.cancelled() => None,
                r = run(&B, 10, |_| {
                    // Cancels during the first backoff.
                    c2.cancel();
                    async { retry("x") }
                }) => Some(r),
            };
            assert!(r.is_none());
            assert!(t0.elapsed() < B.first, "the backoff was not waited out");
        });
    }
}
