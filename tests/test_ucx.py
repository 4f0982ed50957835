"""The UCX transport's surroundings (docs/ucx.md): which libucp zcoll loads (ZCOLL_UCX_LIB, the
libucx wheel, the loader's path), the errors when none loads or the options disagree, that the
build holds the transport wherever the wheel's headers are, and a group over ucx through torch.
The transport's behaviour itself is tests/test_transport.py (kind "ucx"), between hosts
tests/test_multihost.py, in two levels tests/test_hierarchical.py."""
import importlib.util
import os
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from multiproc import run_ranks
from transports import ucx_missing

import zcoll
from zcoll.config import ucx_library

UCX_MISSING = ucx_missing()
NEEDS_UCX = pytest.mark.skipif(bool(UCX_MISSING), reason=UCX_MISSING)


def wheel_lib():
    spec = importlib.util.find_spec("libucx")
    return str(Path(spec.origin).parent / "lib" / "libucp.so.0") if spec else None


def test_the_build_holds_the_ucx_transport_wherever_the_wheel_is_installed():
    """CI installs libucx-cu12 before building zcoll (requirements-dev.txt): the build must then
    compile the transport, so its tests run there rather than skip."""
    if wheel_lib() is None:
        pytest.skip("the libucx wheel is not installed")
    assert zcoll.build_info()["ucx"], "the libucx wheel's headers were installed, but zcoll was built without UCX"
    assert UCX_MISSING == "", UCX_MISSING


def test_library_choice(monkeypatch, tmp_path):
    assert ucx_library("/opt/ucx/lib") == "/opt/ucx/lib"  # ZCOLL_UCX_LIB wins
    lib = wheel_lib()
    assert ucx_library() == (lib if lib and os.path.exists(lib) else "")
    monkeypatch.setenv("ZCOLL_UCX_LIB", str(tmp_path))
    monkeypatch.setenv("ZCOLL_NET", "ucx")
    opts = zcoll.Options().resolved()
    assert (opts.net, opts.ucx_library) == ("ucx", str(tmp_path))
    monkeypatch.delenv("ZCOLL_UCX_LIB")
    assert zcoll.Options().resolved().ucx_library == ucx_library()
    monkeypatch.delenv("ZCOLL_NET")
    assert zcoll.Options().resolved().ucx_library == ""  # not resolved where UCX is not used


def test_options_that_disagree_or_are_unknown_raise(monkeypatch):
    with pytest.raises(ValueError, match="transport='tcp' carries every peer over tcp, but the network transport "
                                         "is 'ucx'"):
        zcoll.Options(transport="tcp", net="ucx").resolved()
    with pytest.raises(ValueError, match=r"net='verbs': expected one of tcp, ucx"):
        zcoll.Options(net="verbs").resolved()
    monkeypatch.setenv("ZCOLL_NET", "ib")
    with pytest.raises(ValueError, match=r"ZCOLL_NET='ib': expected one of tcp, ucx"):
        zcoll.Options().resolved()
    assert zcoll.Options(transport="ucx", net="ucx").resolved().transport == "ucx"


def test_a_library_that_does_not_load_names_what_to_install():
    import torch  # noqa: F401

    from zcoll import _C
    if not zcoll.build_info()["ucx"]:
        with pytest.raises(RuntimeError, match="built without the UCX transport.*pip install 'zcoll\\[ucx\\]'"):
            _C.ucx_version("")
        return
    # The library loads once per process: a fresh interpreter tries the bad path first.
    import subprocess
    import sys
    code = ("import torch; from zcoll import _C\n"
            "try:\n    _C.ucx_version('/nonexistent/libucp.so.0')\n"
            "except RuntimeError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "ucx: cannot load UCX (/nonexistent/libucp.so.0" in out.stdout, out
    assert "pip install 'zcoll[ucx]'" in out.stdout and "ZCOLL_UCX_LIB" in out.stdout, out.stdout


def group_without_ucx(rank, world, store):
    import torch.distributed as dist
    os.environ["ZCOLL_NET"] = "ucx"
    os.environ["ZCOLL_HOSTID"] = f"node-{rank}"  # two "hosts": the network transport is needed
    os.environ["ZCOLL_UCX_LIB"] = "/nonexistent/lib"
    try:
        dist.init_process_group("zcoll", store=store, rank=rank, world_size=world, timeout=timedelta(seconds=60))
    except Exception as e:  # noqa: BLE001
        return type(e).__name__, str(e)
    return None


@pytest.mark.timeout(120)
def test_a_group_over_ucx_without_ucx_fails_on_every_rank():
    res = run_ranks(group_without_ucx, 2, timeout=100)
    for rank in range(2):
        assert res[rank] is not None, f"rank {rank} made a group without UCX"
        name, msg = res[rank]
        assert name == "DistBackendError" or "Error" in name, res[rank]
        if zcoll.build_info()["ucx"]:
            assert "cannot load UCX (/nonexistent/lib" in msg and "ZCOLL_UCX_LIB" in msg, (rank, msg)
            assert f"rank {rank} ucx:" in msg or "giving up: rank" in msg, (rank, msg)
        else:
            assert "built without the UCX transport" in msg, (rank, msg)


def ranks_one_host(rank, world, store):
    import torch
    import torch.distributed as dist
    dist.init_process_group("zcoll", store=store, rank=rank, world_size=world, timeout=timedelta(seconds=60),
                            pg_options=zcoll.Options(transport="ucx"))
    backend = dist.group.WORLD._get_backend(torch.device("cpu"))
    x = torch.arange(300_000, dtype=torch.float32) * (rank + 1)
    dist.all_reduce(x)
    got = torch.empty(3)
    reqs = [dist.isend(torch.full((3,), float(rank)), (rank + 1) % world), dist.irecv(got, (rank - 1) % world)]
    for r in reqs:
        r.wait()
    dist.destroy_process_group()
    return backend.transport, x.numpy(), got.numpy()


@NEEDS_UCX
@pytest.mark.timeout(120)
def test_transport_ucx_on_one_host_through_torch():
    """ZCOLL_TRANSPORT=ucx carries every peer over UCX, on one host too (UCX picks its own shared
    memory there): all-reduce (integral float values: exact in any order) and point-to-point."""
    world = 3
    res = run_ranks(ranks_one_host, world, timeout=100)
    want = np.arange(300_000, dtype=np.float32) * sum(range(1, world + 1))
    for rank in range(world):
        name, x, got = res[rank]
        assert name == "ucx"
        np.testing.assert_array_equal(x, want)
        np.testing.assert_array_equal(got, np.full(3, (rank - 1) % world, np.float32))
