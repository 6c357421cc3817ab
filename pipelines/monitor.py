#!/usr/bin/env python3
# Usage: pipelines/monitor.py RTSP_URL EVENTS [PROPERTY=VALUE ...]
#        pipelines/monitor.py --test-source EVENTS [PROPERTY=VALUE ...]
#
# A short example of reacting to alerts in your own program: runs a camera
# pipeline through vsssummarize with events=EVENTS (';'-separated, e.g.
# "a person falls;smoke or fire") and acts on each `vss-alert` bus message
# the moment the element decides it (here: prints it and rings the
# terminal bell); window summaries are printed as they come. Ctrl-C stops
# (EOS: the open chunk is captioned and the final summary printed).
# --test-source uses a live videotestsrc instead of a camera (try it with
# pipelines/mock-endpoint.py, EVENTS="mock endpoint" and
# endpoint=http://127.0.0.1:38011/v1). The endpoint and model come from
# PROPERTY=VALUE arguments or VSS's VIA_VLM_* variables, as everywhere.
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
from gi.repository import GLib, Gst  # noqa: E402


def main(argv):
    if len(argv) < 2:
        sys.stderr.write(open(__file__).read().split("\nimport")[0].split("\n", 1)[1] + "\n")
        return 2
    source, events, props = argv[0], argv[1], argv[2:]
    Gst.init(None)
    if source == "--test-source":
        src = "videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=5/1"
    else:
        src = "rtspsrc location=%s latency=200 ! application/x-rtp,media=video ! decodebin" % source
    pipeline = Gst.parse_launch(src + " ! videoconvert ! vsssummarize name=s ! fakesink sync=false "
                                "s.summary_src ! fakesink sync=false")
    s = pipeline.get_by_name("s")
    s.set_property("events", events)
    for p in props:
        name, _, value = p.partition("=")
        Gst.util_set_object_arg(s, name, value)  # parses the text as gst-launch does

    loop = GLib.MainLoop()

    def on_message(_bus, msg):
        if msg.type == Gst.MessageType.ELEMENT and msg.src == s:
            st = msg.get_structure()
            if st.get_name() == "vss-alert":
                # React here: page someone, open a gate, save a clip ...
                events = st.get_value("events")
                print("\aALERT %s [%.1f s]: %s -- %s" % (st.get_value("alert-id"), st.get_value("start"),
                                                          ", ".join(events), st.get_value("text")), flush=True)
            elif st.get_name() == "vss-summary" and st.get_value("kind") in ("summary", "final-summary"):
                print("%s [%.1f-%.1f s]: %s" % (st.get_value("kind"), st.get_value("start"), st.get_value("end"),
                                                st.get_value("text") or st.get_value("error")), flush=True)
        elif msg.type == Gst.MessageType.ERROR:
            err, dbg = msg.parse_error()
            print("error: %s (%s)" % (err.message, dbg), file=sys.stderr)
            loop.quit()
        elif msg.type == Gst.MessageType.EOS:
            loop.quit()

    bus = pipeline.get_bus()
    bus.add_signal_watch()
    bus.connect("message", on_message)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, lambda: pipeline.send_event(Gst.Event.new_eos()) and False)
    if pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
        bus.timed_pop_filtered(Gst.SECOND, Gst.MessageType.ERROR) and None
        print("error: the pipeline did not start (see the error above / GST_DEBUG=vsssummarize:4)", file=sys.stderr)
        return 4
    loop.run()
    pipeline.set_state(Gst.State.NULL)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
