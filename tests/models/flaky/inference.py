# SPDX-License-Identifier: MPL-2.0
# Test model for tests/custom.rs: call k (counted across restarts in the file
# $FLAKY_STATE) does what $FLAKY_PLAN's k-th entry says: ok, raise, none,
# segv (a real segmentation fault), exit (sys.exit(3)), osexit (os._exit(4)),
# print (prints to stdout, then answers), bytes, number, sleep (30 s, then
# answers), fork (starts two helpers that sleep 300 s, writes "helper PID"
# for each, then answers): an os.fork child, which keeps the worker's
# protocol pipes open, and a `sleep` started with close_fds=False.
import ctypes
import os
import subprocess
import sys
import time


class Inference:
    def __init__(self):
        self.state = os.environ["FLAKY_STATE"]
        self.plan = os.environ["FLAKY_PLAN"].split(",")
        with open(self.state, "a") as f:
            f.write("init\npid %d\n" % os.getpid())

    def generate(self, prompt, input, configs):
        with open(self.state) as f:
            n = sum(1 for line in f if line.startswith("call"))
        with open(self.state, "a") as f:
            f.write("call\n")
        action = self.plan[n] if n < len(self.plan) else "ok"
        if action == "raise":
            raise ValueError("planned failure %d" % n)
        if action == "none":
            return None
        if action == "segv":
            ctypes.string_at(0)
        if action == "exit":
            sys.exit(3)
        if action == "osexit":
            os._exit(4)
        if action == "fork":
            pid = os.fork()
            if pid == 0:
                try:
                    time.sleep(300)
                finally:
                    os._exit(0)
            sleeper = subprocess.Popen(["sleep", "300"], close_fds=False)
            with open(self.state, "a") as f:
                f.write("helper %d\nhelper %d\n" % (pid, sleeper.pid))
        if action == "print":
            print("chatter on stdout " * 1000)
            sys.stdout.flush()
        if action == "sleep":
            time.sleep(30)
        if action == "bytes":
            return b"ok bytes"
        if action == "number":
            return 42
        return "ok %d" % n
