#!/usr/bin/env python3
# Usage: pipelines/vss-run.py [options] VIDEO [PROPERTY=VALUE ...]
#        pipelines/vss-run.py [options] --rtsp URL [PROPERTY=VALUE ...]
#
# Runs the vsssummarize pipeline that pipelines/summarize-file.sh and
# pipelines/summarize-rtsp.sh use, and shows what happens while it runs:
#
#   file:  filesrc ! decodebin ! videoconvert ! vsssummarize PROPS name=s
#            s.summary_src ! queue ! filesink location=OUT   s.src ! fakesink sync=false
#   rtsp:  rtspsrc location=URL latency=200 [protocols=P] ! application/x-rtp,media=video
#            ! decodebin ! videoconvert ! vsssummarize PROPS name=s
#            s.summary_src ! queue ! filesink location=OUT append=true buffer-mode=unbuffered
#            s.src ! fakesink sync=false
#
# PROPERTY=VALUE arguments are vsssummarize properties (later ones win), e.g.
# chunk-duration=10 prompt="Describe the scene"; they are set on the element
# directly, not put into a launch line (so an api-key=... never reaches the
# GST_PIPELINE debug log). Unknown properties and bad values are usage errors.
#
# Output:
#   stdout  one line per record as it arrives, e.g.
#             [  0.0–10.0 s] chunk 0: A forklift moves ...
#             [ 10.0–20.0 s] chunk 1 FAILED: cannot connect to http://...
#           records with a "kind" other than caption (summary, alert) are
#           printed with their kind as the label; the final summary is
#           printed last, whole (one line per paragraph):
#             [  0.0–10.0 s] summary 0: <0.00> <10.00> A forklift ...
#             [ 20.0–30.0 s] ALERT (a person falls): A man falls ...
#             [  0.0–60.0 s] final summary:
#               <0.00> <60.00> ...
#   stderr  progress: on a terminal one status line redrawn in place (chunks
#           done / expected, the latest caption, elapsed time, time left);
#           otherwise plain lines only (no control characters): a line when
#           the expected chunk count is known and one every 10 s.
#           Also the element's warnings that are not about one chunk, the
#           error of a failed pipeline, and a result line at the end:
#             vss-run: 3 chunks captioned, 0 failed, 2 summaries in 12.3 s -> out.jsonl
#   OUT     the JSON Lines records (the element's summary_src).
#
# Exit status:
#   0    every chunk was captioned (and every summary made)
#   2    usage error (bad option, unknown property or bad property value)
#   3    some or all chunks or summaries failed (the first error is
#        printed), or no chunk was produced at all
#   4    the pipeline itself failed: configuration error (e.g. chunk-overlap >=
#        chunk-duration, no API key), missing input file, missing plugin,
#        an element error (decoder, RTSP connection, ...)
#   130  aborted by a second Ctrl-C
# Ctrl-C once sends EOS: the open chunk is captioned and pending requests are
# awaited (drain-timeout), so the records so far are kept; a second Ctrl-C
# aborts at once.
#
# Options:
#   -o, --out OUT        the JSON Lines file (default: VIDEO's basename +
#                        .captions.jsonl, or rtsp.captions.jsonl)
#   --append             append to OUT instead of replacing it (rtsp always)
#   --report             afterwards write OUT's HTML report next to it
#                        (pipelines/report OUT --video VIDEO -o OUT.html)
#   --rtsp URL           read a live RTSP stream instead of a file
#   --rtsp-protocols P   rtspsrc protocols, e.g. tcp
#   --rtsp-latency MS    rtspsrc latency (default 200)
#
# Needs PyGObject with the GStreamer typelibs (Debian: python3-gi
# gir1.2-gstreamer-1.0); run with another python3 that lacks them, it re-runs
# itself with /usr/bin/python3. The plugin is found through GST_PLUGIN_PATH.
import argparse
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import unicodedata

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_CHUNKS_FAILED = 3
EXIT_PIPELINE = 4
EXIT_ABORTED = 130

# Record kinds other than per-chunk captions, and how a line labels them.
# A new kind needs only a line here (unknown kinds print with their own name).
KIND_LABELS = {
    "summary": "summary",
    "final-summary": "final summary",
    "alert": "ALERT",
}
CAPTION_KINDS = ("", "caption")
# Element warnings that belong to one chunk: its record says it already.
PER_CHUNK_WARNINGS = ("vss-chunk-failed", "vss-chunk-dropped", "vss-summary-failed")
HEARTBEAT_S = 10.0
REDRAW_S = 0.25

# C0/C1 control characters and DEL (model output is untrusted: no terminal
# escape sequences may pass through).
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SPACE_RE = re.compile(r"\s+")


def one_line(text):
    """`text` on one line: whitespace runs become one space, other control
    characters become U+FFFD."""
    text = _SPACE_RE.sub(" ", str(text)).strip()
    return _CONTROL_RE.sub("\ufffd", text)


def display_width(text):
    return sum(2 if unicodedata.east_asian_width(c) in ("W", "F") else 1 for c in text)


def truncate(text, width):
    """`text` cut to `width` terminal columns, with "…" when cut."""
    if width <= 0:
        return ""
    if display_width(text) <= width:
        return text
    out, used = [], 0
    for c in text:
        w = 2 if unicodedata.east_asian_width(c) in ("W", "F") else 1
        if used + w > width - 1:
            break
        out.append(c)
        used += w
    return "".join(out) + "…"


def expected_chunks(duration_s, chunk_duration, chunk_overlap):
    """How many chunks a stream of `duration_s` seconds makes: one per stride
    start that lies before the end (the last may be short). None if unknown."""
    if duration_s is None or duration_s <= 0:
        return None
    stride = chunk_duration - chunk_overlap
    if stride <= 0:
        return None
    return max(1, math.ceil(duration_s / stride - 1e-6))


def plural(n, word):
    return "%d %s%s" % (n, word, "" if n == 1 else "s")


def fmt_clock(seconds):
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return "%d:%02d:%02d" % (h, m, s) if h else "%d:%02d" % (m, s)


def record_kind(rec):
    kind = rec.get("kind") or ""
    return "" if kind in CAPTION_KINDS else str(kind)


def format_record(rec):
    """One readable line for a record (a dict with the record's fields)."""
    start = rec.get("start")
    end = rec.get("end")
    try:
        span = "[%5.1f–%.1f s]" % (float(start), float(end))
    except (TypeError, ValueError):
        span = "[  ?  ]"
    kind = record_kind(rec)
    if kind == "final-summary" and rec.get("error") is None:
        paragraphs = [one_line(p) for p in str(rec.get("text", "")).splitlines() if p.strip()]
        return "%s final summary:\n%s" % (span, "\n".join("  " + p for p in paragraphs))
    if kind == "summary":
        label = "summary %s" % rec.get("summary-index", "?")
    elif kind == "alert":
        events = [one_line(e) for e in (rec.get("events") or [])]
        label = "ALERT (%s)" % "; ".join(events) if events else "ALERT"
    elif kind:
        label = KIND_LABELS.get(kind, kind)
    else:
        label = "chunk %s" % rec.get("chunk-index", "?")
    if rec.get("error") is not None:
        return "%s %s FAILED: %s" % (span, label, one_line(rec.get("error")))
    return "%s %s: %s" % (span, label, one_line(rec.get("text", "")))


def structure_to_record(s):
    """The fields of a vss-summary structure that the lines and counts use."""
    rec = {}
    for name in ("chunk-index", "summary-index", "start", "end", "text", "error", "kind",
                 "latency", "events"):
        if s.has_field(name):
            try:
                v = s.get_value(name)
            except TypeError:
                v = None
            if name == "events" and v is not None and not isinstance(v, (list, tuple)):
                try:
                    v = list(v)  # Gst.ValueArray (python3-gst-1.0's overrides)
                except TypeError:
                    v = [str(v)]
            rec[name] = v
    return rec


def parse_property_args(args):
    """[(name, value)] from PROPERTY=VALUE strings; raises ValueError."""
    out = []
    for a in args:
        name, sep, value = a.partition("=")
        if not sep or not name or not re.match(r"^[A-Za-z][A-Za-z0-9_-]*$", name):
            raise ValueError("expected PROPERTY=VALUE, got %r" % a)
        out.append((name.replace("_", "-"), value))
    return out


def default_out(video, rtsp):
    if rtsp:
        return "rtsp.captions.jsonl"
    base = os.path.basename(video)
    stem = base.rsplit(".", 1)[0] if "." in base.lstrip(".") else base
    return stem + ".captions.jsonl"


def report_path_for(out):
    return (out[: -len(".jsonl")] if out.endswith(".jsonl") else out) + ".html"


def build_parser():
    ap = argparse.ArgumentParser(
        prog="vss-run.py",
        description="Run vsssummarize on a video file or an RTSP stream and show progress.",
        epilog="Exit status: 0 all chunks captioned, 2 usage error, 3 chunks failed, "
        "4 pipeline failed, 130 aborted (second Ctrl-C).",
    )
    ap.add_argument("-o", "--out", help="JSON Lines output (default: VIDEO basename + .captions.jsonl)")
    ap.add_argument("--append", action="store_true", help="append to OUT (rtsp mode always appends)")
    ap.add_argument("--report", action="store_true", help="write OUT's HTML report next to it afterwards")
    ap.add_argument("--rtsp", metavar="URL", help="read this RTSP stream instead of a file")
    ap.add_argument("--rtsp-protocols", metavar="P", help="rtspsrc protocols, e.g. tcp")
    ap.add_argument("--rtsp-latency", metavar="MS", type=int, default=200, help="rtspsrc latency (default 200)")
    ap.add_argument("args", nargs="*", metavar="VIDEO | PROPERTY=VALUE",
                    help="the video file (unless --rtsp), then vsssummarize properties")
    return ap


def import_gst():
    """(Gst, GLib); re-runs this script with /usr/bin/python3 when this
    interpreter has no PyGObject. Exits 4 when none has."""
    try:
        import gi
        gi.require_version("Gst", "1.0")
        from gi.repository import GLib, Gst
        return Gst, GLib
    except (ImportError, ValueError) as e:
        system = "/usr/bin/python3"
        if (os.environ.get("VSS_RUN_REEXEC") != "1" and os.path.exists(system)
                and os.path.realpath(sys.executable) != os.path.realpath(system)):
            env = dict(os.environ, VSS_RUN_REEXEC="1")
            os.execve(system, [system, os.path.abspath(__file__)] + sys.argv[1:], env)
        sys.stderr.write("vss-run: %s cannot use GStreamer from Python (%s); install python3-gi "
                         "gir1.2-gstreamer-1.0 (Debian) or run with a python3 that has them\n"
                         % (sys.executable, e))
        sys.exit(EXIT_PIPELINE)


class Usage(Exception):
    pass


def set_properties(Gst, element, props):
    """Sets PROPERTY=VALUE pairs on `element`, parsing values by the
    property's type as gst-launch does. Raises Usage."""
    from gi.repository import GObject
    for name, value in props:
        pspec = element.find_property(name)
        if pspec is None:
            raise Usage("vsssummarize has no property '%s' (see: gst-inspect-1.0 vsssummarize)" % name)
        if not pspec.flags & GObject.ParamFlags.WRITABLE:
            raise Usage("property '%s' is read-only" % name)
        shown = "<hidden>" if name == "api-key" else value
        if pspec.value_type == GObject.TYPE_STRING:
            element.set_property(name, value)
            continue
        try:
            st = Gst.Structure.new_from_string("x, v=(%s)%s" % (pspec.value_type.name, value))
            parsed = st.get_value("v") if st is not None else None
        except (TypeError, ValueError):
            st = parsed = None
        if st is None:
            raise Usage("bad value for %s: '%s' (expected a %s)" % (name, shown, pspec.value_type.name))
        lo, hi = getattr(pspec, "minimum", None), getattr(pspec, "maximum", None)
        if isinstance(parsed, (int, float)) and not isinstance(parsed, bool) and lo is not None:
            if parsed < lo or parsed > hi:
                raise Usage("%s=%s is out of range (%s … %s)" % (name, shown, lo, hi))
        element.set_property(name, parsed)


def gst_quote(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Status:
    """Progress output on stderr: a redrawn line on a terminal, plain lines
    (no control characters) otherwise."""

    def __init__(self, stream, tty):
        self.stream = stream
        self.tty = tty
        self.shown = False

    def width(self):
        try:
            cols = os.get_terminal_size(self.stream.fileno()).columns
        except (OSError, ValueError, AttributeError):
            cols = 0
        return cols if cols >= 20 else shutil.get_terminal_size((80, 24)).columns or 80

    def draw(self, line):
        if not self.tty:
            return
        self.stream.write("\r" + truncate(line, self.width() - 1) + "\x1b[K")
        self.stream.flush()
        self.shown = True

    def clear(self):
        if self.tty and self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.shown = False

    def line(self, text):
        """A permanent line on stderr (the status line is redrawn after it)."""
        self.clear()
        self.stream.write(text + "\n")
        self.stream.flush()


class Run:
    def __init__(self, Gst, opts, props):
        self.Gst = Gst
        self.opts = opts
        self.props = props
        self.status = Status(sys.stderr, sys.stderr.isatty())
        self.t0 = time.monotonic()
        self.ok = 0
        self.failed = 0
        self.dropped = 0
        self.others = 0
        self.summaries = 0
        self.summaries_failed = 0
        self.alerts = 0
        self.first_error = None
        self.last_text = ""
        self.expected = None
        self.duration_s = None
        self.sigints = 0
        self.eos_sent = False
        self.last_heartbeat = self.t0
        self.last_draw = 0.0
        self.pipeline = None
        self.element = None
        self.stdout_open = True

    # -- output -----------------------------------------------------------
    def done(self):
        return self.ok + self.failed

    def elapsed(self):
        return time.monotonic() - self.t0

    def time_left(self):
        if self.expected is None or self.done() == 0:
            return None
        return self.elapsed() / self.done() * max(0, self.expected - self.done())

    def progress_text(self, plain):
        exp = "?" if self.expected is None else str(max(self.expected, self.done()))
        parts = ["%d/%s chunks" % (self.done(), exp)]
        if self.failed:
            parts.append("%d failed" % self.failed)
        parts.append(fmt_clock(self.elapsed()) + " elapsed")
        left = self.time_left()
        if left is not None:
            parts.append("~%s left" % fmt_clock(left))
        if self.eos_sent:
            parts.append("stopping: waiting for the open chunks")
        else:
            pos = self.position()
            if pos is not None and self.done() == 0:
                parts.append("video read to %.1f s, waiting for the model" % pos)
        text = "vss-run: " + ", ".join(parts)
        if not plain and self.last_text:
            text += " | " + self.last_text
        return text

    def position(self):
        if self.pipeline is None:
            return None
        ok, pos = self.pipeline.query_position(self.Gst.Format.TIME)
        return pos / 1e9 if ok and pos >= 0 else None

    def tick(self, force=False):
        now = time.monotonic()
        if self.status.tty:
            if force or now - self.last_draw >= REDRAW_S:
                self.status.draw(self.progress_text(plain=False))
                self.last_draw = now
        elif now - self.last_heartbeat >= HEARTBEAT_S:
            self.status.line(self.progress_text(plain=True))
            self.last_heartbeat = now

    def on_record(self, rec):
        self.status.clear()
        if self.stdout_open:
            try:
                sys.stdout.write(format_record(rec) + "\n")
                sys.stdout.flush()
            except BrokenPipeError:
                # e.g. `| head`: keep running (OUT gets every record), print no more.
                self.stdout_open = False
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
                os.close(devnull)
        kind = record_kind(rec)
        if kind in ("summary", "final-summary"):
            if rec.get("error") is not None:
                self.summaries_failed += 1
                if self.first_error is None:
                    self.first_error = (KIND_LABELS[kind], one_line(rec.get("error")))
            else:
                self.summaries += 1
        elif kind == "alert":
            self.alerts += 1
        elif kind:
            self.others += 1
        elif rec.get("error") is not None:
            self.failed += 1
            err = one_line(rec.get("error"))
            if err.startswith("dropped"):
                self.dropped += 1
            if self.first_error is None:
                self.first_error = (rec.get("chunk-index"), err)
        else:
            self.ok += 1
            self.last_text = "chunk %s: %s" % (rec.get("chunk-index", "?"), one_line(rec.get("text", "")))
        self.last_heartbeat = time.monotonic()
        self.tick(force=True)

    def on_duration(self):
        if self.expected is not None or self.opts.rtsp:
            return
        ok, dur = self.pipeline.query_duration(self.Gst.Format.TIME)
        if not ok or dur <= 0:
            return
        self.duration_s = dur / 1e9
        d = self.element.get_property("chunk-duration")
        o = self.element.get_property("chunk-overlap")
        self.expected = expected_chunks(self.duration_s, d, o)
        if not self.status.tty and self.expected is not None:
            self.status.line("vss-run: %s: %.1f s of video, %d chunks of %g s expected"
                             % (self.opts.video, self.duration_s, self.expected, d))

    # -- the pipeline ----------------------------------------------------
    def build(self):
        Gst = self.Gst
        o = self.opts
        sink = "filesink name=out"
        if o.rtsp:
            src = "rtspsrc name=in latency=%d%s ! application/x-rtp,media=video ! decodebin" % (
                o.rtsp_latency, " protocols=" + gst_quote(o.rtsp_protocols) if o.rtsp_protocols else "")
        else:
            src = "filesrc name=in ! decodebin"
        desc = ("%s ! videoconvert ! vsssummarize name=s "
                "s.summary_src ! queue ! %s  s.src ! fakesink sync=false") % (src, sink)
        self.pipeline = Gst.parse_launch(desc)
        src_el = self.pipeline.get_by_name("in")
        src_el.set_property("location", o.rtsp or o.video)
        out = self.pipeline.get_by_name("out")
        out.set_property("location", o.out)
        out.set_property("sync", False)
        if o.append or o.rtsp:
            out.set_property("append", True)
        if o.rtsp:
            Gst.util_set_object_arg(out, "buffer-mode", "unbuffered")
        self.element = self.pipeline.get_by_name("s")
        set_properties(Gst, self.element, self.props)

    def on_sigint(self, signum, frame):
        self.sigints += 1

    def handle_sigint(self):
        if self.sigints >= 2:
            return True
        if self.sigints == 1 and not self.eos_sent:
            self.eos_sent = True
            self.status.line("vss-run: Ctrl-C: stopping; captioning the open chunk and waiting for "
                             "pending requests (Ctrl-C again to abort)")
            self.pipeline.send_event(self.Gst.Event.new_eos())
        return False

    def on_warning(self, msg):
        err, _debug = msg.parse_warning()
        details = msg.parse_warning_details()
        if details is not None and details.get_name() in PER_CHUNK_WARNINGS:
            return
        src = msg.src.get_name() if msg.src is not None else "?"
        self.status.line("vss-run: warning from %s: %s" % (src, one_line(err.message)))

    def on_error(self, msg):
        err, debug = msg.parse_error()
        src = msg.src.get_name() if msg.src is not None else "?"
        self.status.line("vss-run: error from %s: %s" % (src, one_line(err.message)))
        # GStreamer's debug string: "file.c(123): func (): /path/element:\nwhat".
        if debug and "\n" in debug:
            detail = one_line(debug.split("\n", 1)[1])
            if detail and detail not in err.message:
                self.status.line("vss-run:   (%s)" % detail)
        return err.message

    def loop(self):
        """Runs until EOS, ERROR or a second Ctrl-C: 'eos', 'error' or 'abort'."""
        Gst = self.Gst
        bus = self.pipeline.get_bus()
        want = (Gst.MessageType.EOS | Gst.MessageType.ERROR | Gst.MessageType.WARNING
                | Gst.MessageType.ELEMENT | Gst.MessageType.ASYNC_DONE
                | Gst.MessageType.DURATION_CHANGED)
        ret = self.pipeline.set_state(Gst.State.PLAYING)
        failed_start = ret == Gst.StateChangeReturn.FAILURE
        start_fail_deadline = time.monotonic() + 2.0
        while True:
            if self.handle_sigint():
                return "abort"
            msg = bus.timed_pop_filtered(100 * Gst.MSECOND, want)
            if msg is None:
                if failed_start and time.monotonic() > start_fail_deadline:
                    self.status.line("vss-run: error: the pipeline failed to start (no error message posted)")
                    return "error"
                if not failed_start:
                    self.on_duration()
                    self.tick()
                continue
            t = msg.type
            if t == Gst.MessageType.ELEMENT:
                s = msg.get_structure()
                if s is not None and msg.src == self.element:
                    if s.get_name() == "vss-summary":
                        self.on_record(structure_to_record(s))
                    elif s.get_name() == "vss-alert":
                        rec = structure_to_record(s)
                        rec["kind"] = "alert"
                        self.on_record(rec)
            elif t == Gst.MessageType.WARNING:
                self.on_warning(msg)
            elif t == Gst.MessageType.ERROR:
                self.on_error(msg)
                return "error"
            elif t == Gst.MessageType.EOS:
                return "eos"
            elif t in (Gst.MessageType.ASYNC_DONE, Gst.MessageType.DURATION_CHANGED):
                self.on_duration()

    def write_report(self):
        here = os.path.dirname(os.path.abspath(__file__))
        html = report_path_for(self.opts.out)
        cmd = [sys.executable, os.path.join(here, "report"), self.opts.out, "-o", html]
        if not self.opts.rtsp:
            cmd += ["--video", self.opts.video]
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            self.status.line("vss-run: warning: the report was not written (pipelines/report exit %d)"
                             % r.returncode)
            return None
        return html

    def run(self):
        Gst = self.Gst
        try:
            self.build()
        except Usage:
            raise
        except Exception as e:  # GLib.Error from parse_launch (missing element)
            self.status.line("vss-run: error: cannot build the pipeline: %s" % e)
            return EXIT_PIPELINE
        old = signal.signal(signal.SIGINT, self.on_sigint)
        try:
            how = self.loop()
        finally:
            self.status.clear()
            self.pipeline.set_state(Gst.State.NULL)
            signal.signal(signal.SIGINT, old)
        secs = self.elapsed()
        counts = "%s captioned, %d failed" % (plural(self.ok, "chunk"), self.failed)
        if self.dropped:
            counts += " (%d dropped)" % self.dropped
        if self.summaries or self.summaries_failed:
            counts += ", %s" % ("1 summary" if self.summaries == 1 else "%d summaries" % self.summaries)
            if self.summaries_failed:
                counts += " (%d failed)" % self.summaries_failed
        if self.alerts:
            counts += ", %s" % plural(self.alerts, "alert")
        if self.others:
            counts += ", %s" % plural(self.others, "other record")
        if how == "abort":
            self.status.line("vss-run: aborted (second Ctrl-C) after %.1f s: %s -> %s"
                             % (secs, counts, self.opts.out))
            return EXIT_ABORTED
        if how == "error":
            if self.done() or self.others or self.summaries or self.summaries_failed:
                self.status.line("vss-run: pipeline failed after %.1f s: %s -> %s"
                                 % (secs, counts, self.opts.out))
            else:
                self.status.line("vss-run: pipeline failed; nothing was captioned")
            return EXIT_PIPELINE
        html = self.write_report() if self.opts.report else None
        dest = self.opts.out + (", " + html if html else "")
        if self.first_error is not None:
            idx, text = self.first_error
            where = idx if isinstance(idx, str) else "chunk %s" % idx
            self.status.line("vss-run: first error (%s): %s" % (where, text))
            if "404" in text:
                self.status.line("vss-run: hint: the endpoint usually ends in /v1 and model-name must be "
                                 "a model the server lists (GET <endpoint>/models)")
            elif text.startswith("cannot connect"):
                self.status.line("vss-run: hint: is the model server running at that address? To try the "
                                 "pipeline without a model: pipelines/mock-endpoint.py (docs/front-door.md)")
        if self.done() == 0:
            self.status.line("vss-run: no chunk was produced (no video frames?) in %.1f s -> %s"
                             % (secs, dest))
            return EXIT_CHUNKS_FAILED
        self.status.line("vss-run: %s in %.1f s -> %s" % (counts, secs, dest))
        return EXIT_OK if self.failed == 0 and self.summaries_failed == 0 else EXIT_CHUNKS_FAILED


def main(argv=None):
    ap = build_parser()
    opts = ap.parse_intermixed_args(argv)
    rest = list(opts.args)
    if not opts.rtsp:
        if not rest:
            ap.print_usage(sys.stderr)
            sys.stderr.write("vss-run.py: error: give a VIDEO file or --rtsp URL\n")
            return EXIT_USAGE
        opts.video = rest.pop(0)
    else:
        opts.video = None
        if not re.match(r"^rtsp[sthu]?://", opts.rtsp):
            sys.stderr.write("vss-run.py: error: not an rtsp:// URL: %s\n" % opts.rtsp)
            return EXIT_USAGE
    try:
        props = parse_property_args(rest)
    except ValueError as e:
        sys.stderr.write("vss-run.py: error: %s\n" % e)
        return EXIT_USAGE
    if opts.out is None:
        opts.out = default_out(opts.video, opts.rtsp)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="replace")
        except AttributeError:
            pass

    Gst, _GLib = import_gst()
    Gst.init(None)
    if not opts.rtsp and not os.path.isfile(opts.video):
        sys.stderr.write("vss-run: error: no such file: %s\n" % opts.video)
        return EXIT_PIPELINE
    if Gst.ElementFactory.find("vsssummarize") is None:
        sys.stderr.write("vss-run: error: GStreamer has no vsssummarize element: build it (cargo build "
                         "--release, or pipelines/setup.sh) and put its directory in GST_PLUGIN_PATH "
                         "(now: %s)\n" % (os.environ.get("GST_PLUGIN_PATH") or "unset"))
        return EXIT_PIPELINE
    out_dir = os.path.dirname(opts.out)
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
    try:
        return Run(Gst, opts, props).run()
    except Usage as e:
        sys.stderr.write("vss-run.py: error: %s\n" % e)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
