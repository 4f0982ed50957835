"""zcoll.Options and the ZCOLL_* variables: defaults, precedence (pg_options over env), and clear
errors for bad values."""
import pytest

from zcoll.config import DEFAULT_SHM_SINGLE_COPY_BYTES, Options, harness_settings, parse_algo


def test_defaults(monkeypatch):
    for name in ("ZCOLL_TRANSPORT", "ZCOLL_ALGO", "ZCOLL_CHUNK_BYTES", "ZCOLL_SHM_RING_BYTES", "ZCOLL_DEBUG",
                 "ZCOLL_SOCKET_IFNAME", "ZCOLL_COMPRESS", "ZCOLL_COMPRESS_MIN_BYTES", "ZCOLL_COMPRESS_BLOCK"):
        monkeypatch.delenv(name, raising=False)
    o = Options().resolved()
    assert (o.transport, o.algo, o.chunk_bytes, o.shm_ring_bytes, o.debug) == ("auto", "", 0, 0, "WARN")
    assert (o.compression, o.compress_min_bytes, o.compress_block) == ("none", 65536, 256)


def test_env_then_options_take_precedence(monkeypatch):
    monkeypatch.setenv("ZCOLL_ALGO", "tree")
    monkeypatch.setenv("ZCOLL_CHUNK_BYTES", "0x10000")
    monkeypatch.setenv("ZCOLL_DEBUG", "INFO")
    o = Options().resolved()
    assert (o.algo, o.chunk_bytes, o.debug) == ("tree", 65536, "INFO")
    o = Options(algo="allreduce:ring", chunk_bytes=4096, debug="trace").resolved()
    assert (o.algo, o.chunk_bytes, o.debug) == ("allreduce:ring", 4096, "TRACE")


@pytest.mark.parametrize("value,level", [("", "WARN"), ("warn", "WARN"), ("WARNING", "WARN"), ("Info", "INFO"),
                                         ("TRACE", "TRACE"), ("1", "INFO"), ("true", "INFO"), ("0", "WARN"),
                                         ("false", "WARN")])
def test_debug_levels(monkeypatch, value, level):
    """ZCOLL_DEBUG is WARN, INFO or TRACE; flag values (1/true, 0/false/empty) mean INFO and WARN."""
    monkeypatch.setenv("ZCOLL_DEBUG", value)
    assert Options().resolved().debug == level
    assert Options(debug=value).resolved().debug == level


def test_debug_flags_and_bad_levels():
    assert Options(debug=True).resolved().debug == "INFO"
    assert Options(debug=False).resolved().debug == "WARN"
    with pytest.raises(ValueError, match="debug='loud': expected one of WARN, INFO, TRACE"):
        Options(debug="loud").resolved()


def test_bad_debug_env_names_the_variable(monkeypatch):
    monkeypatch.setenv("ZCOLL_DEBUG", "VERSION")
    with pytest.raises(ValueError, match="ZCOLL_DEBUG='VERSION': expected one of WARN, INFO, TRACE"):
        Options().resolved()


def test_harness_settings(monkeypatch):
    """The test-only variables, read in config.py like every other."""
    for name in ("ZCOLL_TEST_DEVICE_PATH", "ZCOLL_TEST_FAULT", "ZCOLL_TEST_FLIP_BIT"):
        monkeypatch.delenv(name, raising=False)
    assert harness_settings(0) == {"stage_cpu": False, "test_fault": "", "test_flip_bit_at": -1}
    monkeypatch.setenv("ZCOLL_TEST_DEVICE_PATH", "1")
    monkeypatch.setenv("ZCOLL_TEST_FAULT", "exit_in_bootstrap")
    monkeypatch.setenv("ZCOLL_TEST_FLIP_BIT", "1:5")
    assert harness_settings(0) == {"stage_cpu": True, "test_fault": "exit_in_bootstrap", "test_flip_bit_at": -1}
    assert harness_settings(1)["test_flip_bit_at"] == 5


def test_backend_config_binding():
    """zcoll._C.BackendConfig: the C++ struct's defaults, read-write fields, durations in seconds."""
    from zcoll import _C
    c = _C.BackendConfig()
    assert (c.transport, c.chunk_bytes, c.compression, c.compress_min_bytes, c.compress_block) == \
        ("auto", 0, "none", 65536, 256)
    assert (c.connect_timeout, c.heartbeat_interval, c.heartbeat_timeout, c.log_level) == (20.0, 1.0, 30.0, "WARN")
    c.heartbeat_interval, c.log_level, c.host_of, c.host_names = 0.25, "TRACE", [0, 0, 1], ["a", "b"]
    assert (c.heartbeat_interval, c.log_level, c.host_of, c.host_names) == (0.25, "TRACE", [0, 0, 1], ["a", "b"])
    with pytest.raises(ValueError, match="expected WARN, INFO or TRACE"):
        c.log_level = "LOUD"
    with pytest.raises(ValueError, match="positive number of seconds"):
        c.connect_timeout = 0


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


def test_shm_rings_are_bounded(monkeypatch):
    assert Options(shm_ring_bytes=1 << 30).resolved().shm_ring_bytes == 1 << 30
    assert Options(shm_ring_bytes=0).resolved().shm_ring_bytes == 0  # the group's choice
    with pytest.raises(ValueError, match="shm_ring_bytes must be at most 1073741824"):
        Options(shm_ring_bytes=(1 << 30) + 1).resolved()
    monkeypatch.setenv("ZCOLL_SHM_RING_BYTES", "65536")
    assert Options().resolved().shm_ring_bytes == 65536
    monkeypatch.setenv("ZCOLL_SHM_RING_BYTES", "-1")
    with pytest.raises(ValueError, match="ZCOLL_SHM_RING_BYTES must be positive"):
        Options().resolved()


def test_shm_single_copy_threshold(monkeypatch):
    monkeypatch.delenv("ZCOLL_SHM_SINGLE_COPY_BYTES", raising=False)
    assert Options().resolved().shm_single_copy_bytes == "auto"  # the default where ranks have cores
    assert Options(shm_single_copy_bytes=0).resolved().shm_single_copy_bytes == 0  # never
    for bad in (-1, "often", 1.5):
        with pytest.raises(ValueError, match="shm_single_copy_bytes must be 'auto' or a byte count >= 0"):
            Options(shm_single_copy_bytes=bad).resolved()
    monkeypatch.setenv("ZCOLL_SHM_SINGLE_COPY_BYTES", "auto")
    assert Options().resolved().shm_single_copy_bytes == "auto"
    monkeypatch.setenv("ZCOLL_SHM_SINGLE_COPY_BYTES", str(1 << 20))
    assert Options().resolved().shm_single_copy_bytes == 1 << 20
    monkeypatch.setenv("ZCOLL_SHM_SINGLE_COPY_BYTES", "0")
    assert Options().resolved().shm_single_copy_bytes == 0
    monkeypatch.setenv("ZCOLL_SHM_SINGLE_COPY_BYTES", "lots")
    with pytest.raises(ValueError, match="ZCOLL_SHM_SINGLE_COPY_BYTES='lots' is not an integer"):
        Options().resolved()


def test_default_single_copy_threshold_is_the_transports():
    import torch  # noqa: F401  (before zcoll._C)

    from zcoll import _C
    assert DEFAULT_SHM_SINGLE_COPY_BYTES == _C.DEFAULT_SHM_SINGLE_COPY_BYTES
