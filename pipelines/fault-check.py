#!/usr/bin/env python3
# Usage: pipelines/fault-check.py [keepalive|restart|all] [--chunks N]
#
# Measures how vsssummarize copes with two common server faults, against a
# local OpenAI-compatible server of its own on 127.0.0.1 (stdlib only; the
# plugin from GST_PLUGIN_PATH, e.g. target/release or target/debug):
#
#   keepalive  the server closes keep-alive connections idle for a little
#              less than the gap between requests (as uvicorn, which vLLM
#              runs on, does after 5 s), so a pooled connection is often
#              closed just as the element reuses it. Reports error records
#              per 1,000 chunks.
#   restart    the server goes away after a third of the chunks and comes
#              back on the same port a few seconds later (a restarted vLLM).
#              Reports the chunks captioned.
#
# Each scenario pushes one 64x48 frame per chunk (chunk-duration=0.5,
# num-frames-per-chunk=1) through appsrc ! vsssummarize at a fixed pace and
# counts the records on the bus. Prints one line per scenario, e.g.
#   keepalive: 300 chunks, 300 captioned, 0 failed (0.0 per 1000), ...
# Exit status 0 when it ran (the figures are the result), 1 on a setup error.
import argparse
import json
import random
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import gi

gi.require_version("Gst", "1.0")
from gi.repository import GLib, Gst  # noqa: E402

CAPTION = {"choices": [{"message": {"content": "a frame"}, "finish_reason": "stop"}],
           "usage": {"prompt_tokens": 1, "completion_tokens": 2}}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    timeout = None  # set per server: idle connections are closed after it

    def log_message(self, *a):
        pass

    def setup(self):
        super().setup()
        self.server.conns.add(self.connection)

    def finish(self):
        self.server.conns.discard(self.connection)
        super().finish()

    def _send(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path.rstrip("/").endswith("/models"):
            self._send(200, {"object": "list", "data": [{"id": "fault"}]})
        else:
            self._send(404, {"detail": "Not Found"})

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(n)
        self.server.requests += 1
        self._send(200, CAPTION)


def serve(port, idle):
    handler = type("H", (Handler,), {"timeout": idle})
    srv = ThreadingHTTPServer(("127.0.0.1", port), handler)
    srv.daemon_threads = True
    srv.requests = 0
    srv.conns = set()
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def kill(srv):
    """Stops listening and drops every open connection (a crashed server)."""
    srv.shutdown()
    srv.server_close()
    for c in list(srv.conns):
        try:
            c.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def run(chunks, pace, port, props, during=None, jitter=0.0):
    """Pushes `chunks` chunks, one every `pace` s; returns (ok, failed, errors)."""
    desc = (
        "appsrc name=in format=time is-live=false "
        "caps=video/x-raw,format=I420,width=64,height=48,framerate=2/1 "
        f"! vsssummarize name=s endpoint=http://127.0.0.1:{port}/v1 model-name=fault "
        f"chunk-duration=0.5 num-frames-per-chunk=1 {props} "
        "s.summary_src ! fakesink async=false  s.src ! fakesink async=false"
    )
    pipe = Gst.parse_launch(desc)
    src = pipe.get_by_name("in")
    bus = pipe.get_bus()
    recs = []
    pipe.set_state(Gst.State.PLAYING)
    frame = bytes(64 * 48 * 3 // 2)
    for i in range(chunks):
        buf = Gst.Buffer.new_wrapped(frame)
        buf.pts = i * Gst.SECOND // 2
        buf.duration = Gst.SECOND // 2
        src.emit("push-buffer", buf)
        if during:
            during(i)
        time.sleep(pace + random.uniform(-jitter, jitter))
    src.emit("end-of-stream")
    deadline = time.time() + 600
    while time.time() < deadline:
        msg = bus.timed_pop(100 * Gst.MSECOND)
        if msg is None:
            continue
        if msg.type == Gst.MessageType.ELEMENT and msg.get_structure().get_name() == "vss-summary":
            s = msg.get_structure()
            recs.append(s.get_string("error"))
        elif msg.type == Gst.MessageType.EOS:
            break
        elif msg.type == Gst.MessageType.ERROR:
            err, dbg = msg.parse_error()
            print(f"pipeline error: {err.message}", file=sys.stderr)
            break
    pipe.set_state(Gst.State.NULL)
    errors = [e for e in recs if e]
    return len(recs) - len(errors), len(errors), errors


def keepalive(chunks):
    # Requests 0.24-0.26 s apart against a 0.25 s idle timeout: the server
    # often closes the pooled connection just as the element reuses it.
    pace, idle, jitter = 0.25, 0.25, 0.01
    random.seed(1)
    port = free_port()
    srv = serve(port, idle)
    t = time.time()
    ok, failed, errors = run(chunks, pace, port, "max-retries=3", jitter=jitter)
    srv.shutdown()
    print(f"keepalive: {chunks} chunks, {ok} captioned, {failed} failed "
          f"({1000.0 * failed / chunks:.1f} per 1000), requests {srv.requests}, "
          f"server idle timeout {idle} s, one request every {pace - jitter}-{pace + jitter} s, "
          f"{time.time() - t:.0f} s")
    for e in errors[:3]:
        print(f"  e.g. {e}")


def restart(chunks):
    pace = 0.25
    port = free_port()
    box = {"srv": serve(port, 5.0)}
    down_at, down_for = chunks // 3, 3.0

    def during(i):
        if i == down_at:
            kill(box["srv"])

            def back():
                time.sleep(down_for)
                box["srv"] = serve(port, 5.0)

            threading.Thread(target=back, daemon=True).start()

    t = time.time()
    ok, failed, errors = run(chunks, pace, port, "max-retries=3", during)
    box["srv"].shutdown()
    print(f"restart: {chunks} chunks, {ok} captioned, {failed} failed; server down for "
          f"{down_for} s after chunk {down_at}, {time.time() - t:.0f} s")
    for e in errors[:3]:
        print(f"  e.g. {e}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("which", nargs="?", default="all", choices=["keepalive", "restart", "all"])
    ap.add_argument("--chunks", type=int, default=0)
    a = ap.parse_args()
    Gst.init(None)
    if Gst.ElementFactory.find("vsssummarize") is None:
        print("vsssummarize not found: set GST_PLUGIN_PATH (e.g. target/release)", file=sys.stderr)
        return 1
    if a.which in ("keepalive", "all"):
        keepalive(a.chunks or 400)
    if a.which in ("restart", "all"):
        restart(a.chunks or 40)
    return 0


if __name__ == "__main__":
    sys.exit(main())
