// SPDX-License-Identifier: MPL-2.0
//! The Kafka client of `vssbrokersink` (rskafka, pure Rust), on a thread of
//! its own with a single-threaded tokio runtime.
//!
//! ## Rules
//! 1. Every record is produced with the stream-id as its key, to partition
//!    `murmur2(key) mod partitions` (the Java client's default partitioner,
//!    so other producers of the same key land in the same partition).
//!    A topic that does not exist is created with one partition
//!    (replication 1); create topics beforehand to choose otherwise.
//! 2. Records are produced in the outbox's order, one request at a time,
//!    consecutive records of the same partition in one request; each is
//!    acknowledged by all in-sync replicas (`acks=all`, rskafka's only
//!    mode) before the next request. A record leaves the outbox when its
//!    request succeeded.
//! 3. A request that fails or takes longer than [`REQUEST_TIMEOUT`] drops
//!    the connection; after reconnecting, the records in flight are
//!    produced again from the oldest (at least once: the broker may have
//!    stored them, counted in `resent`).
//! 4. Connection failures are retried with a backoff from 0.2 s doubling to
//!    5 s; SASL and TLS failures are reported as [`ClientEvent::Refused`],
//!    others as [`ClientEvent::Disconnected`], once per change of cause.
//! 5. A record the broker refuses for good (too large) leaves the outbox as
//!    failed and is reported.

use super::{BrokerUrl, ClientConfig, ClientEvent, Outbox, Reporter};
use rskafka::client::error::{Error as KafkaError, ProtocolError};
use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder, Credentials, SaslConfig};
use rskafka::record::Record;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Records handed to the client and not yet acknowledged at once.
pub const WINDOW: usize = 256;
/// The longest one produce (or connect, or metadata) request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Kafka's (the Java client's) murmur2 of a key.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let chunks = data.chunks_exact(4);
    let rest = chunks.remainder();
    for c in chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    match rest.len() {
        3 => {
            h ^= (rest[2] as u32) << 16;
            h ^= (rest[1] as u32) << 8;
            h ^= rest[0] as u32;
            h = h.wrapping_mul(M);
        }
        2 => {
            h ^= (rest[1] as u32) << 8;
            h ^= rest[0] as u32;
            h = h.wrapping_mul(M);
        }
        1 => {
            h ^= rest[0] as u32;
            h = h.wrapping_mul(M);
        }
        _ => {}
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition of a key among `n` (rule 1).
pub fn partition_for(key: &[u8], n: usize) -> i32 {
    ((murmur2(key) & 0x7fff_ffff) as usize % n.max(1)) as i32
}

pub struct KafkaClient {
    servers: Vec<String>,
    sasl: Option<SaslConfig>,
    tls: Option<Arc<rustls::ClientConfig>>,
    client_id: String,
    report: Reporter,
}

/// What went wrong with a request: refused for good (SASL/TLS) or not.
struct Problem {
    refused: bool,
    why: String,
}

fn problem(e: &KafkaError) -> Problem {
    let text = e.to_string();
    let lower = text.to_ascii_lowercase();
    let refused = lower.contains("sasl")
        || lower.contains("authentication")
        || lower.contains("tls")
        || lower.contains("certificate");
    Problem {
        refused,
        why: if refused {
            format!("the Kafka broker refused the connection ({text}): check username, password, sasl-mechanism and TLS")
        } else {
            format!("Kafka broker unreachable: {text}")
        },
    }
}

impl KafkaClient {
    pub fn new(cfg: &ClientConfig, report: Reporter) -> Result<Self, String> {
        let BrokerUrl::Kafka { servers } = &cfg.url else {
            return Err("not a Kafka URL".into());
        };
        let cr = &cfg.credentials;
        let sasl = match &cr.username {
            None => None,
            Some(u) => {
                let c = Credentials::new(u.clone(), cr.password.clone().unwrap_or_default());
                Some(match cr.sasl_mechanism.to_ascii_uppercase().as_str() {
                    "" | "PLAIN" => SaslConfig::Plain(c),
                    "SCRAM-SHA-256" => SaslConfig::ScramSha256(c),
                    "SCRAM-SHA-512" => SaslConfig::ScramSha512(c),
                    other => {
                        return Err(format!(
                            "sasl-mechanism '{other}': use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
                        ))
                    }
                })
            }
        };
        let tls = if cr.kafka_tls {
            Some(super::mqtt::tls_config(cr.ca_file.as_deref())?)
        } else {
            None
        };
        Ok(KafkaClient {
            servers: servers
                .iter()
                .map(|(h, p)| super::bootstrap(&[(h.clone(), *p)]))
                .collect(),
            sasl,
            tls,
            client_id: cfg.client_id.clone(),
            report,
        })
    }

    pub fn run(self, outbox: Arc<Outbox>, stop: Arc<AtomicBool>) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                (self.report)(ClientEvent::Disconnected(format!(
                    "cannot start the Kafka client's runtime: {e}"
                )));
                return;
            }
        };
        rt.block_on(self.main(outbox, stop));
    }

    async fn connect(&self) -> Result<Client, KafkaError> {
        let mut b = ClientBuilder::new(self.servers.clone())
            .max_message_size(32 * 1024 * 1024)
            .backoff_config(rskafka::BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(1),
                base: 2.0,
                deadline: Some(REQUEST_TIMEOUT),
            });
        if !self.client_id.is_empty() {
            b = b.client_id(self.client_id.clone());
        }
        if let Some(s) = &self.sasl {
            b = b.sasl_config(s.clone());
        }
        if let Some(t) = &self.tls {
            b = b.tls_config(t.clone());
        }
        b.build().await
    }

    async fn main(self, outbox: Arc<Outbox>, stop: Arc<AtomicBool>) {
        let mut last_problem = String::new();
        let mut backoff = Duration::from_millis(200);
        let mut connected = false;
        'connection: while !stop.load(Ordering::Acquire) {
            let client = match or_stop(&stop, self.connect()).await {
                None => break,
                Some(Ok(Ok(c))) => c,
                Some(Ok(Err(e))) => {
                    self.trouble(&mut last_problem, problem(&e), &mut connected);
                    sleep_or_stop(&stop, backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
                Some(Err(_)) => {
                    let p = Problem {
                        refused: false,
                        why: "Kafka broker unreachable: connection timed out".into(),
                    };
                    self.trouble(&mut last_problem, p, &mut connected);
                    sleep_or_stop(&stop, backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            outbox.rewind();
            let mut partitions: HashMap<String, usize> = HashMap::new();
            let mut clients: HashMap<(String, i32), PartitionClient> = HashMap::new();
            while !stop.load(Ordering::Acquire) {
                // The next run of records for one partition (rule 2).
                let Some(first) = outbox.next_to_send(Duration::from_millis(50)) else {
                    continue;
                };
                let n = match partitions.get(&first.topic) {
                    Some(n) => *n,
                    None => match self.topic_partitions(&client, &first.topic).await {
                        Ok(n) => {
                            partitions.insert(first.topic.clone(), n);
                            n
                        }
                        Err(p) => {
                            self.trouble(&mut last_problem, p, &mut connected);
                            sleep_or_stop(&stop, backoff).await;
                            backoff = (backoff * 2).min(Duration::from_secs(5));
                            continue 'connection;
                        }
                    },
                };
                let part = partition_for(first.key.as_bytes(), n);
                let mut batch = vec![first];
                while batch.len() < 100 {
                    let Some(m) = outbox.next_to_send(Duration::ZERO) else {
                        break;
                    };
                    let same =
                        m.topic == batch[0].topic && partition_for(m.key.as_bytes(), n) == part;
                    if !same {
                        outbox.rewind_one(m.seq);
                        break;
                    }
                    batch.push(m);
                }
                let key = (batch[0].topic.clone(), part);
                if !clients.contains_key(&key) {
                    match or_stop(
                        &stop,
                        client.partition_client(key.0.clone(), part, UnknownTopicHandling::Retry),
                    )
                    .await
                    {
                        None => break 'connection,
                        Some(Ok(Ok(pc))) => {
                            clients.insert(key.clone(), pc);
                        }
                        Some(Ok(Err(e))) => {
                            self.trouble(&mut last_problem, problem(&e), &mut connected);
                            continue 'connection;
                        }
                        Some(Err(_)) => continue 'connection,
                    }
                }
                let pc = &clients[&key];
                let records: Vec<Record> = batch
                    .iter()
                    .map(|m| Record {
                        key: Some(m.key.as_bytes().to_vec()),
                        value: Some(m.payload.clone()),
                        headers: BTreeMap::new(),
                        timestamp: now(),
                    })
                    .collect();
                match or_stop(&stop, pc.produce(records, Compression::NoCompression)).await {
                    None => break 'connection,
                    Some(Ok(Ok(_))) => {
                        for m in &batch {
                            outbox.ack(m.seq);
                        }
                        backoff = Duration::from_millis(200);
                        if !connected {
                            connected = true;
                            last_problem.clear();
                            (self.report)(ClientEvent::Connected);
                        }
                    }
                    Some(Ok(Err(KafkaError::ServerError {
                        protocol_error: ProtocolError::MessageTooLarge,
                        ..
                    }))) => {
                        for m in &batch {
                            outbox.fail(m.seq);
                        }
                        (self.report)(ClientEvent::Rejected(
                            "Kafka refused records as too large (message.max.bytes)".into(),
                        ));
                    }
                    Some(Ok(Err(e))) => {
                        self.trouble(&mut last_problem, problem(&e), &mut connected);
                        sleep_or_stop(&stop, backoff).await;
                        continue 'connection;
                    }
                    Some(Err(_)) => {
                        let p = Problem {
                            refused: false,
                            why: "Kafka produce request timed out".into(),
                        };
                        self.trouble(&mut last_problem, p, &mut connected);
                        continue 'connection;
                    }
                }
            }
        }
    }

    /// The partition count of `topic`, creating it when missing (rule 1).
    async fn topic_partitions(&self, client: &Client, topic: &str) -> Result<usize, Problem> {
        let find = |topics: Vec<rskafka::topic::Topic>| {
            topics
                .into_iter()
                .find(|t| t.name == topic)
                .map(|t| t.partitions.len().max(1))
        };
        let timed = |e: tokio::time::error::Elapsed| Problem {
            refused: false,
            why: format!("Kafka metadata request: {e}"),
        };
        let topics = tokio::time::timeout(REQUEST_TIMEOUT, client.list_topics())
            .await
            .map_err(timed)?
            .map_err(|e| problem(&e))?;
        if let Some(n) = find(topics) {
            return Ok(n);
        }
        let controller = client.controller_client().map_err(|e| problem(&e))?;
        let created =
            tokio::time::timeout(REQUEST_TIMEOUT, controller.create_topic(topic, 1, 1, 5_000))
                .await
                .map_err(timed)?;
        if let Err(e) = created {
            let exists = matches!(
                &e,
                KafkaError::ServerError {
                    protocol_error: ProtocolError::TopicAlreadyExists,
                    ..
                }
            );
            if !exists {
                return Err(problem(&e));
            }
        }
        let topics = tokio::time::timeout(REQUEST_TIMEOUT, client.list_topics())
            .await
            .map_err(timed)?
            .map_err(|e| problem(&e))?;
        Ok(find(topics).unwrap_or(1))
    }

    fn trouble(&self, last: &mut String, p: Problem, connected: &mut bool) {
        *connected = false;
        if *last == p.why {
            return;
        }
        *last = p.why.clone();
        (self.report)(if p.refused {
            ClientEvent::Refused(p.why)
        } else {
            ClientEvent::Disconnected(p.why)
        });
    }
}

fn now() -> rskafka::chrono::DateTime<rskafka::chrono::Utc> {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    rskafka::chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// Runs `fut` with [`REQUEST_TIMEOUT`]; `None` when asked to stop first.
async fn or_stop<F: std::future::Future>(
    stop: &AtomicBool,
    fut: F,
) -> Option<Result<F::Output, tokio::time::error::Elapsed>> {
    let watch = async {
        while !stop.load(Ordering::Acquire) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::select! {
        r = tokio::time::timeout(REQUEST_TIMEOUT, fut) => Some(r),
        _ = watch => None,
    }
}

async fn sleep_or_stop(stop: &AtomicBool, d: Duration) {
    let _ = or_stop(stop, tokio::time::sleep(d)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule1_murmur2_matches_the_java_client() {
        // Values of org.apache.kafka.common.utils.Utils.murmur2 (Kafka's
        // own test vectors, UtilsTest.testMurmur2).
        assert_eq!(murmur2(b"21"), -973932308);
        assert_eq!(murmur2(b"foobar"), -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1486304829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"),
            -58897971
        );
        assert_eq!(murmur2(b"abc"), 479470107);
        // One key, one partition; the partition is in range.
        for n in 1..10 {
            let p = partition_for(b"dock-4", n);
            assert!((0..n as i32).contains(&p));
            assert_eq!(p, partition_for(b"dock-4", n));
        }
    }
}
