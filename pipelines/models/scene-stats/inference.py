# SPDX-License-Identifier: MPL-2.0
"""scene-stats: a tiny, deterministic "VLM" for VSS custom-model directories.

It does not understand the prompt. It describes each chunk from its pixels:
frame count and size, mean brightness, dominant colour(s) and the amount of
motion between consecutive frames. Pure numpy (torch is accepted as input but
never imported); useful to try the custom-model path end to end without a GPU
or a network, and as a template for your own model.

Contract (NVIDIA VSS `VLM_MODEL_TO_USE=custom`): the loader imports this file
as module `inference`, builds `Inference()` and calls
`generate(prompt, input, configs)` once per chunk, where `input` holds the
chunk's frames as (N, H, W, 3) RGB with values 0..255 -- a torch tensor
(float16 on CUDA / float32 on CPU) or, without torch, a numpy uint8 array.

Caption format (stable; tests may assert on these substrings):

    "<N> frame(s), <W>x<H>. Mostly <dark|dim|moderate|bright>
     (mean brightness <P>%); dominant colour: <name> (<S>% of pixels)
     [, second colour: <name> (<S>%)]. <motion sentence>"

    motion sentence, with <M> the mean change in % (one decimal):
      "Scene is static (mean change <M>% of full scale)."
      "Scene shows slight motion (mean change <M>% of full scale)."
      "Scene shows moderate motion (mean change <M>% of full scale)."
      "Scene shows strong motion (mean change <M>% of full scale)."
      "Motion is unknown (single frame)."

Colour names: black, white, grey, red, orange, yellow, green, cyan, blue,
purple, magenta.

Generation parameters: only `max_new_tokens` is used -- the caption is cut
(at a word boundary) to at most 4 * max_new_tokens characters. temperature,
top_p, top_k and seed are ignored: the output is deterministic.
"""

import numpy as np

# Spatial subsampling steps (pixels are taken every STEP rows and columns).
LUMA_STEP = 2  # brightness and motion
COLOUR_STEP = 4  # colour classification and embeddings
_COLOUR_SUBSTEP = max(COLOUR_STEP // LUMA_STEP, 1)  # applied on top of LUMA_STEP

# BT.601 luma weights.
_LUMA_W = np.array([0.299, 0.587, 0.114], dtype=np.float32)

COLOUR_NAMES = (
    "black",
    "white",
    "grey",
    "red",
    "orange",
    "yellow",
    "green",
    "cyan",
    "blue",
    "purple",
    "magenta",
)

# Achromatic thresholds (HSV value / saturation in 0..1).
BLACK_V = 0.18
GREY_S = 0.20
WHITE_V = 0.75

# Hue buckets: (end degree, exclusive; colour index into COLOUR_NAMES).
HUE_BUCKETS = (
    (15, 3),  # red
    (40, 4),  # orange
    (70, 5),  # yellow
    (160, 6),  # green
    (200, 7),  # cyan
    (260, 8),  # blue
    (290, 9),  # purple
    (345, 10),  # magenta
    (360, 3),  # red again
)

EMBEDDING_HUE_BINS = 16
EMBEDDING_LENGTH = EMBEDDING_HUE_BINS + 4


# --------------------------------------------------------------------------
# input conversion


def _decode_jpegs(frames):
    """A list of 1-D uint8 JPEG byte arrays -> (N, H, W, 3) uint8 (needs Pillow)."""
    try:
        import io

        from PIL import Image
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise RuntimeError(
            "scene-stats got JPEG-encoded frames but Pillow is not installed; "
            "set `jpeg_encoded: false` in manifest.yaml"
        ) from e
    out = []
    for f in frames:
        data = f.tobytes() if hasattr(f, "tobytes") else bytes(f)
        with Image.open(io.BytesIO(data)) as im:
            out.append(np.asarray(im.convert("RGB"), dtype=np.uint8))
    if len({a.shape for a in out}) != 1:
        raise ValueError("JPEG frames of different sizes in one chunk")
    return np.stack(out)


def _is_jpeg_list(x):
    if not isinstance(x, (list, tuple)) or not x:
        return False
    first = x[0]
    if isinstance(first, (bytes, bytearray, memoryview)):
        return True
    return getattr(first, "ndim", None) == 1


def to_frames_nhwc(x, step=1):
    """Frames as float32 numpy (N, H', W', 3) in 0..255, subsampled by `step`.

    Accepts a torch tensor (any dtype/device), a numpy array, a list of
    (H, W, 3) arrays or a list of JPEG byte arrays. A single (H, W, 3) frame
    is treated as one frame. Returns (frames, (full_height, full_width)).
    """
    if _is_jpeg_list(x):
        x = _decode_jpegs(x)
    elif isinstance(x, (list, tuple)):
        if not x:
            raise ValueError("no frames in input")
        x = [f.detach().cpu().numpy() if hasattr(f, "detach") else np.asarray(f) for f in x]
        x = np.stack(x)
    elif not hasattr(x, "detach"):
        x = np.asarray(x)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise ValueError(f"expected frames of shape (N, H, W, 3), got shape {tuple(x.shape)}")
    # Tolerate channel-first (N, C, H, W) input.
    if x.shape[-1] not in (3, 4) and x.shape[1] in (1, 3, 4):
        x = x.permute(0, 2, 3, 1) if hasattr(x, "permute") else np.transpose(x, (0, 2, 3, 1))
    n, h, w, c = (int(v) for v in x.shape)
    if n == 0 or h == 0 or w == 0:
        raise ValueError(f"empty frames: shape {tuple(x.shape)}")
    if c not in (1, 3, 4):
        raise ValueError(f"expected 1, 3 or 4 channels, got shape {tuple(x.shape)}")
    if c == 1:
        x = x[..., [0, 0, 0]] if not hasattr(x, "detach") else x.expand(n, h, w, 3)
    x = x[:, ::step, ::step, :3]
    if hasattr(x, "detach"):  # torch tensor: subsample on its device, then copy
        x = x.detach().float().cpu().numpy()
    x = np.asarray(x, dtype=np.float32)
    return np.clip(x, 0.0, 255.0), (h, w)


# --------------------------------------------------------------------------
# pixel statistics (all vectorized)


def luma(frames):
    """(..., 3) RGB 0..255 -> (...) luma 0..1 (BT.601)."""
    return frames @ (_LUMA_W / 255.0)


def rgb_to_hsv(frames):
    """(..., 3) RGB 0..255 -> hue in degrees [0, 360), saturation and value in 0..1."""
    r, g, b = np.moveaxis(frames, -1, 0) * np.float32(1.0 / 255.0)
    v = np.maximum(np.maximum(r, g), b)
    chroma = v - np.minimum(np.minimum(r, g), b)
    safe = np.where(chroma > 0, chroma, np.float32(1.0))
    s = chroma / np.where(v > 0, v, np.float32(1.0))
    # Hue sector by which channel is the maximum (red wins ties, then green).
    h = np.where(v == b, (r - g) / safe + 4.0, (b - r) / safe + 2.0)
    h_red = (g - b) / safe
    h_red[h_red < 0] += 6.0
    np.copyto(h, h_red, where=(v == r))
    h *= 60.0
    h[chroma == 0] = 0.0
    return h, s, v


def _hue_lookup():
    """Colour index for each whole degree of hue 0..359."""
    lut = np.empty(360, dtype=np.int64)
    lo = 0
    for hi, cls in HUE_BUCKETS:
        lut[lo:hi] = cls
        lo = hi
    return lut


_HUE_LUT = _hue_lookup()


def classify_colours(frames):
    """(..., 3) RGB 0..255 -> integer colour index per pixel (see COLOUR_NAMES)."""
    h, s, v = rgb_to_hsv(frames)
    cls = _HUE_LUT[np.minimum(h.astype(np.int64), 359)]
    cls[s < GREY_S] = 2  # grey
    cls[(s < GREY_S) & (v >= WHITE_V)] = 1  # white
    cls[v < BLACK_V] = 0  # black
    return cls


def colour_shares(frames):
    """Fraction of pixels per colour, as a length-len(COLOUR_NAMES) array."""
    cls = classify_colours(frames).ravel()
    counts = np.bincount(cls, minlength=len(COLOUR_NAMES)).astype(np.float64)
    return counts / max(cls.size, 1)


def mean_motion(frames):
    """Mean absolute RGB change between consecutive frames (0..1); None for one frame.

    RGB rather than luma, so that pure colour changes count as motion too."""
    if frames.shape[0] < 2:
        return None
    return float(np.abs(np.diff(frames, axis=0)).mean() / 255.0)


def brightness_word(b):
    if b < 0.25:
        return "dark"
    if b < 0.45:
        return "dim"
    if b < 0.65:
        return "moderate"
    return "bright"


def motion_sentence(m):
    if m is None:
        return "Motion is unknown (single frame)."
    pct = f"(mean change {m * 100:.1f}% of full scale)"
    if m < 0.01:
        return f"Scene is static {pct}."
    if m < 0.05:
        return f"Scene shows slight motion {pct}."
    if m < 0.15:
        return f"Scene shows moderate motion {pct}."
    return f"Scene shows strong motion {pct}."


def truncate_to_tokens(text, max_new_tokens):
    """Cut `text` to about 4 characters per token, at a word boundary."""
    try:
        limit = int(max_new_tokens) * 4
    except (TypeError, ValueError):
        return text
    if limit <= 0 or len(text) <= limit:
        return text
    cut = text[:limit]
    space = cut.rfind(" ")
    if space >= limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;(")


def describe(frames_rgb, full_size):
    """Caption for float32 (N, H, W, 3) frames; full_size = original (H, W)."""
    n = frames_rgb.shape[0]
    h, w = full_size
    bright = float(luma(frames_rgb).mean())
    motion = mean_motion(frames_rgb)
    sub = _COLOUR_SUBSTEP
    shares = colour_shares(frames_rgb[:, ::sub, ::sub])
    order = np.argsort(-shares, kind="stable")
    top, second = int(order[0]), int(order[1])
    colour = f"dominant colour: {COLOUR_NAMES[top]} ({shares[top] * 100:.0f}% of pixels)"
    if shares[second] >= 0.25:
        colour += f", second colour: {COLOUR_NAMES[second]} ({shares[second] * 100:.0f}%)"
    return (
        f"{n} frame{'s' if n != 1 else ''}, {w}x{h}. "
        f"Mostly {brightness_word(bright)} (mean brightness {bright * 100:.0f}%); {colour}. "
        f"{motion_sentence(motion)}"
    )


def embedding(frames_rgb):
    """L2-normalized [16-bin hue histogram of chromatic pixels, mean luma,
    luma std, dark fraction, bright fraction] (length 20)."""
    h, s, v = rgb_to_hsv(frames_rgb)
    chromatic = (s >= GREY_S) & (v >= BLACK_V)
    hist = np.bincount(
        np.minimum((h[chromatic] / 360.0 * EMBEDDING_HUE_BINS).astype(np.int64), EMBEDDING_HUE_BINS - 1),
        minlength=EMBEDDING_HUE_BINS,
    ).astype(np.float64)
    hist /= max(h.size, 1)  # share of all pixels, so grey scenes get a small histogram
    lum = luma(frames_rgb)
    stats = np.array(
        [lum.mean(), lum.std(), (lum < 0.25).mean(), (lum > 0.75).mean()],
        dtype=np.float64,
    )
    vec = np.concatenate([hist, stats])
    norm = np.linalg.norm(vec)
    if norm > 0:
        vec /= norm
    return vec


# --------------------------------------------------------------------------
# VSS entry point


class Inference:
    def __init__(self):
        pass

    def generate(self, prompt, input, configs):
        frames, full_size = to_frames_nhwc(input, step=LUMA_STEP)
        caption = describe(frames, full_size)
        max_new_tokens = (configs or {}).get("max_new_tokens")
        if max_new_tokens is not None:
            caption = truncate_to_tokens(caption, max_new_tokens)
        return caption

    def get_embeddings(self, frames):
        """frames: (T, C, H, W) torch tensor or numpy array, values 0..255.
        Returns a list of EMBEDDING_LENGTH floats (L2-normalized)."""
        x, _ = to_frames_nhwc(_to_channel_last(frames), step=COLOUR_STEP)
        return [float(v) for v in embedding(x)]


def _to_channel_last(frames):
    """(T, C, H, W) -> (T, H, W, C); a (C, H, W) frame becomes (1, H, W, C)."""
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4:
        raise ValueError(f"expected frames of shape (T, C, H, W), got shape {tuple(frames.shape)}")
    if hasattr(frames, "permute"):
        return frames.permute(0, 2, 3, 1)
    return np.transpose(np.asarray(frames), (0, 2, 3, 1))
