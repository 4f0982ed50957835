"""zcoll against gloo, call by call (tests/gloo_parity.py holds the table): the same results bit
for bit, and where gloo raises, zcoll raises an exception of gloo's type (bad arguments: a
ValueError or TypeError that is also gloo's RuntimeError). Where gloo is not the oracle (it
lacks a feature, or returns wrong data), the case says why and zcoll must give its expected
result; gloo must still behave as the case says. The table runs at 2 and 3 ranks over shared
memory and at 3 ranks over tcp."""
import pytest
from gloo_parity import CASES, GROUPS_STILL_WORK, Raises
from multiproc import run_ranks

RUNS = [(2, "shm"), (3, "shm"), (3, "tcp")]  # (ranks, zcoll's transport)
_tables = {}


def table(world, transport):
    """Every case's outcomes on every rank, {rank: {name: ...}}: one run of processes each."""
    if (world, transport) not in _tables:
        from gloo_parity import run_table
        _tables[world, transport] = run_ranks(run_table, world, transport, timeout=240)
    return _tables[world, transport]


def describe(o):
    return f"returned {o[1]!r:.300}" if o[0] == "ok" else f"raised {o[1][0]}: {o[2]}"


def check(name, rank, zcoll, gloo, expected, c):
    where = f"{name} on rank {rank}: zcoll {describe(zcoll)}; gloo {describe(gloo)}"
    if c is None or c.expect is None:  # gloo is the oracle
        if gloo[0] == "ok":
            assert zcoll == gloo, where
            return
        assert zcoll[0] == "raised", where
        assert gloo[1][0] in zcoll[1], f"{where}: zcoll's exception is not a {gloo[1][0]}"
        if zcoll[2] != gloo[2]:  # raised by the backends, not by torch's Python: an argument error
            assert {"builtins.ValueError", "builtins.TypeError"} & set(zcoll[1]), \
                f"{where}: a bad argument must raise a ValueError or TypeError"
        return
    if isinstance(expected, Raises):
        want = f"{expected.type.__module__}.{expected.type.__qualname__}"
        assert zcoll[0] == "raised" and want in zcoll[1], f"{where}: expected {want}"
    else:
        assert zcoll == ("ok", expected), f"{where}: expected {expected!r:.300}"
    if c.gloo == "refuses":
        assert gloo[0] == "raised", f"{where}: gloo no longer refuses ({c.why}); make gloo the oracle"
    if c.gloo == "accepts":
        assert gloo[0] == "ok", f"{where}: gloo no longer accepts this ({c.why})"


@pytest.mark.timeout(300)
@pytest.mark.parametrize("world,transport", RUNS, ids=[f"{w}{t}" for w, t in RUNS])
@pytest.mark.parametrize("name", [c.name for c in CASES] + [GROUPS_STILL_WORK])
def test_zcoll_matches_gloo(name, world, transport):
    c = next((c for c in CASES if c.name == name), None)
    if c is not None and world < c.min_world:
        pytest.skip(f"needs {c.min_world} ranks")
    outcomes = {rank: results[name] for rank, results in table(world, transport).items()}
    for rank, (zcoll, gloo, expected) in sorted(outcomes.items()):
        check(name, rank, zcoll, gloo, expected, c)
    if c is not None and c.gloo == "wrong":  # on some rank at least
        assert any(gloo != zcoll for zcoll, gloo, _ in outcomes.values()), \
            f"{name}: gloo now agrees with zcoll ({c.why}); make gloo the oracle"


def test_every_refusal_or_gloo_bug_is_explained():
    """The table's exceptions to 'gloo is the oracle' each carry a reason."""
    special = [c for c in CASES if c.expect is not None]
    assert special and all(c.why and c.gloo in ("refuses", "wrong", "accepts") for c in special)
