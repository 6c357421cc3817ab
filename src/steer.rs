// SPDX-License-Identifier: MPL-2.0
//! What can change while the element runs: the caption prompts, the gate's
//! settings and the `events` list. Plain Rust, free of GStreamer types.
//!
//! ## Rules
//! 1. **Versions.** The prompts (`prompt`, `system-prompt`) form one
//!    immutable version ([`Prompts`]) with an id: 0 for those the session
//!    was built with, +1 for every change. A request takes one version as a
//!    whole, so it is never made with half of one change and half of
//!    another (no torn prompt).
//! 2. **When a change applies.** A chunk takes the version current when a
//!    worker starts it ([`Steering::start_chunk`]): a change applies from the
//!    next chunk not yet sent; chunks already sent keep theirs. Every record
//!    carries the id (`prompt-id`).
//! 3. **Version 0 is the backend's own.** Only a changed version (id > 0)
//!    is handed to the backend as an override, so a session that is never
//!    steered sends exactly what it sent before.
//! 4. **Gate decisions** are made in [`Steering::start_chunk`] too, in chunk
//!    order (it is called under the caption pool's lock as each job
//!    starts), with the gate settings current then ([`crate::gate`]).
//!    [`Steering::reset`] (flush, new run) forgets the reference.
//! 5. **Events.** [`Steering::set_events`] replaces the list the event check
//!    reads for each caption whose check starts later, and returns the old
//!    list (for whoever must close what removed events left open).

use std::sync::Arc;

use parking_lot::Mutex;

use crate::gate::{ChunkFacts, Decision, Gate, GateConfig, Why};

/// One version of the caption prompts (rule 1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prompts {
    pub id: u64,
    pub prompt: String,
    /// `None`: no system message.
    pub system_prompt: Option<String>,
}

/// What a chunk takes when a worker starts it (rules 2–4).
#[derive(Clone, Debug)]
pub struct Started {
    pub decision: Decision,
    pub prompts: Arc<Prompts>,
}

impl Started {
    /// The override for the backend (rule 3).
    pub fn override_prompts(&self) -> Option<Arc<Prompts>> {
        (self.prompts.id > 0).then(|| self.prompts.clone())
    }
}

/// Shared by the element (which sets), the dispatcher (which starts
/// chunks) and the event check (which reads `events`).
pub struct Steering {
    prompts: Mutex<Arc<Prompts>>,
    gate: Mutex<(Gate, GateConfig)>,
    events: Mutex<Arc<Vec<String>>>,
}

impl Steering {
    /// Version 0: the prompts the backend was built with.
    pub fn new(prompt: String, system_prompt: Option<String>, events: Vec<String>) -> Steering {
        Steering {
            prompts: Mutex::new(Arc::new(Prompts {
                id: 0,
                prompt,
                system_prompt,
            })),
            gate: Mutex::new((Gate::default(), GateConfig::default())),
            events: Mutex::new(Arc::new(events)),
        }
    }

    /// The version in effect.
    pub fn prompts(&self) -> Arc<Prompts> {
        self.prompts.lock().clone()
    }

    /// A new version with `prompt` and/or `system_prompt` changed (`None`:
    /// unchanged); `None` when nothing changed.
    pub fn set_prompts(
        &self,
        prompt: Option<String>,
        system_prompt: Option<Option<String>>,
    ) -> Option<Arc<Prompts>> {
        let mut p = self.prompts.lock();
        let next = Prompts {
            id: p.id + 1,
            prompt: prompt.unwrap_or_else(|| p.prompt.clone()),
            system_prompt: system_prompt.unwrap_or_else(|| p.system_prompt.clone()),
        };
        if next.prompt == p.prompt && next.system_prompt == p.system_prompt {
            return None;
        }
        *p = Arc::new(next);
        Some(p.clone())
    }

    /// The gate's settings from now on (checked, rule 11 of [`crate::gate`]).
    pub fn set_gate(&self, cfg: GateConfig) {
        self.gate.lock().1 = cfg.checked();
    }

    pub fn gate_config(&self) -> GateConfig {
        self.gate.lock().1.clone()
    }

    /// Whether `trigger-classes` is set (asked for every video buffer:
    /// no copy of the configuration).
    pub fn triggers_on(&self) -> bool {
        !self.gate.lock().1.trigger_classes.is_empty()
    }

    /// Rule 4: a flush or a new run.
    pub fn reset(&self) {
        self.gate.lock().0.reset();
    }

    /// Rules 2 and 4: a worker starts this chunk.
    pub fn start_chunk(&self, facts: Option<&ChunkFacts>) -> Started {
        let decision = {
            let mut g = self.gate.lock();
            let (gate, cfg) = &mut *g;
            match facts {
                Some(f) => gate.decide(cfg, f),
                None => Decision::Caption(Why::Always),
            }
        };
        Started {
            decision,
            prompts: self.prompts(),
        }
    }

    /// Rule 5: returns the previous list.
    pub fn set_events(&self, events: Vec<String>) -> Arc<Vec<String>> {
        std::mem::replace(&mut *self.events.lock(), Arc::new(events))
    }

    pub fn events(&self) -> Arc<Vec<String>> {
        self.events.lock().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rules 1 and 3: versions are whole and numbered; version 0 is not an
    /// override; an identical set makes no version.
    #[test]
    fn rule1_and_3_versions() {
        let s = Steering::new("p0".into(), None, vec![]);
        let a = s.start_chunk(None);
        assert_eq!(a.prompts.id, 0);
        assert!(a.override_prompts().is_none());
        let v = s.set_prompts(Some("p1".into()), None).unwrap();
        assert_eq!((v.id, v.prompt.as_str()), (1, "p1"));
        assert!(s.set_prompts(Some("p1".into()), None).is_none());
        let v = s.set_prompts(None, Some(Some("sys".into()))).unwrap();
        assert_eq!(v.id, 2);
        assert_eq!(v.prompt, "p1");
        assert_eq!(
            s.start_chunk(None)
                .override_prompts()
                .unwrap()
                .system_prompt,
            Some("sys".into())
        );
    }

    /// Rule 2: a started chunk keeps its version; the next takes the new one.
    #[test]
    fn rule2_started_chunks_keep_their_version() {
        let s = Steering::new("p0".into(), None, vec![]);
        let first = s.start_chunk(None);
        s.set_prompts(Some("p1".into()), None);
        assert_eq!(first.prompts.prompt, "p0");
        assert_eq!(s.start_chunk(None).prompts.prompt, "p1");
    }

    /// Rules 4: decisions in order with the settings current; reset forgets.
    #[test]
    fn rule4_gate_decisions_and_reset() {
        let s = Steering::new("p".into(), None, vec![]);
        s.set_gate(GateConfig {
            skip_unchanged: true,
            ..Default::default()
        });
        let f = |i| ChunkFacts {
            index: i,
            start: i as f64,
            thumbs: vec![crate::gate::Thumb {
                w: 8,
                h: 8,
                px: vec![0.0; 64],
            }],
            ..Default::default()
        };
        assert!(s.start_chunk(Some(&f(0))).decision.captioned());
        assert!(!s.start_chunk(Some(&f(1))).decision.captioned());
        s.reset();
        assert!(s.start_chunk(Some(&f(2))).decision.captioned());
        s.set_gate(GateConfig::default());
        assert!(s.start_chunk(Some(&f(3))).decision.captioned());
    }

    /// Rule 5: the list is replaced, the old one returned.
    #[test]
    fn rule5_events_are_replaced() {
        let s = Steering::new("p".into(), None, vec!["fire".into()]);
        let old = s.set_events(vec!["smoke".into()]);
        assert_eq!(*old, vec!["fire".to_string()]);
        assert_eq!(*s.events(), vec!["smoke".to_string()]);
    }
}
