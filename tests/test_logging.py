"""zcoll's log sink (csrc/util/log.h): one line format for C++ and Python, ZCOLL_DEBUG's levels,
and compression made visible: under INFO each reason a tensor stays exact is logged once per
group, and so is compression being applied; under the default level nothing is logged."""
import os
import re
import socket

import pytest
from multiproc import run_ranks

LARGE = 1 << 16  # elements: 256 KiB of float32, above compress_min_bytes' default (64 KiB)


def line_re(rank: int, level: str) -> str:
    return rf"^zcoll {re.escape(socket.gethostname())}:\d+ \[rank {rank}\] {level}: "


def lines_of(err: str, rank: int, level: str = r"[A-Z]+") -> list[str]:
    return [line for line in err.splitlines() if re.match(line_re(rank, level), line)]


def test_python_messages_go_through_the_sink(capfd):
    from zcoll import _C
    _C.log("WARN", "a warning", 3)
    _C.log("INFO", "no group")
    err = capfd.readouterr().err
    assert re.search(line_re(3, "WARN") + "a warning$", err, re.M), err
    assert re.search(rf"^zcoll {re.escape(socket.gethostname())}:{os.getpid()} INFO: no group$", err, re.M), err
    with pytest.raises(ValueError, match="expected WARN, INFO or TRACE"):
        _C.log("DEBUG", "x")


def ranks_compression_mix(rank, world, store, level):
    """Every kind of skip, each several times, and every compressed collective."""
    import torch
    import torch.distributed as dist

    import zcoll
    os.environ.pop("ZCOLL_DEBUG", None)
    if level:
        os.environ["ZCOLL_DEBUG"] = level
    dist.init_process_group("zcoll", store=store, rank=rank, world_size=world,
                            pg_options=zcoll.Options(compression="int8", transport="shm"))
    for _ in range(3):
        dist.all_reduce(torch.ones(1024))                               # under the size threshold
        dist.all_reduce(torch.ones(LARGE, dtype=torch.int64))           # not floating
        dist.all_reduce(torch.ones(LARGE, dtype=torch.float64))         # float64 is not compressed
        dist.all_reduce(torch.ones(LARGE), op=dist.ReduceOp.MAX)        # not SUM/AVG/PREMUL_SUM
        dist.all_reduce(torch.ones(LARGE))                              # compressed
        dist.reduce(torch.ones(LARGE), dst=0)                           # reduce never compresses
        dist.all_gather([torch.empty(LARGE) for _ in range(world)], torch.ones(LARGE))  # nor the list form
        dist.reduce_scatter_single(torch.empty(LARGE), torch.ones(LARGE * world))  # compressed
        dist.reduce_scatter_single(torch.empty(8), torch.ones(8 * world))          # small again
        dist.all_gather_single(torch.empty(LARGE * world), torch.ones(LARGE))  # compressed
    dist.destroy_process_group()


def skips(bytes_=4096):
    return [
        f"INFO: compression int8 skipped: all_reduce of {bytes_} bytes float32 is under compress_min_bytes=65536 "
        "(set ZCOLL_COMPRESS_MIN_BYTES=0 or Options(compress_min_bytes=0) to compress every tensor); logged once",
        "INFO: compression int8 skipped: all_reduce of int64 stays exact (only float32, float16 and bfloat16 are "
        "compressed); logged once per dtype",
        "INFO: compression int8 skipped: all_reduce of float64 stays exact (only float32, float16 and bfloat16 are "
        "compressed); logged once per dtype",
        "INFO: compression int8 skipped: all_reduce with MAX stays exact (only SUM, AVG and PREMUL_SUM are "
        "compressed); logged once per op",
        "INFO: compression int8 skipped: reduce is never compressed (all_reduce is); logged once",
        "INFO: compression int8 skipped: all_gather (the list form) is never compressed (all_gather_into_tensor is); "
        "logged once",
    ]


APPLIED = [
    f"INFO: compression int8 applied: all_reduce of {LARGE * 4} bytes float32 SUM (tensors of at least "
    "compress_min_bytes=65536); logged once per collective",
    f"INFO: compression int8 applied: reduce_scatter of {LARGE * 8} bytes float32 SUM",
    f"INFO: compression int8 applied: all_gather_into_tensor of {LARGE * 8} bytes float32 (tensors",
]


@pytest.mark.timeout(150)
def test_info_logs_each_compression_skip_once_per_rank(capfd):
    run_ranks(ranks_compression_mix, 2, "INFO", timeout=120)
    err = capfd.readouterr().err
    for rank in range(2):
        mine = lines_of(err, rank)
        for message in skips():
            assert sum(line.endswith(message) for line in mine) == 1, (message, err)
        for message in APPLIED:
            assert sum(message in line for line in mine) == 1, (message, err)
        assert sum("compression int8 skipped" in line for line in mine) == len(skips()), err
        assert sum("compression int8 applied" in line for line in mine) == len(APPLIED), err
        # the shm transport's probe of its peers' memory (tests/test_shm_single_copy.py)
        assert any(line.endswith("INFO: shm: single copy from 1 of 1 peers for messages of 16384 bytes or more")
                   for line in mine), err


@pytest.mark.timeout(150)
def test_default_level_logs_nothing(capfd):
    run_ranks(ranks_compression_mix, 2, "", timeout=120)
    err = capfd.readouterr().err
    assert not [line for line in err.splitlines() if line.startswith("zcoll ")], err


def ranks_trace(rank, world, store):
    import torch
    import torch.distributed as dist

    import zcoll
    dist.init_process_group("zcoll", store=store, rank=rank, world_size=world,
                            pg_options=zcoll.Options(transport="shm", debug="TRACE", algo="allreduce:ring"))
    dist.all_reduce(torch.ones(1024))
    dist.all_reduce(torch.ones(1024, dtype=torch.float64), op=dist.ReduceOp.MAX)
    dist.broadcast(torch.ones(4), src=0)
    backend = dist.group.WORLD._get_backend(torch.device("cpu"))
    config = backend.config  # a copy of the group's BackendConfig
    seen = (config.log_level, config.transport, config.allreduce_algo, backend.compression, backend.chunk_bytes)
    dist.destroy_process_group()
    return seen


@pytest.mark.timeout(120)
def test_trace_logs_every_collective(capfd):
    seen = run_ranks(ranks_trace, 2, timeout=100)
    assert seen == {r: ("TRACE", "shm", "ring", "none", 0) for r in range(2)}
    err = capfd.readouterr().err
    for rank in range(2):
        trace = lines_of(err, rank, "TRACE")
        assert any("TRACE: allreduce #0: 4096 bytes float32 sum: ring (ZCOLL_ALGO), chunk " in line
                   for line in trace), err
        assert any("TRACE: allreduce #1: 8192 bytes float64 max: ring (ZCOLL_ALGO)" in line for line in trace), err
        done = (("allreduce", 4096, "Float"), ("allreduce", 8192, "Double"), ("broadcast", 16, "Float"))
        for seq, (op, nbytes, dtype) in enumerate(done):
            pattern = rf"TRACE: {op} #{seq} \(1 tensor, {nbytes} bytes {dtype}, cpu\): done in \d+ us$"
            assert any(re.search(pattern, line) for line in trace), (seq, err)
        assert lines_of(err, rank, "INFO"), err  # TRACE includes INFO
