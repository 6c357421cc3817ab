# SPDX-License-Identifier: MPL-2.0
"""neva-remote: forward each chunk's JPEG frames to a remote NeVA-style endpoint.

Same request as NVIDIA VSS's NeVA-22B custom-model sample, with only the Python
standard library (no `requests`):

    POST $NEVA_ENDPOINT
    Authorization: Bearer $NVIDIA_API_KEY
    {"messages": [{"role": "user",
                   "content": "<prompt> <img src=\"data:image/jpeg;base64,...\" />"}],
     "max_tokens": 1024, "temperature": 0.20, "top_p": 0.70, "seed": 0,
     "stream": false}

and returns choices[0].message.content. One <img> tag per frame, in frame
order. Generation parameters set by the user (max_new_tokens, temperature,
top_p, seed) replace the defaults above; top_k is not sent (NeVA does not
take it).

Environment:
    NVIDIA_API_KEY  required (checked when the model is loaded)
    NEVA_ENDPOINT   default https://ai.api.nvidia.com/v1/vlm/nvidia/neva-22b
    NEVA_TIMEOUT    seconds per request, default 60

The API key is never printed nor put in any error message.
"""

import base64
import http.client
import json
import os
import socket
import urllib.error
import urllib.request

DEFAULT_ENDPOINT = "https://ai.api.nvidia.com/v1/vlm/nvidia/neva-22b"
DEFAULT_TIMEOUT_S = 60.0
MAX_BODY_IN_ERRORS = 300

DEFAULT_MAX_TOKENS = 1024
DEFAULT_TEMPERATURE = 0.20
DEFAULT_TOP_P = 0.70
DEFAULT_SEED = 0


def _jpeg_bytes(frame, index):
    """One frame (1-D uint8 numpy array, torch tensor or bytes-like) -> bytes."""
    if hasattr(frame, "detach"):  # torch tensor
        frame = frame.detach().cpu().numpy()
    if hasattr(frame, "tobytes"):
        data = frame.tobytes()
    elif isinstance(frame, (bytes, bytearray, memoryview)):
        data = bytes(frame)
    else:
        raise TypeError(f"frame {index}: expected JPEG bytes (1-D uint8 array), got {type(frame).__name__}")
    if data[:2] != b"\xff\xd8":
        raise ValueError(
            f"frame {index} is not JPEG data (got {len(data)} bytes); "
            "set `jpeg_encoded: true` in manifest.yaml"
        )
    return data


def _frames(input):
    """The chunk's frames as a list, whether `input` is a list or a single frame."""
    if isinstance(input, (bytes, bytearray, memoryview)):
        return [input]
    if getattr(input, "ndim", None) == 1:  # one 1-D array of JPEG bytes
        return [input]
    return list(input)


def build_content(prompt, jpegs):
    tags = " ".join(
        f'<img src="data:image/jpeg;base64,{base64.b64encode(j).decode("ascii")}" />' for j in jpegs
    )
    return f"{prompt} {tags}"


def build_payload(prompt, jpegs, configs):
    configs = configs or {}
    return {
        "messages": [{"role": "user", "content": build_content(prompt, jpegs)}],
        "max_tokens": int(configs.get("max_new_tokens", DEFAULT_MAX_TOKENS)),
        "temperature": float(configs.get("temperature", DEFAULT_TEMPERATURE)),
        "top_p": float(configs.get("top_p", DEFAULT_TOP_P)),
        "seed": int(configs.get("seed", DEFAULT_SEED)),
        "stream": False,
    }


class Inference:
    def __init__(self):
        key = os.environ.get("NVIDIA_API_KEY", "").strip()
        if not key:
            raise RuntimeError(
                "NVIDIA_API_KEY is not set: export it (an API key from build.nvidia.com) "
                "before starting the pipeline"
            )
        if not key.isascii() or not key.isprintable() or any(c.isspace() for c in key):
            raise RuntimeError(
                "NVIDIA_API_KEY contains whitespace or non-ASCII characters: check how it was exported"
            )
        self._api_key = key
        self.endpoint = os.environ.get("NEVA_ENDPOINT", "").strip() or DEFAULT_ENDPOINT
        if not self.endpoint.startswith(("http://", "https://")):
            raise RuntimeError(f"NEVA_ENDPOINT must be an http:// or https:// URL, got {self.endpoint!r}")
        raw_timeout = os.environ.get("NEVA_TIMEOUT", "").strip()
        try:
            self.timeout = float(raw_timeout) if raw_timeout else DEFAULT_TIMEOUT_S
        except ValueError:
            self.timeout = -1.0
        if not self.timeout > 0:
            raise RuntimeError(f"NEVA_TIMEOUT must be a positive number of seconds, got {raw_timeout!r}")

    def __repr__(self):
        return f"<neva-remote Inference endpoint={self.endpoint!r} timeout={self.timeout}s>"

    def _scrub(self, text):
        return text.replace(self._api_key, "***") if self._api_key else text

    def generate(self, prompt, input, configs):
        jpegs = [_jpeg_bytes(f, i) for i, f in enumerate(_frames(input))]
        if not jpegs:
            raise ValueError("no frames in input")
        body = json.dumps(build_payload(prompt, jpegs, configs)).encode("utf-8")
        request = urllib.request.Request(
            self.endpoint,
            data=body,
            method="POST",
            headers={
                "Authorization": f"Bearer {self._api_key}",
                "Accept": "application/json",
                "Content-Type": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as e:
            try:
                detail = e.read().decode("utf-8", "replace")
            except Exception:
                detail = ""
            detail = self._scrub(detail.strip())[:MAX_BODY_IN_ERRORS]
            raise RuntimeError(f"{self.endpoint} answered HTTP {e.code}: {detail}") from None
        except (socket.timeout, TimeoutError):
            raise RuntimeError(f"{self.endpoint} did not answer within {self.timeout:g} s (NEVA_TIMEOUT)") from None
        except urllib.error.URLError as e:
            reason = e.reason
            if isinstance(reason, (socket.timeout, TimeoutError)):
                raise RuntimeError(
                    f"{self.endpoint} did not answer within {self.timeout:g} s (NEVA_TIMEOUT)"
                ) from None
            raise RuntimeError(f"request to {self.endpoint} failed: {self._scrub(str(reason))}") from None
        except (OSError, http.client.HTTPException) as e:
            raise RuntimeError(
                f"request to {self.endpoint} failed: {type(e).__name__}: {self._scrub(str(e))}"
            ) from None
        return self._parse(raw)

    def _parse(self, raw):
        text = raw.decode("utf-8", "replace")
        try:
            reply = json.loads(text)
        except ValueError:
            snippet = self._scrub(text.strip())[:MAX_BODY_IN_ERRORS]
            raise RuntimeError(f"malformed response from {self.endpoint}: not JSON: {snippet!r}") from None
        try:
            content = reply["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            snippet = self._scrub(text.strip())[:MAX_BODY_IN_ERRORS]
            raise RuntimeError(
                f"malformed response from {self.endpoint}: no choices[0].message.content in {snippet!r}"
            ) from None
        if not isinstance(content, str):
            raise RuntimeError(
                f"malformed response from {self.endpoint}: choices[0].message.content is "
                f"{type(content).__name__}, not a string"
            )
        return content
