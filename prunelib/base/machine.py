"""The machine a run computed on, for the manifest: what decides whether tables reproduce bitwise.

Training and the sweeps are deterministic on one machine (any number of workers, or Ray), but
oneDNN and BLAS choose their kernels by the CPU's instruction sets, so another CPU gives tables
that agree only statistically (``python -m prunelib report --compare``). Reading these facts
loads no framework.
"""

from __future__ import annotations

import os
import platform

ISA_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "asimd",
    "sve",
)
"""The instruction-set features the numeric kernels dispatch on (x86 and Arm), as /proc/cpuinfo
spells them."""

THREAD_VARIABLES = (
    "TF_ENABLE_ONEDNN_OPTS",
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "TF_NUM_INTRAOP_THREADS",
    "TF_NUM_INTEROP_THREADS",
)
"""Environment variables that change which kernels run or on how many threads."""


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty where there is none)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break  # one processor is enough: they are all alike
                name, _, value = line.partition(":")
                fields.setdefault(name.strip(), value.strip())
    except OSError:
        pass
    return fields


def facts() -> dict[str, object]:
    """CPU model, the ISA features of :data:`ISA_FLAGS` it has, CPU and thread counts, and the
    oneDNN / thread settings of the environment (``None`` = unset: the library's default, for
    TensorFlow on x86 oneDNN on)."""
    info = _cpuinfo()
    flags = set((info.get("flags") or info.get("Features") or "").split())
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    return {
        "cpu": info.get("model name") or platform.processor() or platform.machine(),
        "arch": platform.machine(),
        "isa": [f for f in ISA_FLAGS if f in flags],
        "cpus": os.cpu_count(),
        "usable_cpus": usable,
        "env": {v: os.environ.get(v) for v in THREAD_VARIABLES},
    }
