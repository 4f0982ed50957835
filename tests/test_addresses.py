"""Which address the tcp transport advertises (docs/multi-host.md, "Addresses"), on made-up
interface lists: ZCOLL_SOCKET_IFNAME's NCCL syntax (prefixes, =exact, ^exclusions, lists), the
route to the store's host, the first usable interface, IPv4 before IPv6 unless asked, and never
loopback towards another host."""
import socket

import pytest

from zcoll import _C

IFS = [("lo", "127.0.0.1", True), ("docker0", "172.17.0.1", False), ("eth0", "10.0.0.5", False),
       ("eth1", "192.168.1.5", False), ("ib0", "10.1.0.5", False), ("lo", "::1", True), ("eth0", "fd00::5", False)]


def choose(ifname="", route="", remote=True, family=0, ifs=IFS):
    return _C.choose_address(ifs, ifname, route, remote, family)[0]


@pytest.mark.parametrize("ifname,want", [
    ("eth1", "192.168.1.5"),           # a prefix: eth1
    ("eth", "10.0.0.5"),               # the first interface the prefix matches
    ("ib,eth", "10.0.0.5"),            # a list: the first matching interface in the host's order
    ("=eth", None),                    # exact: no interface is called "eth"
    ("=ib0", "10.1.0.5"),
    ("^docker,lo,eth0", "192.168.1.5"),  # everything but these
    ("^=eth0,docker0,lo", "192.168.1.5"),
])
def test_socket_ifname_syntax(ifname, want):
    if want is None:
        with pytest.raises(RuntimeError, match="no interface matches ZCOLL_SOCKET_IFNAME==eth"):
            choose(ifname)
    else:
        assert choose(ifname) == want


def test_the_route_to_the_store_comes_first_unless_loopback_towards_other_hosts():
    assert choose(route="192.168.1.5") == "192.168.1.5"
    assert choose(route="127.0.0.1", remote=False) == "127.0.0.1"  # every peer is on this host
    assert choose(route="127.0.0.1", remote=True) == "10.0.0.5"    # first usable: not lo, not docker
    assert choose(remote=True) == "10.0.0.5"                      # no store host (file://)


def test_ipv6_when_asked_or_the_store_is_ipv6():
    assert choose(family=socket.AF_INET6) == "fd00::5"
    assert choose(ifname="eth0", family=socket.AF_INET6) == "fd00::5"
    assert choose(route="fd00::9") == "fd00::9"


def test_never_loopback_towards_another_host():
    with pytest.raises(RuntimeError, match="selects the loopback interface lo .*cannot reach"):
        choose(ifname="lo", remote=True)
    assert choose(ifname="lo", remote=False) == "127.0.0.1"
    only_lo = [i for i in IFS if i[2]]
    with pytest.raises(RuntimeError, match="no address that ranks on other hosts can reach.*ZCOLL_SOCKET_IFNAME"):
        choose(remote=True, ifs=only_lo)
    assert choose(remote=False, ifs=only_lo) == "127.0.0.1"


def test_this_hosts_interfaces_are_listed():
    ifs = _C.interfaces()
    assert any(loopback for _, _, loopback in ifs), ifs
    assert all(not address.startswith("fe80") for _, address, _ in ifs), ifs  # link-local left out
