"""Decentralised averaging by gossip: push-sum over a directed, time-varying graph, as in
Stochastic Gradient Push (Assran et al., ICML 2019), on zcoll's (or any torch.distributed
group's) point-to-point.

    gossip = zcoll.sync.GossipAverager(model, topology="exponential")   # group=, compression=
    for step in ...:
        loss_of(model, batch).backward(); opt.step(); opt.zero_grad()
        gossip.step()                 # one exchange with one peer; no global collective

When it fits: many workers on a slow or uneven network, where an all-reduce each step costs
too much (or stalls on the slowest link). Each step a rank sends one message to one peer and
receives one from another; nothing is global, so a step costs the same at 4 or 400 ranks.
The price: ranks hold *different* parameters. Consensus is approximate; without training it
converges geometrically (the disagreement shrinks by a constant factor every step or every
log2(p) steps, see the topologies), and with training the ranks stay close but never equal.
If every rank must hold the same parameters, use PeriodicAverager or an all-reduce instead.

Topologies (p ranks of `group`, r this rank's group rank, t the step counter from 0):
  - ``"ring"``: a directed ring, the same peer every step: send to r+1, receive from r-1 (mod p).
    The disagreement shrinks by cos(pi/p) a step (0.5 at p = 3, 0.71 at p = 4): slow for large p.
  - ``"exponential"``: SGP's directed exponential graph, one peer a step, varying with t:
    with m = ceil(log2 p), hop h = 2^(t mod m); send to r+h, receive from r-h
    (mod p). Every hop is below p, so it is defined for every p, not only powers of two.
    When p is a power of two, m steps give the exact average (the product of the m mixing
    matrices is the averaging matrix); at other p the disagreement still shrinks geometrically
    (by 4 every 2 steps at p = 3).

Push-sum: every rank keeps a scalar weight w (1 at the start) and the model holds the de-biased
parameters z (what forward uses); the numerator is y = w z. A step sends half of (y, w) to the
out-peer, keeps the other half, adds what the in-peer sent, and writes z = y / w back into the
model. Each column of the mixing matrix sums to 1, so sum_i y_i and sum_i w_i are unchanged by a
step: the weighted average sum_i w_i z_i / sum_i w_i is preserved exactly, up to float32
rounding (and, with training, moves only by the optimizer's updates). The two topologies give
every rank exactly one in-peer, so the weights stay exactly 1 and this is the plain mean of the
ranks' parameters; the weights matter when that is not so (a rank restored from another run's
state, a graph that is not regular).

Compression (``"fp16"``, ``"bf16"``, ``"int8"``, ``"int4"``, zcoll's wire codecs: docs/compression.md):
each directed edge (one per hop: 1 on the ring, m on the exponential graph) has a reference
vector that both ends keep in step. The message is C(y/2 - ref), the change of what the sender
hands over since it last used this edge plus what earlier messages failed to deliver (error
feedback: nothing is lost, only delayed); both ends add the decoded message to ref, and the
receiver adds ref, its estimate of y/2. The sender keeps y - ref, so what one rank's estimate
lacks stays with the other: sum_i y_i and sum_i w_i are still preserved exactly (w is sent as an
exact float64), and the weighted average with them. The error a rank's estimate carries is one
quantum of the *change* of the message (int8: < max|delta|/127 per block of 256, int4:
< max|delta|/7, zcoll's stochastic rounding, so unbiased; fp16/bf16: half an ulp of the delta),
not of the parameters, and it is delivered with the next message on that edge. As the ranks
agree the deltas shrink and so does the error: compressed gossip reaches the same consensus as
exact gossip, to float32 level. The bound tests/test_sync_gossip.py checks, from ranks that
start up to max|z0| apart: at every step each rank is within 2 q max|z0| of where uncompressed
gossip would have it, q = 2^-8 (bf16), 2^-11 (fp16), 1/127 (int8), 1/7 (int4); the largest
seen is 0.4 q (bf16, fp16), 0.7 q (int8) and 0.8 q (int4), in the first few steps, whose
messages carry the whole parameters; after 40 steps the difference is below 1e-6 max|z0|.
The int codecs encode on the CPU (numpy reference codecs, zcoll.reference.codecs);
compression keeps 2 m float32 vectors of references (m = 1 on the ring).

Bytes: ``bytes_sent`` counts what this rank sends: each step 8 bytes (the weight) plus 4 bytes
a parameter, or the codec's wire size (``zcoll.reference.codecs.encoded_bytes``).

All ranks of the group call ``step()`` the same number of times (each step is one matched
send/receive pair); a group of one rank makes ``step()`` a no-op. Floating-point parameters
only (buffers such as BatchNorm's running statistics are not averaged). Checkpoint the module
(it holds z) and ``state_dict()`` (w, the step counter, the references, ``bytes_sent``) on every
rank together: the references of an edge must match at both of its ends.
"""
from __future__ import annotations

import math

import torch
import torch.distributed as dist

from ..config import COMPRESSIONS
from ..reference import codecs
from ..reference.hashing import stream_key
from ._common import FlatParameters, group_of

TOPOLOGIES = ("exponential", "ring")
TAG = 0x6055  # the tag of gossip messages, apart from the application's own point-to-point
_HEADER = 8   # the push-sum weight, float64, in front of every message


def exponential_hops(world: int) -> list[int]:
    """SGP's hops for p ranks: 1, 2, 4, ... up to the largest power of two below p."""
    return [1 << k for k in range(max(1, (world - 1).bit_length()))] if world > 1 else []


class GossipAverager:
    """Push-sum gossip averaging of `module`'s floating-point parameters over `group` (the
    default group when None; zcoll, gloo or any backend with send/recv): see the module's
    docstring for the topologies, what is preserved, compression and the bytes counted.

    ``step()`` after the optimizer's step: one exchange (send to one peer, receive from one),
    the model's parameters replaced by the de-biased mix. Returns {"step", "send_to",
    "recv_from", "weight", "bytes"} (global ranks; None in a group of one rank).
    """

    def __init__(self, module: torch.nn.Module, topology: str = "exponential",
                 group: dist.ProcessGroup | None = None, compression: str | None = None,
                 *, seed: int = 0, tag: int = TAG, block: int = codecs.DEFAULT_BLOCK):
        if topology not in TOPOLOGIES:
            raise ValueError(f"topology={topology!r}: expected one of {', '.join(TOPOLOGIES)}")
        if compression is not None and compression not in COMPRESSIONS:
            raise ValueError(f"compression={compression!r}: expected None or one of {', '.join(COMPRESSIONS)}")
        self.module = module
        self.topology = topology
        self.compression = None if compression in (None, "none") else compression
        self.seed, self.tag, self.block = int(seed), int(tag), int(block)
        if self.compression in ("int8", "int4"):
            codecs.check_block(self.block)
        self.group = group_of(group)
        if self.group is dist.GroupMember.NON_GROUP_MEMBER or dist.get_rank(self.group) < 0:
            raise ValueError("this rank is not a member of the group: make the GossipAverager "
                             "only on the group's ranks")
        self.world = dist.get_world_size(self.group)
        self.rank = dist.get_rank(self.group)
        self.global_rank = dist.get_rank()
        self.flat = FlatParameters(module)
        self.hops = [1] if (topology == "ring" and self.world > 1) else exponential_hops(self.world)
        self.weight = 1.0
        self.steps = 0
        self.bytes_sent = 0
        # Per hop: what this rank has delivered to its out-peer / received from its in-peer
        # (compression only; created on the hop's first use).
        self.out_refs: list[torch.Tensor | None] = [None] * len(self.hops)
        self.in_refs: list[torch.Tensor | None] = [None] * len(self.hops)

    # ---- the graph -----------------------------------------------------------------------

    def peers(self, step: int | None = None) -> tuple[int, int, int]:
        """(hop index, out-peer, in-peer) of a step (this step when None), as group ranks."""
        t = self.steps if step is None else step
        k = t % len(self.hops)
        h = self.hops[k]
        return k, (self.rank + h) % self.world, (self.rank - h) % self.world

    def _global(self, group_rank: int) -> int:
        return dist.get_global_rank(self.group, group_rank)

    # ---- the codec -----------------------------------------------------------------------

    def message_bytes(self) -> int:
        """The size of one message this rank sends (header included)."""
        n = self.flat.numel
        return _HEADER + (4 * n if self.compression is None else codecs.encoded_bytes(self.compression, n, self.block))

    def _encode(self, delta: torch.Tensor, hop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(wire bytes as uint8, what they decode to as float32) of a float32 vector."""
        if self.compression in ("fp16", "bf16"):
            low = delta.to(torch.float16 if self.compression == "fp16" else torch.bfloat16)
            return low.view(torch.uint8), low.to(torch.float32)
        key = stream_key(self.seed, self.steps, self.global_rank, hop)
        wire = codecs.encode(self.compression, delta.detach().cpu().numpy(), key, 0, self.block)
        decoded = codecs.decode(self.compression, wire, delta.numel(), self.block)
        return torch.from_numpy(wire).to(delta.device), torch.from_numpy(decoded).to(delta.device)

    def _decode(self, wire: torch.Tensor, n: int) -> torch.Tensor:
        if self.compression in ("fp16", "bf16"):
            return wire.view(torch.float16 if self.compression == "fp16" else torch.bfloat16).to(torch.float32)
        out = codecs.decode(self.compression, wire.cpu().numpy(), n, self.block)
        return torch.from_numpy(out).to(wire.device)

    # ---- a step --------------------------------------------------------------------------

    def step(self) -> dict:
        """One gossip exchange; call it on every rank of the group, after the optimizer's step."""
        if self.world == 1:
            self.steps += 1
            return {"step": self.steps - 1, "send_to": None, "recv_from": None, "weight": self.weight, "bytes": 0}
        k, out_peer, in_peer = self.peers()
        n = self.flat.numel
        y = self.flat.gather()
        if self.weight != 1.0:
            y.mul_(self.weight)
        half = y * 0.5
        if self.compression is None:
            payload, keep = half, half             # y - y/2 is y/2 exactly
            body = payload.view(torch.uint8)
        else:
            ref = self.out_refs[k]
            if ref is None or ref.numel() != n:
                ref = self.out_refs[k] = torch.zeros(n, dtype=torch.float32, device=y.device)
            body, decoded = self._encode(half - ref, k)
            ref.add_(decoded)
            keep = y.sub_(ref)                     # what the out-peer's estimate lacks stays here
        wire = torch.empty(_HEADER + body.numel(), dtype=torch.uint8, device=y.device)
        wire[:_HEADER].copy_(torch.tensor([self.weight * 0.5], dtype=torch.float64).view(torch.uint8))
        wire[_HEADER:].copy_(body)
        got = torch.empty_like(wire)
        send_to, recv_from = self._global(out_peer), self._global(in_peer)
        works = [dist.isend(wire, send_to, group=self.group, tag=self.tag),
                 dist.irecv(got, recv_from, group=self.group, tag=self.tag)]
        for w in works:
            w.wait()
        weight_in = float(got[:_HEADER].cpu().view(torch.float64)[0])
        if self.compression is None:
            received = got[_HEADER:].view(torch.float32)
        else:
            ref = self.in_refs[k]
            if ref is None or ref.numel() != n:
                ref = self.in_refs[k] = torch.zeros(n, dtype=torch.float32, device=y.device)
            received = ref.add_(self._decode(got[_HEADER:], n))
        y = keep + received
        self.weight = self.weight * 0.5 + weight_in
        if not (math.isfinite(self.weight) and self.weight > 0):
            raise RuntimeError(f"push-sum weight became {self.weight} (received {weight_in} from rank "
                               f"{recv_from}): the ranks' gossip steps are out of step")
        if self.weight != 1.0:
            y.div_(self.weight)
        self.flat.scatter(y)
        self.steps += 1
        self.bytes_sent += wire.numel()
        return {"step": self.steps - 1, "send_to": send_to, "recv_from": recv_from,
                "weight": self.weight, "bytes": wire.numel()}

    # ---- checkpoints ---------------------------------------------------------------------

    def state_dict(self) -> dict:
        def copy(refs):
            return [None if r is None else r.detach().clone() for r in refs]
        return {"topology": self.topology, "compression": self.compression, "world": self.world,
                "weight": self.weight, "steps": self.steps, "bytes_sent": self.bytes_sent,
                "out_refs": copy(self.out_refs), "in_refs": copy(self.in_refs)}

    def load_state_dict(self, state: dict) -> None:
        for key in ("topology", "compression", "world"):
            if key in state and state[key] != getattr(self, key):
                raise ValueError(f"state_dict was saved with {key}={state[key]!r}, this averager has "
                                 f"{key}={getattr(self, key)!r}")
        for key in ("out_refs", "in_refs"):
            if len(state.get(key, [])) not in (0, len(self.hops)):
                raise ValueError(f"state_dict has {len(state[key])} {key}, expected {len(self.hops)}")
        weight = float(state["weight"])
        if not (math.isfinite(weight) and weight > 0):
            raise ValueError(f"state_dict's push-sum weight is {weight}")

        def load(refs):
            refs = list(refs) or [None] * len(self.hops)
            return [None if r is None else r.detach().to(device=self.flat.device, dtype=torch.float32).clone()
                    for r in refs]
        self.weight = weight
        self.steps = int(state["steps"])
        self.bytes_sent = int(state.get("bytes_sent", 0))
        self.out_refs = load(state.get("out_refs", []))
        self.in_refs = load(state.get("in_refs", []))


__all__ = ["GossipAverager", "TOPOLOGIES", "exponential_hops"]
