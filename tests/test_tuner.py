"""The tuner's cost model (csrc/algorithms/cost_model.{h,cc}; docs/architecture.md, "Algorithms
and the tuner"): the defaults reproduce the measured table, synthetic parameters move the
choices the way the formulas say, tuning files load (or fail naming rank, file and key), groups
measure and agree, and ZCOLL_DEBUG=INFO logs the prediction next to the choice."""
import json
import os
import re
import socket
import subprocess
import sys
from datetime import timedelta

import numpy as np
import pytest
from multiproc import RankFailed, run_ranks

KiB, MiB = 1024, 1 << 20


def C():
    from zcoll import _C
    return _C


def model(**links):
    """The default model with `shm_alpha=...`, `net_beta=...`, `cores=...` style overrides."""
    m = C().CostModel()
    for key, value in links.items():
        if key == "cores":
            m.cores = value
            continue
        link, _, name = key.partition("_")
        setattr(getattr(m, link), name, value)
    return m


# ---- the defaults against the measurements that set the old threshold table --------------------

# (collective, bytes, ranks, transport): what the old table took there, from the measurement its
# comments quote (tuner.cc before the model; docs/architecture.md keeps the list).
MEASURED = [
    (("allreduce", 4 * KiB, 8, "tcp"), "tree"),       # tree 329 us, one-shot 377
    (("allreduce", 64 * KiB, 8, "tcp"), "tree"),      # tree 447 us, two-shot 737
    (("allreduce", 64 * KiB, 4, "shm"), "twoshot"),   # two-shot 100 us, ring 131, one-shot 170
    (("allreduce", 4 * KiB, 3, "tcp"), "oneshot"),    # one-shot 74 us, tree 106, ring 135
    (("allreduce", 1 * MiB, 4, "shm"), "ring"),       # ring 487 us, two-shot 674
    (("allreduce", 4 * KiB, 2, "shm"), "oneshot"),    # the table's one-shot region (<= 16 KiB)
    (("allreduce", 16 * KiB, 2, "shm"), "oneshot"),
    (("allreduce", 16 * KiB, 4, "shm"), "oneshot"),
    (("reduce", 1 * MiB, 4, "shm"), "tree"),          # large reduces: the tree
    (("reduce_scatter", 64 * MiB, 4, "shm"), "ring"),
]


@pytest.mark.parametrize("args,algo", MEASURED, ids=[f"{a[0]}-{a[1]}-{a[2]}-{a[3]}" for a, _ in MEASURED])
def test_default_model_picks_what_was_measured_fastest(args, algo):
    assert C().tune(*args)[0] == algo, C().predict(*args)


def test_default_model_predicts_the_measured_times_roughly():
    """Within a factor of 2 of each measured time (the fit's residuals are listed in
    docs/architecture.md)."""
    cases = [(("allreduce", 64 * KiB, 4, "shm"), {"ring": 131e-6, "twoshot": 100e-6, "oneshot": 170e-6}),
             (("allreduce", 1 * MiB, 4, "shm"), {"ring": 487e-6, "twoshot": 674e-6}),
             (("allreduce", 4 * KiB, 3, "tcp"), {"oneshot": 74e-6, "tree": 106e-6, "ring": 135e-6}),
             (("allreduce", 4 * KiB, 8, "tcp"), {"tree": 329e-6, "oneshot": 377e-6}),
             (("allreduce", 64 * KiB, 8, "tcp"), {"tree": 447e-6, "twoshot": 737e-6})]
    for args, measured in cases:
        got = C().predict(*args)["candidates"]
        for algo, seconds in measured.items():
            assert seconds / 2 < got[algo][1] < seconds * 2, (args, algo, got[algo], seconds)


def test_default_chunks_follow_the_measured_ones():
    """2 ranks on shm: 1 MiB chunks beat 256 KiB at 4 MiB and 512 KiB at 64 MiB (bench/)."""
    for nbytes in (4 * MiB, 64 * MiB):
        algo, chunk = C().tune("allreduce", nbytes, 2, "shm")
        assert algo in ("ring", "twoshot") and chunk == 1 * MiB, (nbytes, algo, chunk)


def test_choice_is_the_least_predicted_time_and_deterministic():
    _C = C()
    for coll in ("allreduce", "reduce", "reduce_scatter"):
        for transport in ("shm", "tcp", "shm+tcp"):
            for ranks in (2, 3, 5, 8, 16):
                for nbytes in (0, 8, 4 * KiB, 300 * KiB, 5 * MiB + 3, 128 * MiB):
                    p = _C.predict(coll, nbytes, ranks, transport)
                    best = min(s for _, s in p["candidates"].values())
                    assert p["seconds"] == best and p["candidates"][p["algorithm"]][1] == best
                    assert (p["algorithm"], p["chunk_bytes"]) == _C.tune(coll, nbytes, ranks, transport)
                    assert _C.predict(coll, nbytes, ranks, transport) == p
                    assert all(s >= 0 for _, s in p["candidates"].values())


# ---- synthetic parameters -----------------------------------------------------------------------

def test_high_latency_favours_few_rounds():
    """A 1 ms message latency: one round (one-shot) wins where the defaults take the ring, and
    over many ranks the tree's 2 log p rounds beat the ring's 2(p-1)."""
    _C = C()
    assert _C.tune("allreduce", 1 * MiB, 4, "shm")[0] == "ring"
    assert _C.tune("allreduce", 1 * MiB, 4, "shm", model=model(shm_alpha=1e-3))[0] == "oneshot"
    slow = model(net_alpha=1e-3, net_sigma=1.0)  # concurrent messages no cheaper than serial ones
    assert _C.tune("allreduce", 1 * MiB, 16, "tcp", model=slow)[0] == "tree"
    assert _C.tune("reduce", 64 * KiB, 16, "tcp", model=slow)[0] == "tree"


def test_low_bandwidth_favours_the_ring_earlier():
    """Bytes dominate when beta is tiny: the ring (one stream at a time) takes over from two-shot
    (contending streams) at smaller sizes."""
    _C = C()

    def first_ring(m):
        return next(n for n in (1 << k for k in range(10, 27)) if _C.tune("allreduce", n, 4, "shm", model=m)[0] == "ring")

    assert first_ring(model(shm_beta=1e8, shm_gamma=1e8)) < first_ring(model())


def test_no_contention_makes_two_shot_win_at_any_size():
    """kappa = 0 and sigma < 1: two-shot's concurrent sends cost no more than the ring's one at a
    time, and it has fewer rounds."""
    m = model(shm_kappa=0.0, shm_sigma=0.5)
    for n in (256 * KiB, 4 * MiB, 64 * MiB):
        assert C().tune("allreduce", n, 4, "shm", model=m)[0] == "twoshot"


def test_ranks_sharing_cores_cost_more():
    """cores: with a core per rank, no switch cost and full-speed cores: faster predictions."""
    _C = C()
    shared = _C.predict("allreduce", 1 * MiB, 4, "shm")["seconds"]
    own = _C.predict("allreduce", 1 * MiB, 4, "shm", model=model(cores=64))["seconds"]
    assert own < shared / 2
    # ranks_per_host counts who shares the host's cores: 8 ranks over 4 hosts share no core
    assert (_C.predict("allreduce", 1 * MiB, 8, "tcp", ranks_per_host=2)["seconds"]
            < _C.predict("allreduce", 1 * MiB, 8, "tcp")["seconds"])


def test_chunk_trades_latency_for_overlap():
    """Where moving and reducing overlap (the network link), the chunk grows with the message
    (more latencies are worth paying); it never passes the link's max_chunk; on shm (no overlap)
    each step goes in as few chunks as max_chunk allows."""
    _C = C()
    chunks = [_C.tune("allreduce", n, 4, "tcp")[1] for n in (4 * MiB, 64 * MiB, 512 * MiB)]
    assert chunks == sorted(chunks) and chunks[0] < chunks[-1], chunks
    assert _C.tune("allreduce", 512 * MiB, 4, "tcp", model=model(net_max_chunk=128 * KiB))[1] <= 128 * KiB
    lat = model(net_alpha=1e-3)
    assert _C.tune("allreduce", 64 * MiB, 4, "tcp", model=lat)[1] >= _C.tune("allreduce", 64 * MiB, 4, "tcp")[1]
    assert _C.tune("allreduce", 64 * MiB, 4, "shm")[1] == 1 * MiB
    assert _C.tune("allreduce", 64 * MiB, 4, "shm", model=model(shm_max_chunk=256 * KiB))[1] == 256 * KiB


def test_compressed_keeps_the_error_bound_and_models_the_chunk():
    """Two-shot from 4 ranks and for int4 (the ring's error grows per hop) even where the model
    says the ring would be faster; elsewhere the faster; the chunk by the model either way."""
    _C = C()
    ringy = model(shm_kappa=2.0)  # concurrent streams very costly: the ring would be faster
    free = _C.predict_compressed("int8", 16 * MiB, 4, model=ringy, error_bound=False)
    assert free["algorithm"] == "ring"
    assert _C.tune_compressed("int8", 16 * MiB, 4, model=ringy)[0] == "twoshot"
    assert _C.tune_compressed("int4", 16 * MiB, 2, model=ringy)[0] == "twoshot"
    assert list(_C.predict_compressed("int4", 16 * MiB, 3)["candidates"]) == ["twoshot"]
    assert _C.tune_compressed("int8", 16 * MiB, 3, model=ringy)[0] == "ring"
    # at 2 ranks the two schedules are one exchange: the ring is named, as before the model
    assert _C.tune_compressed("int8", 16 * MiB, 2)[0] == "ring"
    # cheaper codecs (fewer wire bytes) against a slow network: larger chunks pay off less
    fast, slow = model(net_beta=1e10), model(net_beta=1e8)
    for m in (fast, slow):
        algo, chunk = _C.tune_compressed("int8", 64 * MiB, 4, "tcp", model=m)
        assert algo == "twoshot" and 64 * KiB <= chunk <= m.net.max_chunk
    assert (_C.predict_compressed("int8", 64 * MiB, 4, "tcp", model=slow)["seconds"]
            > _C.predict_compressed("int8", 64 * MiB, 4, "tcp", model=fast)["seconds"])
    # codec rates enter: a slow encoder costs time
    slow_codec = model()
    slow_codec.set_codec("int8", 1e8, 1e8)
    assert (_C.predict_compressed("int8", 16 * MiB, 4, model=slow_codec)["seconds"]
            > 5 * _C.predict_compressed("int8", 16 * MiB, 4)["seconds"])


def test_hierarchical_levels_reuse_the_flat_predictions():
    """Two levels: inside a host the shm model's reduce-scatter for the host's ranks, between
    hosts the network model's all-reduce of one rank's share with every rank of the busiest host
    at work; the total adds the all-gather inside the host."""
    _C = C()
    host_of = [0, 0, 0, 0, 1, 1, 1, 1]
    n = 8 * MiB
    d = _C.predict_two_level(n, host_of, 0)
    assert d["intra"] == _C.predict("reduce_scatter", n, 4, "shm", 4)
    assert d["inter"] == _C.predict("allreduce", n // 4, 2, "tcp", 4)
    assert d["seconds"] == pytest.approx(d["intra"]["seconds"] + d["inter"]["seconds"] + d["all_gather_seconds"])
    assert d["all_gather_seconds"] > 0
    intra, inter, chunk = _C.tune_two_level(n, host_of, 0)
    assert (intra, inter) == (d["intra"]["algorithm"], d["inter"]["algorithm"])
    assert chunk == min(d["intra"]["chunk_bytes"], d["inter"]["chunk_bytes"])
    # a slow network latency changes the stage between hosts only
    lat = model(net_alpha=5e-3)
    i2, e2, _ = _C.tune_two_level(64 * KiB, host_of, 0, model=lat)
    assert i2 == _C.tune_two_level(64 * KiB, host_of, 0)[0] and e2 in ("oneshot", "twoshot")
    assert _C.tune_two_level(64 * KiB, host_of, 0, model=lat) == _C.tune_two_level(64 * KiB, host_of, 5, model=lat)
    # reduce: through the leaders, the whole tensor between hosts
    r = _C.predict_two_level(n, host_of, 0, "reduce")
    assert r["inter"] == _C.predict("reduce", n, 2, "tcp", 1) and r["all_gather_seconds"] == 0


def test_cost_model_object():
    _C = C()
    m = _C.CostModel()
    assert m.source == "defaults" and m.invalid() == "" and m == m.copy()
    assert m.codec("int8") == (3.5e9, 7.5e9) and _C.CostModel.codecs == ["fp16", "bf16", "int8", "int4"]
    bad = m.copy()
    bad.shm.beta = 0
    assert bad.invalid() == "shm.beta must be positive (bytes/s), got 0" and bad != m
    bad = m.copy()
    bad.net.overlap = 2
    assert "net.overlap must be in [0, 1]" in bad.invalid()
    with pytest.raises(ValueError, match="unknown codec 'int3'"):
        m.codec("int3")
    assert "alpha 1.5 us" in m.describe() and "2 cores per host" in m.describe()


# ---- tuning files and options ---------------------------------------------------------------------

def test_tuning_file_loads_and_round_trips(tmp_path):
    from zcoll.tuning import cost_model_to_dict, load_cost_model, save_cost_model
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"version": 1, "cores": 16, "shm": {"alpha": 2e-6, "beta": 3e10},
                                "tcp": {"alpha": 5e-5, "max_chunk": 2 * MiB}, "ucx": {"alpha": 3e-6},
                                "codecs": {"int8": {"encode": 1e9}}, "comment": "hand-written"}))
    m = load_cost_model(str(path), "tcp", 3)
    assert (m.cores, m.shm.alpha, m.shm.beta, m.net.alpha, m.net.max_chunk) == (16, 2e-6, 3e10, 5e-5, 2 * MiB)
    assert m.shm.gamma == C().CostModel().shm.gamma  # left out: the default
    assert m.codec("int8") == (1e9, 7.5e9) and m.source == f"file {path}"
    assert load_cost_model(str(path), "ucx").net.alpha == 3e-6
    # written back: the measured sections replace theirs, the others stay
    m.net.beta = 1e9
    save_cost_model(m, str(path), "tcp", shm=False)
    data = json.loads(path.read_text())
    assert data["tcp"]["beta"] == 1e9 and data["ucx"] == {"alpha": 3e-6} and data["shm"] == {"alpha": 2e-6, "beta": 3e10}
    again = load_cost_model(str(path), "tcp")
    assert again.to_list() == m.to_list()
    assert cost_model_to_dict(C().CostModel(), None)["codecs"]["int4"] == {"encode": 3.1e9, "decode": 5.7e9}


@pytest.mark.parametrize("content,message", [
    (None, r"rank 2: ZCOLL_TUNING_FILE .*missing\.json: cannot read it"),
    ("{not json", r"rank 2: ZCOLL_TUNING_FILE .*: not JSON \(.* line 1 column 2\)"),
    ("[1, 2]", r"rank 2: ZCOLL_TUNING_FILE .*: expected a JSON object"),
    ('{"shm": {"beta": 0}}', r"rank 2: ZCOLL_TUNING_FILE .*: shm\.beta: must be positive \(bytes/s\), got 0"),
    ('{"tcp": {"alpha": -1}}', r"tcp\.alpha: must be a number of seconds >= 0, got -1"),
    ('{"tcp": {"overlap": 1.5}}', r"tcp\.overlap: must be in \[0, 1\]"),
    ('{"shm": {"alhpa": 1}}', r"shm\.alhpa: unknown key"),
    ('{"shm": {"alpha": "fast"}}', r"shm\.alpha: expected a finite number, got 'fast'"),
    ('{"shm": {"max_chunk": 1.5}}', r"shm\.max_chunk: expected an integer"),
    ('{"shm": {"max_chunk": 100}}', r"shm\.max_chunk: must be at least 4096"),
    ('{"cores": 0}', r"cores: must be at least 1"),
    ('{"version": 2}', r"version: this zcoll reads version 1, got 2"),
    ('{"shmm": {}}', r"shmm: unknown key"),
    ('{"codecs": {"int3": {}}}', r"codecs\.int3: unknown codec"),
    ('{"codecs": {"int8": {"encode": 0}}}', r"codecs\.int8\.encode: must be positive"),
])
def test_tuning_file_errors_name_rank_file_and_key(tmp_path, content, message):
    from zcoll.tuning import TuningFileError, load_cost_model
    path = tmp_path / ("missing.json" if content is None else "t.json")
    if content is not None:
        path.write_text(content)
    with pytest.raises(TuningFileError, match=message) as info:
        load_cost_model(str(path), "tcp", 2)
    assert isinstance(info.value, ValueError) and str(path) in str(info.value)


def test_tuning_options_from_env(monkeypatch):
    from zcoll import Options
    for name in ("ZCOLL_TUNING", "ZCOLL_TUNING_FILE"):
        monkeypatch.delenv(name, raising=False)
    o = Options().resolved()
    assert (o.tuning, o.tuning_file) == ("defaults", "")
    monkeypatch.setenv("ZCOLL_TUNING", "MEASURE")
    monkeypatch.setenv("ZCOLL_TUNING_FILE", " /etc/zcoll.json ")
    o = Options().resolved()
    assert (o.tuning, o.tuning_file) == ("measure", "/etc/zcoll.json")
    assert Options(tuning="defaults", tuning_file="x.json").resolved().tuning_file == "x.json"
    monkeypatch.setenv("ZCOLL_TUNING", "fast")
    with pytest.raises(ValueError, match="ZCOLL_TUNING='fast': expected one of defaults, measure"):
        Options().resolved()
    with pytest.raises(ValueError, match="tuning='auto': expected one of defaults, measure"):
        Options(tuning="auto").resolved()


def test_group_tuning_decision():
    from zcoll.backend import _group_tuning
    from zcoll.tuning import TuningFileError
    assert _group_tuning(["defaults"] * 3) == "defaults"
    assert _group_tuning(["file", "defaults", "defaults"]) == "agree"
    assert _group_tuning(["measure"] * 2) == "measure"
    with pytest.raises(ValueError, match="rank 1 has ZCOLL_TUNING=measure but rank 0 does not"):
        _group_tuning(["defaults", "measure"])
    with pytest.raises(TuningFileError, match="rank 1: ZCOLL_TUNING_FILE x: cannot read it"):
        _group_tuning(["defaults", "error rank 1: ZCOLL_TUNING_FILE x: cannot read it", "file"])


# ---- groups: measuring, agreeing, logging ---------------------------------------------------------

def ranks_tuned_group(rank, world, store, env, hosts=None):
    os.environ.update(env.get(rank, env.get("all", {})))
    if hosts:
        os.environ["ZCOLL_HOSTID"] = f"node-{hosts[rank]}"
    import torch
    import torch.distributed as dist

    from zcoll import _C
    dist.init_process_group("zcoll", store=store, rank=rank, world_size=world, timeout=timedelta(seconds=30))
    backend = dist.group.WORLD._get_backend(torch.device("cpu"))
    rng = np.random.default_rng(rank)
    out = {}
    for n in (1000, 300_000):
        x = rng.standard_normal(n).astype(np.float32)
        t = torch.from_numpy(x.copy())
        dist.all_reduce(t)
        out[n] = (x, t.numpy().copy())
    most = max(list(backend.host_of).count(h) for h in backend.host_of)
    algos = {n: _C.tune("allreduce", 4 * n, world, backend.transport, most, model=backend.cost_model)[0]
             for n in out}
    result = (backend.cost_model.to_list(), backend.measurement, backend.transport, algos, out)
    dist.destroy_process_group()
    return result


def check_results(res, world, flat=True):
    from zcoll import reference as R
    for n in res[0][4]:
        xs = [res[r][4][n][0] for r in range(world)]
        want = R.all_reduce(xs, "sum", res[0][3][n])[0] if flat else None
        for r in range(world):
            if flat:
                np.testing.assert_array_equal(res[r][4][n][1], want)
            assert res[r][3] == res[0][3]


@pytest.mark.timeout(120)
def test_measured_model_is_rank_0s_on_every_rank():
    """ZCOLL_TUNING=measure: a few ms at creation; every rank ends with the same numbers (rank
    0's), measured where the group has a link, and the collectives run the choices that model
    makes, equal to the reference."""
    res = run_ranks(ranks_tuned_group, 3, {"all": {"ZCOLL_TUNING": "measure"}}, timeout=100)
    models = [res[r][0] for r in range(3)]
    assert models[0] == models[1] == models[2]
    default = C().CostModel().to_list()
    assert models[0] != default  # alpha, beta, gamma measured
    for r in range(3):
        assert res[r][1]["shm"] and not res[r][1]["net"] and res[r][2] == "shm"
        assert 0 < res[r][1]["seconds"] < 1.0
    check_results(res, 3)


@pytest.mark.timeout(120)
def test_measure_across_hosts_measures_both_links():
    """Two hosts (ZCOLL_HOSTID) of two ranks: the probe measures the shm pair and the pair across
    hosts; all ranks agree."""
    res = run_ranks(ranks_tuned_group, 4, {"all": {"ZCOLL_TUNING": "measure"}}, (0, 0, 1, 1), timeout=100)
    assert all(res[r][0] == res[0][0] for r in range(4))
    for r in range(4):
        assert res[r][1]["shm"] and res[r][1]["net"] and res[r][2] == "shm+tcp"


@pytest.mark.timeout(120)
def test_tuning_file_of_rank_0_is_the_groups(tmp_path, capfd):
    """Ranks that read different tuning files (or none) take rank 0's, and the ones whose own
    differed say so."""
    from zcoll.tuning import load_cost_model
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({"shm": {"alpha": 1e-3}, "cores": 8}))  # slow latency: one-shot at 300 KB
    b.write_text(json.dumps({"shm": {"alpha": 1e-9}}))
    env = {0: {"ZCOLL_TUNING_FILE": str(a)}, 1: {"ZCOLL_TUNING_FILE": str(b)}, 2: {}}
    res = run_ranks(ranks_tuned_group, 3, env, timeout=100)
    want = load_cost_model(str(a)).to_list()
    assert all(res[r][0] == want for r in range(3))
    assert res[0][3][300_000] == "oneshot"
    check_results(res, 3)
    err = capfd.readouterr().err
    assert re.search(r"\[rank 1\] WARN.*the cost model \(file .*b\.json\) differs from rank 0's", err), err
    assert re.search(r"\[rank 2\] WARN.*the cost model \(defaults\) differs from rank 0's", err), err
    assert "[rank 0] WARN" not in err


def ranks_bad_file(rank, world, store, path):
    if rank == 1:
        os.environ["ZCOLL_TUNING_FILE"] = path
    import torch.distributed as dist

    import zcoll  # noqa: F401  (registers the backend)
    try:
        dist.init_process_group("zcoll", store=store, rank=rank, world_size=world, timeout=timedelta(seconds=60))
    except Exception as e:  # noqa: BLE001
        return type(e).__name__, str(e)
    return "ok", ""


@pytest.mark.timeout(60)
def test_a_bad_tuning_file_fails_every_rank_at_once(tmp_path):
    """Rank 1's file is broken: every rank raises its error (no rank waits for the timeout)."""
    path = tmp_path / "bad.json"
    path.write_text('{"tcp": {"beta": -5}}')
    res = run_ranks(ranks_bad_file, 3, str(path), timeout=40)
    for r in range(3):
        kind, text = res[r]
        assert kind == "TuningFileError", res[r]
        assert f"rank 1: ZCOLL_TUNING_FILE {path}: tcp.beta: must be positive" in text, text


def ranks_debug_prediction(rank, world, store):
    os.environ["ZCOLL_DEBUG"] = "INFO"
    import torch
    import torch.distributed as dist

    import zcoll  # noqa: F401  (registers the backend)
    dist.init_process_group("zcoll", store=store, rank=rank, world_size=world, timeout=timedelta(seconds=30))
    for _ in range(2):
        dist.all_reduce(torch.ones(1024))
    dist.all_reduce(torch.ones(1 << 18))
    dist.destroy_process_group()


@pytest.mark.timeout(120)
def test_debug_info_logs_the_prediction_next_to_the_choice(capfd):
    run_ranks(ranks_debug_prediction, 2, timeout=100)
    err = capfd.readouterr().err
    host = socket.gethostname()
    _C = C()
    for n in (4096, 1 << 20):
        p = _C.predict("allreduce", n, 2, "shm")
        others = [a for a in p["candidates"] if a != p["algorithm"]]
        for rank in range(2):
            line = re.compile(rf"zcoll {re.escape(host)}:\d+ \[rank {rank}\] INFO: allreduce of {n} bytes over 2 "
                              rf"ranks \(shm\): {p['algorithm']} \(tuner\), chunk {p['chunk_bytes']} bytes \(tuner\); "
                              rf"predicted {p['algorithm']} [\d.]+ [um]?s \(" +
                              ", ".join(rf"{a} [\d.]+ [um]?s" for a in others) + r"\)$", re.M)
            assert len(line.findall(err)) == 1, err
    assert re.search(r"\[rank 0\] INFO: cost model \(defaults\): shm: alpha 1\.5 us", err), err


@pytest.mark.timeout(120)
def test_zcoll_tune_writes_a_tuning_file(tmp_path):
    """python -m zcoll.tune measures local ranks and writes a file ZCOLL_TUNING_FILE loads."""
    from zcoll.tuning import load_cost_model
    out = tmp_path / "tuning.json"
    proc = subprocess.run([sys.executable, "-m", "zcoll.tune", "--nproc", "2", "--repeats", "2",
                           "--codec-elements", "65536", "-o", str(out)],
                          capture_output=True, text=True, timeout=110, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"wrote {out}" in proc.stdout
    data = json.loads(out.read_text())
    assert set(data) >= {"version", "cores", "shm", "codecs", "comment"} and "tcp" not in data
    m = load_cost_model(str(out))
    assert m.shm.alpha != C().CostModel().shm.alpha and m.invalid() == ""


@pytest.mark.timeout(60)
def test_measure_is_refused_with_ranks_that_did_not_ask():
    """The probe is collective: a group where only some ranks ask for it fails on every rank."""
    with pytest.raises(RankFailed, match="rank 0 has ZCOLL_TUNING=measure but rank 1 does not"):
        run_ranks(_ranks_half_measure, 2, timeout=60)


def _ranks_half_measure(rank, world, store):
    return ranks_tuned_group(rank, world, store, {0: {"ZCOLL_TUNING": "measure"}})
