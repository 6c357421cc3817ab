#!/usr/bin/env python3
# Usage: pipelines/mock-endpoint.py [--port 38011] [--model NAME] [--delay SECONDS] [--capacity N] [--no-video] [--quiet]
#
# A tiny OpenAI-compatible chat-completions server (127.0.0.1 only, stdlib
# only) for trying `vsssummarize` without a model, and for benchmarks. It
# answers like vLLM: only paths under /v1/ exist.
#
#   POST /v1/chat/completions -> a chat.completion whose caption says how many
#                                frames arrived, their timestamps (parsed from
#                                the prompt text) and the JPEG frame sizes;
#                                text-only requests of vsssummarize's text LLM
#                                get deterministic answers: an event check the
#                                JSON it asks for (an event is detected when
#                                the caption contains its text), a summary
#                                "summary of" and the <time> labels it was given
#                                A video_url part (vision-mode=video, an MP4
#                                data URI) is read from its container (no
#                                decoding: moov/stts/stsd): the caption says
#                                "video: N frames at T0 T1 ... s (WxH)", the
#                                frames' times as a server reading the MP4
#                                would see them. --no-video answers such a
#                                request HTTP 400, as a server whose model
#                                takes images only (try vision-mode=auto).
#   GET  /v1/models           -> a model list holding NAME (default "mock")
#   GET  /health              -> 200 (as vLLM)
#   GET  /stats               -> {"served": chat answers so far, "running": now,
#                                "max_running": the most at once, "waiting":
#                                requests queued for capacity now, "max_in":
#                                the most requests inside the server at once}
#   anything else             -> HTTP 404 {"detail":"Not Found"} (FastAPI /
#                                vLLM), so an endpoint without /v1 fails the
#                                way it does against a real server
#
# --model NAME: chat requests whose "model" is not NAME get HTTP 404
#   {"object":"error","message":"The model `x` does not exist.",...} as vLLM
#   answers. Without --model any model name is accepted.
# --port 0 picks a free port. The first line on stdout is always
# "listening on http://127.0.0.1:PORT/v1" (flushed), so scripts can wait for it.
# --delay sleeps that long in each request (a slow model); requests are served
# concurrently (ThreadingHTTPServer). --capacity N: at most N chat requests
# are worked on at once (each for --delay); later ones wait in the server,
# as in a vLLM server whose batch is full (0 = no limit). So --capacity 4
# --delay 1 is a server that answers 4 requests a second at most.
# --quiet: no request log on stderr.
#
# Starting it by hand (two terminals):
#   pipelines/mock-endpoint.py                      # listening on http://127.0.0.1:38011/v1
#   VIA_VLM_ENDPOINT=http://127.0.0.1:38011/v1 VIA_VLM_OPENAI_MODEL_DEPLOYMENT_NAME=mock \
#     pipelines/summarize-file.sh clip.mp4 out.jsonl
# Check it with: curl http://127.0.0.1:38011/v1/models
# Stop it with Ctrl-C. ("summarize-file.sh demo" starts one on a free port.)
import argparse
import base64
import binascii
import json
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL = "mock"
# <0.00> <1.24> ... or <2025-01-01T00:00:00.000Z> for live streams.
STAMP_RE = re.compile(r"<([^<>\s]+)>")
SOF_MARKERS = (0xC0, 0xC1, 0xC2)  # baseline, extended sequential, progressive

_counter_lock = threading.Lock()
_counter = 0
# --capacity (None: no limit) and what /stats reports.
_capacity = None
_stats = {"served": 0, "running": 0, "max_running": 0, "waiting": 0, "max_in": 0}


def jpeg_size(data):
    """(width, height) from a JPEG's SOF0/SOF1/SOF2 segment, or None."""
    if len(data) < 4 or data[0] != 0xFF or data[1] != 0xD8:
        return None
    i = 2
    n = len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            i += 1  # not at a marker: resynchronise
            continue
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length
            i += 2
            continue
        if marker == 0xD9:  # EOI
            return None
        seg_len = (data[i + 2] << 8) | data[i + 3]
        if marker in SOF_MARKERS:
            if i + 9 > n:
                return None
            height = (data[i + 5] << 8) | data[i + 6]
            width = (data[i + 7] << 8) | data[i + 8]
            return width, height
        if marker == 0xDA:  # start of scan before any SOF
            return None
        i += 2 + seg_len
    return None


def describe_images(messages):
    """(timestamps, sizes, text) from the user messages of a request."""
    stamps, sizes, texts = [], [], []
    for msg in messages if isinstance(messages, list) else []:
        if not isinstance(msg, dict) or msg.get("role") != "user":
            continue
        content = msg.get("content")
        parts = content if isinstance(content, list) else [{"type": "text", "text": content}]
        for part in parts:
            if not isinstance(part, dict):
                continue
            if part.get("type") == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif part.get("type") == "image_url":
                url = part.get("image_url")
                url = url.get("url") if isinstance(url, dict) else url
                if not isinstance(url, str):
                    sizes.append(None)
                    continue
                b64 = url.split(",", 1)[1] if url.startswith("data:") and "," in url else url
                try:
                    sizes.append(jpeg_size(base64.b64decode(b64, validate=False)))
                except (binascii.Error, ValueError):
                    sizes.append(None)
    text = "\n".join(texts)
    # Only the timestamp list before the first ". " is the frame list.
    head = text.split(":", 1)[1] if "timestamps" in text and ":" in text else text
    head = head.split(". ", 1)[0]
    stamps = STAMP_RE.findall(head)
    return stamps, sizes, text


def mp4_boxes(data, start, end):
    """(type, payload start, payload end) of the boxes in data[start:end]."""
    i = start
    while i + 8 <= end:
        size = int.from_bytes(data[i:i + 4], "big")
        kind = data[i + 4:i + 8].decode("latin-1")
        head = 8
        if size == 1 and i + 16 <= end:
            size = int.from_bytes(data[i + 8:i + 16], "big")
            head = 16
        elif size == 0:
            size = end - i
        if size < head or i + size > end:
            return
        yield kind, i + head, i + size
        i += size


def mp4_video_info(data):
    """{"frames", "times", "width", "height"} of the first video track of an
    MP4 (times in seconds from its sample table), or None."""
    def child(kind, s, e):
        for k, a, b in mp4_boxes(data, s, e):
            if k == kind:
                return a, b
        return None

    moov = child("moov", 0, len(data))
    if not moov:
        return None
    for k, a, b in mp4_boxes(data, *moov):
        if k != "trak":
            continue
        mdia = child("mdia", a, b)
        hdlr = mdia and child("hdlr", *mdia)
        if not hdlr or data[hdlr[0] + 8:hdlr[0] + 12] != b"vide":
            continue
        mdhd = child("mdhd", *mdia)
        version = data[mdhd[0]]
        ts_at = mdhd[0] + (20 if version == 1 else 12)
        timescale = int.from_bytes(data[ts_at:ts_at + 4], "big")
        stbl = child("minf", *mdia)
        stbl = stbl and child("stbl", *stbl)
        stts = stbl and child("stts", *stbl)
        stsd = stbl and child("stsd", *stbl)
        if not stts or not timescale:
            return None
        n_entries = int.from_bytes(data[stts[0] + 4:stts[0] + 8], "big")
        times, t = [], 0
        for e in range(n_entries):
            at = stts[0] + 8 + 8 * e
            count = int.from_bytes(data[at:at + 4], "big")
            delta = int.from_bytes(data[at + 4:at + 8], "big")
            for _ in range(count):
                times.append(t / timescale)
                t += delta
        width = height = None
        if stsd:
            entry = stsd[0] + 8  # version/flags, entry count
            # VisualSampleEntry: 8 header + 6 reserved + 2 index + 16 + width, height
            width = int.from_bytes(data[entry + 32:entry + 34], "big")
            height = int.from_bytes(data[entry + 34:entry + 36], "big")
        return {"frames": len(times), "times": times, "width": width, "height": height}
    return None


def describe_videos(messages):
    """What the video_url parts of the user messages hold (None: unreadable)."""
    videos = []
    for msg in messages if isinstance(messages, list) else []:
        if not isinstance(msg, dict) or msg.get("role") != "user" or not isinstance(msg.get("content"), list):
            continue
        for part in msg["content"]:
            if isinstance(part, dict) and part.get("type") == "video_url":
                url = part.get("video_url")
                url = url.get("url") if isinstance(url, dict) else url
                info = None
                if isinstance(url, str) and url.startswith("data:") and "," in url:
                    try:
                        info = mp4_video_info(base64.b64decode(url.split(",", 1)[1], validate=False))
                    except (binascii.Error, ValueError, IndexError):
                        info = None
                videos.append(info)
    return videos


def system_text(messages):
    for msg in messages if isinstance(messages, list) else []:
        if isinstance(msg, dict) and msg.get("role") == "system" and isinstance(msg.get("content"), str):
            return msg["content"]
    return ""


LABEL_RE = re.compile(r"<([^<> ]+)>")


def text_answer(system, text):
    """Deterministic answers to vsssummarize's text-only requests: an event
    check ('You detect events') answers the JSON it asks for, each event
    detected when the caption contains its text (any case); a summary or an
    aggregation answers 'summary of' and every distinct <time> of its input."""
    if "You detect events" in system:
        i = system.rfind('{"result"')
        try:
            events = [e["event"] for e in json.loads(system[i:].replace("true|false", "false"))["result"]]
        except (ValueError, KeyError, TypeError):
            events = []
        low = text.lower()
        return json.dumps({"result": [{"event": e, "is_detected": e.lower() in low} for e in events]})
    if "summar" in system:
        seen = []
        for m in LABEL_RE.findall(text):
            if m not in seen:
                seen.append(m)
        return "summary of " + " ".join("<%s>" % m for m in seen)
    return None


class Handler(BaseHTTPRequestHandler):
    server_version = "vsssummarize-mock/1.0"
    protocol_version = "HTTP/1.1"
    quiet = False
    delay = 0.0
    listed_model = MODEL  # GET /v1/models
    required_model = None  # --model: chat requests must name it
    no_video = False  # --no-video: refuse video_url parts

    def log_message(self, fmt, *args):
        if not self.quiet:
            sys.stderr.write("mock-endpoint: %s - %s\n" % (self.address_string(), fmt % args))

    def _send_json(self, code, obj):
        body = json.dumps(obj).encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, code, message, err_type="invalid_request_error"):
        """An OpenAI / vLLM style error body."""
        self._send_json(code, {"object": "error", "message": message, "type": err_type, "param": None, "code": code})

    def _not_found(self):
        """What FastAPI (vLLM) answers for a path it has no route for."""
        self._send_json(404, {"detail": "Not Found"})

    def do_GET(self):
        path = self.path.split("?", 1)[0].rstrip("/")
        if path == "/v1/models":
            self._send_json(200, {
                "object": "list",
                "data": [{"id": self.listed_model, "object": "model", "created": 0, "owned_by": "vsssummarize-mock"}],
            })
        elif path == "/health":
            self._send_json(200, {"status": "ok"})
        elif path == "/stats":
            with _counter_lock:
                stats = dict(_stats)
            self._send_json(200, stats)
        else:
            self._not_found()

    def do_POST(self):
        global _counter
        path = self.path.split("?", 1)[0].rstrip("/")
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        if path != "/v1/chat/completions":
            self._not_found()
            return
        try:
            req = json.loads(raw.decode("utf-8"))
            if not isinstance(req, dict):
                raise ValueError("body is not a JSON object")
        except (ValueError, UnicodeDecodeError) as e:
            self._error(400, "malformed JSON body: %s" % e, "BadRequestError")
            return
        if self.required_model is not None and req.get("model") != self.required_model:
            self._error(404, "The model `%s` does not exist." % req.get("model"), "NotFoundError")
            return
        stamps, sizes, text = describe_images(req.get("messages"))
        videos = describe_videos(req.get("messages"))
        if videos and self.no_video:
            self._error(400, "video_url is not supported by this model (mock-endpoint --no-video); send images", "BadRequestError")
            return
        with _counter_lock:
            _stats["waiting"] += 1
            _stats["max_in"] = max(_stats["max_in"], _stats["waiting"] + _stats["running"])
        if _capacity is not None:
            _capacity.acquire()
        with _counter_lock:
            _stats["waiting"] -= 1
            _stats["running"] += 1
            _stats["max_running"] = max(_stats["max_running"], _stats["running"])
        try:
            if self.delay > 0:
                time.sleep(self.delay)
        finally:
            with _counter_lock:
                _stats["running"] -= 1
                _stats["served"] += 1
            if _capacity is not None:
                _capacity.release()
        n = len(sizes)
        size_list = sorted({"%dx%d" % s for s in sizes if s})
        if any(s is None for s in sizes):
            size_list.append("unreadable")
        content = text_answer(system_text(req.get("messages")), text) if n == 0 and not videos else None
        if content is None and videos:
            descr = []
            for v in videos:
                if v is None:
                    descr.append("video: unreadable")
                else:
                    descr.append("video: %d frames at %s s (%sx%s)" % (
                        v["frames"], " ".join("%.3f" % t for t in v["times"]), v["width"], v["height"]))
            n = sum(v["frames"] for v in videos if v)
            content = "mock endpoint (no model): received %s; prompt timestamps %s" % (
                "; ".join(descr), " ".join(stamps) if stamps else "(none)")
        if content is None:
            content = "mock endpoint (no model): received %d frames at %s; frame sizes %s" % (
                n,
                " ".join(stamps) if stamps else "(no timestamps)",
                ", ".join(size_list) if size_list else "(none)",
            )
        with _counter_lock:
            _counter += 1
            num = _counter
        prompt_tokens = max(1, len(text.split())) + 256 * n
        completion_tokens = len(content.split())
        self._send_json(200, {
            "id": "chatcmpl-mock-%d" % num,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": req.get("model") or self.listed_model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        })


def main():
    ap = argparse.ArgumentParser(description="OpenAI-compatible mock chat-completions endpoint")
    ap.add_argument("--port", type=int, default=38011, help="TCP port on 127.0.0.1 (0 = any free port)")
    ap.add_argument("--model", metavar="NAME", help="the served model: chat requests naming another get HTTP 404 (default: accept any, list \"mock\")")
    ap.add_argument("--delay", type=float, default=0.0, help="seconds to sleep per request")
    ap.add_argument("--capacity", type=int, default=0, help="chat requests worked on at once; later ones wait (0 = no limit)")
    ap.add_argument("--quiet", action="store_true", help="do not log requests")
    ap.add_argument("--no-video", action="store_true", help="refuse video_url parts with HTTP 400 (an images-only model)")
    args = ap.parse_args()
    global _capacity
    if args.capacity > 0:
        _capacity = threading.BoundedSemaphore(args.capacity)
    Handler.quiet = args.quiet
    Handler.delay = max(0.0, args.delay)
    Handler.no_video = args.no_video
    if args.model is not None:
        Handler.listed_model = args.model
        Handler.required_model = args.model
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.allow_reuse_address = True
    try:
        httpd = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    except OSError as e:
        sys.stderr.write("mock-endpoint: cannot listen on 127.0.0.1:%d: %s\n" % (args.port, e))
        return 1
    print("listening on http://127.0.0.1:%d/v1" % httpd.server_address[1], flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
