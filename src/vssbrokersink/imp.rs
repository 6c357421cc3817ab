// SPDX-License-Identifier: MPL-2.0
//! GStreamer glue of `vssbrokersink`: properties, `render` (parse, queue),
//! EOS (wait for delivery), bus messages. Queueing and delivery live in
//! [`crate::broker`].
//!
//! Threads: `render` runs on `summary_src`'s task and only queues (it waits
//! only with `overflow=block`); the client runs on a thread of its own and
//! posts its bus messages from there.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::prelude::*;
use parking_lot::Mutex;

use super::{FormatProp, OverflowProp};
use crate::broker::{
    self, BrokerUrl, Client, ClientConfig, ClientEvent, Credentials, Outbox, Overflow, Pushed,
    RecordFormat, TopicTemplate,
};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "vssbrokersink",
        gst::DebugColorFlags::empty(),
        Some("Publishes vsssummarize records to MQTT or Kafka"),
    )
});

const DEFAULT_MAX_QUEUED: u32 = 10_000;
const DEFAULT_EOS_TIMEOUT: u32 = 30;
/// The most overflow warnings posted: one per this interval.
const OVERFLOW_WARNING_EVERY: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
struct Settings {
    url: String,
    topic: String,
    format: FormatProp,
    qos: i32,
    username: Option<String>,
    password: Option<String>,
    ca_file: Option<String>,
    tls: bool,
    sasl_mechanism: String,
    client_id: String,
    max_queued: u32,
    overflow: OverflowProp,
    eos_timeout: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            url: String::new(),
            topic: String::new(),
            format: FormatProp::Json,
            qos: 1,
            username: None,
            password: None,
            ca_file: None,
            tls: false,
            sasl_mechanism: "PLAIN".into(),
            client_id: String::new(),
            max_queued: DEFAULT_MAX_QUEUED,
            overflow: OverflowProp::DropOldest,
            eos_timeout: DEFAULT_EOS_TIMEOUT,
        }
    }
}

struct Running {
    outbox: Arc<Outbox>,
    topic: TopicTemplate,
    format: RecordFormat,
    /// Dropped first, so the client stops before the outbox goes.
    client: Option<Client>,
}

#[derive(Default)]
pub struct VssBrokerSink {
    settings: Mutex<Settings>,
    running: Mutex<Option<Arc<Mutex<Running>>>>,
    /// Outbox of the current (or last) run, for `stats`.
    outbox: Mutex<Option<Arc<Outbox>>>,
    invalid: AtomicU64,
    connected: Arc<AtomicBool>,
    last_overflow_warning: Mutex<Option<Instant>>,
}

#[glib::object_subclass]
impl ObjectSubclass for VssBrokerSink {
    const NAME: &'static str = "GstVssBrokerSink";
    type Type = super::VssBrokerSink;
    type ParentType = gst_base::BaseSink;
}

impl ObjectImpl for VssBrokerSink {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPS: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecString::builder("url")
                    .nick("Broker URL")
                    .blurb("mqtt://host:port, mqtts://host:port or kafka://host:port[,host:port…]")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("topic")
                    .nick("Topic template")
                    .blurb("Topic with {stream-id} and {kind}; empty: vss/{stream-id}/{kind} (MQTT), vss-{kind} (Kafka)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("format", FormatProp::Json)
                    .nick("Record format")
                    .blurb("json: the record as sent; nvidia: NVIDIA's VisionLLM message as JSON")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecInt::builder("qos")
                    .nick("QoS / acks")
                    .blurb("MQTT QoS (0 or 1); Kafka always uses acks=all")
                    .minimum(0)
                    .maximum(1)
                    .default_value(1)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("username")
                    .nick("User name")
                    .blurb("MQTT user name or Kafka SASL user (write-only)")
                    .write_only()
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("password")
                    .nick("Password")
                    .blurb("MQTT password or Kafka SASL password (write-only, never logged)")
                    .write_only()
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("ca-file")
                    .nick("CA file")
                    .blurb("PEM file of the CAs to trust for TLS (default: the system's)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("tls")
                    .nick("Kafka TLS")
                    .blurb("Kafka over TLS (MQTT: use mqtts://)")
                    .default_value(false)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("sasl-mechanism")
                    .nick("Kafka SASL mechanism")
                    .blurb("PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (with username)")
                    .default_value(Some("PLAIN"))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("client-id")
                    .nick("Client id")
                    .blurb("MQTT client id / Kafka client id (empty: vssbrokersink-<pid>-<n>-<name>, unique in the process)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("max-queued")
                    .nick("Max queued records")
                    .blurb("Records held while the broker is away (queued and in flight)")
                    .minimum(1)
                    .maximum(10_000_000)
                    .default_value(DEFAULT_MAX_QUEUED)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("overflow", OverflowProp::DropOldest)
                    .nick("Overflow policy")
                    .blurb("When max-queued records are held: drop-oldest, drop-newest or block")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("eos-timeout")
                    .nick("EOS timeout")
                    .blurb("Seconds EOS waits for every record to be delivered (0: forever)")
                    .default_value(DEFAULT_EOS_TIMEOUT)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                    .nick("Statistics")
                    .blurb("received, delivered, dropped, failed, resent, held, high-water, invalid, connected")
                    .read_only()
                    .build(),
            ]
        });
        PROPS.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = self.settings.lock();
        let opt = |v: &glib::Value| -> Option<String> {
            v.get::<Option<String>>()
                .ok()
                .flatten()
                .filter(|s| !s.is_empty())
        };
        match pspec.name() {
            "url" => s.url = opt(value).unwrap_or_default(),
            "topic" => s.topic = opt(value).unwrap_or_default(),
            "format" => s.format = value.get().expect("type checked"),
            "qos" => s.qos = value.get().expect("type checked"),
            "username" => s.username = opt(value),
            "password" => s.password = opt(value),
            "ca-file" => s.ca_file = opt(value),
            "tls" => s.tls = value.get().expect("type checked"),
            "sasl-mechanism" => s.sasl_mechanism = opt(value).unwrap_or_else(|| "PLAIN".into()),
            "client-id" => s.client_id = opt(value).unwrap_or_default(),
            "max-queued" => s.max_queued = value.get().expect("type checked"),
            "overflow" => s.overflow = value.get().expect("type checked"),
            "eos-timeout" => s.eos_timeout = value.get().expect("type checked"),
            // Secrets never reach the log, nor does anything else set here.
            other => gst::warning!(CAT, imp = self, "unknown property {other}"),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = self.settings.lock();
        match pspec.name() {
            "url" => s.url.to_value(),
            "topic" => s.topic.to_value(),
            "format" => s.format.to_value(),
            "qos" => s.qos.to_value(),
            "ca-file" => s.ca_file.to_value(),
            "tls" => s.tls.to_value(),
            "sasl-mechanism" => s.sasl_mechanism.to_value(),
            "client-id" => s.client_id.to_value(),
            "max-queued" => s.max_queued.to_value(),
            "overflow" => s.overflow.to_value(),
            "eos-timeout" => s.eos_timeout.to_value(),
            "stats" => {
                drop(s);
                self.stats().to_value()
            }
            // Write-only properties cannot be read (GLib refuses first).
            _ => None::<String>.to_value(),
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        // Records of a live stream arrive a model's latency after their
        // timestamps: never wait for the clock, and never hold the pipeline's
        // state change for the first record.
        obj.set_sync(false);
        obj.set_async(false);
    }
}

impl GstObjectImpl for VssBrokerSink {}

impl ElementImpl for VssBrokerSink {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static M: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "VSS broker sink",
                "Sink/Network",
                "Publishes vsssummarize's records to MQTT or Kafka, queued while the broker is away",
                "The vsssummarize team",
            )
        });
        Some(&*M)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static T: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            vec![gst::PadTemplate::new(
                "sink",
                gst::PadDirection::Sink,
                gst::PadPresence::Always,
                &gst::Caps::builder("application/x-json").build(),
            )
            .expect("valid template")]
        });
        T.as_ref()
    }
}

impl VssBrokerSink {
    fn stats(&self) -> gst::Structure {
        let st = self
            .outbox
            .lock()
            .as_ref()
            .map(|o| o.stats())
            .unwrap_or_default();
        gst::Structure::builder("vss-broker-stats")
            .field("received", st.received)
            .field("delivered", st.delivered)
            .field("dropped", st.dropped)
            .field("failed", st.failed)
            .field("resent", st.resent)
            .field("held", st.held)
            .field("high-water", st.high_water)
            .field("invalid", self.invalid.load(Ordering::Relaxed))
            .field("connected", self.connected.load(Ordering::Relaxed))
            .build()
    }

    fn running(&self) -> Option<Arc<Mutex<Running>>> {
        self.running.lock().clone()
    }

    fn reporter(&self) -> broker::Reporter {
        let weak = self.obj().downgrade();
        let connected = self.connected.clone();
        Arc::new(move |ev: ClientEvent| {
            let Some(obj) = weak.upgrade() else { return };
            match ev {
                ClientEvent::Connected => {
                    connected.store(true, Ordering::Relaxed);
                    gst::info!(CAT, obj = obj, "connected to the broker");
                    let s = gst::Structure::builder("vss-broker-connected").build();
                    let _ = obj.post_message(gst::message::Element::builder(s).src(&obj).build());
                }
                ClientEvent::Disconnected(why) => {
                    connected.store(false, Ordering::Relaxed);
                    gst::element_warning!(
                        obj,
                        gst::ResourceError::Write,
                        ("{why}; records are queued until it returns")
                    );
                }
                ClientEvent::Refused(why) => {
                    connected.store(false, Ordering::Relaxed);
                    gst::element_error!(obj, gst::ResourceError::NotAuthorized, ("{why}"));
                }
                ClientEvent::Rejected(why) => {
                    gst::element_warning!(obj, gst::ResourceError::Write, ("{why}"));
                }
            }
        })
    }

    fn overflow_warning(&self, what: Pushed) {
        let now = Instant::now();
        {
            let mut last = self.last_overflow_warning.lock();
            if last.is_some_and(|t| now.duration_since(t) < OVERFLOW_WARNING_EVERY) {
                return;
            }
            *last = Some(now);
        }
        let st = self.stats();
        let dropped = st.get::<u64>("dropped").unwrap_or(0);
        let s = self.settings.lock();
        let (cap, policy) = (s.max_queued, s.overflow);
        drop(s);
        let which = match what {
            Pushed::DroppedOldest => "the oldest unsent record was discarded",
            _ => "the arriving record was discarded",
        };
        gst::element_warning!(
            self.obj(),
            gst::ResourceError::NoSpaceLeft,
            ("broker queue full ({cap} records, overflow={policy:?}): {which}; {dropped} dropped so far"),
            details: gst::Structure::builder("vss-broker-overflow")
                .field("dropped", dropped)
                .field("max-queued", cap)
                .build()
        );
    }
}

impl BaseSinkImpl for VssBrokerSink {
    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let s = self.settings.lock().clone();
        if s.url.is_empty() {
            return Err(gst::error_msg!(
                gst::ResourceError::Settings,
                ["no url set (mqtt://host:port, mqtts://host:port or kafka://host:port)"]
            ));
        }
        let url = BrokerUrl::parse(&s.url)
            .map_err(|e| gst::error_msg!(gst::ResourceError::Settings, ["{e}"]))?;
        let template = if s.topic.is_empty() {
            url.default_topic().to_string()
        } else {
            s.topic.clone()
        };
        let topic = TopicTemplate::new(&template, url.is_kafka())
            .map_err(|e| gst::error_msg!(gst::ResourceError::Settings, ["{e}"]))?;
        let window = if url.is_kafka() {
            broker::kafka::WINDOW
        } else {
            broker::mqtt::WINDOW
        };
        let overflow = match s.overflow {
            OverflowProp::DropOldest => Overflow::DropOldest,
            OverflowProp::DropNewest => Overflow::DropNewest,
            OverflowProp::Block => Overflow::Block,
        };
        let outbox = Arc::new(Outbox::new(s.max_queued as usize, window, overflow));
        let client_id = if s.client_id.is_empty() {
            // Unique in the process even when several pipelines name their
            // sinks alike (MQTT brokers drop the older of two clients with
            // one id).
            static N: AtomicU64 = AtomicU64::new(0);
            format!(
                "vssbrokersink-{}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed),
                self.obj().name()
            )
        } else {
            s.client_id.clone()
        };
        let cfg = ClientConfig {
            url: url.clone(),
            credentials: Credentials {
                username: s.username.clone(),
                password: s.password.clone(),
                ca_file: s.ca_file.clone(),
                kafka_tls: s.tls,
                sasl_mechanism: s.sasl_mechanism.clone(),
            },
            qos: s.qos,
            client_id,
        };
        self.connected.store(false, Ordering::Relaxed);
        let client = Client::start(cfg, outbox.clone(), self.reporter())
            .map_err(|e| gst::error_msg!(gst::ResourceError::Settings, ["{e}"]))?;
        gst::info!(CAT, imp = self, "publishing to {url}, topic {template}");
        *self.outbox.lock() = Some(outbox.clone());
        *self.running.lock() = Some(Arc::new(Mutex::new(Running {
            outbox,
            topic,
            format: match s.format {
                FormatProp::Json => RecordFormat::Json,
                FormatProp::Nvidia => RecordFormat::Nvidia,
            },
            client: Some(client),
        })));
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        if let Some(r) = self.running.lock().take() {
            let mut r = r.lock();
            r.outbox.close();
            let held = r.outbox.stats().held;
            r.client.take();
            if held > 0 {
                gst::warning!(
                    CAT,
                    imp = self,
                    "stopped with {held} records not delivered (counted in stats: held)"
                );
            }
        }
        Ok(())
    }

    fn render(&self, buffer: &gst::Buffer) -> Result<gst::FlowSuccess, gst::FlowError> {
        let Some(r) = self.running() else {
            return Err(gst::FlowError::Flushing);
        };
        let map = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
        let Some(rec) = broker::parse_record(map.as_slice()) else {
            let n = self.invalid.fetch_add(1, Ordering::Relaxed) + 1;
            if n == 1 {
                gst::element_warning!(
                    self.obj(),
                    gst::StreamError::Format,
                    ("a buffer that is not a JSON object was not published (counted in stats: invalid)")
                );
            }
            return Ok(gst::FlowSuccess::Ok);
        };
        let (outbox, (topic, key, payload)) = {
            let r = r.lock();
            (
                r.outbox.clone(),
                broker::prepare(&rec, map.as_slice(), &r.topic, r.format),
            )
        };
        drop(map);
        // Never holds a lock while it may wait (overflow=block).
        match outbox.push(topic, key, payload) {
            Pushed::Queued => {}
            other => self.overflow_warning(other),
        }
        Ok(gst::FlowSuccess::Ok)
    }

    fn event(&self, event: gst::Event) -> bool {
        if let gst::EventView::Eos(_) = event.view() {
            if let Some(r) = self.running() {
                let outbox = r.lock().outbox.clone();
                // Read now: it may change while playing.
                let timeout = Duration::from_secs(self.settings.lock().eos_timeout as u64);
                let deadline = if timeout.is_zero() {
                    Instant::now() + Duration::from_secs(100 * 365 * 86_400)
                } else {
                    Instant::now() + timeout
                };
                if !outbox.wait_drained(deadline) {
                    let held = outbox.stats().held;
                    gst::element_warning!(
                        self.obj(),
                        gst::ResourceError::Write,
                        ("EOS: {held} records not delivered after {} s (eos-timeout); they stay queued while the element runs", timeout.as_secs())
                    );
                } else {
                    gst::debug!(CAT, imp = self, "EOS: every record delivered");
                }
            }
        }
        self.parent_event(event)
    }

    fn unlock(&self) -> Result<(), gst::ErrorMessage> {
        // Wakes a render blocked by overflow=block and an EOS waiting for
        // delivery (flush, shutdown).
        if let Some(r) = self.running() {
            r.lock().outbox.close();
        }
        Ok(())
    }

    fn unlock_stop(&self) -> Result<(), gst::ErrorMessage> {
        if let Some(r) = self.running() {
            r.lock().outbox.reopen();
        }
        Ok(())
    }
}
