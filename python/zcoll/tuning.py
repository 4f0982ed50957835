"""The tuner's cost model as a file (ZCOLL_TUNING_FILE): reading, checking and writing it.

The file is JSON; every key is optional (what is left out keeps the compiled-in default,
docs/architecture.md "Algorithms and the tuner")::

    {"version": 1,
     "cores": 2,
     "shm": {"alpha": 1.5e-06, "beta": 1.24e10, "gamma": 1.24e10, "sigma": 0.37, "kappa": 0.46,
             "switch": 1.63e-05, "overlap": 0.0, "max_chunk": 1048576},
     "tcp": {...}, "ucx": {...},
     "codecs": {"int8": {"encode": 3.5e9, "decode": 7.5e9}, ...},
     "comment": "free text"}

Times are seconds, rates bytes per second. "shm" is the link between ranks of one host; "tcp"
and "ucx" are the network transport's (a group uses the one it runs between hosts, ZCOLL_NET).
``python -m zcoll.tune`` measures a machine and writes one.
"""
from __future__ import annotations

import json
import math
import os

from . import _C

VERSION = 1
LINK_KEYS = ("alpha", "beta", "gamma", "sigma", "kappa", "switch", "overlap", "max_chunk")
NETS = ("tcp", "ucx")
TOP_KEYS = ("version", "cores", "shm", *NETS, "codecs", "comment")
CODECS = ("fp16", "bf16", "int8", "int4")


class TuningFileError(ValueError):
    """A tuning file that cannot be used; the message names the rank, the file and the key."""


def _number(value, where: str, integer: bool = False):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TuningFileError(f"{where}: expected a finite number, got {value!r}")
    if integer:
        if value != int(value):
            raise TuningFileError(f"{where}: expected an integer, got {value!r}")
        return int(value)
    return float(value)


def cost_model_from_dict(data: dict, net: str = "tcp", where: str = "") -> "_C.CostModel":
    """A CostModel: the defaults with what `data` (a parsed tuning file) sets; the network link
    from the section named `net`. Raises TuningFileError naming the key (prefixed by `where`)."""
    def key(*parts) -> str:
        return (where + ": " if where else "") + ".".join(parts)

    if not isinstance(data, dict):
        raise TuningFileError(f"{where}: expected a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - set(TOP_KEYS))
    if unknown:
        raise TuningFileError(f"{key(unknown[0])}: unknown key (expected {', '.join(TOP_KEYS)})")
    if "version" in data and data["version"] != VERSION:
        raise TuningFileError(f"{key('version')}: this zcoll reads version {VERSION}, got {data['version']!r}")
    model = _C.CostModel()
    model.source = "file"
    if "cores" in data:
        model.cores = _number(data["cores"], key("cores"), integer=True)
    for section, link in (("shm", model.shm), (net, model.net)):
        values = data.get(section)
        if values is None:
            continue
        if not isinstance(values, dict):
            raise TuningFileError(f"{key(section)}: expected an object of {', '.join(LINK_KEYS)}")
        for name, value in values.items():
            if name not in LINK_KEYS:
                raise TuningFileError(f"{key(section, name)}: unknown key (expected {', '.join(LINK_KEYS)})")
            number = _number(value, key(section, name), integer=name == "max_chunk")
            if name == "max_chunk" and number < 0:
                raise TuningFileError(f"{key(section, name)}: must be at least 4096 (bytes), got {number}")
            setattr(link, name, number)
    for section in NETS:  # the other network's section is checked too, not used
        if section != net and section in data and not isinstance(data[section], dict):
            raise TuningFileError(f"{key(section)}: expected an object of {', '.join(LINK_KEYS)}")
    codecs = data.get("codecs", {})
    if not isinstance(codecs, dict):
        raise TuningFileError(f"{key('codecs')}: expected an object of {', '.join(CODECS)}")
    for name, rates in codecs.items():
        if name not in CODECS:
            raise TuningFileError(f"{key('codecs', name)}: unknown codec (expected {', '.join(CODECS)})")
        if not isinstance(rates, dict) or set(rates) - {"encode", "decode"}:
            raise TuningFileError(f"{key('codecs', name)}: expected {{\"encode\": bytes/s, \"decode\": bytes/s}}")
        encode, decode = model.codec(name)
        model.set_codec(name, _number(rates.get("encode", encode), key("codecs", name, "encode")),
                        _number(rates.get("decode", decode), key("codecs", name, "decode")))
    problem = model.invalid()  # e.g. "net.beta must be positive (bytes/s), got 0"
    if problem:
        field, _, rest = problem.partition(" ")
        if field.startswith("net."):
            field = net + field[3:]
        raise TuningFileError(f"{key(field)}: {rest}")
    return model


def load_cost_model(path: str, net: str = "tcp", rank: int = 0) -> "_C.CostModel":
    """The cost model of tuning file `path` (see the module's doc), its network link from the
    `net` section; TuningFileError (a ValueError) naming the rank, the file and the key when the
    file is missing, not JSON or holds a value the model cannot use."""
    where = f"rank {rank}: ZCOLL_TUNING_FILE {path}"
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise TuningFileError(f"{where}: cannot read it ({e.strerror or e})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise TuningFileError(f"{where}: not JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    model = cost_model_from_dict(data, net, where)
    model.source = f"file {path}"
    return model


def link_dict(link) -> dict:
    return {name: getattr(link, name) for name in LINK_KEYS}


def cost_model_to_dict(model, net: str | None = "tcp", shm: bool = True) -> dict:
    """A tuning file's content for `model`: the shm section (when `shm`), the network link as
    section `net` (None: left out), cores and codec rates."""
    out: dict = {"version": VERSION, "cores": model.cores}
    if shm:
        out["shm"] = link_dict(model.shm)
    if net:
        out[net] = link_dict(model.net)
    out["codecs"] = {name: dict(zip(("encode", "decode"), model.codec(name))) for name in CODECS}
    return out


def save_cost_model(model, path: str, net: str | None = "tcp", shm: bool = True, comment: str = "") -> dict:
    """Writes `model` to tuning file `path`, keeping the sections of an existing file that this
    model does not set (another network's, say). Returns what was written."""
    data: dict = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        cost_model_from_dict(data, net or "tcp", path)  # refuse to merge into a broken file
    data.update(cost_model_to_dict(model, net, shm))
    if comment:
        data["comment"] = comment
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
    return data
