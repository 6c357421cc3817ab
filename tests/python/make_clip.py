#!/usr/bin/env python3
# Usage: tests/python/make_clip.py OUT [SECONDS] [FPS]
#
# Writes a small test clip for the front-door tests: videotestsrc
# pattern=ball, 160x120, MJPEG in AVI (jpegenc + avimux from
# gstreamer1.0-plugins-good: no H.264 encoder needed), SECONDS (default 5)
# at FPS (default 10). Exits 0 when the file was written.
import sys

import gi

gi.require_version("Gst", "1.0")
from gi.repository import Gst  # noqa: E402


def make_clip(path, seconds=5, fps=10):
    Gst.init(None)
    pipe = Gst.parse_launch(
        "videotestsrc pattern=ball num-buffers=%d ! video/x-raw,format=I420,width=160,height=120,framerate=%d/1 "
        "! jpegenc ! avimux ! filesink name=out" % (seconds * fps, fps))
    pipe.get_by_name("out").set_property("location", path)
    pipe.set_state(Gst.State.PLAYING)
    msg = pipe.get_bus().timed_pop_filtered(60 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
    pipe.set_state(Gst.State.NULL)
    if msg is None:
        raise RuntimeError("timed out writing %s" % path)
    if msg.type == Gst.MessageType.ERROR:
        raise RuntimeError("cannot write %s: %s" % (path, msg.parse_error()[0].message))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.stderr.write("usage: make_clip.py OUT [SECONDS] [FPS]\n")
        sys.exit(2)
    make_clip(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 5,
              int(sys.argv[3]) if len(sys.argv) > 3 else 10)
