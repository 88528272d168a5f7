"""Count the bytes that torch.distributed moves, per rank, while a block of code runs.

    from growth.comm import count_bytes

    with count_bytes() as c:
        with c.phase("copy"):
            ...                         # any code: DeepSpeed, FSDP2, DTensor, plain torch.distributed
    c.sent, c.received                  # bytes this rank sent / received, all phases
    c.by_phase()                        # {"copy": {"sent":, "received":, "calls":}, ...}
    c.by_op()                           # {"c10d.broadcast_": {...}, ...}

It intercepts the collective and point-to-point *operators* (``torch.ops.c10d.*`` and the
functional ``torch.ops._c10d_functional.*`` that DTensor / FSDP2 use) with a TorchDispatchMode,
below every Python wrapper: references captured before the counter started (DeepSpeed binds
``all_gather_into_tensor`` at init) and nested helpers (``broadcast_object_list`` calls
``broadcast``) are counted once, at the operator.

Bytes are the logical payload, independent of the algorithm the backend picks:
broadcast: the root sends n to each other rank, others receive n; all-gather: each rank sends its
input to, and receives one input from, each other rank; reduce-scatter: the same with the output
shard; all-reduce: 2 n (W-1)/W each way (ring); all-to-all: the splits to / from other ranks;
send / recv: n; gather / scatter / reduce: n between each non-root rank and the root. Only the
current thread is seen (collectives run on the caller's thread on gloo and NCCL alike).
"""

from __future__ import annotations

import contextlib
import threading
import traceback
import warnings
from collections import defaultdict

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_NAMESPACES = ("c10d", "_c10d_functional")


def _nbytes(x) -> int:
    if torch.is_tensor(x):
        return x.numel() * x.element_size()
    if isinstance(x, (list, tuple)):
        return sum(_nbytes(v) for v in x)
    return 0


def _group(a: dict):
    """(rank, size) of the op's process group."""
    import torch.distributed as dist

    pg = a.get("process_group")
    if pg is not None:
        pg = dist.ProcessGroup.unbox(pg) if not isinstance(pg, dist.ProcessGroup) else pg
    else:
        name = a.get("group_name", a.get("tag"))
        pg = dist.distributed_c10d._resolve_process_group(name) if isinstance(name, str) else dist.group.WORLD
    return pg.rank(), pg.size()


def op_bytes(name: str, a: dict) -> tuple[int, int]:
    """(sent, received) by this rank for one operator call; ``a`` maps schema argument names to values."""
    short = name.split(".")[1] if "." in name else name
    if short in ("barrier", "monitored_barrier", "wait_tensor", "_wrap_tensor_autograd"):
        return 0, 0
    rank, w = _group(a)
    if w <= 1:
        return 0, 0
    if short in ("broadcast_", "broadcast"):
        n = _nbytes(a.get("tensors", a.get("input")))
        root = a.get("root_rank", a.get("src", 0))
        return (n * (w - 1), 0) if rank == root else (0, n)
    if short in ("allreduce_", "allreduce_coalesced_", "all_reduce", "all_reduce_", "all_reduce_coalesced",
                 "all_reduce_coalesced_"):
        n = _nbytes(a.get("tensors", a.get("input", a.get("inputs"))))
        return 2 * n * (w - 1) // w, 2 * n * (w - 1) // w
    if short in ("allgather_", "_allgather_base_", "allgather_coalesced_", "allgather_into_tensor_coalesced_",
                 "all_gather_into_tensor", "all_gather_into_tensor_out", "all_gather_into_tensor_coalesced",
                 "all_gather_single"):
        n = _nbytes(a.get("input_tensors", a.get("input_tensor", a.get("input", a.get("inputs")))))
        return n * (w - 1), n * (w - 1)
    if short in ("reduce_scatter_", "_reduce_scatter_base_", "reduce_scatter_tensor_coalesced_"):
        n = _nbytes(a.get("output_tensors", a.get("output_tensor", a.get("outputs"))))
        return n * (w - 1), n * (w - 1)
    if short in ("reduce_scatter_tensor", "reduce_scatter_tensor_coalesced"):
        n = _nbytes(a.get("input", a.get("inputs"))) // w
        return n * (w - 1), n * (w - 1)
    if short == "alltoall_":
        outs, ins = a["output_tensors"], a["input_tensors"]
        return _nbytes(ins) - _nbytes(ins[rank]), _nbytes(outs) - _nbytes(outs[rank])
    if short in ("alltoall_base_", "all_to_all_single"):
        out, inp = a.get("output", a.get("output_tensor")), a.get("input", a.get("input_tensor"))
        out_splits, in_splits = a.get("output_split_sizes") or [], a.get("input_split_sizes") or []

        def others(t, splits):
            if t is None:
                return 0
            if not splits:
                return _nbytes(t) * (w - 1) // w
            row = _nbytes(t) // max(t.shape[0], 1)
            return row * (sum(splits) - splits[rank])

        if out is None:  # functional form: output size from the splits
            return others(inp, in_splits), others(inp, out_splits) if out_splits else others(inp, in_splits)
        return others(inp, in_splits), others(out, out_splits)
    if short == "send":
        return _nbytes(a["tensors"]), 0
    if short in ("recv_", "recv_any_source_"):
        return 0, _nbytes(a["tensors"])
    if short in ("gather_", "reduce_"):
        n = _nbytes(a.get("input_tensors", a.get("tensors")))
        return (0, n * (w - 1)) if rank == a.get("root_rank", 0) else (n, 0)
    if short == "scatter_":
        n = _nbytes(a["output_tensors"])
        return (n * (w - 1), 0) if rank == a.get("root_rank", 0) else (0, n)
    warnings.warn(f"growth.comm: no byte rule for {name}; counted as 0", stacklevel=2)
    return 0, 0


class CommCounter:
    """What :func:`count_bytes` yields: totals, and records of every call with its phase."""

    def __init__(self, trace: bool = False):
        self.records: list[dict] = []
        self._phase = "-"
        self.trace = trace

    @contextlib.contextmanager
    def phase(self, name: str):
        """Attribute the calls made inside to ``name`` (phases nest: the innermost wins)."""
        previous, self._phase = self._phase, name
        try:
            yield self
        finally:
            self._phase = previous

    def add(self, op: str, sent: int, received: int) -> None:
        record = {"op": op, "phase": self._phase, "sent": sent, "received": received}
        if self.trace:  # the innermost caller frames outside torch: where the traffic comes from
            frames = [f for f in traceback.extract_stack()[:-3] if "/torch/" not in f.filename]
            record["where"] = [f"{f.filename.rsplit('/', 2)[-1]}:{f.lineno} {f.name}" for f in frames[-14:]]
        self.records.append(record)

    @property
    def sent(self) -> int:
        return sum(r["sent"] for r in self.records)

    @property
    def received(self) -> int:
        return sum(r["received"] for r in self.records)

    def _by(self, key: str) -> dict:
        out = defaultdict(lambda: {"sent": 0, "received": 0, "calls": 0})
        for r in self.records:
            row = out[r[key]]
            row["sent"] += r["sent"]
            row["received"] += r["received"]
            row["calls"] += 1
        return dict(out)

    def by_phase(self) -> dict:
        return self._by("phase")

    def by_op(self) -> dict:
        return self._by("op")


class _Mode(TorchDispatchMode):
    def __init__(self, counter: CommCounter):
        super().__init__()
        self.counter = counter
        self.thread = threading.get_ident()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.namespace in _NAMESPACES and threading.get_ident() == self.thread:
            named = {arg.name: v for arg, v in zip(func._schema.arguments, args)}
            named.update(kwargs)
            name = f"{func.namespace}.{func._schema.name.split('::')[-1]}"
            sent, received = op_bytes(name, named)
            self.counter.add(name, sent, received)
        return func(*args, **kwargs)


_active: list[CommCounter] = []


@contextlib.contextmanager
def count_bytes(trace: bool = False):
    """Count the collective / point-to-point bytes of this rank while the block runs (see module doc).
    ``trace``: each record also keeps its callers (``record["where"]``), to find where traffic comes from."""
    counter = CommCounter(trace)
    _active.append(counter)
    try:
        with _Mode(counter):
            yield counter
    finally:
        _active.remove(counter)


@contextlib.contextmanager
def phase(name: str):
    """Label the calls made inside with ``name`` in every active counter; a no-op when none counts.
    Library code (a growth event) marks its phases with it, a benchmark or test counts."""
    with contextlib.ExitStack() as stack:
        for counter in list(_active):
            stack.enter_context(counter.phase(name))
        yield
