#!/usr/bin/env python3
"""An independent consumer for the broker sink's tests (never our code):
paho-mqtt or kafka-python. Prints "ready" once subscribed, then one JSON
line per message: {"topic", "key", "payload"} (payload as text), until
--count messages arrived or --timeout seconds passed without a new one
(before the first message: at least 60 s).

  broker_consume.py mqtt HOST PORT TOPIC_FILTER --client-id ID [--count N]
  broker_consume.py kafka TOPIC[,TOPIC] HOST:PORT [--count N]

MQTT subscribes with QoS 1 and a persistent session (clean_session=False),
so messages published while it is away (the broker restarting) wait for it
in the broker; it reconnects by itself.
"""
import argparse
import json
import sys
import time


def out(topic, key, payload):
    sys.stdout.write(json.dumps({"topic": topic, "key": key,
                                 "payload": payload.decode("utf-8", "replace")}) + "\n")
    sys.stdout.flush()


def mqtt(a):
    import paho.mqtt.client as mqtt
    got = {"n": 0, "last": time.monotonic(), "ready": False}
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=a.client_id,
                    clean_session=False)
    c.reconnect_delay_set(min_delay=1, max_delay=1)

    def on_connect(client, userdata, flags, rc, props=None):
        client.subscribe(a.topic, qos=1)

    def on_subscribe(client, userdata, mid, rcs, props=None):
        if not got["ready"]:
            got["ready"] = True
            print("ready", flush=True)

    def on_message(client, userdata, m):
        out(m.topic, None, m.payload)
        got["n"] += 1
        got["last"] = time.monotonic()

    c.on_connect = on_connect
    c.on_subscribe = on_subscribe
    c.on_message = on_message
    c.connect(a.host, int(a.port), keepalive=5)
    c.loop_start()
    # Before the first message it waits at least a minute (a publisher
    # starting up), then --timeout seconds after the last one.
    while got["n"] < a.count and time.monotonic() - got["last"] < (
            a.timeout if got["n"] else max(a.timeout, 60.0)):
        time.sleep(0.05)
    c.loop_stop()


def kafka(a):
    from kafka import KafkaConsumer
    c = KafkaConsumer(*a.host.split(","), bootstrap_servers=a.port,
                      auto_offset_reset="earliest", group_id=None,
                      consumer_timeout_ms=int(a.timeout * 1000))
    print("ready", flush=True)
    n = 0
    for m in c:
        out(m.topic, m.key.decode() if m.key is not None else None, m.value)
        n += 1
        if n >= a.count:
            break


def main():
    p = argparse.ArgumentParser()
    p.add_argument("proto", choices=["mqtt", "kafka"])
    p.add_argument("host", help="MQTT host, or the Kafka topics (comma-separated)")
    p.add_argument("port", help="MQTT port, or Kafka's host:port")
    p.add_argument("topic", nargs="?", default="#")
    p.add_argument("--client-id", default="vss-test-consumer")
    p.add_argument("--count", type=int, default=1 << 30)
    p.add_argument("--timeout", type=float, default=60.0)
    a = p.parse_args()
    if a.proto == "mqtt":
        mqtt(a)
    else:
        kafka(a)


if __name__ == "__main__":
    main()
