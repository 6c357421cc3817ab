#!/usr/bin/env python3
# Usage: pipelines/fleet.py CAMERAS.yaml --broker URL [options] [PROPERTY=VALUE ...]
#
# Runs N cameras in one process: one pipeline per camera,
#   source ! decodebin ! videoconvert ! vsssummarize ! fakesink
#   vsssummarize.summary_src ! vssbrokersink url=URL
# so every vsssummarize shares the process (and so the endpoint budget,
# `endpoint-concurrency`, where the plugin has it) and each camera's records
# go to the broker (docs/fleet.md). Prints one status line per camera every
# --status-every seconds and when it stops. A camera whose source fails (an
# RTSP server going away, a missing file) is restarted with a backoff of
# 1, 2, 4 ... 60 s (its broker sink first gets up to 10 s to deliver what it
# holds); a file that ends is done. SIGTERM / SIGINT: every
# pipeline gets EOS (the open chunk is captioned) and the process exits once
# every broker sink delivered its records (exit 0), or after --stop-timeout
# seconds (exit 1, with how many records were not delivered).
#
# CAMERAS.yaml:
#   cameras:
#     - stream-id: dock-1                      # required, unique
#       url: rtsp://10.0.0.5:8554/dock         # rtsp://, a file path, or "test" (videotestsrc)
#       prompt: "Describe forklift traffic."   # optional
#       events: "a person falls;smoke or fire" # optional (alerts)
#       properties: {chunk-duration: 10}       # optional, vsssummarize properties
#   properties: {model: mock}                  # optional, for every camera
#
# Options: --broker URL (mqtt://, mqtts://, kafka://), --topic TEMPLATE,
# --format json|nvidia, --broker-prop NAME=VALUE (vssbrokersink, repeatable:
# username, password, ca-file, max-queued, overflow ...), --status-every S
# (10), --stop-timeout S (60), --max-restarts N (unlimited).
# PROPERTY=VALUE arguments set vsssummarize properties on every camera (the
# endpoint and model come from them or VSS's VIA_VLM_* variables).
import argparse
import signal
import sys
import time

import os

try:
    import gi
    import yaml
except ImportError:
    # A pyenv or virtualenv python3 first on PATH lacks Debian's PyGObject:
    # run under the system's (as pipelines/common.sh's gi_python does).
    if sys.executable != "/usr/bin/python3" and os.access("/usr/bin/python3", os.X_OK):
        os.execv("/usr/bin/python3", ["/usr/bin/python3", os.path.abspath(__file__), *sys.argv[1:]])
    sys.exit("fleet.py: needs PyGObject and PyYAML (Debian: apt-get install python3-gi python3-gst-1.0 python3-yaml)")

gi.require_version("Gst", "1.0")
from gi.repository import GLib, Gst  # noqa: E402


# How long a failed camera's broker sink may take to deliver what it holds
# before the pipeline is torn down and restarted.
DRAIN_SECONDS = 10


def source_of(url):
    if url == "test":
        return ("videotestsrc is-live=true pattern=ball ! "
                "video/x-raw,width=320,height=240,framerate=5/1")
    if url.startswith(("rtsp://", "rtsps://")):
        return "rtspsrc location=%s latency=200 ! application/x-rtp,media=video ! decodebin" % url
    return "filesrc location=\"%s\" ! decodebin" % url.replace('"', '\\"')


def set_prop(element, name, value):
    """Sets a property from its text as gst-launch does; an unknown name is
    an error (GStreamer would ignore it silently)."""
    if element.find_property(name) is None:
        raise SystemExit("%s has no property '%s'" % (element.get_factory().get_name(), name))
    Gst.util_set_object_arg(element, name, str(value))


class Camera:
    def __init__(self, fleet, spec):
        self.fleet = fleet
        self.spec = spec
        self.id = str(spec["stream-id"])
        self.pipeline = None
        self.state = "starting"
        self.restarts = 0
        self.backoff = 1
        self.captions = 0
        self.failed = 0
        self.alerts = 0
        self.last_error = ""
        self.broker = {}
        self.done = False
        self.sink_stats = None

    def build(self):
        a = self.fleet.args
        desc = (source_of(str(self.spec["url"])) +
                " ! videoconvert ! vsssummarize name=s ! fakesink sync=false "
                "s.summary_src ! vssbrokersink name=b")
        p = Gst.parse_launch(desc)
        s = p.get_by_name("s")
        b = p.get_by_name("b")
        props = dict(self.fleet.common)
        props.update(self.spec.get("properties") or {})
        props["stream-id"] = self.id
        if self.spec.get("prompt"):
            props["prompt"] = self.spec["prompt"]
        if self.spec.get("events"):
            props["events"] = self.spec["events"]
        for k, v in props.items():
            set_prop(s, k, v)
        set_prop(b, "url", a.broker)
        if a.topic:
            set_prop(b, "topic", a.topic)
        set_prop(b, "format", a.format)
        for kv in a.broker_prop:
            k, _, v = kv.partition("=")
            set_prop(b, k, v)
        bus = p.get_bus()
        bus.add_signal_watch()
        bus.connect("message", self.on_message)
        self.pipeline, self.sink = p, b

    def start(self):
        self.build()
        self.state = "running"
        if self.pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
            self.failed_source("could not start")
        return False

    def stats(self):
        if self.pipeline is not None:
            st = self.sink.get_property("stats")
            self.sink_stats = {k: st.get_value(k) for k in
                               ("delivered", "held", "dropped", "failed", "resent", "connected")}
        return self.sink_stats or {}

    def on_message(self, _bus, msg):
        t = msg.type
        if t == Gst.MessageType.ELEMENT and msg.get_structure() is not None:
            st = msg.get_structure()
            if st.get_name() == "vss-summary" and st.get_value("kind") == "caption":
                if st.has_field("error"):
                    self.failed += 1
                else:
                    self.captions += 1
                    self.backoff = 1  # it works again: the next failure waits 1 s
            elif st.get_name() == "vss-alert":
                self.alerts += 1
        elif t == Gst.MessageType.EOS:
            self.stats()
            if self.fleet.stopping or not str(self.spec["url"]).startswith(("rtsp", "test")):
                self.state = "done"
                self.teardown()
                self.done = True
                self.fleet.check_done()
            else:
                self.failed_source("stream ended")
        elif t == Gst.MessageType.ERROR:
            err, dbg = msg.parse_error()
            self.last_error = err.message
            src = msg.src.get_name() if msg.src else "?"
            print("%s: error from %s: %s" % (self.id, src, err.message), file=sys.stderr, flush=True)
            self.failed_source(err.message)

    def teardown(self):
        if self.pipeline is not None:
            self.stats()
            self.pipeline.get_bus().remove_signal_watch()
            self.pipeline.set_state(Gst.State.NULL)
            self.pipeline = None

    def failed_source(self, why):
        if self.state in ("waiting", "draining") or self.done:
            return
        # The sink keeps publishing while the pipeline stands still: give
        # it up to DRAIN_SECONDS to deliver what it holds before teardown.
        self.state = "draining"
        deadline = time.monotonic() + DRAIN_SECONDS

        def drained():
            held = int(self.stats().get("held", 0)) if self.pipeline is not None else 0
            if held and time.monotonic() < deadline:
                return True
            self.after_failure(why)
            return False

        GLib.timeout_add(100, drained)

    def after_failure(self, why):
        self.teardown()
        a = self.fleet.args
        if self.fleet.stopping or (a.max_restarts is not None and self.restarts >= a.max_restarts):
            self.state = "given up" if not self.fleet.stopping else "done"
            self.done = True
            self.fleet.check_done()
            return
        self.state = "waiting"
        delay = self.backoff
        self.backoff = min(self.backoff * 2, 60)
        print("%s: restarting in %d s (%s)" % (self.id, delay, why), file=sys.stderr, flush=True)
        GLib.timeout_add_seconds(delay, self.restart)

    def restart(self):
        if self.fleet.stopping:
            self.state = "done"
            self.done = True
            self.fleet.check_done()
            return False
        self.restarts += 1
        self.start()
        return False

    def status_line(self):
        b = self.stats()
        return ("%-16s %-9s captions=%d failed=%d alerts=%d restarts=%d broker: delivered=%s held=%s "
                "dropped=%s connected=%s%s" % (
                    self.id, self.state, self.captions, self.failed, self.alerts, self.restarts,
                    b.get("delivered", 0), b.get("held", 0), b.get("dropped", 0),
                    "yes" if b.get("connected") else "no",
                    (" last-error=%r" % self.last_error) if self.last_error else ""))


class Fleet:
    def __init__(self, args, specs, common):
        self.args = args
        self.common = common
        self.cameras = [Camera(self, s) for s in specs]
        self.stopping = False
        self.loop = GLib.MainLoop()
        self.exit_code = 0

    def print_status(self):
        for c in self.cameras:
            print(c.status_line(), flush=True)
        return True

    def check_done(self):
        if all(c.done for c in self.cameras):
            self.loop.quit()

    def stop(self, *_):
        if self.stopping:
            return True
        self.stopping = True
        print("stopping: EOS to every camera", file=sys.stderr, flush=True)
        for c in self.cameras:
            if c.pipeline is not None:
                c.pipeline.send_event(Gst.Event.new_eos())
            elif not c.done:
                c.state, c.done = "done", True
        self.check_done()
        GLib.timeout_add_seconds(self.args.stop_timeout, self.give_up)
        return True

    def give_up(self):
        print("stop timeout: tearing down", file=sys.stderr, flush=True)
        for c in self.cameras:
            c.teardown()
            c.done = True
        self.loop.quit()
        return False

    def run(self):
        for c in self.cameras:
            c.start()
        GLib.timeout_add(int(self.args.status_every * 1000), self.print_status)
        for sig in (signal.SIGTERM, signal.SIGINT):
            GLib.unix_signal_add(GLib.PRIORITY_HIGH, sig, self.stop)
        self.loop.run()
        for c in self.cameras:
            c.teardown()
        self.print_status()
        held = sum(int((c.sink_stats or {}).get("held", 0)) for c in self.cameras)
        if held:
            print("%d records not delivered" % held, file=sys.stderr, flush=True)
            return 1
        return 0


def main(argv):
    ap = argparse.ArgumentParser(description="N cameras in one process, records to a broker")
    ap.add_argument("cameras")
    ap.add_argument("--broker", required=True)
    ap.add_argument("--topic", default="")
    ap.add_argument("--format", default="json", choices=["json", "nvidia"])
    ap.add_argument("--broker-prop", action="append", default=[])
    ap.add_argument("--status-every", type=float, default=10.0)
    ap.add_argument("--stop-timeout", type=int, default=60)
    ap.add_argument("--max-restarts", type=int, default=None)
    ap.add_argument("props", nargs="*", help="vsssummarize PROPERTY=VALUE for every camera")
    args = ap.parse_intermixed_args(argv)
    with open(args.cameras) as f:
        conf = yaml.safe_load(f) or {}
    specs = conf.get("cameras") or []
    if not specs:
        print("%s: no cameras" % args.cameras, file=sys.stderr)
        return 2
    ids = [str(s.get("stream-id", "")) for s in specs]
    if "" in ids or len(set(ids)) != len(ids) or any("url" not in s for s in specs):
        print("%s: every camera needs a unique stream-id and a url" % args.cameras, file=sys.stderr)
        return 2
    common = dict(conf.get("properties") or {})
    for p in args.props:
        k, _, v = p.partition("=")
        common[k] = v
    Gst.init(None)
    for name in ("vsssummarize", "vssbrokersink"):
        if Gst.ElementFactory.find(name) is None:
            print("%s not found: set GST_PLUGIN_PATH to the plugin's directory" % name, file=sys.stderr)
            return 2
    return Fleet(args, specs, common).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
