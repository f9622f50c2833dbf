"""What this machine's CPU can do, for the figures that depend on it.

int8 latency and, on x86, even int8 *results* depend on the host's kernels:
onnxruntime's U8S8 kernels on a CPU with AVX2 but no VNNI multiply-add pairs of
u8*s8 products into int16 (``vpmaddubsw``), which saturates; with VNNI (AVX-512 VNNI
or AVX-VNNI) and on ARM (dot-product instructions) the products accumulate in int32.
Every benchmark and int8 report prints these extensions beside its figures.
"""
from __future__ import annotations

import platform
from functools import lru_cache

# The extensions that change which kernels run (x86: /proc/cpuinfo flag names; ARM: asimddp
# is the dot-product instruction set, i8mm the int8 matrix multiply).
REPORTED = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "asimddp", "i8mm")
VNNI = ("avx512_vnni", "avx_vnni")


@lru_cache(maxsize=1)
def _cpuinfo() -> dict[str, str]:
    """The first value of each /proc/cpuinfo key (empty where it is not readable)."""
    try:
        text = open("/proc/cpuinfo", encoding="utf-8", errors="replace").read()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def vector_extensions() -> tuple[str, ...]:
    """The REPORTED extensions this CPU has (empty where /proc/cpuinfo is not readable)."""
    fields = _cpuinfo()
    flags = set(fields.get("flags", "").split()) | set(fields.get("Features", "").split())
    return tuple(name for name in REPORTED if name in flags)


def model_name() -> str:
    """The CPU's model name: speed ratios against PyTorch move with it, not only with the
    extensions (PyTorch's MKL takes slower paths on AMD CPUs than on Intel ones)."""
    return _cpuinfo().get("model name") or platform.processor() or "unknown CPU"


def u8s8_saturates() -> bool:
    """Do onnxruntime's U8S8 int8 kernels saturate int16 pair sums on this host?"""
    extensions = vector_extensions()
    is_x86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")
    return is_x86 and "avx2" in extensions and not any(name in extensions for name in VNNI)


def describe() -> dict:
    """The CPU facts a figure is reported with."""
    return {"machine": platform.machine(), "model": model_name(), "vector_extensions": list(vector_extensions()),
            "u8s8_saturates": u8s8_saturates()}


def summary() -> str:
    extensions = vector_extensions()
    return (f"{model_name()}, {platform.machine()} "
            f"({', '.join(extensions) if extensions else 'no AVX2/VNNI/dot-product flags seen'})")
