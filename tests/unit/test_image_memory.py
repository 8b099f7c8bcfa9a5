"""Preparing one image takes memory near its decoded size, however many pixels it has under the pixel limit
(issue class: memory bombs under the pixel limit; a 79-megapixel 16-bit PNG of 154 kB once took 3.4 GB and
8.6 s, in float64 copies of the full image made before resizing)."""

import json
import subprocess
import sys

import numpy as np
from PIL import Image

WIDTH, HEIGHT = 6000, 4000  # 24 Mpx: 48 MB as uint16
# Bound on the growth of the peak resident memory while preparing it, in uint16 pixel buffers: the decoded
# image itself (1x), a band of rows in float32 and the image averaged down to about twice the stored size.
MAX_GROWTH = 1.6

# Peak resident memory from /proc (VmHWM starts afresh in a new program; getrusage's ru_maxrss would
# carry over the pytest process's peak, since it survives the exec).
MEASURE = """
import io, json, re, sys
import numpy as np
from PIL import Image
from dentvlm.ingest.images import ImagePolicy, prepare_image_bytes

def peak_kib():
    return int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read())[1])

warm = io.BytesIO()
Image.fromarray(np.zeros((64, 64), np.uint16)).save(warm, "PNG")
prepare_image_bytes(warm.getvalue(), ImagePolicy(), "warm-up")  # imports and first-call allocations
data = open(sys.argv[1], "rb").read()
before = peak_kib()
stored = prepare_image_bytes(data, ImagePolicy(long_side=1024), sys.argv[1])
after = peak_kib()
print(json.dumps({"before_kib": before, "after_kib": after, "size": Image.open(io.BytesIO(stored)).size}))
"""


def test_a_large_16_bit_png_is_prepared_in_bounded_memory(tmp_path):
    values = np.full((HEIGHT, WIDTH), 800, np.uint16)
    values[1000:3000, 1500:4500] = np.tile(np.linspace(1500, 4000, 3000), (2000, 1)).astype(np.uint16)
    path = tmp_path / "large.png"
    Image.fromarray(values).save(path, compress_level=1)
    del values
    result = subprocess.run([sys.executable, "-c", MEASURE, str(path)], capture_output=True, text=True, check=True)
    figures = json.loads(result.stdout)
    growth = (figures["after_kib"] - figures["before_kib"]) * 1024 / (WIDTH * HEIGHT * 2)
    print(f"peak RSS {figures['before_kib'] / 1024:.0f} -> {figures['after_kib'] / 1024:.0f} MiB: "
          f"{growth:.2f}x the uint16 pixel buffer")
    assert figures["size"] == [1024, 683]
    assert growth < MAX_GROWTH, figures
