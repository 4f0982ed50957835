"""zcoll.sync.AsyncParameterServer: DC-ASGD's formula, stale pushes refused, plain async SGD at
λ = 0, checkpoints, two servers, and digits training on zcoll and gloo groups."""
import io
from datetime import timedelta

import numpy as np
import pytest
from multiproc import run_ranks


def init(rank, world, store, backend="zcoll"):
    import torch

    import torch.distributed as dist
    torch.set_num_threads(1)
    if backend == "zcoll":
        import zcoll  # noqa: F401  (registers the backend)
    dist.init_process_group(backend, store=store, rank=rank, world_size=world, timeout=timedelta(seconds=30))


def finish(out):
    """Ends the group and returns `out` with tensors as numpy arrays: a tensor sent back to the
    parent through the queue would be shared memory of a process about to exit."""
    import torch

    import torch.distributed as dist
    dist.barrier()  # every rank closed its parameter server before the group goes
    dist.destroy_process_group()

    def plain(x):
        if isinstance(x, torch.Tensor):
            return x.detach().numpy().copy()
        if isinstance(x, dict):
            return {k: plain(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return type(x)(plain(v) for v in x)
        return x
    return plain(out)


def grads_of(model, seed):
    import torch
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(p.shape, generator=gen) for p in model.parameters()]


def test_shards_are_balanced_deterministic_and_cover_every_parameter():
    from zcoll.sync.parameter_server import shard_parameters

    numels = [128, 16, 64, 4, 64, 1]
    shards = shard_parameters(numels, 2)
    assert shards == shard_parameters(numels, 2)
    assert sorted(i for s in shards for i in s) == list(range(len(numels)))
    loads = [sum(numels[i] for i in s) for s in shards]
    assert shards == [[0, 1], [2, 3, 4, 5]] and loads == [144, 133]
    assert shard_parameters(numels, 1) == [list(range(6))]
    assert shard_parameters([1], 3) == [[0], [], []]


# --------------------------------------------------------------------------------- DC-ASGD

def ranks_dc_formula(rank, world, store, lr, lam):
    import torch

    from zcoll.sync import AsyncParameterServer
    init(rank, world, store)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    errors = []
    for kwargs in ({"servers": []}, {"servers": [2]}, {"servers": [0, 1]}, {"max_staleness": -1},
                   {"servers": [0, 0]}, {"delay_compensation": -1.0}):
        try:
            AsyncParameterServer(model, opt, **kwargs)
        except ValueError as e:
            errors.append(str(e))
    with AsyncParameterServer(model, opt if rank == 0 else None, servers=[0], max_staleness=4,
                              delay_compensation=lam) as ps:
        if ps.is_server:
            out = {"stats": None}
        else:
            ps.pull()
            w0 = [p.detach().clone() for p in model.parameters()]
            after = [ps.push(grads_of(model, k)) for k in (1, 2, 3)]  # never pulled again: versions 0
            versions = ps.pull()
            w3 = [p.detach().clone() for p in model.parameters()]
            out = {"w0": w0, "w3": w3, "after": after, "versions": versions, "stats": dict(ps.stats),
                   "grads": [grads_of(model, k) for k in (1, 2, 3)]}
    if rank == 0:
        out["stats"] = dict(ps.stats)
    return finish((out, errors))


@pytest.mark.timeout(60)
def test_server_applies_the_dc_asgd_formula():
    lr, lam = 0.1, 2.0
    res = run_ranks(ranks_dc_formula, 2, lr, lam, timeout=45)
    (server, errors), (worker, _) = res[0], res[1]
    assert len(errors) == 6 and "leave no worker" in errors[2] and "not ranks of the group" in errors[1], errors
    assert worker["after"] == [{0: 1}, {0: 2}, {0: 3}] and worker["versions"] == {0: 3}
    # By hand, in float64: w_then is w0 for every push (the worker never pulled in between).
    w0 = [w.astype(np.float64) for w in worker["w0"]]
    w = [x.copy() for x in w0]
    plain = [x.copy() for x in w0]
    for g in worker["grads"]:
        g = [x.astype(np.float64) for x in g]
        w = [wi - lr * (gi + lam * gi * gi * (wi - w0i)) for wi, gi, w0i in zip(w, g, w0)]
        plain = [pi - lr * gi for pi, gi in zip(plain, g)]
    for got, want, p in zip(worker["w3"], w, plain):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
        assert np.abs(want - p).max() > 1e-2  # the compensation is not negligible here
    assert server["stats"] == {"pushes_applied": 3, "pushes_refused": 0, "pulls_served": 2, "workers_done": 1,
                               "staleness_max": 2, "staleness_sum": 3}
    assert worker["stats"] == {"pushes": 3, "pushes_refused": 0, "pulls": 2, "steps": 0}


# --------------------------------------------------------------------------------- staleness

def ranks_stale(rank, world, store):
    import time

    import torch

    from zcoll.sync import AsyncParameterServer, StalePushError
    init(rank, world, store)
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    out = {}
    with AsyncParameterServer(model, opt, servers=[0], max_staleness=2, delay_compensation=0.1) as ps:
        if rank == 1:
            time.sleep(0.3)  # rank 2 closes first: the server goes on serving rank 1
            ps.pull()
            out["versions"] = [ps.push(grads_of(model, k))[0] for k in range(3)]
            try:
                ps.push(grads_of(model, 9))
            except StalePushError as e:
                out["error"] = (str(e), e.worker, e.server, e.worker_version, e.server_version, e.max_staleness,
                                isinstance(e, RuntimeError))
            out["after_refusal"] = ps.version
            out["pulled"] = ps.pull()[0]
            out["versions"].append(ps.push(grads_of(model, 10), pull=True)[0])
            out["final"] = ps.version
    out["stats"] = dict(ps.stats)
    if rank == 1:
        try:
            ps.push(grads_of(model, 11))
        except RuntimeError as e:
            out["closed"] = str(e)
    return finish(out)


@pytest.mark.timeout(60)
def test_stale_pushes_are_refused_counted_and_versions_only_grow():
    res = run_ranks(ranks_stale, 3, timeout=45)
    worker, server = res[1], res[0]
    assert worker["versions"] == [1, 2, 3, 4]  # one per applied push, never a refusal
    message, who, srv, wv, sv, ms, is_runtime = worker["error"]
    assert (who, srv, wv, sv, ms, is_runtime) == (1, 0, 0, 3, 2, True)
    for part in ("rank 0", "worker rank 1", "version 0", "version 3", "max_staleness=2"):
        assert part in message, message
    assert worker["after_refusal"] == 0 and worker["pulled"] == 3 and worker["final"] == 4
    assert worker["stats"] == {"pushes": 5, "pushes_refused": 1, "pulls": 2, "steps": 0}
    assert "rank 1: push() after close()" in worker["closed"]
    assert server["stats"]["pushes_applied"] == 4 and server["stats"]["pushes_refused"] == 1
    assert server["stats"]["workers_done"] == 2 and server["stats"]["staleness_max"] == 2
    assert res[2]["stats"] == {"pushes": 0, "pushes_refused": 0, "pulls": 0, "steps": 0}


# --------------------------------------------------------------------------------- plain async SGD

def ranks_plain(rank, world, store, backend):
    import torch

    from zcoll.sync import AsyncParameterServer
    init(rank, world, store, backend)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    reference = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    reference.load_state_dict(model.state_dict())
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    out = {}
    with AsyncParameterServer(model, opt, servers=[0], max_staleness=3, delay_compensation=0.0) as ps:
        if not ps.is_server:
            ps.pull()
            for k in range(6):  # stale by 0, 1, 2, 3, then pull and again
                if k == 4:
                    ps.pull()
                ps.push(grads_of(model, k))
            ps.pull()
            # The same gradients through a local SGD: exactly the same parameters.
            ref_opt = torch.optim.SGD(reference.parameters(), lr=0.05, momentum=0.9)
            for k in range(6):
                for p, g in zip(reference.parameters(), grads_of(model, k)):
                    p.grad = g
                ref_opt.step()
            out["equal"] = all(torch.equal(a, b) for a, b in zip(model.parameters(), reference.parameters()))
            out["version"] = ps.version
    out["stats"] = dict(ps.stats)
    return finish(out)


@pytest.mark.timeout(60)
def test_no_delay_compensation_is_plain_async_sgd():
    res = run_ranks(ranks_plain, 2, "zcoll", timeout=45)
    assert res[1]["equal"] and res[1]["version"] == 6
    assert res[0]["stats"]["staleness_max"] == 3 and res[0]["stats"]["pushes_applied"] == 6


# --------------------------------------------------------------------------------- checkpoints

def ranks_checkpoint(rank, world, store):
    import torch

    from zcoll.sync import AsyncParameterServer
    init(rank, world, store)

    def fresh(seed):
        torch.manual_seed(seed)
        model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
        return model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    def make(model, opt):
        return AsyncParameterServer(model, opt, servers=[0], max_staleness=3, delay_compensation=1.0)

    def part_a(ps, model):
        ps.pull()
        ps.push(grads_of(model, 1))
        ps.push(grads_of(model, 2))
        ps.pull()
        ps.push(grads_of(model, 3))

    def part_b(ps, model):  # stale by 1, 2, 3: the history from the checkpoint is used
        for k in (4, 5, 6):
            ps.push(grads_of(model, k))
        ps.pull()
        return [p.detach().clone() for p in model.parameters()], ps.versions

    out = {}
    model, opt = fresh(0)  # the reference: parts A and B uninterrupted
    with make(model, opt) as ps:
        if not ps.is_server:
            part_a(ps, model)
            out["reference"] = part_b(ps, model)
    model, opt = fresh(0)  # part A, then a checkpoint through torch.save
    with make(model, opt) as ps:
        if not ps.is_server:
            part_a(ps, model)
    buf = io.BytesIO()
    torch.save(ps.state_dict(), buf)
    saved_params = [p.detach().clone() for p in model.parameters()]
    model, opt = fresh(7)  # a restarted rank: other initial weights, a new optimizer
    ps = make(model, opt)
    buf.seek(0)
    ps.load_state_dict(torch.load(buf, weights_only=False))
    if ps.is_server:
        out["restored"] = (all(torch.equal(a, b) for a, b in zip(model.parameters(), saved_params)),
                           ps.version, ps.state_dict()["version"], len(ps.state_dict()["history"]),
                           bool(opt.state))
    with ps:
        if not ps.is_server:
            out["resumed"] = part_b(ps, model)
    out["stats"] = dict(ps.stats)
    return finish(out)


@pytest.mark.timeout(60)
def test_a_restored_server_resumes_where_it_stopped():
    res = run_ranks(ranks_checkpoint, 2, timeout=45)
    server, worker = res[0], res[1]
    assert server["restored"] == (True, 3, 3, 4, True)
    (ref_params, ref_versions), (params, versions) = worker["reference"], worker["resumed"]
    assert ref_versions == versions == {0: 6}
    for a, b in zip(ref_params, params):
        np.testing.assert_array_equal(a, b)
    # The stats carry over the restart: A's pushes and B's.
    assert server["stats"]["pushes_applied"] == 6 and server["stats"]["staleness_max"] == 3
    assert worker["stats"]["pushes"] == 6


# --------------------------------------------------------------------------------- two servers

def ranks_two_servers(rank, world, store, pushes):
    import torch

    from zcoll.sync import AsyncParameterServer
    init(rank, world, store)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    for p in model.parameters():
        torch.nn.init.zeros_(p)  # integers and halves throughout: the same sum in any order
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    out = {}
    with AsyncParameterServer(model, opt, servers=[0, 1], max_staleness=8) as ps:
        if not ps.is_server:
            ps.pull()
            for _ in range(pushes):
                ps.push([torch.full_like(p, float(rank)) for p in model.parameters()], pull=True)
            out["versions"] = ps.versions
    out["shards"] = ps.shards
    out["params"] = [p.detach().clone() for p in model.parameters()]
    out["stats"], out["bytes_sent"], out["state"] = dict(ps.stats), ps.bytes_sent, ps.state_dict()
    return finish(out)


@pytest.mark.timeout(60)
def test_two_servers_shard_the_parameters():
    pushes = 3
    res = run_ranks(ranks_two_servers, 4, pushes, timeout=45)
    shards = res[0]["shards"]
    assert shards == [[0], [1, 2, 3]]  # 128 elements, then 16 + 64 + 4
    numel = [128, 84]
    expected = -0.5 * pushes * (2 + 3)  # workers 2 and 3 push their rank, lr 0.5
    for s in (0, 1):
        assert res[s]["stats"]["pushes_applied"] == 2 * pushes and res[s]["stats"]["pulls_served"] == 2
        assert res[s]["state"]["version"] == 2 * pushes and res[s]["state"]["shard"] == shards[s]
        for i in shards[s]:
            assert np.all(res[s]["params"][i] == expected)
        # replies: a header and the shard for each pull and each push with pull
        assert res[s]["bytes_sent"] == (2 + 2 * pushes) * (32 + 4 * numel[s])
    for w in (2, 3):
        assert res[w]["versions"][0] >= pushes and res[w]["versions"][1] >= pushes
        # a pull request, the pushes (header and gradient) and the done message, to each server
        assert res[w]["bytes_sent"] == 2 * 32 + pushes * (2 * 32 + 4 * sum(numel)) + 2 * 32
        assert res[w]["stats"]["pushes"] == pushes and res[w]["state"]["versions"] == res[w]["versions"]


# --------------------------------------------------------------------------------- timeouts

def ranks_timeouts(rank, world, store, timeout):
    import time

    import torch

    import torch.distributed as dist
    import zcoll  # noqa: F401
    from zcoll.sync import AsyncParameterServer
    torch.set_num_threads(1)
    dist.init_process_group("zcoll", store=store, rank=rank, world_size=world, timeout=timedelta(seconds=timeout))
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    out = {}
    # A worker that never closes: the server's loop gives up after the timeout, naming itself.
    ps = AsyncParameterServer(model, opt, servers=[0])
    start = time.monotonic()
    if ps.is_server:
        try:
            ps.close()
        except RuntimeError as e:
            out["server"] = (str(e), time.monotonic() - start, ps._thread.is_alive())
    else:
        time.sleep(timeout)
    dist.barrier()
    # A server that never serves: the worker's pull gives up after the timeout, naming both.
    ps = AsyncParameterServer(model, opt, servers=[0])
    start = time.monotonic()
    if ps.is_server:
        time.sleep(timeout + 1.5)  # still in the group, silent
    else:
        try:
            ps.pull()
        except RuntimeError as e:
            out["worker"] = (str(e), time.monotonic() - start)
    dist.destroy_process_group()
    return out


@pytest.mark.timeout(60)
def test_every_wait_ends_with_an_error_naming_the_ranks():
    timeout = 2.0
    res = run_ranks(ranks_timeouts, 2, timeout, timeout=45)
    message, seconds, alive = res[0]["server"]
    assert "parameter server rank 0" in message and "any worker" in message, message
    assert timeout - 0.5 < seconds < timeout + 5 and not alive
    message, seconds = res[1]["worker"]
    assert "parameter-server worker rank 1" in message and "rank 0" in message, message
    assert timeout - 0.5 < seconds < timeout + 5


# --------------------------------------------------------------------------------- training

def ranks_digits(rank, world, store, backend, data, steps, lam):
    import time

    import torch
    from sync_training import accuracy, batch, loss_of, mlp, shard

    from zcoll.sync import AsyncParameterServer
    init(rank, world, store, backend)
    x_train, y_train, x_test, y_test = (torch.from_numpy(a) for a in data)
    model = mlp(seed=0)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    start = time.monotonic()
    with AsyncParameterServer(model, opt, servers=[0], max_staleness=8, delay_compensation=lam) as ps:
        if not ps.is_server:
            xs, ys = shard(x_train, y_train, rank - 1, world - 1)
            for step in range(steps):
                ps.worker_step(lambda m: loss_of(m, *batch(xs, ys, step, seed=rank)))
    seconds = time.monotonic() - start
    out = {"stats": dict(ps.stats), "seconds": seconds}
    if ps.is_server:
        out["accuracy"] = accuracy(model, x_test, y_test)
    return finish(out)


@pytest.fixture(scope="module")
def digits_arrays():
    from sync_training import digits
    return [t.numpy() for t in digits()]  # loaded once, here, rather than by every rank


@pytest.mark.timeout(90)
@pytest.mark.parametrize("backend,steps", [("zcoll", 150), ("gloo", 100)])
def test_digits_train_to_90_percent(backend, steps, digits_arrays):
    """1 server, 2 workers, DC-ASGD at λ = 0.04: >= 0.90 test accuracy (about 0.97) in under a
    second of training."""
    world = 3
    res = run_ranks(ranks_digits, world, backend, digits_arrays, steps, 0.04, timeout=75)
    server = res[0]
    workers = world - 1
    assert server["accuracy"] >= 0.90, server
    assert server["stats"]["pushes_applied"] + server["stats"]["pushes_refused"] == workers * steps
    assert server["stats"]["pushes_refused"] == sum(res[w]["stats"]["pushes_refused"] for w in range(1, world))
    assert server["stats"]["workers_done"] == workers
    assert all(res[w]["stats"]["steps"] == steps for w in range(1, world))
    assert server["seconds"] < 20, server
