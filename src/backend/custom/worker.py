# SPDX-License-Identifier: MPL-2.0
# vsssummarize custom-model worker. The element embeds this file and runs it
# as `PYTHON -u -c <this file> <model dir>`; it loads a VSS model directory
# (inference.py + manifest.yaml) and answers requests on a framed pipe
# protocol (see src/backend/custom/proto.rs):
#   b"VSSF" + u32le(len(json)) + json + blobs (lengths in json["blobs"]).
# Protocol messages use private copies of fds 0/1; the model's own stdout goes
# to stderr (which the element logs) and its stdin reads /dev/null.
import os
import sys


def _setup_fds():
    pin = os.fdopen(os.dup(0), "rb", buffering=0)
    pout = os.fdopen(os.dup(1), "wb", buffering=0)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    return pin, pout


PIN, POUT = _setup_fds()

import faulthandler  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import struct  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402

faulthandler.enable()
MAGIC = b"VSSF"


def read_exact(n):
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = PIN.readinto(view[got:])
        if not k:
            raise EOFError("the element closed the pipe")
        got += k
    return buf


def read_msg():
    head = read_exact(8)
    if bytes(head[:4]) != MAGIC:
        raise RuntimeError("bad frame start on the protocol pipe")
    (n,) = struct.unpack("<I", bytes(head[4:]))
    header = json.loads(bytes(read_exact(n)))
    blobs = [read_exact(k) for k in header.get("blobs", [])]
    return header, blobs


def write_msg(header, blobs=()):
    header["blobs"] = [len(b) for b in blobs]
    data = json.dumps(header).encode()
    POUT.write(MAGIC + struct.pack("<I", len(data)) + data)
    for b in blobs:
        POUT.write(b)
    POUT.flush()


def user_frame(tb, model_file):
    """The innermost traceback frame in the model's own file, as 'line N'."""
    for fs in reversed(traceback.extract_tb(tb)):
        if os.path.abspath(fs.filename) == model_file:
            return "inference.py line %d" % fs.lineno
    return None


def describe(exc, what, model_file):
    where = user_frame(exc.__traceback__, model_file)
    msg = str(exc).strip() or "(no message)"
    s = "%s raised %s: %s" % (what, type(exc).__name__, msg)
    if where:
        s += " (%s)" % where
    return s


def tail(text, lines=12):
    return "\n".join(text.rstrip().splitlines()[-lines:])


def init(model_dir, raw_needed):
    """Loads the model the way VSS does; returns (instance, info) or raises."""
    try:
        import numpy as np
    except ImportError as e:
        raise RuntimeError(
            "numpy is not importable by %s (%s); install it in that Python "
            "(pip install numpy) or point the python property / VSS_PYTHON at "
            "an environment that has it" % (sys.executable, e)
        )
    path = os.path.join(model_dir, "inference.py")
    spec = importlib.util.spec_from_file_location("inference", path)
    module = importlib.util.module_from_spec(spec)
    # As in VSS: sys.path is not changed; the module finds files next to
    # itself through __file__.
    spec.loader.exec_module(module)
    cls = getattr(module, "Inference", None)
    if cls is None or not isinstance(cls, type):
        raise RuntimeError("inference.py defines no class Inference")
    if not callable(getattr(cls, "generate", None)):
        raise RuntimeError("class Inference has no generate(prompt, input, configs) method")
    inst = cls()
    has_emb = hasattr(cls, "get_embeddings")
    torch = None
    if raw_needed or has_emb:
        try:
            import torch as _torch

            torch = _torch
        except ImportError:
            torch = None
    if torch is not None:
        if torch.cuda.is_available():
            device, dtype = "cuda", torch.float16
        else:
            device, dtype = "cpu", torch.float32
        layout = "torch.%s on %s" % (str(dtype).split(".")[-1], device)
    else:
        device, dtype = None, None
        layout = "numpy.uint8"
    info = {
        "has_embeddings": has_emb,
        "tensor": layout,
        "python": sys.version.split()[0],
        "executable": sys.executable,
    }
    return inst, has_emb, np, torch, device, dtype, info


def to_float_list(x, np):
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    a = np.asarray(x, dtype=np.float32).reshape(-1)
    return a


def main():
    model_dir = os.path.abspath(sys.argv[1])
    model_file = os.path.join(model_dir, "inference.py")
    raw_needed = sys.argv[2] == "raw"
    try:
        inst, has_emb, np, torch, device, dtype, info = init(model_dir, raw_needed)
    except BaseException as e:  # noqa: B902 - report anything, then exit
        tb = traceback.format_exc()
        if isinstance(e, SyntaxError):
            brief = "inference.py has a syntax error: %s (line %s)" % (e.msg, e.lineno)
        elif isinstance(e, RuntimeError) and str(e).startswith(("numpy", "inference.py", "class")):
            brief = str(e)
        else:
            brief = describe(e, "loading the model", model_file)
        write_msg({"op": "init_error", "error": brief, "traceback": tail(tb)})
        return 3
    write_msg(dict(op="ready", **info))

    while True:
        try:
            req, blobs = read_msg()
        except EOFError:
            return 0
        if req.get("op") == "quit":
            return 0
        rid = req["id"]
        n, h, w = req["n"], req["h"], req["w"]
        t_recv = time.monotonic_ns()
        frames = None
        bi = 0
        if req.get("raw"):
            arr = np.frombuffer(blobs[0], dtype=np.uint8).reshape(n, h, w, 3)
            bi = 1
            if torch is not None:
                frames = torch.from_numpy(arr).to(device=device, dtype=dtype)
            else:
                frames = arr
        if req.get("jpeg"):
            model_input = [np.frombuffer(b, dtype=np.uint8) for b in blobs[bi:]]
        else:
            model_input = frames
        reply = {"op": "result", "id": rid}
        out_blobs = []
        if req.get("embed") and has_emb and frames is not None:
            try:
                if torch is not None:
                    tchw = frames.permute(0, 3, 1, 2).contiguous()
                else:
                    tchw = np.ascontiguousarray(frames.transpose(0, 3, 1, 2))
                emb = to_float_list(inst.get_embeddings(tchw), np)
                out_blobs.append(emb.astype("<f4").tobytes())
                reply["embedding"] = True
            except Exception as e:
                reply["embedding_error"] = describe(e, "get_embeddings()", model_file)
        t_in = time.monotonic_ns()
        try:
            out = inst.generate(req["prompt"], model_input, req.get("configs") or {})
            t_out = time.monotonic_ns()
            if out is None:
                reply["error"] = "generate() returned None"
            elif isinstance(out, bytes):
                reply["text"] = out.decode("utf-8", "replace")
            elif isinstance(out, str):
                reply["text"] = out
            else:
                reply["error"] = "generate() returned %s, expected str" % type(out).__name__
        except Exception as e:
            t_out = time.monotonic_ns()
            reply["error"] = describe(e, "generate()", model_file)
            reply["traceback"] = tail(traceback.format_exc())
        reply["t_recv"], reply["t_in"], reply["t_out"] = t_recv, t_in, t_out
        write_msg(reply, out_blobs)
        # Freed after the answer is on its way.
        del frames, model_input, blobs


if __name__ == "__main__":
    sys.exit(main())
