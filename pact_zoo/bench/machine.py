"""What a timing depends on: package versions, threads, the machine and its load average."""
from __future__ import annotations

import os
import platform
from typing import Any, Optional, Union

import torch

__all__ = ["machine_info", "load_average"]


def load_average() -> Optional[list[float]]:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def _version(package: str) -> Optional[str]:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> Optional[str]:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def machine_info(device: Union[str, torch.device] = "cpu") -> dict[str, Any]:
    """What a timing depends on: package versions, threads, the machine and its load right now."""
    device = torch.device(device)
    return {
        "torch": torch.__version__, "timm": _version("timm"), "transformers": _version("transformers"),
        "pact_zoo": _version("pact_zoo"), "python": platform.python_version(),
        "machine": platform.machine(), "processor": platform.processor(), "cpu_model": _cpu_model(),
        "hostname": platform.node(), "cpu_count": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
        "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
        "mkldnn": torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled,
        "load_average": load_average(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cuda": torch.version.cuda if device.type == "cuda" else None,
    }
