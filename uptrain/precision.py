"""Numeric precision as configuration: ``fp32 | bf16 | auto`` for models, judges and annotators.

``auto`` takes bf16 where the device computes it fast and fp32 elsewhere:

* a CPU with bf16 matrix instructions: AMX (``amx_bf16``) or AVX-512 BF16
  (``avx512_bf16``), read from the CPU flags (``/proc/cpuinfo`` on Linux);
* a CUDA GPU that reports bf16 support (``torch.cuda.is_bf16_supported()``).

bf16 runs *mixed*: matrix products in bf16 through ``torch.autocast``, while weights,
layer norms, softmax statistics and the outputs stay fp32 (pure bf16 weights lose about
10x more accuracy for no speed here: a min cosine of 0.9963 against fp32 instead of 0.99997
on MiniLM). Training takes Lightning's matching ``precision`` (``bf16-mixed`` /
``32-true``). Every stage writes the *resolved* choice into its cache key, so ``auto``
on a bf16 machine and ``bf16`` share artifacts, and ``auto`` on an fp32-only machine
does not reuse them.
"""

from __future__ import annotations

import functools
import logging
import os
from contextlib import nullcontext
from pathlib import Path

from uptrain.errors import ConfigError

log = logging.getLogger("uptrain")

#: accepted spellings -> canonical name
DTYPE_NAMES = {
    "fp32": "fp32", "float32": "fp32", "32": "fp32", "32-true": "fp32",
    "bf16": "bf16", "bfloat16": "bf16", "bf16-mixed": "bf16",
    "auto": "auto",
}
#: CPU flags that give fast bf16 matrix products
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
LIGHTNING_PRECISION = {"fp32": "32-true", "bf16": "bf16-mixed"}


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux ``/proc/cpuinfo``); empty where they cannot be read."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def device_type(device: str | None = None) -> str:
    """'cuda:1' -> 'cuda'; None or 'auto' -> 'cuda' when a GPU is visible, else 'cpu'."""
    if device in (None, "auto"):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device).split(":", 1)[0]


def bf16_is_fast(device: str | None = "cpu") -> bool:
    """Whether bf16 matrix products run on dedicated units of this device."""
    kind = device_type(device)
    if kind == "cuda":
        import torch

        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if kind == "cpu":
        return any(flag in cpu_flags() for flag in BF16_CPU_FLAGS)
    return False


def canonical(name, what: str = "model.dtype") -> str:
    """'float32' -> 'fp32', ... ; a clear error for anything else."""
    key = str(name).strip().lower() if name is not None else "auto"
    if key not in DTYPE_NAMES:
        raise ConfigError(
            f"{what} must be one of fp32, bf16 or auto (also float32, bfloat16), got {name!r}. "
            "auto takes bf16 where the device has fast bf16 units (CPU flags "
            f"{' or '.join(BF16_CPU_FLAGS)}, or a GPU with bf16) and fp32 elsewhere."
        )
    return DTYPE_NAMES[key]


def resolve_dtype(name, device: str | None = "cpu", what: str = "model.dtype") -> str:
    """``fp32`` or ``bf16``: what ``name`` means on ``device``."""
    value = canonical(name, what)
    if value == "auto":
        return "bf16" if bf16_is_fast(device) else "fp32"
    return value


def autocast(dtype: str, device: str = "cpu"):
    """The context a forward pass runs in: bf16 autocast, or nothing for fp32."""
    if resolve_dtype(dtype, device) == "fp32":
        return nullcontext()
    import torch

    return torch.autocast(device_type=device_type(device), dtype=torch.bfloat16)


def lightning_precision(trainer_precision, model_dtype: str) -> str:
    """Lightning's ``precision`` for a training run: ``auto`` follows the model's resolved dtype;
    an explicit value (``32-true``, ``bf16-mixed``, ``16-mixed``, ...) is kept."""
    if trainer_precision is None or str(trainer_precision).lower() == "auto":
        return LIGHTNING_PRECISION[resolve_dtype(model_dtype)]
    return str(trainer_precision)


def available_cores() -> int:
    """Cores this process may run on (its affinity mask, e.g. a container's or a SLURM job's share)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def set_threads(threads: int | None = None) -> int:
    """Size torch's intra-op pool to the cores actually available (or ``threads``), unless
    OMP_NUM_THREADS / MKL_NUM_THREADS fix it; returns the thread count in use."""
    import torch

    if threads:
        torch.set_num_threads(int(threads))
    elif not (os.environ.get("OMP_NUM_THREADS") or os.environ.get("MKL_NUM_THREADS")):
        cores = available_cores()
        if torch.get_num_threads() != cores:
            torch.set_num_threads(cores)
    return torch.get_num_threads()


def describe() -> dict:
    """What the report and the benchmark record about this machine's precision support."""
    import torch

    return {
        "cpu_bf16_flags": sorted(f for f in BF16_CPU_FLAGS if f in cpu_flags()),
        "cuda": bool(torch.cuda.is_available()),
        "auto_resolves_to": resolve_dtype("auto", "auto"),
        "threads": torch.get_num_threads(),
        "available_cores": available_cores(),
    }
