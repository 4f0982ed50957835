"""An asynchronous, sharded parameter server with DC-ASGD's delay compensation (docs/sync.md).

Some ranks of a group are servers, each holding one shard of the module's parameters and
stepping it with the optimizer; the others are workers that pull parameters, compute gradients
on their own copy and push them back. A server's thread receives from any source, so workers
never wait for each other: each push or pull is served as it arrives.

Protocol (point-to-point on the group, four tags from ``tag``):

- request, worker -> server, tag ``tag``: an int64 header ``[kind, version, numel, 0]`` where
  kind is PUSH (gradient follows), PUSH_PULL (gradient follows; the reply carries the new
  parameters), PULL or DONE; ``version`` is the shard version the gradient was computed on,
  ``numel`` the float32 elements that follow on tag ``tag + 1``;
- reply, server -> worker, tag ``tag + 2``: ``[status, version, numel, max_staleness]``, status
  APPLIED, STALE or ERROR, ``version`` the shard's version after the request; ``numel`` float32
  parameters of the shard follow on tag ``tag + 3`` (pulls, and pushes with PUSH_PULL), except
  after ERROR (a gradient of the wrong size), where ``numel`` is the size the shard expects;
- DONE has no reply; the server loop ends once every worker sent it.
"""
from __future__ import annotations

import collections
import copy
import threading
from datetime import timedelta

import torch
import torch.distributed as dist

from ._common import float_parameters, group_of

__all__ = ["AsyncParameterServer", "StalePushError"]

DEFAULT_TAG = 0x5053_0000  # "PS": four tags from here (below 2**31, so gloo takes them too)

PUSH, PUSH_PULL, PULL, DONE = 1, 2, 3, 4
APPLIED, STALE, ERROR = 0, 1, 2
_KINDS = {PUSH: "push", PUSH_PULL: "push", PULL: "pull", DONE: "done"}
_HEADER = 4  # int64 fields of every header
HEADER_BYTES = _HEADER * 8


class StalePushError(RuntimeError):
    """A worker pushed a gradient computed on a version more than ``max_staleness`` versions
    behind a server's (or one the server does not know). The gradient was dropped; pull and
    compute a fresh one."""

    def __init__(self, worker: int, server: int, worker_version: int, server_version: int, max_staleness: int):
        self.worker, self.server = worker, server
        self.worker_version, self.server_version, self.max_staleness = worker_version, server_version, max_staleness
        if worker_version > server_version:
            why = "is ahead of the server's (a server restored from an older checkpoint?)"
        else:
            why = f"is {server_version - worker_version} versions behind, more than max_staleness={max_staleness}"
        super().__init__(f"parameter server rank {server} refused the push of worker rank {worker}: its gradient was "
                         f"computed on version {worker_version}, the server's shard is at version {server_version}; "
                         f"{worker_version} {why}. Pull and push a fresh gradient.")


def shard_parameters(numels: list[int], servers: int) -> list[list[int]]:
    """Parameter indices per server, balanced by numel: largest parameters first, each to the
    server holding the fewest elements so far (ties: the earlier server). Deterministic, so
    every rank computes the same shards; each list is in registration order."""
    load = [0] * servers
    shards: list[list[int]] = [[] for _ in range(servers)]
    for i in sorted(range(len(numels)), key=lambda i: (-numels[i], i)):
        s = min(range(servers), key=lambda s: (load[s], s))
        shards[s].append(i)
        load[s] += numels[i]
    return [sorted(s) for s in shards]


class AsyncParameterServer:
    """Asynchronous SGD through parameter servers, with DC-ASGD's delay compensation.

    ``servers`` (ranks of ``group``) hold the parameters, sharded by parameter (balanced by
    numel, :func:`shard_parameters`); every other rank of the group is a worker. A worker's loop
    is pull -> forward/backward -> push (``worker_step`` does one such step); a server only
    serves, in a thread started by ``start()`` or ``with``: call ``close()`` (or leave the
    ``with``) on every rank; on a server it returns once every worker has closed.

    Versions: each server's shard has its own counter, 0 at the start, incremented by every
    push the server applies to that shard. A worker's copy carries, per server, the version it
    last pulled (``versions``); its pushes are tagged with them. A server whose version is more
    than ``max_staleness`` ahead of a push's refuses it (the worker raises
    :class:`StalePushError`; both count it in ``stats``); otherwise it applies

        g_dc = g + λ · g ⊙ g ⊙ (w_now − w_then)

    (λ = ``delay_compensation``, w_then the shard at the push's version, from a history of the
    last ``max_staleness + 1`` versions) as the shard's ``.grad`` and steps ``optimizer``.
    λ = 0 is plain asynchronous SGD. With several servers a push goes to all of them and each
    decides alone, so shard versions may differ after a refusal.

    ``module`` must have the same architecture on every rank; a server's module and optimizer
    (any torch optimizer over its parameters) are the ones stepped; workers need no optimizer.
    Messages are float32; ``bytes_sent`` counts what this rank sent (headers included).
    ``stats`` on a server: pushes_applied, pushes_refused, pulls_served, workers_done,
    staleness_max and staleness_sum (of applied pushes); on a worker: pushes, pushes_refused,
    pulls and steps (``worker_step`` calls).

    Usage (every rank; a server's ``with`` block returns once every worker left its own)::

        model = make_model()                      # the same architecture on every rank
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        with AsyncParameterServer(model, opt, servers=[0], max_staleness=8,
                                  delay_compensation=0.04) as ps:
            if not ps.is_server:
                for x, y in batches:
                    ps.worker_step(lambda m: loss_fn(m(x), y))
        dist.barrier()

    Every wait is bounded: ``timeout`` seconds (None: the group's timeout; zcoll groups always
    use their own timeout for point-to-point), and errors name the ranks involved. A server's
    loop that failed raises its error from ``close()``. Destroy the process group only once
    every rank closed (a barrier after ``close()``).
    """

    def __init__(self, module: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None, *,
                 servers: list[int] | tuple[int, ...] = (0,), max_staleness: int = 8,
                 delay_compensation: float = 0.0, group: dist.ProcessGroup | None = None,
                 timeout: float | None = None, tag: int = DEFAULT_TAG):
        self.group = group_of(group)
        self.rank = dist.get_rank(self.group)
        self.world = dist.get_world_size(self.group)
        self.servers = [int(s) for s in servers]
        if not self.servers or len(set(self.servers)) != len(self.servers):
            raise ValueError(f"servers={list(servers)}: expected distinct ranks of the group")
        bad = [s for s in self.servers if not 0 <= s < self.world]
        if bad:
            raise ValueError(f"servers {bad} are not ranks of the group (size {self.world})")
        self.workers = [r for r in range(self.world) if r not in self.servers]
        if not self.workers:
            raise ValueError(f"servers={self.servers} leave no worker in a group of {self.world} ranks")
        if max_staleness < 0:
            raise ValueError(f"max_staleness must be at least 0, got {max_staleness}")
        if delay_compensation < 0:
            raise ValueError(f"delay_compensation must be at least 0, got {delay_compensation}")
        if not 0 <= tag <= 2**31 - 4:
            raise ValueError(f"tag={tag}: expected 0 <= tag <= 2**31 - 4 (four tags are used)")
        self.module = module
        self.optimizer = optimizer
        self.max_staleness = int(max_staleness)
        self.delay_compensation = float(delay_compensation)
        self.timeout = timeout
        self._wait_timeout = None if timeout is None else timedelta(seconds=float(timeout))
        self._tag = tag
        self.params = float_parameters(module)
        self.shards = shard_parameters([p.numel() for p in self.params], len(self.servers))
        self._numel = [sum(self.params[i].numel() for i in shard) for shard in self.shards]
        self.is_server = self.rank in self.servers
        self.bytes_sent = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._closed = False
        if self.is_server:
            if optimizer is None:
                raise ValueError(f"rank {self.rank} is a server: it needs the optimizer that steps its shard")
            self._index = self.servers.index(self.rank)
            self._shard = [self.params[i] for i in self.shards[self._index]]
            self._version = 0
            self._history = collections.deque([(0, self._flat_shard())], maxlen=self.max_staleness + 1)
            self._done: set[int] = set()
            self.stats = {"pushes_applied": 0, "pushes_refused": 0, "pulls_served": 0, "workers_done": 0,
                          "staleness_max": 0, "staleness_sum": 0}
        else:
            self._versions = {s: 0 for s in self.servers}
            self._fresh = False  # the module holds parameters pulled from the servers
            self.stats = {"pushes": 0, "pushes_refused": 0, "pulls": 0, "steps": 0}

    # ----------------------------------------------------------------------------- common

    @property
    def versions(self) -> dict[int, int]:
        """{server rank: version}: on a server, its own shard's; on a worker, those of its copy
        (the versions its last pull or push-pull brought, which its pushes are tagged with)."""
        with self._lock:
            return {self.rank: self._version} if self.is_server else dict(self._versions)

    @property
    def version(self) -> int:
        """A server's shard version; on a worker, the oldest of its copy's shard versions."""
        return min(self.versions.values())

    def start(self) -> "AsyncParameterServer":
        """On a server, starts the serving thread (once); nothing on a worker. Load a checkpoint
        (``load_state_dict``) before."""
        if self.is_server and self._closed:
            raise RuntimeError(f"{self._who()} is closed")
        self._start()
        return self

    def _start(self) -> None:
        if self.is_server and self._thread is None:
            with self._lock:  # the module may have been changed since (a loaded model)
                self._history[-1] = (self._version, self._flat_shard())
            self._thread = threading.Thread(target=self._serve, name=f"zcoll-ps-server-{self.rank}", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """A worker tells every server it is done; a server (starting if it had not) waits for
        its loop to end, which it does once every worker is done or on an error (raised here)."""
        if self._closed:
            return
        self._closed = True
        if not self.is_server:
            errors = []
            for s in self.servers:
                try:
                    self._send(torch.tensor([DONE, 0, 0, 0], dtype=torch.int64), s, 0, "the done message")
                except Exception as e:  # noqa: BLE001  (tell the other servers all the same)
                    errors.append(e)
            if errors:
                raise errors[0]
            return
        self._start()
        while self._thread.is_alive():  # in slices, so Ctrl-C reaches the main thread
            self._thread.join(0.2)
        if self._error is not None:
            why = str(self._error)
            if not why.startswith(self._who()):
                why = f"{self._who()}: {type(self._error).__name__}: {why}"
            raise RuntimeError(f"{why} (the server loop stopped)") from self._error

    def __enter__(self) -> "AsyncParameterServer":
        return self.start()

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
            return
        # A worker says done all the same, so servers do not wait for it; a server still waits
        # for its loop (bounded by the idle timeout), so that no thread outlives the block.
        try:
            self.close()
        except Exception:  # noqa: BLE001  (the exception already on its way matters more)
            pass

    def state_dict(self) -> dict:
        """Server: its shard's parameters, version, optimizer state, parameter history, stats
        and bytes sent (a restarted server resumes from it). Worker: its versions, stats and
        bytes sent. Consistent even while the server thread runs."""
        with self._lock:
            common = {"role": "server" if self.is_server else "worker", "rank": self.rank,
                      "servers": list(self.servers), "stats": dict(self.stats), "bytes_sent": self.bytes_sent}
            if not self.is_server:
                return {**common, "versions": dict(self._versions)}
            return {**common, "shard": list(self.shards[self._index]), "version": self._version,
                    "params": {i: self.params[i].detach().clone() for i in self.shards[self._index]},
                    "optimizer": copy.deepcopy(self.optimizer.state_dict()),  # steps change it in place
                    "history": [(v, w.clone()) for v, w in self._history],
                    "max_staleness": self.max_staleness}

    def load_state_dict(self, state: dict) -> None:
        """Restores what ``state_dict`` saved, on a rank of the same role and layout; on a server,
        before ``start()``."""
        role = "server" if self.is_server else "worker"
        if state.get("role") != role:
            raise ValueError(f"rank {self.rank} is a {role}, the state is a {state.get('role')}'s")
        if list(state["servers"]) != self.servers:
            raise ValueError(f"rank {self.rank}: the state is for servers {state['servers']}, these are {self.servers}")
        with self._lock:
            if not self.is_server:
                self._versions = {int(s): int(v) for s, v in state["versions"].items()}
            else:
                if self._thread is not None:
                    raise RuntimeError(f"parameter server rank {self.rank}: load_state_dict before start()")
                if list(state["shard"]) != self.shards[self._index]:
                    raise ValueError(f"parameter server rank {self.rank}: the state holds parameters "
                                     f"{state['shard']}, this shard is {self.shards[self._index]} (another model?)")
                with torch.no_grad():
                    for i, w in state["params"].items():
                        self.params[int(i)].copy_(w)
                self.optimizer.load_state_dict(state["optimizer"])
                self._version = int(state["version"])
                self._history = collections.deque([(int(v), w.clone().to(torch.float32)) for v, w in state["history"]],
                                                  maxlen=self.max_staleness + 1)
                if not self._history or self._history[-1][0] != self._version:
                    self._history.append((self._version, self._flat_shard()))
            self.stats.update(state["stats"])
            self.bytes_sent = int(state.get("bytes_sent", 0))

    # ----------------------------------------------------------------------------- transport

    def _who(self) -> str:
        return f"{'parameter server' if self.is_server else 'parameter-server worker'} rank {self.rank}"

    def _wait(self, work, what: str) -> None:
        try:
            done = work.wait() if self._wait_timeout is None else work.wait(self._wait_timeout)
        except Exception as e:  # noqa: BLE001  (re-raised naming both ranks)
            raise RuntimeError(f"{self._who()}: {what} failed: {e}") from e
        if done is False:
            raise TimeoutError(f"{self._who()}: {what} timed out after {self.timeout} s")

    def _send(self, t: torch.Tensor, peer: int, offset: int, what: str) -> None:
        work = dist.isend(t, group=self.group, group_dst=peer, tag=self._tag + offset)
        self._wait(work, f"sending {what} to rank {peer}")
        with self._lock:
            self.bytes_sent += t.numel() * t.element_size()

    def _recv(self, t: torch.Tensor, peer: int | None, offset: int, what: str) -> int:
        if peer is None:
            work = dist.irecv(t, group=self.group, tag=self._tag + offset)
        else:
            work = dist.irecv(t, group=self.group, group_src=peer, tag=self._tag + offset)
        self._wait(work, f"receiving {what} from {'any worker' if peer is None else f'rank {peer}'}")
        return work._source_rank() if peer is None else peer

    # ----------------------------------------------------------------------------- worker

    def _check_worker(self, what: str) -> None:
        if self.is_server:
            raise RuntimeError(f"rank {self.rank} is a parameter server: {what} is a worker's call")
        if self._closed:
            raise RuntimeError(f"rank {self.rank}: {what} after close()")

    def _receive_params(self, s: int, numel: int) -> None:
        flat = torch.empty(numel, dtype=torch.float32)
        self._recv(flat, s, 3, "parameters")
        at = 0
        with torch.no_grad():
            for i in self.shards[self.servers.index(s)]:
                p = self.params[i]
                p.copy_(flat[at:at + p.numel()].view_as(p))
                at += p.numel()

    def _reply(self, s: int, want_numel: int) -> tuple[int, int, int, int]:
        header = torch.empty(_HEADER, dtype=torch.int64)
        self._recv(header, s, 2, "the reply")
        status, version, numel, max_staleness = header.tolist()
        if status == ERROR:
            raise RuntimeError(f"parameter server rank {s} refused a message of worker rank {self.rank}: it expects "
                               f"{numel} float32 elements for its shard, the worker sent {want_numel} (the same "
                               f"module on every rank?)")
        return status, version, numel, max_staleness

    def pull(self) -> dict[int, int]:
        """Copies the servers' latest parameters into this worker's module; returns the versions
        they carry, {server rank: version}."""
        self._check_worker("pull()")
        for s in self.servers:
            self._send(torch.tensor([PULL, 0, 0, 0], dtype=torch.int64), s, 0, "a pull request")
        got = {}
        for s in self.servers:
            _, version, numel, _ = self._reply(s, 0)
            self._receive_params(s, numel)
            got[s] = version
        with self._lock:
            self._versions.update(got)
            self._fresh = True
            self.stats["pulls"] += 1
        return got

    def push(self, grads: list[torch.Tensor] | None = None, *, pull: bool = False) -> dict[int, int]:
        """Sends a gradient to the servers, tagged with this worker's ``versions``. ``grads``: one
        tensor per floating-point parameter of the module in registration order (default: their
        ``.grad``, zeros where None). ``pull=True`` also brings back the parameters after the
        step (one round trip instead of two). Returns the servers' versions after the push.
        Raises :class:`StalePushError` where a server refused it as stale (after every server
        answered; the others applied theirs, and with ``pull`` the parameters are fresh)."""
        self._check_worker("push()")
        if grads is None:
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        grads = list(grads)
        if len(grads) != len(self.params):
            raise ValueError(f"push(): {len(grads)} gradients for {len(self.params)} floating-point parameters")
        for g, p in zip(grads, self.params):
            if g.shape != p.shape:
                raise ValueError(f"push(): a gradient of shape {tuple(g.shape)} for a parameter of {tuple(p.shape)}")
        with self._lock:
            tagged = dict(self._versions)
        kind = PUSH_PULL if pull else PUSH
        for k, s in enumerate(self.servers):
            flat = torch.cat([grads[i].detach().reshape(-1).to("cpu", torch.float32) for i in self.shards[k]])
            self._send(torch.tensor([kind, tagged[s], flat.numel(), 0], dtype=torch.int64), s, 0, "a push header")
            self._send(flat, s, 1, "a gradient")
        after, refused = {}, None
        for k, s in enumerate(self.servers):
            status, version, numel, max_staleness = self._reply(s, self._numel[k])
            if pull:
                self._receive_params(s, numel)
            after[s] = version
            if status == STALE and refused is None:
                refused = StalePushError(self.rank, s, tagged[s], version, max_staleness)
        with self._lock:
            self.stats["pushes"] += 1
            self.stats["pushes_refused"] += refused is not None
            if pull:
                self._versions.update(after)
                self._fresh = True
        if refused is not None:
            raise refused
        return after

    def worker_step(self, loss_fn, *, raise_stale: bool = False) -> float:
        """One worker step: pull (the first time; later steps get fresh parameters from the
        previous push), zero the gradients, ``loss = loss_fn(module)``, backward, push with pull.
        A stale refusal is counted in ``stats`` and the gradient dropped (``raise_stale``: raise
        :class:`StalePushError` instead). Returns the loss as a float."""
        self._check_worker("worker_step()")
        if not self._fresh:
            self.pull()
        for p in self.params:
            p.grad = None
        loss = loss_fn(self.module)
        loss.backward()
        try:
            self.push(pull=True)
        except StalePushError:
            if raise_stale:
                raise
        self.stats["steps"] += 1
        return float(loss.detach())

    # ----------------------------------------------------------------------------- server

    def _flat_shard(self) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1).to("cpu", torch.float32) for p in self._shard])

    def _serve(self) -> None:
        try:
            while len(self._done) < len(self.workers):
                header = torch.empty(_HEADER, dtype=torch.int64)
                src = self._recv(header, None, 0, "a request")
                kind, version, numel, _ = header.tolist()
                if src in self.servers or kind not in _KINDS:
                    raise RuntimeError(f"parameter server rank {self.rank}: a message of unknown kind {kind} "
                                       f"from rank {src} on tag {self._tag} (another user of the tag?)")
                if src in self._done:
                    raise RuntimeError(f"parameter server rank {self.rank}: a {_KINDS[kind]} from worker rank "
                                       f"{src} after it closed")
                if kind == DONE:
                    with self._lock:
                        self._done.add(src)
                        self.stats["workers_done"] = len(self._done)
                elif kind == PULL:
                    self._send_params(src, APPLIED)
                    with self._lock:
                        self.stats["pulls_served"] += 1
                else:
                    self._serve_push(src, version, numel, kind == PUSH_PULL)
        except BaseException as e:  # noqa: BLE001  (close() raises it on the main thread)
            self._error = e

    def _send_params(self, dst: int, status: int) -> None:
        with self._lock:
            flat, version = self._flat_shard(), self._version
        self._send(torch.tensor([status, version, flat.numel(), self.max_staleness], dtype=torch.int64),
                   dst, 2, "a reply")
        self._send(flat, dst, 3, "parameters")

    def _serve_push(self, src: int, version: int, numel: int, pull: bool) -> None:
        grad = torch.empty(numel, dtype=torch.float32)
        self._recv(grad, src, 1, "a gradient")
        expected = self._numel[self._index]
        if numel != expected:
            self._send(torch.tensor([ERROR, self._version, expected, self.max_staleness], dtype=torch.int64),
                       src, 2, "an error reply")
            return
        status = self._apply(grad, version)
        if pull:
            self._send_params(src, status)
        else:
            self._send(torch.tensor([status, self._version, 0, self.max_staleness], dtype=torch.int64),
                       src, 2, "a reply")

    def _apply(self, grad: torch.Tensor, version: int) -> int:
        """DC-ASGD on this shard; APPLIED or STALE."""
        with self._lock:
            staleness = self._version - version
            then = next((w for v, w in self._history if v == version), None)
            if staleness < 0 or staleness > self.max_staleness or then is None:
                self.stats["pushes_refused"] += 1
                return STALE
            if self.delay_compensation and staleness:
                # g + ((λ·g)·g)·(w_now − w_then), in this order, with two temporaries rather than
                # one per operation (the model's size each); `grad` is this push's own buffer.
                correction = torch.mul(grad, self.delay_compensation)
                correction.mul_(grad).mul_(torch.sub(self._history[-1][1], then))
                grad.add_(correction)
                del correction
            at = 0
            for p in self.params:
                p.grad = None
            for p in self._shard:  # views of the push's buffer (no copy unless device or dtype differ)
                p.grad = grad[at:at + p.numel()].view_as(p).to(p.device, p.dtype)
                at += p.numel()
            self.optimizer.step()
            for p in self._shard:
                p.grad = None
            self._version += 1
            self._history.append((self._version, self._flat_shard()))
            self.stats["pushes_applied"] += 1
            self.stats["staleness_max"] = max(self.stats["staleness_max"], staleness)
            self.stats["staleness_sum"] += staleness
            return APPLIED
