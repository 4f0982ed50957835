"""`python -m zcoll.demo`: zcoll's arithmetic on one machine, before any process group exists.

It simulates a compressed all-reduce over p ranks with the numpy reference (error against the
exact float64 sum, per codec and schedule), proves the native codec kernels produce the very
same bytes as the reference on that data, and times the native codecs against a memcpy.
"""
from __future__ import annotations

import argparse

import numpy as np

from zcoll import reference as R
from zcoll.timing import median_seconds


def error_table(n: int, worlds: list[int], seed: int) -> list[str]:
    lines = [f"relative L2 error of a simulated all_reduce(SUM) of N(0,1) inputs, n = {n}",
             f"{'codec':6} {'schedule':9}" + "".join(f"{'p=' + str(p):>10}" for p in worlds)]
    rng = np.random.default_rng(seed)
    inputs = {p: [rng.standard_normal(n).astype(np.float32) for _ in range(p)] for p in worlds}
    exact = {p: np.sum(np.array(xs, np.float64), axis=0) for p, xs in inputs.items()}
    for codec in R.CODECS:
        for algo in R.COMPRESSED_ALGOS:
            row = f"{codec:6} {algo:9}"
            for p in worlds:
                got = R.all_reduce(inputs[p], "sum", algo, codec=codec, seed=seed)[0]
                err = np.linalg.norm(got - exact[p]) / np.linalg.norm(exact[p])
                row += f"{err:10.2e}"
            lines.append(row)
    return lines


def native_check_and_speed(n: int, repeat: int) -> list[str]:
    import torch  # noqa: F401  (the extension links libtorch)

    from zcoll import _C

    x = np.random.default_rng(1).standard_normal(n).astype(np.float32)
    key = R.stream_key(0, 0, 0, 0)
    dst = np.empty_like(x)
    copy_s = median_seconds(lambda: np.copyto(dst, x), repeat)
    lines = [f"native codecs on {n * 4 >> 20} MiB of float32 (median of {repeat}); memcpy "
             f"{x.nbytes / copy_s / 1e9:.1f} GB/s",
             f"{'codec':6} {'== reference':>13} {'encode GB/s':>12} {'decode GB/s':>12} {'wire/fp32':>10}"]
    for codec in R.CODECS:
        wire = _C.codec_encode(codec, x, key=key)
        same = np.array_equal(wire, R.encode(codec, x, key))
        enc_s = median_seconds(lambda: _C.codec_encode(codec, x, key=key), repeat)
        dec_s = median_seconds(lambda: _C.codec_decode(codec, wire, n), repeat)
        lines.append(f"{codec:6} {'bit-exact' if same else 'MISMATCH':>13} {x.nbytes / enc_s / 1e9:12.2f} "
                     f"{x.nbytes / dec_s / 1e9:12.2f} {wire.nbytes / x.nbytes:10.3f}")
        if not same:
            raise SystemExit(f"native {codec} encode differs from zcoll.reference")
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m zcoll.demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--elements", type=int, default=1 << 16, help="elements per simulated rank")
    ap.add_argument("--worlds", default="2,4,8", help="comma-separated simulated world sizes")
    ap.add_argument("--speed-elements", type=int, default=1 << 22, help="elements for the codec timing")
    ap.add_argument("--repeat", type=int, default=5, help="timing repeats (the median is reported)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    try:
        worlds = [int(p) for p in args.worlds.split(",")]
    except ValueError:
        ap.error(f"--worlds must be comma-separated integers, got {args.worlds!r}")
    if min(worlds) < 1 or args.elements < 1 or args.speed_elements < 1 or args.repeat < 1:
        ap.error("sizes, world sizes and repeats must be positive")
    print("\n".join(error_table(args.elements, worlds, args.seed)))
    print()
    print("\n".join(native_check_and_speed(args.speed_elements, args.repeat)))


if __name__ == "__main__":
    main()
