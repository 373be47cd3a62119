"""The machine line every benchmark prints next to its figures: CPU model (with its family / model
number: a hypervisor may name it only "Intel(R) Xeon(R) Processor"), cores, bf16 features, and the
measured bf16 / fp32 matmul ratio that decides `precision: auto` on the CPU (actors.backend)."""

from __future__ import annotations

import os
import platform


def cpu_line() -> str:
    from actors.backend import BF16_FLAGS, cpu_info, cpu_supports_bf16, machine_bf16_speedup

    info = cpu_info()
    model = info.get("model name") or platform.processor() or "unknown CPU"
    flags = set(info.get("flags", "").split())
    bf16 = [f for f in BF16_FLAGS if f in flags]
    ident = f" (family {info['cpu family']} model {info['model']})" if "cpu family" in info and "model" in info else ""
    return (f"{model}{ident}, {os.cpu_count()} cores, bf16 features: {', '.join(bf16) or 'none'}, "
            f"bf16 matmul {machine_bf16_speedup():.2f}x fp32 (precision auto: "
            f"{'bf16' if cpu_supports_bf16() else 'fp32'})")


def load_line() -> str:
    """The 1 / 5 / 15 min load averages: other jobs on the same cores slow every figure down."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "load average unknown"
    return f"load average {one:.1f} / {five:.1f} / {fifteen:.1f} (1 / 5 / 15 min) on {os.cpu_count()} cores"
