"""zcoll across real "hosts": a network namespace per host, joined by a bridge, and each rank in
its own UTS namespace under its host's hostname, so host identities differ as on a cluster.
Ranks join as users do (tcp:// or file:// init, no MASTER_ADDR, no ZCOLL_SOCKET_IFNAME): the
group must find its addresses, take shm inside a host and tcp between hosts, and compute every
collective as the reference says (tests/multihost_rank.py). Unreachable peers must fail every
rank within seconds, naming the rank, its host, the address and what to set. Needs root and
iproute2; where namespaces cannot be made the tests are skipped with the reason."""
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from commands import bench_script, clean_env
from transports import ucx_missing

RANK = str(Path(__file__).with_name("multihost_rank.py"))
BRIDGE, SUBNET = "zcbr2", "10.231.79"
UCX_MISSING = ucx_missing()
NEEDS_UCX = pytest.mark.skipif(bool(UCX_MISSING), reason=UCX_MISSING)
# UCX between the hosts, over tcp (the transport the namespaces' veths carry)
UCX_ENV = {"ZCOLL_NET": "ucx", "UCX_TLS": "tcp"}


@pytest.fixture
def namespaces(request):
    """make(hosts) -> namespace names (host i at SUBNET.10+i); all torn down after the test."""
    if shutil.which("ip") is None or shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("multi-host tests need root, iproute2 (ip) and unshare")
    undos = []

    def make(hosts):
        try:
            names, undo = bench_script("shaped_allreduce").make_hosts(hosts, None, BRIDGE, SUBNET, "zcoll-h")
        except (subprocess.CalledProcessError, OSError) as e:
            pytest.skip(f"cannot make network namespaces here: {getattr(e, 'stderr', e)}")
        undos.append(undo)
        return names

    yield make
    for undo in undos:
        undo()


def launch(namespaces, host_of, init, env=None, rank_env=None, timeout=60, args=()):
    """Starts rank r in namespace namespaces[host_of[r]] as host "host<h>", with `env` and its
    own `rank_env[r]`, and multihost_rank.py's `args`; returns the processes."""
    procs = []
    for rank, h in enumerate(host_of):
        cmd = ["ip", "netns", "exec", namespaces[h], "unshare", "--uts", "sh", "-c",
               f'hostname host{h} && exec "$0" "$@"', sys.executable, RANK, "--init", init, "--rank", str(rank),
               "--world", str(len(host_of)), "--timeout", str(timeout), *args]
        extra = {"ZCOLL_DEBUG": "INFO", **(env or {}), **(rank_env or {}).get(rank, {})}
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      env=clean_env(extra)))
    return procs


def collect(procs, timeout=150):
    """[(exit status, the rank's JSON report or None, stderr)] per rank; kills stragglers."""
    out = []
    deadline = time.monotonic() + timeout
    try:
        for p in procs:
            o, e = p.communicate(timeout=max(1, deadline - time.monotonic()))
            lines = [line for line in o.splitlines() if line.startswith("{")]
            out.append((p.returncode, json.loads(lines[-1]) if lines else None, e))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    return out


def free_port():
    return random.randint(20000, 40000)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("host_of,init", [((0, 0, 1, 1), "tcp"), ((0, 0, 1), "tcp"), ((0, 0, 1, 1), "file")],
                         ids=["2x2-tcp", "2+1-tcp", "2x2-file"])
def test_collectives_across_hosts_as_users_launch_them(namespaces, tmp_path, host_of, init):
    names = namespaces(max(host_of) + 1)
    url = f"tcp://{SUBNET}.10:{free_port()}" if init == "tcp" else f"file://{tmp_path / 'rendezvous'}"
    results = collect(launch(names, host_of, url))
    hosts = len(set(host_of))
    for rank, (code, report, err) in enumerate(results):
        assert code == 0 and report is not None, f"rank {rank} exited {code}: {err[-3000:]}"
        assert "error" not in report, f"rank {rank}: {report}"
        assert report["ok"], f"rank {rank}: wrong results in {report['problems']}"
        assert report["transport"] == "shm+tcp"
        assert report["host_of"] == list(host_of)
    log = results[0][2]
    shape = f"{hosts} hosts x 2 ranks" if len(host_of) == 4 else f"{hosts} hosts, uneven"
    assert f"group of {len(host_of)} ranks on {shape} (host0: 0,1; host1: 2" in log, log[-3000:]
    assert "shm within a host, tcp between hosts" in log
    assert "hierarchical over" in log


@pytest.mark.timeout(240)
def test_ipv6_hosts(namespaces):
    """Hosts that reach each other over IPv6 (the store at an IPv6 address): every rank
    advertises its IPv6 address."""
    names = namespaces(2)
    subprocess.run(["ip", "addr", "add", "fd00:79::1/64", "dev", BRIDGE, "nodad"], check=True, capture_output=True)
    for i, ns in enumerate(names):
        subprocess.run(["ip", "netns", "exec", ns, "ip", "addr", "add", f"fd00:79::{10 + i}/64", "dev", "eth0", "nodad"],
                       check=True, capture_output=True)
    host_of = (0, 0, 1, 1)
    results = collect(launch(names, host_of, f"tcp://[fd00:79::10]:{free_port()}"))
    for rank, (code, report, err) in enumerate(results):
        assert code == 0 and report is not None and report.get("ok"), f"rank {rank}: {report} {err[-3000:]}"
        assert f"tcp: advertising fd00:79::{10 + host_of[rank]} (the local address that routes to the store's host)" \
            in err, err[-2000:]


@pytest.mark.timeout(240)
def test_torchrun_nnodes_2(namespaces, tmp_path):
    """torchrun --nnodes 2 --nproc_per_node 2, one per host, c10d rendezvous on host 0: torchrun
    hands its workers MASTER_ADDR = host 0, and nothing zcoll-specific is set. The hosts resolve
    each other's names as on a cluster (an /etc/hosts of their own, in a mount namespace)."""
    names = namespaces(2)
    hosts_file = tmp_path / "hosts"
    hosts_file.write_text(f"127.0.0.1 localhost\n{SUBNET}.10 host0\n{SUBNET}.11 host1\n")
    port = free_port()
    procs = []
    for h, ns in enumerate(names):
        cmd = ["ip", "netns", "exec", ns, "unshare", "--uts", "--mount", "sh", "-c",
               f'mount --bind {hosts_file} /etc/hosts && hostname host{h} && exec "$0" "$@"', sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "2",
               "--node_rank", str(h), "--rdzv_backend", "c10d", "--rdzv_endpoint", f"host0:{port}",
               "--max_restarts", "0", RANK]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      env=clean_env({"ZCOLL_DEBUG": "INFO"})))
    reports = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=200)
            assert p.returncode == 0, err[-3000:]
            reports += [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    assert len(reports) == 4, reports
    for report in reports:
        assert report.get("ok") and report["transport"] == "shm+tcp" and report["host_of"] == [0, 0, 1, 1], report


def blackhole(namespace, address, kind="blackhole"):
    """A route in `namespace` that drops what goes to `address` silently ("blackhole") or
    answers "no route" ("unreachable")."""
    subprocess.run(["ip", "netns", "exec", namespace, "ip", "route", "add", kind, f"{address}/32"], check=True,
                   capture_output=True)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("fault", ["loopback_ifname", "silent", "no_route"])
def test_unreachable_peer_fails_every_rank_quickly_naming_it(namespaces, fault):
    """A wrong ZCOLL_SOCKET_IFNAME on one host; a host that never answers the other (as behind a
    firewall that drops its packets: its replies go nowhere); a host with no route to the other.
    Every rank raises DistNetworkError within seconds (the group timeout is 60 s), naming the
    rank, its host, the address it tried or chose, and the variable to set."""
    import torch.distributed as dist
    from datetime import timedelta
    names = namespaces(2)
    host_of = (0, 0, 1, 1)
    # the store in the root namespace, reachable whatever happens to the hosts' ports
    server = dist.TCPStore(f"{SUBNET}.1", 0, None, True, timedelta(seconds=60), wait_for_workers=False)
    url = f"tcp://{SUBNET}.1:{server.port}"
    env = {"ZCOLL_CONNECT_TIMEOUT": "4"}
    if fault == "silent":  # host0 hears host1's connections but its answers vanish
        blackhole(names[0], f"{SUBNET}.11")
        procs = launch(names, host_of, url, env)
    elif fault == "no_route":
        blackhole(names[1], f"{SUBNET}.10", "unreachable")
        procs = launch(names, host_of, url, env)
    else:  # rank 2 (host1) is told to advertise loopback
        procs = launch(names, host_of, url, env, rank_env={2: {"ZCOLL_SOCKET_IFNAME": "lo"}})
    results = collect(procs, timeout=120)
    del server
    for rank, (code, report, err) in enumerate(results):
        assert report is not None and "error" in report, f"rank {rank} did not fail: {report} {err[-2000:]}"
        assert "torch.distributed.DistNetworkError" in report["error"], (rank, report)
        assert report["seconds"] < 20, (rank, report)  # the group timeout is 60 s
        msg = report["message"]
        if fault in ("silent", "no_route"):
            assert "cannot connect to" in msg and f"{SUBNET}.10:" in msg and "(host0)" in msg, (rank, msg)
            assert "ZCOLL_SOCKET_IFNAME" in msg and "firewall" in msg, (rank, msg)
        else:
            assert "rank 2 (host1)" in msg and "ZCOLL_SOCKET_IFNAME=lo selects the loopback interface" in msg, (rank, msg)


@pytest.mark.timeout(240)
def test_a_rank_dying_on_another_host_is_named_by_every_rank(namespaces):
    """Its liveness connection to the other host closes: every rank raises within 2 s."""
    import torch.distributed as dist
    from datetime import timedelta
    names = namespaces(2)
    server = dist.TCPStore(f"{SUBNET}.1", 0, None, True, timedelta(seconds=60), wait_for_workers=False)
    procs = launch(names, (0, 0, 1, 1), f"tcp://{SUBNET}.1:{server.port}", args=("--fault", "die:3"))
    results = collect(procs[:3], timeout=120)
    collect(procs[3:], timeout=30)
    death = float(server.get("death").decode())
    for rank, (code, report, err) in enumerate(results):
        assert report is not None and report["error"] is not None, (rank, report, err[-2000:])
        assert "rank 3 (host1) died" in report["message"], (rank, report)
        assert report["t_error"] - death < 2, (rank, report["t_error"] - death)


@pytest.mark.timeout(240)
def test_a_host_cut_off_is_declared_dead_after_the_heartbeat_timeout(namespaces):
    """No FIN ever comes from a host whose link is down: its ranks' heartbeats stop, and after
    ZCOLL_HEARTBEAT_TIMEOUT (1.5 s here, the group timeout is 60 s) every rank of the other host
    raises naming them."""
    import torch.distributed as dist
    from datetime import timedelta
    names = namespaces(2)
    server = dist.TCPStore(f"{SUBNET}.1", 0, None, True, timedelta(seconds=60), wait_for_workers=False)
    env = {"ZCOLL_HEARTBEAT_INTERVAL": "0.2", "ZCOLL_HEARTBEAT_TIMEOUT": "1.5"}
    procs = launch(names, (0, 0, 1, 1), f"tcp://{SUBNET}.1:{server.port}", env=env, args=("--fault", "silence:1"))
    try:
        server.wait(["parked/2", "parked/3"], timedelta(seconds=120))
        subprocess.run(["ip", "netns", "exec", names[1], "ip", "link", "set", "eth0", "down"], check=True)
        cut = time.time()
        server.set("cut", "1")
        results = collect(procs[:2], timeout=120)
    finally:
        for p in procs[2:]:
            p.kill()
        collect(procs[2:], timeout=30)
    for rank, (code, report, err) in enumerate(results):
        assert report is not None and report["error"] is not None, (rank, report, err[-2000:])
        assert "(host1) sent no heartbeat for" in report["message"], (rank, report)
        assert 1.2 < report["t_error"] - cut < 5, (rank, report["t_error"] - cut)


@pytest.mark.timeout(240)
@NEEDS_UCX
@pytest.mark.parametrize("host_of", [(0, 0, 1, 1), (0, 1, 2)], ids=["2x2", "3x1"])
def test_collectives_across_hosts_over_ucx(namespaces, host_of):
    """ZCOLL_NET=ucx (UCX_TLS=tcp): every collective, checked against the reference bit for bit,
    with UCX between the hosts and shm inside them."""
    names = namespaces(max(host_of) + 1)
    results = collect(launch(names, host_of, f"tcp://{SUBNET}.10:{free_port()}", UCX_ENV))
    two_level = len(host_of) > len(set(host_of))
    for rank, (code, report, err) in enumerate(results):
        assert code == 0 and report is not None, f"rank {rank} exited {code}: {err[-3000:]}"
        assert "error" not in report, f"rank {rank}: {report}"
        assert report["ok"], f"rank {rank}: wrong results in {report['problems']}"
        assert report["transport"] == ("shm+ucx" if two_level else "ucx"), report
        assert report["host_of"] == list(host_of)
    log = results[0][2]
    assert "ucx: UCX 1." in log, log[-3000:]
    if two_level:
        assert "shm within a host, ucx between hosts" in log and "hierarchical over" in log


@pytest.mark.timeout(240)
@NEEDS_UCX
@pytest.mark.parametrize("fault", ["die", "mismatch"])
def test_ucx_faults_fail_every_rank_naming_the_peer(namespaces, fault):
    """Over UCX between three hosts: a rank that dies, or one that all-reduces a tensor of another
    size, makes every other rank raise within seconds, naming it and what happened."""
    import torch.distributed as dist
    from datetime import timedelta
    names = namespaces(3)
    server = dist.TCPStore(f"{SUBNET}.1", 0, None, True, timedelta(seconds=60), wait_for_workers=False)
    procs = launch(names, (0, 1, 2), f"tcp://{SUBNET}.1:{server.port}", UCX_ENV, args=("--fault", f"{fault}:2"))
    survivors = procs[:2] if fault == "die" else procs
    results = collect(survivors, timeout=120)
    if fault == "die":
        collect(procs[2:], timeout=30)
        death = float(server.get("death").decode())
    for rank, (code, report, err) in enumerate(results):
        assert report is not None and report["error"] is not None, (rank, report, err[-2000:])
        msg = report["message"]
        assert "ucx" in msg, (rank, msg)
        if fault == "die":
            assert "rank 2 (host2) died" in msg, (rank, msg)
            assert report["t_error"] - death < 2, (rank, report["t_error"] - death)
        else:
            assert "of 512 bytes where" in msg and "of 1024 bytes was expected" in msg or \
                "of 1024 bytes where" in msg and "of 512 bytes was expected" in msg, (rank, msg)
            assert report["waited"] < 10, (rank, report)
