// SPDX-License-Identifier: MPL-2.0
//! The MQTT client of `vssbrokersink` (rumqttc), on a thread of its own.
//!
//! ## Rules
//! 1. Clean session, QoS 1 by default: a record leaves the outbox when its
//!    PUBACK arrives. QoS 0 records leave once written to the socket (no
//!    acknowledgement exists; a broker going down can lose them).
//! 2. Records are published only while connected; after every (re)connection
//!    the records in flight are published again from the oldest
//!    ([`Outbox::rewind`]): rumqttc forgets them with a clean session, so
//!    each is sent at most once per connection.
//! 3. A lost connection is retried with a backoff from 0.2 s doubling to
//!    5 s; a refused CONNECT (bad user name or password, not authorized) is
//!    reported as [`ClientEvent::Refused`] once per change of cause and
//!    retried every 5 s.
//! 4. The thread stops when asked; records still held stay in the outbox.

use super::{BrokerUrl, ClientConfig, ClientEvent, Outbox, Reporter};
use rumqttc::{
    Client, ConnectReturnCode, ConnectionError, Event, MqttOptions, Outgoing, Packet, QoS,
    TlsConfiguration, Transport,
};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Records published and not acknowledged at once.
pub const WINDOW: usize = 64;
const MAX_PAYLOAD: usize = 16 * 1024 * 1024;

pub struct MqttClient {
    options: MqttOptions,
    qos: QoS,
}

pub(super) fn tls_config(ca_file: Option<&str>) -> Result<Arc<rustls::ClientConfig>, String> {
    let path = ca_file.unwrap_or("/etc/ssl/certs/ca-certificates.crt");
    let pem = std::fs::read(path).map_err(|e| format!("cannot read CA file {path}: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|e| format!("CA file {path}: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("CA file {path}: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!("CA file {path} holds no certificate"));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

impl MqttClient {
    pub fn new(cfg: &ClientConfig) -> Result<Self, String> {
        let BrokerUrl::Mqtt { host, port, tls } = &cfg.url else {
            return Err("not an MQTT URL".into());
        };
        let id = if cfg.client_id.is_empty() {
            format!("vssbrokersink-{}", std::process::id())
        } else {
            cfg.client_id.clone()
        };
        let mut o = MqttOptions::new(id, host.clone(), *port);
        o.set_clean_session(true);
        o.set_keep_alive(Duration::from_secs(10));
        o.set_max_packet_size(MAX_PAYLOAD + 64 * 1024, MAX_PAYLOAD + 64 * 1024);
        o.set_inflight(WINDOW as u16);
        if let Some(u) = &cfg.credentials.username {
            o.set_credentials(
                u.clone(),
                cfg.credentials.password.clone().unwrap_or_default(),
            );
        }
        if *tls {
            let c = tls_config(cfg.credentials.ca_file.as_deref())?;
            o.set_transport(Transport::Tls(TlsConfiguration::Rustls(c)));
        }
        let qos = match cfg.qos {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            q => return Err(format!("qos {q}: MQTT takes 0 or 1")),
        };
        Ok(MqttClient { options: o, qos })
    }

    pub fn run(self, outbox: Arc<Outbox>, report: Reporter, stop: Arc<AtomicBool>) {
        let (client, mut conn) = Client::new(self.options, WINDOW * 2);
        let mut connected = false;
        let mut backoff = Duration::from_millis(200);
        let mut last_problem = String::new();
        // Our records published on this connection, waiting for their
        // packet id, and the ids waiting for their PUBACK.
        let mut awaiting_pkid: VecDeque<u64> = VecDeque::new();
        let mut by_pkid: HashMap<u16, u64> = HashMap::new();
        let mut retry_at: Option<Instant> = None;
        while !stop.load(Ordering::Acquire) {
            if let Some(t) = retry_at {
                if Instant::now() < t {
                    std::thread::sleep(Duration::from_millis(50).min(t - Instant::now()));
                    continue;
                }
                retry_at = None;
            }
            // Publish what the window allows (rule 2).
            if connected {
                while let Some(m) = outbox.next_to_send(Duration::ZERO) {
                    match client.try_publish(m.topic, self.qos, false, m.payload) {
                        Ok(()) => awaiting_pkid.push_back(m.seq),
                        Err(_) => {
                            // The request channel is full: hand it again later.
                            outbox.rewind_one(m.seq);
                            break;
                        }
                    }
                }
            }
            let ev = match conn.recv_timeout(Duration::from_millis(50)) {
                Ok(ev) => ev,
                Err(_) => continue,
            };
            match ev {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    connected = true;
                    backoff = Duration::from_millis(200);
                    last_problem.clear();
                    awaiting_pkid.clear();
                    by_pkid.clear();
                    outbox.rewind();
                    report(ClientEvent::Connected);
                }
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                    if let Some(seq) = awaiting_pkid.pop_front() {
                        if self.qos == QoS::AtMostOnce {
                            outbox.ack(seq);
                        } else {
                            by_pkid.insert(pkid, seq);
                        }
                    }
                }
                Ok(Event::Incoming(Packet::PubAck(a))) => {
                    if let Some(seq) = by_pkid.remove(&a.pkid) {
                        outbox.ack(seq);
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    let was = connected;
                    connected = false;
                    awaiting_pkid.clear();
                    by_pkid.clear();
                    let (refused, why) = describe(&e);
                    if why != last_problem {
                        last_problem = why.clone();
                        report(if refused {
                            ClientEvent::Refused(why)
                        } else {
                            ClientEvent::Disconnected(why)
                        });
                    }
                    let wait = if refused {
                        Duration::from_secs(5)
                    } else if was {
                        Duration::from_millis(200)
                    } else {
                        backoff
                    };
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    retry_at = Some(Instant::now() + wait);
                }
            }
        }
        let _ = client.try_disconnect();
    }
}

/// (refused for good, what happened) of a connection error; never holds a
/// credential (rumqttc's errors do not carry them).
fn describe(e: &ConnectionError) -> (bool, String) {
    match e {
        ConnectionError::ConnectionRefused(ConnectReturnCode::BadUserNamePassword) => (
            true,
            "the MQTT broker refused the credentials (bad user name or password)".into(),
        ),
        ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized) => (
            true,
            "the MQTT broker refused the connection: not authorized (check username/password)"
                .into(),
        ),
        ConnectionError::ConnectionRefused(c) => (
            true,
            format!("the MQTT broker refused the connection: {c:?}"),
        ),
        ConnectionError::Tls(t) => (true, format!("MQTT TLS: {t}")),
        other => (false, format!("MQTT broker unreachable: {other}")),
    }
}
