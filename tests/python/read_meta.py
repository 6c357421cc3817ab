#!/usr/bin/env python3
# SPDX-License-Identifier: MPL-2.0
"""Reads VssSummaryMeta off video buffers by name with PyGObject.

Starts a tiny OpenAI-compatible server on 127.0.0.1, runs a live
videotestsrc through vsssummarize into an appsink, and checks that the
meta found on the buffers carries the records. Needs GST_PLUGIN_PATH to
point at the built plugin. Prints 'N passed, N failed'.
"""
import http.server
import json
import sys
import threading

import gi

gi.require_version("Gst", "1.0")
from gi.repository import GLib, Gst  # noqa: E402


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        images = [p for p in body["messages"][-1]["content"] if p["type"] == "image_url"]
        out = json.dumps({
            "choices": [{"message": {"content": f"python saw {len(images)} images"}}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 4},
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


def main():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"

    Gst.init(None)
    pipeline = Gst.parse_launch(
        "videotestsrc is-live=true num-buffers=40 ! video/x-raw,width=64,height=48,framerate=10/1 "
        f"! vsssummarize endpoint={url} chunk-duration=1 num-frames-per-chunk=2 name=s "
        "! appsink name=vid emit-signals=true sync=false"
    )
    found = []

    def on_sample(sink):
        sample = sink.emit("pull-sample")
        buf = sample.get_buffer()
        meta = buf.get_custom_meta("VssSummaryMeta")
        if meta is not None:
            s = meta.get_structure()
            found.append((s.get_name(), s.get_value("chunk-index"), s.get_value("text"),
                          s.get_value("model"), s.get_value("input-tokens")))
        return Gst.FlowReturn.OK

    pipeline.get_by_name("vid").connect("new-sample", on_sample)
    pipeline.set_state(Gst.State.PLAYING)
    msg = pipeline.get_bus().timed_pop_filtered(30 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
    pipeline.set_state(Gst.State.NULL)
    server.shutdown()

    checks = [
        ("reached EOS", msg is not None and msg.type == Gst.MessageType.EOS),
        ("metas found", len(found) >= 2),
        ("structure name", all(f[0] == "vss-summary" for f in found)),
        ("caption text", all(f[2] == "python saw 2 images" for f in found)),
        ("chunk order", [f[1] for f in found] == sorted(f[1] for f in found)),
        ("model field", all(f[3] == "gpt-4o" for f in found)),
        ("token field", all(f[4] == 11 for f in found)),
    ]
    failed = [name for name, ok in checks if not ok]
    for name, ok in checks:
        print(f"{'ok  ' if ok else 'FAIL'} {name}")
    print(f"found: {found}")
    print(f"{len(checks) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    GLib.set_prgname("read_meta")
    sys.exit(main())
