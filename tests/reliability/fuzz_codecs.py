"""An atheris (libFuzzer) target for the codecs: image decoding (PNG/JPEG bytes, with a pixel budget) and the
text check. Any exception other than the codecs' own `CodecError` is a crash: a hostile upload must be a 4xx,
never a 500.

Run by tests/reliability/test_fuzz_codecs.py for a bounded number of runs; by hand:
`python tests/reliability/fuzz_codecs.py -runs=100000 [-max_total_time=60] [corpus_dir]`.
"""

from __future__ import annotations

import contextlib
import io
import sys
import warnings

import atheris
import numpy as np

with atheris.instrument_imports():
    from PIL import Image

    from service.card import ImageInputSpec
    from service.codecs import CodecError, check_text
    from service.codecs.image import PixelBudget, decode_image

SPECS = (
    ImageInputSpec(name="input", dtype="float32", layout="NCHW", channels=1, height=28, width=28),
    ImageInputSpec(name="input", dtype="float32", layout="NCHW", channels=3, height=32, width=32),
)


def seeds() -> list[bytes]:
    """Small valid images of every mode the decoder handles, for the corpus."""
    out = []
    for mode, fmt in (("L", "PNG"), ("RGBA", "PNG"), ("P", "PNG"), ("I;16", "PNG"), ("RGB", "JPEG"), ("L", "JPEG")):
        buffer = io.BytesIO()
        Image.new(mode, (7, 5)).save(buffer, format=fmt)
        out.append(buffer.getvalue())
    return out


def test_one_input(data: bytes) -> None:
    if not data:
        return
    spec = SPECS[data[0] % len(SPECS)]
    payload = data[1:]
    try:
        pixels = decode_image(payload, spec, PixelBudget(per_image=64 * 64, per_request=2 * 64 * 64))
    except CodecError:
        pass
    else:
        assert pixels.shape == spec.shape and pixels.dtype == np.float32
        assert float(pixels.min()) >= 0.0 and float(pixels.max()) <= 1.0
    with contextlib.suppress(CodecError, UnicodeDecodeError):
        check_text(payload.decode("utf-8", errors="surrogatepass"), max_chars=256)


def main() -> None:
    warnings.simplefilter("error")  # as pytest runs the service: a Pillow warning would be an error there too
    if len(sys.argv) > 1 and not sys.argv[-1].startswith("-"):  # a corpus directory: seed it
        corpus = sys.argv[-1]
        for index, seed in enumerate(seeds()):
            with open(f"{corpus}/seed-{index}", "wb") as f:
                f.write(bytes([index % len(SPECS)]) + seed)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
