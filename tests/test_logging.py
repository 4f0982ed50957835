"""zcoll's log sink (csrc/util/log.h): one line format for C++ and Python, ZCOLL_DEBUG's levels."""
import os
import re
import socket

import pytest
from multiproc import run_ranks


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
        for seq, op in enumerate(("allreduce", "allreduce", "broadcast")):
            assert any(re.search(rf"TRACE: {op} #{seq}: done in \d+ us$", line) for line in trace), (seq, err)
        assert lines_of(err, rank, "INFO"), err  # TRACE includes INFO
