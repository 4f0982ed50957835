"""zcoll.sync.GossipAverager: push-sum gossip over the directed ring and SGP's exponential graph.

What is checked, on real processes (3 and 4 ranks on zcoll, 3 on gloo, subgroups of both):
- push-sum preserves sum_i y_i and sum_i w_i (y = w z the numerator, z the de-biased parameters
  the model holds), hence the weighted average sum_i w_i z_i / sum_i w_i, at every step, to
  float32 rounding, with and without compression, also from unequal weights;
- without compression each rank's parameters are exactly those of the mixing matrices computed
  here in float64, and the disagreement shrinks geometrically at the rate the graph gives
  (cos(pi/p) a step on the ring; the exact average after log2 p steps of the exponential graph
  at p = 4, a factor 4 every 2 steps at p = 3);
- compressed (fp16, bf16, int8, int4, with error feedback on per-edge references), every rank
  stays within 2 q max|z_0| of where uncompressed gossip has it at every step (q: 2^-8 bf16,
  2^-11 fp16, 1/127 int8, 1/7 int4), and reaches the same consensus;
- bytes_sent, state_dict/load_state_dict (a restored averager continues bit for bit), a group
  of one rank, a rank outside the group, and training on digits (4 ranks, >= 0.90 on each).
"""
from __future__ import annotations

import functools

import numpy as np
import pytest
from conftest import report
from multiproc import run_ranks

STEPS = 40
CODECS = [None, "bf16", "fp16", "int8", "int4"]
QUANTUM = {"bf16": 2.0 ** -8, "fp16": 2.0 ** -11, "int8": 1 / 127, "int4": 1 / 7}
SHAPE = (40, 25)  # a Linear(40, 25): 1025 parameters, 4 blocks of 256 and a tail of 1
TRAIN = [("exponential", None), ("ring", "int8")]
TRAIN_STEPS = 150


# ---- the rank side -------------------------------------------------------------------------

def init(rank, world, store, backend):
    from datetime import timedelta

    import torch.distributed as dist

    import torch

    import zcoll  # noqa: F401  (registers the backend)
    torch.set_num_threads(1)  # 4 ranks on 2 cores: no intra-op threads fighting over them
    dist.init_process_group(backend, store=store, rank=rank, world_size=world, timeout=timedelta(seconds=60))
    return dist


def start_vector(seed: int):
    """A module whose parameters differ per rank: N(0, 1) around the rank's own offset."""
    import torch
    torch.manual_seed(100 + seed)
    m = torch.nn.Linear(*SHAPE)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn_like(p) + seed)
    return m


def trajectory(averager, steps):
    zs, ws, stats = [averager.flat.gather().numpy().copy()], [averager.weight], []
    for _ in range(steps):
        stats.append(averager.step())
        zs.append(averager.flat.gather().numpy().copy())
        ws.append(averager.weight)
    return {"z": np.array(zs), "w": np.array(ws), "bytes_sent": averager.bytes_sent, "stats": stats}


def ranks_gossip(rank, world, store, backend, steps, train):
    """Every topology x codec from equal weights, both topologies exact from unequal weights (w =
    1 + rank), a subgroup, groups of one rank, (on 4 ranks) a state_dict round trip, and the
    digits training runs when `train` (one spawn of the ranks for all of it: spawns are the cost)."""
    import io

    import torch

    from zcoll.sync import GossipAverager
    dist = init(rank, world, store, backend)
    out = {}
    for topology in ("ring", "exponential"):
        for codec in CODECS:
            g = GossipAverager(start_vector(rank), topology, compression=codec)
            out[(topology, codec, False)] = trajectory(g, steps)
        g = GossipAverager(start_vector(rank), topology)
        state = g.state_dict()
        state["weight"] = 1.0 + rank
        g.load_state_dict(state)  # the model keeps z: the numerator becomes (1 + rank) z
        out[(topology, None, True)] = trajectory(g, steps)

    # A subgroup whose group ranks are not the global ones: every rank but 0 (gloo subgroups
    # of a zcoll world and the other way round).
    other = "gloo" if backend == "zcoll" else "zcoll"
    members = list(range(1, world))
    sub = dist.new_group(members, backend=other)
    solos = [dist.new_group([r], backend=backend) for r in range(world)]
    if rank in members:
        g = GossipAverager(start_vector(rank), "exponential", group=sub)
        out["sub"] = trajectory(g, 8)
    else:
        try:
            GossipAverager(start_vector(rank), "exponential", group=sub)
            out["sub"] = "no error"
        except ValueError as e:
            out["sub"] = str(e)
    m = start_vector(rank)
    g = GossipAverager(m, "ring", group=solos[rank], compression="int8")
    before = g.flat.gather().clone()
    stats = [g.step() for _ in range(3)]
    out["solo"] = (bool(torch.equal(before, g.flat.gather())), g.bytes_sent, g.steps, stats[-1])

    if world == 4:  # save after 5 steps, restore into a fresh module + averager, go on with both
        for topology, codec in (("exponential", "int8"), ("ring", "int4"), ("exponential", None)):
            m = start_vector(rank)
            g = GossipAverager(m, topology, compression=codec)
            for _ in range(5):
                g.step()
            buf = io.BytesIO()
            torch.save({"model": m.state_dict(), "gossip": g.state_dict()}, buf)
            buf.seek(0)
            saved = torch.load(buf)
            m2 = start_vector(rank + 10)  # other parameters until the checkpoint's are loaded
            m2.load_state_dict(saved["model"])
            g2 = GossipAverager(m2, topology, compression=codec)
            g2.load_state_dict(saved["gossip"])
            for _ in range(5):
                g.step()
                g2.step()
            s1, s2 = g.state_dict(), g2.state_dict()
            same = (torch.equal(g.flat.gather(), g2.flat.gather())
                    and all(s1[k] == s2[k] for k in ("weight", "steps", "bytes_sent"))
                    and all((a is None and b is None) or torch.equal(a, b)
                            for k in ("out_refs", "in_refs") for a, b in zip(s1[k], s2[k])))
            refs = sum(r is not None for r in s1["out_refs"] + s1["in_refs"])
            out[("restore", topology, codec)] = (same, s1["steps"], s1["bytes_sent"], refs)
        try:
            GossipAverager(start_vector(rank), "ring").load_state_dict(saved["gossip"])
            out["mismatch"] = "no error"
        except ValueError as e:
            out["mismatch"] = str(e)
    if train:
        out["train"] = train_digits(rank, world, *train)
    dist.destroy_process_group()
    return out


@functools.lru_cache(maxsize=None)
def gossip_run(backend: str, world: int):
    train = (TRAIN, TRAIN_STEPS) if (backend, world) == ("zcoll", 4) else None
    return run_ranks(ranks_gossip, world, backend, STEPS, train, timeout=100)


# ---- the checks ----------------------------------------------------------------------------

def hops(topology, p):
    return [1] if topology == "ring" else [1 << k for k in range(max(1, (p - 1).bit_length()))]


def simulate(z0, w0, topology, steps):
    """Push-sum in float64: y = w z, each step half of (y, w) to rank + hop, half kept."""
    p = len(w0)
    y, w = z0 * w0[:, None], w0.astype(np.float64).copy()
    out = [y / w[:, None]]
    hs = hops(topology, p)
    for t in range(steps):
        h = hs[t % len(hs)]
        y, w = y / 2 + np.roll(y / 2, h, axis=0), w / 2 + np.roll(w / 2, h)
        out.append(y / w[:, None])
    return np.array(out)  # [step, rank, n]


def stacked(res, key):
    world = len(res)
    z = np.stack([res[r][key]["z"] for r in range(world)], axis=1).astype(np.float64)  # [step, rank, n]
    w = np.stack([res[r][key]["w"] for r in range(world)], axis=1)                       # [step, rank]
    return z, w


def weighted_average(z, w):
    return (z * w[:, :, None]).sum(axis=1) / w.sum(axis=1)[:, None]  # [step, n]


def disagreement(z, w):
    return np.sqrt(((z - weighted_average(z, w)[:, None, :]) ** 2).sum(axis=(1, 2)))  # [step]


CASES = [("zcoll", 3), ("zcoll", 4)]
KEYS = [(t, c, weighted) for t in ("ring", "exponential") for c in CODECS for weighted in (False, True)
        if not (weighted and c)]


@pytest.mark.timeout(150)
@pytest.mark.parametrize("backend,world", CASES)
def test_push_sum_preserves_the_weighted_average(backend, world):
    res = gossip_run(backend, world)
    for key in KEYS:
        z, w = stacked(res, key)
        scale = np.abs(z[0]).max()
        avg = weighted_average(z, w)
        drift = np.abs(avg - avg[0]).max()
        assert drift <= 1e-6 * scale, (key, drift, scale)           # float32 rounding only
        np.testing.assert_allclose(w.sum(axis=1), w[0].sum(), rtol=0, atol=1e-12)  # weights: exact
        if not key[2]:
            assert (w == 1.0).all(), key  # one in-peer each: the weights stay exactly 1


@pytest.mark.timeout(150)
@pytest.mark.parametrize("backend,world", CASES)
def test_exact_gossip_is_the_mixing_matrices_and_converges_geometrically(backend, world):
    res = gossip_run(backend, world)
    rows = []
    for topology in ("ring", "exponential"):
        for weighted in (False, True):
            z, w = stacked(res, (topology, None, weighted))
            scale = np.abs(z[0]).max()
            expected = simulate(z[0], w[0], topology, STEPS)
            np.testing.assert_allclose(z, expected, rtol=0, atol=2e-6 * scale)
            mean = weighted_average(z, w)[0]
            assert np.abs(z[-1] - mean).max() <= 1e-5 * scale      # consensus on the preserved average
            d = disagreement(z, w)
            floor = 1e-5 * d[0]
            if not weighted:
                hs = hops(topology, world)
                m = len(hs)
                # The contraction of m consecutive steps on the disagreement (2-norm), from the
                # mixing matrices: W_k = (I + P^h_k) / 2, P the cyclic shift.
                shift = np.roll(np.eye(world), 1, axis=0)
                prod = np.eye(world)
                for h in hs:
                    prod = (np.eye(world) + np.linalg.matrix_power(shift, h)) / 2 @ prod
                rate = np.linalg.norm(prod @ (np.eye(world) - np.full((world, world), 1 / world)), 2)
                for t in range(STEPS - m):
                    if d[t] > floor:
                        assert d[t + m] <= rate * d[t] + floor, (topology, t, d[t], d[t + m], rate)
                if topology == "ring":
                    assert rate == pytest.approx(np.cos(np.pi / world) ** 1)
                if world == 4 and topology == "exponential":
                    assert rate < 1e-12 and d[2] <= floor                  # exact after log2 p steps
            assert d[-1] <= 1e-5 * d[0], (topology, weighted, d[::5])  # geometric: 40 steps, 1e-5
            rows.append(f"p={world} {topology:<11} {'w=1+rank' if weighted else 'w=1':<8} "
                        + " ".join(f"{x:.1e}" for x in d[:12:2] / d[0]))
    report(f"gossip disagreement / initial, steps 0,2,..,10 ({backend})", rows)


@pytest.mark.timeout(150)
@pytest.mark.parametrize("backend,world", CASES)
def test_compressed_gossip_stays_within_two_quanta_of_exact_and_reaches_consensus(backend, world):
    res = gossip_run(backend, world)
    rows = []
    for topology in ("ring", "exponential"):
        exact, _ = stacked(res, (topology, None, False))
        scale = np.abs(exact[0]).max()
        for codec in CODECS[1:]:
            z, w = stacked(res, (topology, codec, False))
            dev = np.abs(z - exact).max(axis=(1, 2)) / scale
            assert dev.max() <= 2 * QUANTUM[codec], (topology, codec, dev.max())
            mean = exact[0].mean(axis=0)
            assert np.abs(z[-1] - mean).max() <= 1e-5 * scale, (topology, codec)  # the same consensus
            d = disagreement(z, w)
            for t in range(0, STEPS - 10, 10):
                if d[t] > 1e-5 * d[0]:
                    assert d[t + 10] <= 0.2 * d[t], (topology, codec, d[::5])  # geometric-ish
            rows.append(f"p={world} {topology:<11} {codec}: max |z - z_exact| = {dev.max() / QUANTUM[codec]:.2f} q"
                        f" max|z0| (step {dev.argmax()}), after {STEPS} steps {dev[-1]:.1e} max|z0|")
            from zcoll.reference.codecs import encoded_bytes
            n = SHAPE[0] * SHAPE[1] + SHAPE[1]
            for r in range(world):
                assert res[r][(topology, codec, False)]["bytes_sent"] == STEPS * (8 + encoded_bytes(codec, n))
        for r in range(world):
            assert res[r][(topology, None, False)]["bytes_sent"] == STEPS * (8 + 4 * (SHAPE[0] * SHAPE[1] + SHAPE[1]))
    report(f"compressed gossip vs exact ({backend}, p={world}; q = 2^-8 bf16, 2^-11 fp16, 1/127 int8, 1/7 int4)",
           rows)


@pytest.mark.timeout(150)
def test_peers_follow_the_topology_in_global_ranks_on_a_subgroup():
    res = gossip_run("zcoll", 4)
    for r in range(4):
        for t, s in enumerate(res[r][("exponential", None, False)]["stats"]):
            h = 1 << (t % 2)
            assert (s["send_to"], s["recv_from"], s["step"]) == ((r + h) % 4, (r - h) % 4, t)
        for t, s in enumerate(res[r][("ring", "int8", False)]["stats"]):
            assert (s["send_to"], s["recv_from"]) == ((r + 1) % 4, (r - 1) % 4)
    # gloo subgroup {1, 2, 3} of the zcoll world: group rank g is global rank g + 1; hops 1, 2.
    assert "not a member" in res[0]["sub"]
    z = np.stack([res[r]["sub"]["z"] for r in (1, 2, 3)], axis=1).astype(np.float64)
    w = np.ones(z.shape[:2])
    np.testing.assert_allclose(z, simulate(z[0], w[0], "exponential", 8), rtol=0, atol=2e-6 * np.abs(z[0]).max())
    for g, r in enumerate((1, 2, 3)):
        for t, s in enumerate(res[r]["sub"]["stats"]):
            h = 1 << (t % 2)
            assert (s["send_to"], s["recv_from"]) == (1 + (g + h) % 3, 1 + (g - h) % 3)


@pytest.mark.timeout(150)
def test_a_group_of_one_rank_is_a_no_op():
    res = gossip_run("zcoll", 3)
    for r in range(3):
        unchanged, nbytes, steps, last = res[r]["solo"]
        assert unchanged and nbytes == 0 and steps == 3 and last["bytes"] == 0 and last["send_to"] is None


@pytest.mark.timeout(150)
def test_state_dict_round_trip_continues_bit_for_bit():
    res = gossip_run("zcoll", 4)
    n = SHAPE[0] * SHAPE[1] + SHAPE[1]
    from zcoll.reference.codecs import encoded_bytes
    for topology, codec, refs in (("exponential", "int8", 4), ("ring", "int4", 2), ("exponential", None, 0)):
        for r in range(4):
            same, steps, nbytes, have = res[r][("restore", topology, codec)]
            assert same, (topology, codec, r)
            wire = 4 * n if codec is None else encoded_bytes(codec, n)
            assert (steps, nbytes, have) == (10, 10 * (8 + wire), refs)
        assert all("topology" in res[r]["mismatch"] for r in range(4))


# ---- gloo ----------------------------------------------------------------------------------

@pytest.mark.timeout(150)
def test_on_a_gloo_group():
    res = gossip_run("gloo", 3)
    for key in KEYS:
        z, w = stacked(res, key)
        scale = np.abs(z[0]).max()
        avg = weighted_average(z, w)
        assert np.abs(avg - avg[0]).max() <= 1e-6 * scale, key
        assert np.abs(z[-1] - avg[0]).max() <= 1e-5 * scale, key
        if key[1] is None:
            np.testing.assert_allclose(z, simulate(z[0], w[0], key[0], STEPS), rtol=0, atol=2e-6 * scale)
    # a zcoll subgroup {1, 2} of the gloo world (p = 2: one hop, exact after one step)
    assert "not a member" in res[0]["sub"]
    z = np.stack([res[r]["sub"]["z"] for r in (1, 2)], axis=1).astype(np.float64)
    np.testing.assert_allclose(z[1:], np.broadcast_to(z[0].mean(axis=0), z[1:].shape), rtol=0,
                               atol=1e-6 * np.abs(z[0]).max())
    assert [s["send_to"] for s in res[1]["sub"]["stats"]] == [2] * 8


# ---- training ------------------------------------------------------------------------------

def train_digits(rank, world, configs, steps):
    """Each rank its shard of digits, SGD with momentum, a gossip step after every optimizer
    step; the same initial weights everywhere (SGP's setting)."""
    import torch

    import sync_training as st
    from zcoll.sync import GossipAverager
    x_train, y_train, x_test, y_test = st.digits()
    xs, ys = st.shard(x_train, y_train, rank, world)
    out = {}
    for topology, codec in configs:
        model = st.mlp(seed=0)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        gossip = GossipAverager(model, topology, compression=codec)
        for step in range(steps):
            xb, yb = st.batch(xs, ys, step, seed=rank)
            opt.zero_grad()
            st.loss_of(model, xb, yb).backward()
            opt.step()
            gossip.step()
        out[(topology, codec)] = (st.accuracy(model, x_test, y_test), gossip.flat.gather().numpy(),
                                  gossip.bytes_sent)
    return out


@pytest.mark.timeout(150)
def test_trains_digits_on_4_ranks():
    res = {r: out["train"] for r, out in gossip_run("zcoll", 4).items()}
    rows = []
    for cfg in TRAIN:
        accs = [res[r][cfg][0] for r in range(4)]
        params = np.stack([res[r][cfg][1] for r in range(4)])
        spread = np.abs(params - params.mean(axis=0)).max() / np.abs(params).max()
        assert min(accs) >= 0.90, (cfg, accs)
        assert spread < 0.05, (cfg, spread)   # close, not equal: consensus is approximate
        rows.append(f"{cfg[0]:<11} {cfg[1] or 'exact':<5} accuracy per rank {', '.join(f'{a:.3f}' for a in accs)};"
                    f" max |z_i - mean| / max|z| = {spread:.1e}; bytes sent by rank 0 {res[0][cfg][2]}")
    report(f"gossip training on digits, 4 ranks, {TRAIN_STEPS} SGD steps each", rows)


@pytest.mark.timeout(60)
def test_bad_arguments_are_refused_up_front():
    import torch

    from zcoll.sync import GossipAverager
    from zcoll.sync.gossip import exponential_hops
    model = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="topology"):
        GossipAverager(model, topology="star")
    with pytest.raises(ValueError, match="compression"):
        GossipAverager(model, compression="int2")
    # SGP's hops for any p: powers of two below p
    assert [exponential_hops(p) for p in (1, 2, 3, 4, 5, 8, 9)] == [
        [], [1], [1, 2], [1, 2], [1, 2, 4], [1, 2, 4], [1, 2, 4, 8]]
