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


def test_failure_options_defaults_env_and_errors(monkeypatch):
    for name in ("ZCOLL_HEARTBEAT_INTERVAL", "ZCOLL_HEARTBEAT_TIMEOUT", "ZCOLL_CHECKSUM",
                 "ZCOLL_P2P_MAX_UNEXPECTED_BYTES"):
        monkeypatch.delenv(name, raising=False)
    o = Options().resolved()
    assert (o.heartbeat_interval, o.heartbeat_timeout, o.checksum, o.p2p_max_unexpected_bytes) == (1.0, 30.0, False,
                                                                                                   1 << 30)
    monkeypatch.setenv("ZCOLL_HEARTBEAT_INTERVAL", "0.25")
    monkeypatch.setenv("ZCOLL_HEARTBEAT_TIMEOUT", "5")
    monkeypatch.setenv("ZCOLL_CHECKSUM", "1")
    monkeypatch.setenv("ZCOLL_P2P_MAX_UNEXPECTED_BYTES", "4096")
    o = Options().resolved()
    assert (o.heartbeat_interval, o.heartbeat_timeout, o.checksum, o.p2p_max_unexpected_bytes) == (0.25, 5.0, True,
                                                                                                   4096)
    assert Options(checksum=False, heartbeat_timeout=9).resolved().checksum is False
    with pytest.raises(ValueError, match="heartbeat_timeout .* must be at least twice heartbeat_interval"):
        Options(heartbeat_interval=1, heartbeat_timeout=1.5).resolved()
    monkeypatch.setenv("ZCOLL_HEARTBEAT_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="ZCOLL_HEARTBEAT_TIMEOUT='soon' is not a number of seconds"):
        Options().resolved()
    monkeypatch.delenv("ZCOLL_HEARTBEAT_TIMEOUT")
    with pytest.raises(ValueError, match="heartbeat_interval must be a positive number of seconds"):
        Options(heartbeat_interval=0).resolved()
    monkeypatch.setenv("ZCOLL_CHECKSUM", "yes please")
    with pytest.raises(ValueError, match="ZCOLL_CHECKSUM='yes please': expected 0 or 1"):
        Options().resolved()
    monkeypatch.setenv("ZCOLL_CHECKSUM", "0")
    monkeypatch.setenv("ZCOLL_P2P_MAX_UNEXPECTED_BYTES", "0")
    with pytest.raises(ValueError, match="ZCOLL_P2P_MAX_UNEXPECTED_BYTES must be positive"):
        Options().resolved()


def test_shm_rings_are_bounded():
    assert Options(shm_ring_bytes=1 << 30).resolved().shm_ring_bytes == 1 << 30
    with pytest.raises(ValueError, match="shm_ring_bytes must be positive and at most 1073741824"):
        Options(shm_ring_bytes=(1 << 30) + 1).resolved()
