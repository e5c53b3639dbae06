"""Hostile and broken images, made here from nothing but bytes: decompression
bombs (small files that decode to gigabytes), headers that lie, truncations,
bit flips, other formats. Shared by tests/test_hostile_input.py and the
serving fuzzer. No tests here."""

import io
import os
import re
import struct
import zlib

import numpy as np


def rss_mib():
    """This process's resident memory now."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def reset_peak():
    """Start a new peak (Linux clear_refs 5), so that peak_mib() measures
    one request. ru_maxrss would not do: it is the whole life's peak, and a
    child process inherits its parent's from before exec (a large pytest
    process once read as a 2.8 GiB request)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_mib():
    """The peak resident memory since reset_peak() (VmHWM)."""
    with open("/proc/self/status") as f:
        return int(re.search(r"VmHWM:\s+(\d+) kB", f.read()).group(1)) / 1024


def _chunk(kind, payload):
    body = kind + payload
    return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))


def png_bomb(height=20000, width=20000):
    """A valid RGB PNG of `height x width` black pixels: about 1.2 MB of
    file, 1.2 GB of pixels. Compressed row by row, so making it takes no
    more memory than one row."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    row = b"\0" * (1 + 3 * width)   # filter byte, then RGB
    packer = zlib.compressobj(9)
    data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", data)
            + _chunk(b"IEND", b""))


def png(image):
    """A uint8 HxWx3 array as PNG bytes."""
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8)).save(out, format="PNG")
    return out.getvalue()


def jpeg(image, quality=90):
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8)).save(out, format="JPEG", quality=quality)
    return out.getvalue()


def jpeg_claiming(data, height, width):
    """`data` (a JPEG) with its frame header (SOF0/SOF2) saying `height x
    width`: a header that lies, as a bomb's does."""
    data = bytearray(data)
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        length = struct.unpack(">H", data[i + 2:i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            data[i + 5:i + 9] = struct.pack(">HH", height, width)
            return bytes(data)
        i += 2 + length
    raise ValueError("no frame header found")


def png_claiming(data, height, width):
    """`data` (a PNG) with its IHDR saying `height x width` (CRC fixed, so
    only the pixel data disagrees with the header)."""
    data = bytearray(data)
    ihdr = data[12:29]
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    return bytes(data)


def other_formats():
    """Small files of formats the bytes signature does not take, and junk."""
    gif = (b"GIF89a" + struct.pack("<HH", 20000, 20000) + b"\x00\x00\x00"
           + b"\x2c" + b"\x00" * 9 + b"\x02\x02\x44\x01\x00\x3b")
    bmp = b"BM" + struct.pack("<IHHI", 54, 0, 0, 54) + struct.pack(
        "<IiiHHIIiiII", 40, 20000, 20000, 1, 24, 0, 0, 0, 0, 0, 0)
    return [b"", b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", gif, bmp,
            b"not an image at all", b"\x00" * 1000, "ünïcode".encode()]


def mutants(seeds, rng, count):
    """`count` mutated files from the `seeds`: bit flips, truncations,
    lying headers, spliced halves, other formats. Yields `(kind, bytes)`."""
    others = other_formats()
    for i in range(count):
        seed = seeds[rng.integers(len(seeds))]
        kind = ("flip", "truncate", "lie", "splice", "other", "as_is")[i % 6]
        if kind == "flip":
            data = bytearray(seed)
            for _ in range(int(rng.integers(1, 12))):
                data[int(rng.integers(len(data)))] ^= 1 << int(rng.integers(8))
            data = bytes(data)
        elif kind == "truncate":
            data = seed[:int(rng.integers(0, len(seed)))]
        elif kind == "lie":
            h, w = (int(v) for v in rng.choice([1, 7, 300, 20000, 65535], 2))
            data = png_claiming(seed, h, w) if seed[:4] == b"\x89PNG" else \
                jpeg_claiming(seed, h, w)
        elif kind == "splice":
            other = seeds[rng.integers(len(seeds))]
            data = seed[:len(seed) // 2] + other[len(other) // 2:]
        elif kind == "other":
            data = others[i // 6 % len(others)]
        else:
            data = seed
        yield kind, data
