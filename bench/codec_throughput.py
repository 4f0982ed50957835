"""Native CPU codec throughput per codec and block size, next to a memcpy in the same run.

    python bench/codec_throughput.py [--mib 64] [--repeat 7] [--blocks 64,256,1024]
"""
import argparse

import numpy as np
import torch  # noqa: F401  (the extension links libtorch)

from zcoll import _C
from zcoll import reference as R
from zcoll.timing import median_seconds


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, default=64, help="float32 MiB per measurement")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--blocks", default="64,256,1024", help="block sizes for int8/int4")
    args = ap.parse_args()
    x = np.random.default_rng(0).standard_normal(args.mib << 18).astype(np.float32)
    dst = np.empty_like(x)
    copy = median_seconds(lambda: np.copyto(dst, x), args.repeat)
    print(f"{args.mib} MiB float32, median of {args.repeat}; memcpy {x.nbytes / copy / 1e9:.2f} GB/s")
    print(f"{'codec':6} {'block':>6} {'encode GB/s':>12} {'decode GB/s':>12} {'enc/memcpy':>11}")
    key = R.stream_key(0, 0, 0, 0)
    for codec in R.CODECS:
        blocks = [int(b) for b in args.blocks.split(",")] if R.CODECS[codec].blockwise else [0]
        for block in blocks:
            kw = {"block": block} if block else {}
            wire = _C.codec_encode(codec, x, key=key, **kw)
            enc = median_seconds(lambda: _C.codec_encode(codec, x, key=key, **kw), args.repeat)
            dec = median_seconds(lambda: _C.codec_decode(codec, wire, x.size, **kw), args.repeat)
            print(f"{codec:6} {block or '-':>6} {x.nbytes / enc / 1e9:12.2f} {x.nbytes / dec / 1e9:12.2f} "
                  f"{copy / enc:11.3f}")


if __name__ == "__main__":
    main()
