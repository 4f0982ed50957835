"""zcoll.Options and the ZCOLL_* variables: defaults, precedence (pg_options over env), and clear
errors for bad values."""
import pytest

from zcoll.config import Options, parse_algo


def test_defaults(monkeypatch):
    for name in ("ZCOLL_TRANSPORT", "ZCOLL_ALGO", "ZCOLL_CHUNK_BYTES", "ZCOLL_SHM_RING_BYTES", "ZCOLL_DEBUG",
                 "ZCOLL_SOCKET_IFNAME", "ZCOLL_COMPRESS", "ZCOLL_COMPRESS_MIN_BYTES", "ZCOLL_COMPRESS_BLOCK"):
        monkeypatch.delenv(name, raising=False)
    o = Options().resolved()
    assert (o.transport, o.algo, o.chunk_bytes, o.shm_ring_bytes, o.debug) == ("auto", "", 0, 4 << 20, False)
    assert (o.compression, o.compress_min_bytes, o.compress_block) == ("none", 65536, 256)


def test_env_then_options_take_precedence(monkeypatch):
    monkeypatch.setenv("ZCOLL_ALGO", "tree")
    monkeypatch.setenv("ZCOLL_CHUNK_BYTES", "0x10000")
    monkeypatch.setenv("ZCOLL_DEBUG", "INFO")
    o = Options().resolved()
    assert (o.algo, o.chunk_bytes, o.debug) == ("tree", 65536, True)
    o = Options(algo="allreduce:ring", chunk_bytes=4096, debug=False).resolved()
    assert (o.algo, o.chunk_bytes, o.debug) == ("allreduce:ring", 4096, False)


@pytest.mark.parametrize("spec,want", [
    ("", {}),
    ("ring", {"allreduce": "ring", "reduce_scatter": "ring"}),
    ("tree", {"allreduce": "tree", "reduce": "tree"}),
    ("oneshot", {"allreduce": "oneshot", "reduce": "oneshot"}),
    ("twoshot", {"allreduce": "twoshot", "reduce_scatter": "twoshot"}),
    ("allreduce:tree, reduce:oneshot,reduce_scatter:twoshot",
     {"allreduce": "tree", "reduce": "oneshot", "reduce_scatter": "twoshot"}),
    ("RING,allreduce:oneshot", {"allreduce": "oneshot", "reduce_scatter": "ring"}),
])
def test_parse_algo(spec, want):
    assert parse_algo(spec) == want


@pytest.mark.parametrize("spec,match", [
    ("fast", "unknown algorithm 'fast'"),
    ("gather:ring", "unknown collective 'gather'"),
    ("reduce:ring", "reduce has no algorithm 'ring'"),
    ("reduce_scatter:tree", "reduce_scatter has no algorithm 'tree'"),
])
def test_bad_algo_raises(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_algo(spec)
    with pytest.raises(ValueError, match=match):
        Options(algo=spec).resolved()


def test_bad_env_values_name_the_variable(monkeypatch):
    monkeypatch.setenv("ZCOLL_ALGO", "warp")
    with pytest.raises(ValueError, match="ZCOLL_ALGO='warp'"):
        Options().resolved()
    monkeypatch.delenv("ZCOLL_ALGO")
    monkeypatch.setenv("ZCOLL_CHUNK_BYTES", "-5")
    with pytest.raises(ValueError, match="ZCOLL_CHUNK_BYTES must be positive"):
        Options().resolved()
    monkeypatch.setenv("ZCOLL_CHUNK_BYTES", "lots")
    with pytest.raises(ValueError, match="ZCOLL_CHUNK_BYTES='lots' is not an integer"):
        Options().resolved()
    monkeypatch.delenv("ZCOLL_CHUNK_BYTES")
    monkeypatch.setenv("ZCOLL_TRANSPORT", "ib")
    with pytest.raises(ValueError, match="ZCOLL_TRANSPORT='ib'"):
        Options().resolved()
    with pytest.raises(ValueError, match="transport='ib'"):
        Options(transport="ib").resolved()
