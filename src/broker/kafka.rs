// SPDX-License-Identifier: MPL-2.0
//! The Kafka client of `vssbrokersink` (rdkafka over Debian's librdkafka),
//! on a thread of its own.
//!
//! ## Rules
//! 1. Every record is produced with the stream-id as its key; librdkafka
//!    keeps it until the broker acknowledged it (`acks`: 1 by default, -1 =
//!    all in-sync replicas, 0 = none) and retries without a time limit
//!    (`message.timeout.ms=0`), one request in flight per connection so that
//!    a retry cannot reorder a stream's records. A record leaves the
//!    outbox on its delivery report.
//! 2. A record the broker refuses for good (too large, not authorized for
//!    the topic…) leaves the outbox as failed and is reported.
//! 3. librdkafka's own queue is the outbox's window: at most
//!    [`WINDOW`] records are handed to it at once.
//! 4. Authentication failures are reported as [`ClientEvent::Refused`],
//!    an unreachable cluster as [`ClientEvent::Disconnected`], once per
//!    change; the first delivery after either reports `Connected`.

use super::{bootstrap, BrokerUrl, ClientConfig, ClientEvent, Outbox, Reporter};
use rdkafka::config::ClientConfig as KafkaConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Records handed to librdkafka and not yet reported at once.
pub const WINDOW: usize = 1000;
const MAX_MESSAGE: usize = 16 * 1024 * 1024;

pub struct Context {
    outbox: Arc<Outbox>,
    report: Reporter,
    /// Last reported state: 0 unknown, 1 connected, 2 problem.
    state: parking_lot::Mutex<(u8, String)>,
}

impl Context {
    fn problem(&self, refused: bool, why: String) {
        let mut s = self.state.lock();
        if s.0 == 2 && s.1 == why {
            return;
        }
        *s = (2, why.clone());
        drop(s);
        (self.report)(if refused {
            ClientEvent::Refused(why)
        } else {
            ClientEvent::Disconnected(why)
        });
    }
}

impl ClientContext for Context {
    fn log(&self, _level: rdkafka::config::RDKafkaLogLevel, _fac: &str, _msg: &str) {
        // Errors reach `error` below; librdkafka's log lines are not ours to
        // print (they can name the SASL user).
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let code = error.rdkafka_error_code();
        let refused = matches!(
            code,
            Some(RDKafkaErrorCode::Authentication)
                | Some(RDKafkaErrorCode::SaslAuthenticationFailed)
                | Some(RDKafkaErrorCode::SSL)
        );
        let why = if refused {
            format!("the Kafka broker refused the connection ({error}): check username, password, sasl-mechanism and TLS")
        } else {
            format!(
                "Kafka: {error}: {}",
                reason.chars().take(300).collect::<String>()
            )
        };
        self.problem(refused, why);
    }
}

impl ProducerContext for Context {
    type DeliveryOpaque = usize;

    fn delivery(&self, r: &DeliveryResult<'_>, seq: usize) {
        match r {
            Ok(_) => {
                self.outbox.ack(seq as u64);
                let mut s = self.state.lock();
                if s.0 != 1 {
                    *s = (1, String::new());
                    drop(s);
                    (self.report)(ClientEvent::Connected);
                }
            }
            Err((e, _)) => {
                self.outbox.fail(seq as u64);
                (self.report)(ClientEvent::Rejected(format!(
                    "Kafka rejected a record: {e}"
                )));
            }
        }
    }
}

pub struct KafkaClient {
    producer: BaseProducer<Context>,
}

impl KafkaClient {
    pub fn new(cfg: &ClientConfig, outbox: Arc<Outbox>, report: Reporter) -> Result<Self, String> {
        let BrokerUrl::Kafka { servers } = &cfg.url else {
            return Err("not a Kafka URL".into());
        };
        let acks = match cfg.qos {
            0 => "0",
            1 => "1",
            -1 => "all",
            q => return Err(format!("qos {q}: Kafka acks are 0, 1 or -1 (all)")),
        };
        let mut c = KafkaConfig::new();
        c.set("bootstrap.servers", bootstrap(servers))
            .set("acks", acks)
            .set("message.timeout.ms", "0")
            .set("max.in.flight.requests.per.connection", "1")
            .set("retry.backoff.ms", "200")
            .set("reconnect.backoff.ms", "200")
            .set("reconnect.backoff.max.ms", "5000")
            .set("linger.ms", "5")
            .set("queue.buffering.max.messages", (WINDOW * 2).to_string())
            .set("message.max.bytes", (MAX_MESSAGE + 64 * 1024).to_string());
        if !cfg.client_id.is_empty() {
            c.set("client.id", &cfg.client_id);
        }
        let cr = &cfg.credentials;
        let sasl = cr.username.is_some();
        let protocol = match (sasl, cr.kafka_tls) {
            (false, false) => "plaintext",
            (false, true) => "ssl",
            (true, false) => "sasl_plaintext",
            (true, true) => "sasl_ssl",
        };
        c.set("security.protocol", protocol);
        if let Some(u) = &cr.username {
            let mech = if cr.sasl_mechanism.is_empty() {
                "PLAIN"
            } else {
                &cr.sasl_mechanism
            };
            c.set("sasl.mechanism", mech)
                .set("sasl.username", u)
                .set("sasl.password", cr.password.clone().unwrap_or_default());
        }
        if let Some(ca) = &cr.ca_file {
            c.set("ssl.ca.location", ca);
        }
        let ctx = Context {
            outbox,
            report,
            state: parking_lot::Mutex::new((0, String::new())),
        };
        // librdkafka's configuration errors name the property, never its
        // value.
        let producer = c
            .create_with_context(ctx)
            .map_err(|e: KafkaError| format!("Kafka client: {e}"))?;
        Ok(KafkaClient { producer })
    }

    pub fn run(self, outbox: Arc<Outbox>, stop: Arc<AtomicBool>) {
        while !stop.load(Ordering::Acquire) {
            while let Some(m) = outbox.next_to_send(Duration::ZERO) {
                let rec = BaseRecord::with_opaque_to(&m.topic, m.seq as usize)
                    .key(&m.key)
                    .payload(&m.payload);
                if let Err((e, _)) = self.producer.send(rec) {
                    if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) {
                        outbox.rewind_one(m.seq);
                        break;
                    }
                    outbox.fail(m.seq);
                    (self.producer.context().report)(ClientEvent::Rejected(format!(
                        "Kafka refused a record: {e}"
                    )));
                }
            }
            self.producer.poll(Duration::from_millis(50));
        }
        // Records librdkafka still holds stay counted in the outbox; give
        // it a moment to finish what is on the wire.
        let _ = self.producer.flush(Duration::from_millis(500));
    }
}
