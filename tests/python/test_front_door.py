#!/usr/bin/env python3
# Usage: tests/python/test_front_door.py [-v]   (run by tests/front_door.rs)
#
# Unit tests (stdlib unittest) of the newcomer's tools in pipelines/:
# vss-run.py's helpers, mock-endpoint.py's vLLM-like answers, report's
# escaping, and vss-run.py's progress output on a terminal (a pty) and off
# it. The tests that run the plugin need GST_PLUGIN_PATH to hold
# libgstvsssummarize.so (tests/front_door.rs sets it) and skip otherwise;
# with VSS_TEST_REQUIRE_PLUGIN=1 they fail instead.
import importlib.util
import json
import os
import pty
import select
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request

sys.dont_write_bytecode = True  # no __pycache__ next to pipelines/vss-run.py

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PIPELINES = os.path.join(ROOT, "pipelines")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def load(name, path):
    from importlib.machinery import SourceFileLoader
    loader = SourceFileLoader(name, path)
    spec = importlib.util.spec_from_loader(name, loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


vss_run = load("vss_run", os.path.join(PIPELINES, "vss-run.py"))
report = load("vss_report", os.path.join(PIPELINES, "report"))
import check_report  # noqa: E402


def have_plugin():
    try:
        import gi
        gi.require_version("Gst", "1.0")
        from gi.repository import Gst
        Gst.init(None)
        return Gst.ElementFactory.find("vsssummarize") is not None
    except (ImportError, ValueError):
        return False


HAVE_PLUGIN = have_plugin()
if not HAVE_PLUGIN and os.environ.get("VSS_TEST_REQUIRE_PLUGIN") == "1":
    raise SystemExit("VSS_TEST_REQUIRE_PLUGIN=1 but vsssummarize is not in GST_PLUGIN_PATH")


class Mock:
    """pipelines/mock-endpoint.py on a free port."""

    def __init__(self, *args):
        self.proc = subprocess.Popen([sys.executable, os.path.join(PIPELINES, "mock-endpoint.py"),
                                      "--port", "0", "--quiet", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().strip()
        if not line.startswith("listening on "):
            self.close()
            raise RuntimeError("mock did not start: %r %s" % (line, self.proc.stderr.read()))
        self.url = line[len("listening on "):]
        self.base = self.url[: -len("/v1")]

    def close(self):
        self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def http(method, url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


class Helpers(unittest.TestCase):
    def test_expected_chunks(self):
        self.assertEqual(vss_run.expected_chunks(5.0, 2, 0), 3)
        self.assertEqual(vss_run.expected_chunks(30.0, 10, 0), 3)
        self.assertEqual(vss_run.expected_chunks(30.04, 10, 0), 4)  # a last 0.04 s chunk
        self.assertEqual(vss_run.expected_chunks(12.0, 10, 5), 3)  # [0,10) [5,15) [10,20)
        self.assertEqual(vss_run.expected_chunks(1.0, 10, 0), 1)
        self.assertIsNone(vss_run.expected_chunks(None, 10, 0))
        self.assertIsNone(vss_run.expected_chunks(0.0, 10, 0))

    def test_format_record(self):
        self.assertEqual(vss_run.format_record({"chunk-index": 0, "start": 0.0, "end": 10.0, "text": "A forklift."}),
                         "[  0.0–10.0 s] chunk 0: A forklift.")
        self.assertEqual(vss_run.format_record({"chunk-index": 1, "start": 10.0, "end": 20.0, "text": "",
                                                "error": "HTTP 404 Not Found"}),
                         "[ 10.0–20.0 s] chunk 1 FAILED: HTTP 404 Not Found")
        self.assertEqual(vss_run.format_record({"kind": "alert", "start": 3.0, "end": 4.0, "text": "fire",
                                                "events": ["smoke or fire"]}),
                         "[  3.0–4.0 s] ALERT (smoke or fire): fire")
        self.assertEqual(vss_run.format_record({"kind": "summary", "summary-index": 1, "start": 60, "end": 120,
                                                "text": "a\nb"}),
                         "[ 60.0–120.0 s] summary 1: a b")
        # The final summary is printed whole, one line per paragraph.
        self.assertEqual(vss_run.format_record({"kind": "final-summary", "start": 0, "end": 60,
                                                "text": "x\n\n y \x1b[31m"}),
                         "[  0.0–60.0 s] final summary:\n  x\n  y \ufffd[31m")
        self.assertEqual(vss_run.format_record({"kind": "final-summary", "start": 0, "end": 60, "text": "",
                                                "error": "HTTP 500"}),
                         "[  0.0–60.0 s] final summary FAILED: HTTP 500")
        self.assertEqual(vss_run.format_record({"kind": "caption", "chunk-index": 2, "start": 1, "end": 2,
                                                "text": "y"}), "[  1.0–2.0 s] chunk 2: y")
        self.assertTrue(vss_run.format_record({"kind": "new-kind", "start": 1, "end": 2, "text": "z"})
                        .endswith("new-kind: z"))

    def test_model_text_cannot_reach_the_terminal(self):
        line = vss_run.format_record({"chunk-index": 0, "start": 0, "end": 1,
                                      "text": "two\nlines\x1b[2J\x07 and\ttabs\x9b"})
        self.assertNotRegex(line, "[\x00-\x1f\x7f-\x9f]")
        self.assertIn("two lines", line)

    def test_truncate(self):
        self.assertEqual(vss_run.truncate("abcdef", 10), "abcdef")
        self.assertEqual(vss_run.truncate("abcdef", 4), "abc…")
        self.assertEqual(vss_run.display_width(vss_run.truncate("日本語のテキスト", 7)), 7)

    def test_property_args(self):
        self.assertEqual(vss_run.parse_property_args(["chunk-duration=5", "prompt=a = b"]),
                         [("chunk-duration", "5"), ("prompt", "a = b")])
        with self.assertRaises(ValueError):
            vss_run.parse_property_args(["notaproperty"])
        with self.assertRaises(ValueError):
            vss_run.parse_property_args(["=5"])

    def test_paths(self):
        self.assertEqual(vss_run.default_out("/x/clip.mp4", None), "clip.captions.jsonl")
        self.assertEqual(vss_run.report_path_for("a/out.jsonl"), "a/out.html")
        self.assertEqual(vss_run.report_path_for("out.txt"), "out.txt.html")


class MockEndpoint(unittest.TestCase):
    def test_any_model_by_default(self):
        with Mock() as m:
            self.assertEqual(http("GET", m.url + "/models")[1]["data"][0]["id"], "mock")
            code, body = http("POST", m.url + "/chat/completions", {"model": "whatever", "messages": []})
            self.assertEqual(code, 200)
            self.assertEqual(body["object"], "chat.completion")

    def test_paths_outside_v1_are_404_like_vllm(self):
        with Mock() as m:
            for method, path in (("POST", "/chat/completions"), ("GET", "/models"), ("GET", "/"),
                                 ("POST", "/v1/completions"), ("POST", "/v2/chat/completions")):
                code, body = http(method, m.base + path, {} if method == "POST" else None)
                self.assertEqual((code, body), (404, {"detail": "Not Found"}), path)
            self.assertEqual(http("GET", m.base + "/health")[0], 200)

    def test_model_check(self):
        with Mock("--model", "right") as m:
            self.assertEqual([d["id"] for d in http("GET", m.url + "/models")[1]["data"]], ["right"])
            code, body = http("POST", m.url + "/chat/completions", {"model": "wrong", "messages": []})
            self.assertEqual(code, 404)
            self.assertEqual(body["message"], "The model `wrong` does not exist.")
            self.assertEqual(body["type"], "NotFoundError")
            code, _ = http("POST", m.url + "/chat/completions", {"model": "right", "messages": []})
            self.assertEqual(code, 200)


class Report(unittest.TestCase):
    def test_escapes_untrusted_text_and_loads_nothing(self):
        recs = [
            {"chunk-index": 0, "start": 0, "end": 10, "frame-times": [0.0], "model": "m<x>",
             "text": "<script>alert(1)</script><img src=http://evil.example/a.png onerror=alert(2)>"},
            {"chunk-index": 1, "start": 10, "end": 20, "text": "", "error": "<b>HTTP 500</b>"},
            {"kind": "alert", "start": 12, "end": 13, "text": "\"quoted\" & <i>"},
            {"kind": "final-summary", "start": 0, "end": 20, "text": "</section><script>x</script>"},
        ]
        with tempfile.TemporaryDirectory() as d:
            src = os.path.join(d, "out.jsonl")
            with open(src, "w") as f:
                for r in recs:
                    f.write(json.dumps(r) + "\n")
                f.write("not json\n[1, 2]\n")
            r = subprocess.run([sys.executable, os.path.join(PIPELINES, "report"), src],
                               capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 0, r.stderr)
            with open(os.path.join(d, "out.html"), encoding="utf-8") as f:
                page = f.read()
        res = check_report.check(page)
        self.assertEqual(res["script"], 0)
        self.assertEqual(res["img"], 0)  # no --video: no thumbnails
        self.assertEqual(res["external"], [])
        self.assertEqual(res["unclosed"], [])
        self.assertEqual((res["error"], res["alert"], res["final_summary"]), (1, 1, 1))
        self.assertIn("<script>alert(1)</script>", res["text"])  # shown as text
        self.assertIn("2 unreadable lines skipped", res["text"])
        self.assertIn("Content-Security-Policy", page)
        # The final summary comes before the timeline.
        self.assertLess(page.index("final-summary"), page.index("Timeline"))

    def test_unreadable_input_is_exit_2(self):
        r = subprocess.run([sys.executable, os.path.join(PIPELINES, "report"), "/nonexistent/x.jsonl"],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 2)
        self.assertIn("cannot read", r.stderr)


@unittest.skipUnless(HAVE_PLUGIN, "vsssummarize is not in GST_PLUGIN_PATH")
class Progress(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        import make_clip
        cls.dir = tempfile.TemporaryDirectory()
        cls.clip = os.path.join(cls.dir.name, "clip.avi")
        make_clip.make_clip(cls.clip, 5, 10)

    @classmethod
    def tearDownClass(cls):
        cls.dir.cleanup()

    def cmd(self, url, out):
        return [sys.executable, os.path.join(PIPELINES, "vss-run.py"), self.clip, "-o", out,
                "chunk-duration=2", "num-frames-per-chunk=2", "max-concurrency=1",
                "endpoint=" + url, "model-name=mock"]

    def test_status_line_on_a_terminal(self):
        with Mock("--delay", "0.4") as m:
            out = os.path.join(self.dir.name, "tty.jsonl")
            master, slave = pty.openpty()
            proc = subprocess.Popen(self.cmd(m.url, out), stdout=subprocess.PIPE, stderr=slave,
                                    stdin=subprocess.DEVNULL)
            os.close(slave)
            err = b""
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                r, _, _ = select.select([master], [], [], 0.5)
                if r:
                    try:
                        chunk = os.read(master, 65536)
                    except OSError:  # EIO: the other side closed
                        break
                    if not chunk:
                        break
                    err += chunk
                elif proc.poll() is not None:
                    break
            os.close(master)
            stdout = proc.stdout.read().decode()
            proc.stdout.close()
            self.assertEqual(proc.wait(timeout=60), 0, err)
        err = err.decode("utf-8", "replace")
        # Redrawn in place: carriage returns and erase-to-end-of-line.
        self.assertIn("\r", err)
        self.assertIn("\x1b[K", err)
        self.assertRegex(err, r"vss-run: [0-3]/3 chunks")
        self.assertIn("elapsed", err)
        self.assertIn("left", err)  # an estimate once a chunk is done
        self.assertIn("vss-run: 3 chunks captioned, 0 failed", err)
        # stdout is not the terminal: just the records (3 captions, a
        # window summary, the final summary's two lines).
        self.assertEqual(len(stdout.splitlines()), 6, stdout)
        self.assertNotIn("\x1b", stdout)

    def test_ctrl_c_keeps_the_records_so_far_and_twice_aborts(self):
        import make_clip
        clip = os.path.join(self.dir.name, "long.avi")
        make_clip.make_clip(clip, 20, 5)  # 10 chunks of 2 s
        with Mock("--delay", "0.5") as m:
            for presses, want in ((1, 0), (2, vss_run.EXIT_ABORTED)):
                out = os.path.join(self.dir.name, "int%d.jsonl" % presses)
                cmd = [sys.executable, os.path.join(PIPELINES, "vss-run.py"), clip, "-o", out,
                       "chunk-duration=2", "num-frames-per-chunk=1", "max-concurrency=1",
                       "max-pending-chunks=1", "endpoint=" + m.url, "model-name=mock"]
                proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                        stdin=subprocess.DEVNULL)
                first = proc.stdout.readline()  # the first record
                self.assertIn("chunk 0:", first)
                for _ in range(presses):
                    proc.send_signal(signal.SIGINT)
                    time.sleep(0.5)  # the bus loop looks every 0.1 s
                stdout, stderr = proc.communicate(timeout=60)
                self.assertEqual(proc.returncode, want, stderr)
                self.assertIn("Ctrl-C: stopping", stderr)
                if presses == 1:
                    n = len([l for l in stdout.splitlines() if "] chunk " in l]) + 1
                    with open(out) as f:
                        recs = [json.loads(l) for l in f.read().splitlines()]
                    self.assertEqual(len([r for r in recs if r["kind"] == "caption"]), n)
                    # Stopped early, the captions so far are still summarized.
                    self.assertEqual(recs[-1]["kind"], "final-summary")
                    self.assertLess(n, 10, "stopped early")
                    self.assertIn("vss-run: %s captioned, 0 failed" % vss_run.plural(n, "chunk"), stderr)
                else:
                    self.assertIn("vss-run: aborted (second Ctrl-C)", stderr)

    def test_plain_lines_off_a_terminal(self):
        with Mock() as m:
            out = os.path.join(self.dir.name, "plain.jsonl")
            r = subprocess.run(self.cmd(m.url, out), capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotRegex(r.stderr, "[\x00-\x09\x0b-\x1f\x7f]")
        self.assertIn("3 chunks of 2 s expected", r.stderr)
        self.assertEqual(r.stdout.splitlines()[0][:15], "[  0.0–2.0 s] c")



@unittest.skipUnless(HAVE_PLUGIN, "vsssummarize is not in GST_PLUGIN_PATH")
class Monitor(unittest.TestCase):
    def test_alerts_are_acted_on_as_they_arrive_and_ctrl_c_gives_the_final_summary(self):
        with Mock() as m:
            # Every mock caption says "mock endpoint": every chunk alerts.
            cmd = [sys.executable, os.path.join(PIPELINES, "monitor.py"), "--test-source", "mock endpoint",
                   "endpoint=" + m.url, "chunk-duration=1", "num-frames-per-chunk=1", "summary-duration=2"]
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    stdin=subprocess.DEVNULL)
            first = proc.stdout.readline()
            # A live source's first frame (the first chunk's start) comes a
            # little after 0 s on a loaded machine: 0.0 or 0.1 s, not exactly 0.
            self.assertRegex(first, r"^\aALERT s-0 \[0\.\d s\]: mock endpoint -- mock endpoint")
            time.sleep(2)
            proc.send_signal(signal.SIGINT)
            stdout, stderr = proc.communicate(timeout=60)
            self.assertEqual(proc.returncode, 0, stderr)
            lines = stdout.splitlines()
            self.assertTrue(any(l.startswith("summary [0.0-2.0 s]: summary of <") for l in lines), stdout)
            self.assertTrue(lines[-1].startswith("final-summary [0.0-"), stdout)


if __name__ == "__main__":
    unittest.main()
