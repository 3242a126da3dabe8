"""The worst inputs the service accepts, and the hostile ones it must refuse, each timed and measured.

    python -m build.limits                   # every case; prints a table, writes out/limits.json
    python -m build.limits --only "RGBA PNG, 40 MP"
    python -m build.limits --batch           # the batch's 64 MP cases; writes out/limits-batch.json

Each case is one file, made here (from tests/data/pose.jpg where it needs content), sent base64 in
a JSON body (the larger of the two body shapes) through ``app.lambda_handler`` with ``return_image``
true, in a fresh process at one inference thread (what Lambda's 2048 MB buys) configured as
local/function.py configures a local run. The child reports the status, the time of that one request
(the instance's first) and the process's peak resident memory (VmHWM) after the cold start and
after the request. The deployed function has 2048 MB and a 25 s timeout. The machine may be shared:
times vary with its load, peaks hardly.

With --batch, files at the batch's own limits (64 MP) go through the batch's per-photo code
(pose/records.py, with the annotated image), as the batch function reads an S3 object; the function
has 1,769 MB. The file makers are also used by the tests (tests/test_hostile_files.py, test_warm_memory.py).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
PHOTO = ROOT / "tests" / "data" / "pose.jpg"
DETAIL = 24  # px per photo pixel side when a 40 MP image is made from the photo: blocks compress well
PERSON_BOX = (200, 220, 800, 667)  # the person in tests/data/pose.jpg, with a little room (left, top, right, bottom)


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png(width: int, height: int, bit_depth: int, color_type: int, samples: np.ndarray | None = None) -> bytes:
    """A PNG written by hand (Pillow writes no 16-bit colour): `samples` (height, width[, channels]) of
    uint8 or uint16, default all zero. A row equal to the one above is stored with PNG's Up filter
    (all zeros), so blocky images of any size compress."""
    ihdr = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0))
    compressor = zlib.compressobj(9)
    if samples is None:
        line = b"\0" * (1 + (width * {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color_type] * bit_depth + 7) // 8)
        block = max(1, (1 << 20) // len(line))
        idat = b"".join(compressor.compress(line * min(block, height - top)) for top in range(0, height, block))
    else:
        rows = samples.astype(">u2" if bit_depth == 16 else np.uint8).reshape(height, -1).view(np.uint8)
        parts = []
        for y in range(height):
            same = y > 0 and np.array_equal(rows[y], rows[y - 1])
            parts.append(compressor.compress((b"\2" + bytes(rows.shape[1])) if same else b"\0" + rows[y].tobytes()))
        idat = b"".join(parts)
    idat += compressor.flush()
    return b"\x89PNG\r\n\x1a\n" + ihdr + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def photo_gray(width: int, height: int) -> np.ndarray:
    """tests/data/pose.jpg in gray, resized to width x height by repeating pixels (compresses well)."""
    small = Image.open(PHOTO).convert("L").resize((max(1, width // DETAIL), max(1, height // DETAIL)))
    return np.asarray(small.resize((width, height), Image.Resampling.NEAREST))


def photo_rgb(width: int, height: int, box: tuple[int, int, int, int] | None = None) -> Image.Image:
    """tests/data/pose.jpg (or its `box`) stretched to width x height in blocks of DETAIL pixels."""
    small = Image.open(PHOTO).convert("RGB").resize((max(1, width // DETAIL), max(1, height // DETAIL)), box=box)
    return small.resize((width, height), Image.Resampling.NEAREST)


def person_filling(width: int, height: int) -> Image.Image:
    """The person of tests/data/pose.jpg filling a width x height frame: the worst case for a photo's
    memory when a top-down pose model crops around a person (the crop is larger than the photo)."""
    return photo_rgb(width, height, PERSON_BOX)


def png16(image8: np.ndarray) -> bytes:
    """A 16-bit PNG (gray, RGB or RGBA by the channels) of 8-bit samples, each v as v * 257."""
    channels = 1 if image8.ndim == 2 else image8.shape[2]
    return png(image8.shape[1], image8.shape[0], 16, {1: 0, 3: 2, 4: 6}[channels], image8.astype(np.uint16) * 257)


def progressive_jpeg(img: Image.Image, scans: int) -> bytes:
    """A progressive JPEG (4:4:4) of `img` whose last scan (an AC refinement: among the costliest for
    its bytes, one more pass over every block) is repeated until it has `scans` scans. Too few scans
    to repeat: the encoder's own ten."""
    data = encode(img, "JPEG", progressive=True, subsampling=0, optimize=True)
    sos = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xDA]
    extra = scans - len(sos)
    if extra <= 0:
        return data
    start = sos[-1]
    end = data.index(b"\xff\xd9", start)  # the last scan runs to EOI
    return data[:end] + data[start:end] * extra + data[end:]


def crowd(columns: int = 4, rows: int = 4) -> Image.Image:
    """A crowd of the committed photos' people: tests/data/pose.jpg and Pilots.jpg tiled, 500 x 333 px each
    (4 x 4 tiles: 2000 x 1332 px, over 20 people for the detector)."""
    tiles = [Image.open(PHOTO).convert("RGB").resize((500, 333)),
             Image.open(PHOTO.parent / "Pilots.jpg").convert("RGB").resize((500, 333))]
    grid = Image.new("RGB", (500 * columns, 333 * rows))
    for row in range(rows):
        for column in range(columns):
            grid.paste(tiles[(row + column) % 2], (500 * column, 333 * row))
    return grid


def flat(width: int, height: int) -> Image.Image:
    return Image.new("RGB", (width, height), (120, 130, 140))


def scan_bomb(width: int = 7745, height: int = 5164, copies: int = 62000) -> bytes:
    """A progressive JPEG of one colour whose second scan is repeated `copies` times (4.44 MB at the defaults)."""
    data = encode(flat(width, height), "JPEG", progressive=True, subsampling=0, optimize=True)
    start = data.find(b"\xff\xda", data.find(b"\xff\xda") + 2)
    end = data.find(b"\xff\xc4", start)
    return data[:end] + data[start:end] * copies + data[end:]


def tiff(array: np.ndarray, compression: str = "tiff_adobe_deflate") -> bytes:
    return encode(Image.fromarray(array), "TIFF", compression=compression)


def cases() -> dict[str, Callable[[], bytes]]:
    """name -> maker of the file's bytes. Legal ones first, then refused ones."""
    w, h = 7745, 5164  # 39.99 MP: just under the pixel limit, 3:2 like a camera
    return {
        "baseline JPEG, 40 MP": lambda: encode(photo_rgb(w, h), "JPEG", quality=80),
        "JPEG, 40 MP, 10000 x 4000, one person filling it": lambda: encode(person_filling(10000, 4000), "JPEG",
                                                                             quality=80),
        "JPEG, 40 MP, 4000 x 10000, one person filling it": lambda: encode(person_filling(4000, 10000), "JPEG",
                                                                             quality=80),
        "progressive JPEG, 40 MP, 32 scans (the scan limit)": lambda: progressive_jpeg(flat(w, h), 32),
        "JPEG, 40 MP, EXIF orientation 6": lambda: encode(
            photo_rgb(w, h), "JPEG", quality=80, exif=_exif_orientation(6)),
        "RGBA PNG, 40 MP": lambda: encode(photo_rgb(w, h).convert("RGBA"), "PNG", optimize=False),
        "RGBA PNG, 2000 x 20000 (the long side limit)": lambda: encode(
            photo_rgb(2000, 20000).convert("RGBA"), "PNG"),
        "palette PNG with transparency, 40 MP": lambda: encode(
            photo_rgb(w, h).convert("P", palette=Image.Palette.ADAPTIVE, colors=64), "PNG", transparency=0),
        "16-bit gray PNG, 40 MP": lambda: png16(photo_gray(w, h)),
        "16-bit RGBA PNG, 40 MP": lambda: png16(np.asarray(photo_rgb(w, h).convert("RGBA"))),
        "int32 TIFF, full range, 40 MP": lambda: tiff(
            (photo_gray(w, h).astype(np.int64) * (2 ** 31 - 1) // 255).astype(np.int32)),
        "float32 TIFF in [0, 1], 40 MP": lambda: tiff(photo_gray(w, h).astype(np.float32) / 255),
        "RGBA TIFF, 40 MP": lambda: encode(photo_rgb(w, h).convert("RGBA"), "TIFF", compression="tiff_adobe_deflate"),
        "lossless WebP, 40 MP": lambda: encode(photo_rgb(w, h), "WEBP", lossless=True, quality=0),
        "PNG of 16 x 16 with 370,000 empty chunks": lambda: _many_chunks(370_000),
        "refused: progressive JPEG, 62,000 scans": scan_bomb,
        "refused: RGBA PNG, 1 x 40,000,000": lambda: png(1, 40_000_000, 8, 6),
        "refused: JPEG with a million comments": lambda: _many_comments(1_100_000),
    }


def _exif_orientation(value: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif


def _many_chunks(count: int) -> bytes:
    data = encode(Image.new("RGB", (16, 16), (90, 90, 90)), "PNG")
    idat = data.find(b"IDAT") - 4
    return data[:idat] + png_chunk(b"abCd", b"") * count + data[idat:]


def _many_comments(count: int) -> bytes:
    data = encode(Image.new("RGB", (16, 16), (90, 90, 90)), "JPEG")
    return data[:2] + b"\xff\xfe\x00\x02" * count + data[2:]


def peak_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited from the parent)."""
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024


def batch_cases() -> dict[str, Callable[[], bytes]]:
    """name -> maker of a file at the batch's own pixel limit (pose/records.py: 64 MP), read as the batch reads it."""
    return {"JPEG, 64 MP, 12640 x 5056, one person filling it": lambda: encode(person_filling(12640, 5056), "JPEG",
                                                                              quality=80),
            "JPEG, 64 MP, 5056 x 12640, one person filling it": lambda: encode(person_filling(5056, 12640), "JPEG",
                                                                              quality=80)}


def batch_child(path: Path) -> dict:
    """In a fresh process: the batch function's models, then one photo's record and drawing (records.py)."""
    import time

    from local import function

    function.load()  # the environment of a local run, and the handler on the path
    from pose import records, service
    from pose.options import Options

    models = service.load_models()
    cold_mb = peak_mb()
    started = time.perf_counter()
    record, _ = records.photo_record("input", path.read_bytes(), models, Options(return_image=True))
    return {"status": 200 if record["error"] is None else record["error"]["code"],
            "seconds": time.perf_counter() - started, "cold_start_peak_mb": cold_mb, "peak_mb": peak_mb(),
            "error": (record["error"] or {}).get("message"), "reply_bytes": len(json.dumps(record))}


def child(path: Path) -> dict:
    """In a fresh process: the cold start, then one request with the file."""
    import time

    from local import function
    from local.apigw import LambdaContext, json_event, response_body

    app = function.load()
    cold_mb = peak_mb()
    event = json_event("/pose", {"image": base64.b64encode(path.read_bytes()).decode("ascii"), "return_image": True})
    started = time.perf_counter()
    response = app.lambda_handler(event, LambdaContext())
    seconds = time.perf_counter() - started
    body = json.loads(response_body(response))
    return {"status": response["statusCode"], "seconds": seconds, "cold_start_peak_mb": cold_mb,
            "peak_mb": peak_mb(),
            "error": body.get("error", {}).get("message"), "reply_bytes": len(response["body"])}


def measure(name: str, data: bytes, workdir: Path, batch: bool = False) -> dict:
    path = workdir / "input"
    path.write_bytes(data)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODEL", "AWS_"))}
    env.update(MODEL_THREADS="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, __file__, "--batch-child" if batch else "--child", str(path)],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"{name}: the measuring process failed:\n{proc.stderr.strip()[-2000:]}")
    return {"case": name, "bytes": len(data), **json.loads(proc.stdout.strip().splitlines()[-1])}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", help="case names (default: all)")
    ap.add_argument("--json", type=Path, help="default: out/limits.json, with --batch out/limits-batch.json")
    ap.add_argument("--batch", action="store_true", help="the batch's 64 MP cases, through its per-photo code")
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--batch-child", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    a.json = a.json or ROOT / "out" / ("limits-batch.json" if a.batch else "limits.json")
    if a.child or a.batch_child:
        print(json.dumps(child(a.child) if a.child else batch_child(a.batch_child)))
        return 0
    chosen = {k: v for k, v in (batch_cases() if a.batch else cases()).items() if not a.only or k in a.only}
    if a.only and len(chosen) != len(a.only):
        print(f"error: unknown case; the cases are: {list(cases())}", file=sys.stderr)
        return 2
    results = []
    print("| input | bytes | status | time s | peak RSS MB (cold start) |\n|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, make in chosen.items():
            r = measure(name, make(), Path(tmp), a.batch)
            results.append(r)
            print(f"| {name} | {r['bytes']:,} | {r['status']} | {r['seconds']:.2f} | "
                  f"{r['peak_mb']:,.0f} ({r['cold_start_peak_mb']:,.0f}) |", flush=True)
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
