"""The machine line every benchmark prints next to its figures: CPU model (with its family / model
number: a hypervisor may name it only "Intel(R) Xeon(R) Processor"), cores, bf16 features, and the
measured bf16 / fp32 matmul ratio that decides `precision: auto` on the CPU (actors.backend)."""

from __future__ import annotations

import os
import platform


def cpu_line() -> str:
    model, flags, ids = platform.processor() or "unknown CPU", set(), {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model in ("", "unknown CPU", platform.processor()):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith(("cpu family", "model\t")):
                    ids[line.split(":", 1)[0].strip()] = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    from actors.backend import cpu_supports_bf16, machine_bf16_speedup

    bf16 = [f for f in ("avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    ident = f" (family {ids['cpu family']} model {ids['model']})" if len(ids) == 2 else ""
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
