// SPDX-License-Identifier: MPL-2.0
//! `vssbrokersink`'s logic without GStreamer types: where records go
//! (broker URL, topic template, key), what is sent (record formats, see
//! [`format`](mod@format)), the bounded queue ([`outbox`]) and the clients ([`mqtt`],
//! [`kafka`]) that drain it on threads of their own.
//!
//! ## Rules
//! 1. `url` is `mqtt://host:port`, `mqtts://host:port` (TLS) or
//!    `kafka://host:port[,host:port…]`; the port defaults to 1883, 8883 and
//!    9092. Anything else (another scheme, a path, user info in the URL, an
//!    empty host) is refused with a message naming the expected forms:
//!    credentials are properties of their own, so that they never appear in
//!    a URL that is logged.
//! 2. `topic` is a template: `{stream-id}` and `{kind}` are replaced by the
//!    record's values; no other `{…}` is allowed. The default is
//!    `vss/{stream-id}/{kind}` for MQTT and `vss-{kind}` for Kafka (where
//!    the stream-id is the key).
//! 3. A replaced value cannot change the topic's structure: for MQTT `/`,
//!    `+`, `#` and NUL become `_`; for Kafka every character outside
//!    `[A-Za-z0-9._-]` becomes `_`, and a topic is cut to 249 bytes.
//! 4. A record is one JSON object per buffer (trailing newline allowed).
//!    Its `stream-id` and `kind` pick the topic; a record without them goes
//!    to stream-id `unknown` and kind `record`. A buffer that is not a JSON
//!    object is not published (counted as invalid).
//! 5. The Kafka key is the stream-id, so that one camera's records stay in
//!    one partition and in order.

pub mod format;
pub mod kafka;
pub mod mqtt;
pub mod outbox;

use std::fmt;
use std::sync::Arc;

pub use format::RecordFormat;
pub use outbox::{Message, Outbox, Overflow, Pushed, Stats};

/// Which protocol, and where (rule 1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BrokerUrl {
    Mqtt { host: String, port: u16, tls: bool },
    Kafka { servers: Vec<(String, u16)> },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("url '{url}': {why} (expected mqtt://host:port, mqtts://host:port or kafka://host:port[,host:port…])")]
pub struct UrlError {
    url: String,
    why: String,
}

fn url_error(url: &str, why: impl Into<String>) -> UrlError {
    // Never echo anything that looks like user info.
    let shown = match url.find('@') {
        Some(_) => "<redacted>".to_string(),
        None => url.chars().take(200).collect(),
    };
    UrlError {
        url: shown,
        why: why.into(),
    }
}

fn host_port(url: &str, part: &str, default_port: u16) -> Result<(String, u16), UrlError> {
    if part.is_empty() {
        return Err(url_error(url, "no host"));
    }
    let (host, port) = if let Some(rest) = part.strip_prefix('[') {
        // [v6]:port
        let Some(end) = rest.find(']') else {
            return Err(url_error(url, "unclosed '['"));
        };
        let host = &rest[..end];
        let after = &rest[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(url_error(url, "junk after ']'")),
        };
        (host.to_string(), port)
    } else {
        match part.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (part.to_string(), None),
        }
    };
    if host.is_empty() {
        return Err(url_error(url, "no host"));
    }
    if host
        .chars()
        .any(|c| c.is_whitespace() || "/?#@,".contains(c))
    {
        return Err(url_error(url, format!("bad host '{host}'")));
    }
    let port = match port {
        None => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(url_error(url, format!("bad port '{p}'"))),
        },
    };
    Ok((host, port))
}

impl BrokerUrl {
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        let url = url.trim();
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(url_error(url, "no scheme"));
        };
        if rest.contains('@') {
            return Err(url_error(
                url,
                "credentials go in the username/password properties, not in the URL",
            ));
        }
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') || rest.contains('?') || rest.contains('#') {
            return Err(url_error(url, "no path or query allowed"));
        }
        match scheme.to_ascii_lowercase().as_str() {
            "mqtt" | "mqtts" => {
                let tls = scheme.eq_ignore_ascii_case("mqtts");
                if rest.contains(',') {
                    return Err(url_error(url, "MQTT takes one host"));
                }
                let (host, port) = host_port(url, rest, if tls { 8883 } else { 1883 })?;
                Ok(BrokerUrl::Mqtt { host, port, tls })
            }
            "kafka" => {
                let servers = rest
                    .split(',')
                    .map(|p| host_port(url, p.trim(), 9092))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(BrokerUrl::Kafka { servers })
            }
            other => Err(url_error(url, format!("unknown scheme '{other}'"))),
        }
    }

    pub fn is_kafka(&self) -> bool {
        matches!(self, BrokerUrl::Kafka { .. })
    }

    /// The default topic template (rule 2).
    pub fn default_topic(&self) -> &'static str {
        match self {
            BrokerUrl::Mqtt { .. } => "vss/{stream-id}/{kind}",
            BrokerUrl::Kafka { .. } => "vss-{kind}",
        }
    }
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BrokerUrl::Mqtt { host, port, tls } => {
                let s = if *tls { "mqtts" } else { "mqtt" };
                if host.contains(':') {
                    write!(f, "{s}://[{host}]:{port}")
                } else {
                    write!(f, "{s}://{host}:{port}")
                }
            }
            BrokerUrl::Kafka { servers } => {
                write!(f, "kafka://{}", bootstrap(servers))
            }
        }
    }
}

/// `host:port,host:port` (IPv6 hosts in brackets).
pub fn bootstrap(servers: &[(String, u16)]) -> String {
    servers
        .iter()
        .map(|(h, p)| {
            if h.contains(':') {
                format!("[{h}]:{p}")
            } else {
                format!("{h}:{p}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A checked topic template (rules 2, 3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicTemplate {
    template: String,
    kafka: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("topic '{0}': {1} (placeholders: {{stream-id}}, {{kind}})")]
pub struct TopicError(String, String);

impl TopicTemplate {
    pub fn new(template: &str, kafka: bool) -> Result<Self, TopicError> {
        if template.is_empty() {
            return Err(TopicError(template.into(), "empty".into()));
        }
        let mut rest = template;
        while let Some(i) = rest.find('{') {
            let after = &rest[i..];
            let Some(j) = after.find('}') else {
                return Err(TopicError(template.into(), "unclosed '{'".into()));
            };
            let name = &after[1..j];
            if name != "stream-id" && name != "kind" {
                return Err(TopicError(
                    template.into(),
                    format!("unknown placeholder '{{{name}}}'"),
                ));
            }
            rest = &after[j + 1..];
        }
        if !kafka && (template.contains('+') || template.contains('#')) {
            return Err(TopicError(
                template.into(),
                "MQTT wildcards '+' and '#' cannot be published to".into(),
            ));
        }
        if kafka {
            let fixed = template.replace("{stream-id}", "").replace("{kind}", "");
            if let Some(c) = fixed.chars().find(|c| !kafka_char(*c)) {
                return Err(TopicError(
                    template.into(),
                    format!("'{c}' is not allowed in a Kafka topic ([A-Za-z0-9._-])"),
                ));
            }
        }
        Ok(TopicTemplate {
            template: template.to_string(),
            kafka,
        })
    }

    /// The topic of a record (rule 3).
    pub fn topic(&self, stream_id: &str, kind: &str) -> String {
        let clean = |v: &str| -> String {
            v.chars()
                .map(|c| {
                    let ok = if self.kafka {
                        kafka_char(c)
                    } else {
                        !matches!(c, '/' | '+' | '#' | '\0')
                    };
                    if ok {
                        c
                    } else {
                        '_'
                    }
                })
                .collect()
        };
        let mut t = self
            .template
            .replace("{stream-id}", &clean(stream_id))
            .replace("{kind}", &clean(kind));
        if self.kafka && t.len() > 249 {
            t.truncate(249);
        }
        t
    }
}

fn kafka_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// What the sink needs of a record (rule 4).
#[derive(Clone, Debug, PartialEq)]
pub struct Parsed {
    pub stream_id: String,
    pub kind: String,
    pub value: serde_json::Value,
}

/// Reads one buffer's record (rule 4); `None` when it is not a JSON object.
pub fn parse_record(bytes: &[u8]) -> Option<Parsed> {
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let obj = value.as_object()?;
    let field = |k: &str, default: &str| {
        obj.get(k)
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .unwrap_or(default)
            .to_string()
    };
    Some(Parsed {
        stream_id: field("stream-id", "unknown"),
        kind: field("kind", "record"),
        value,
    })
}

/// The topic, key and payload of a record (rules 2-5).
pub fn prepare(
    rec: &Parsed,
    raw: &[u8],
    topic: &TopicTemplate,
    format: RecordFormat,
) -> (String, String, Vec<u8>) {
    (
        topic.topic(&rec.stream_id, &rec.kind),
        rec.stream_id.clone(),
        format::payload(format, raw, &rec.value),
    )
}

/// Secrets and TLS settings the clients need; `Debug` shows no secret.
#[derive(Clone, Default)]
pub struct Credentials {
    pub username: Option<String>,
    pub password: Option<String>,
    /// PEM file of the CA(s) to trust instead of the system's.
    pub ca_file: Option<String>,
    /// Kafka: speak TLS (`SSL` / `SASL_SSL`).
    pub kafka_tls: bool,
    /// Kafka SASL mechanism when a username is set (`PLAIN`,
    /// `SCRAM-SHA-256`, `SCRAM-SHA-512`).
    pub sasl_mechanism: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username.as_ref().map(|_| "<set>"))
            .field("password", &self.password.as_ref().map(|_| "<set>"))
            .field("ca_file", &self.ca_file)
            .field("kafka_tls", &self.kafka_tls)
            .field("sasl_mechanism", &self.sasl_mechanism)
            .finish()
    }
}

/// Delivery settings shared by the clients.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub url: BrokerUrl,
    pub credentials: Credentials,
    /// MQTT QoS (0 or 1); Kafka always waits for all in-sync replicas.
    pub qos: i32,
    /// MQTT client id (empty: derived from the element name).
    pub client_id: String,
}

/// What the clients report (the element posts it on the bus).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientEvent {
    Connected,
    /// Lost or could not reach the broker; the client keeps trying.
    Disconnected(String),
    /// The broker refused the credentials (or TLS failed): the client keeps
    /// trying but will not succeed without a change.
    Refused(String),
    /// A record was rejected for good.
    Rejected(String),
}

/// Where the clients report [`ClientEvent`]s.
pub type Reporter = Arc<dyn Fn(ClientEvent) + Send + Sync>;

/// A running client: stops (and joins its thread) on drop.
pub struct Client {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Client {
    /// Starts the client for `cfg.url` draining `outbox`.
    pub fn start(cfg: ClientConfig, outbox: Arc<Outbox>, report: Reporter) -> Result<Self, String> {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let name = match cfg.url {
            BrokerUrl::Mqtt { .. } => "vss-mqtt",
            BrokerUrl::Kafka { .. } => "vss-kafka",
        };
        let thread = match cfg.url {
            BrokerUrl::Mqtt { .. } => {
                let c = mqtt::MqttClient::new(&cfg)?;
                std::thread::Builder::new()
                    .name(name.into())
                    .spawn(move || c.run(outbox, report, s))
            }
            BrokerUrl::Kafka { .. } => {
                let c = kafka::KafkaClient::new(&cfg, report)?;
                std::thread::Builder::new()
                    .name(name.into())
                    .spawn(move || c.run(outbox, s))
            }
        }
        .map_err(|e| format!("cannot start the {name} thread: {e}"))?;
        Ok(Client {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule1_urls() {
        assert_eq!(
            BrokerUrl::parse("mqtt://127.0.0.1:1999").unwrap(),
            BrokerUrl::Mqtt {
                host: "127.0.0.1".into(),
                port: 1999,
                tls: false
            }
        );
        assert_eq!(
            BrokerUrl::parse("mqtts://broker.example").unwrap(),
            BrokerUrl::Mqtt {
                host: "broker.example".into(),
                port: 8883,
                tls: true
            }
        );
        assert_eq!(
            BrokerUrl::parse("kafka://a:1,b,[::1]:3").unwrap(),
            BrokerUrl::Kafka {
                servers: vec![("a".into(), 1), ("b".into(), 9092), ("::1".into(), 3)]
            }
        );
        for bad in [
            "http://x",
            "mqtt://",
            "mqtt://h:0",
            "mqtt://h:99999",
            "mqtt://h/path",
            "mqtt://a,b",
            "kafka://a,,b",
            "x",
        ] {
            assert!(BrokerUrl::parse(bad).is_err(), "{bad}");
        }
        let e = BrokerUrl::parse("mqtt://user:s3cret@h").unwrap_err();
        assert!(!e.to_string().contains("s3cret"), "{e}");
        assert!(e.to_string().contains("username/password"), "{e}");
    }

    #[test]
    fn rule2_template_placeholders_and_defaults() {
        let t = TopicTemplate::new("site/{stream-id}/{kind}", false).unwrap();
        assert_eq!(t.topic("cam1", "caption"), "site/cam1/caption");
        assert!(TopicTemplate::new("x/{camera}", false).is_err());
        assert!(TopicTemplate::new("x/{kind", false).is_err());
        assert!(TopicTemplate::new("x/#", false).is_err());
        assert!(TopicTemplate::new("a/b", true).is_err(), "'/' in Kafka");
        let m = BrokerUrl::parse("mqtt://h").unwrap();
        let k = BrokerUrl::parse("kafka://h").unwrap();
        assert_eq!(m.default_topic(), "vss/{stream-id}/{kind}");
        assert_eq!(k.default_topic(), "vss-{kind}");
        assert!(TopicTemplate::new(k.default_topic(), true).is_ok());
    }

    #[test]
    fn rule3_values_cannot_change_the_topic_structure() {
        let t = TopicTemplate::new("vss/{stream-id}/{kind}", false).unwrap();
        assert_eq!(t.topic("a/+#b", "caption"), "vss/a___b/caption");
        let k = TopicTemplate::new("vss-{stream-id}", true).unwrap();
        assert_eq!(k.topic("cam 1/ü", "x"), "vss-cam_1__");
        assert_eq!(k.topic(&"x".repeat(400), "k").len(), 249);
    }

    #[test]
    fn rule4_records() {
        let p =
            parse_record(b"{\"kind\":\"alert\",\"stream-id\":\"c1\",\"chunk-index\":3}\n").unwrap();
        assert_eq!((p.stream_id.as_str(), p.kind.as_str()), ("c1", "alert"));
        let p = parse_record(b"{\"text\":\"x\"}").unwrap();
        assert_eq!(
            (p.stream_id.as_str(), p.kind.as_str()),
            ("unknown", "record")
        );
        assert!(parse_record(b"[1,2]").is_none());
        assert!(parse_record(b"caption text").is_none());
    }

    #[test]
    fn rule5_the_key_is_the_stream_id() {
        let raw = b"{\"kind\":\"caption\",\"stream-id\":\"dock/4\",\"chunk-index\":1}\n";
        let rec = parse_record(raw).unwrap();
        let t = TopicTemplate::new("vss-{kind}", true).unwrap();
        let (topic, key, payload) = prepare(&rec, raw, &t, RecordFormat::Json);
        assert_eq!(topic, "vss-caption");
        assert_eq!(key, "dock/4", "the key is the stream-id as it is");
        assert_eq!(payload, raw[..raw.len() - 1].to_vec());
    }

    #[test]
    fn credentials_debug_shows_no_secret() {
        let c = Credentials {
            username: Some("operator".into()),
            password: Some("hunter2".into()),
            ..Default::default()
        };
        let d = format!("{c:?}");
        assert!(!d.contains("hunter2") && !d.contains("operator"), "{d}");
    }
}
