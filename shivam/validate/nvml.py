"""NVML access (nvidia-ml-py): the energy counter, memory-domain power, and the environment of each window."""

from __future__ import annotations

import datetime
import platform
import socket
from importlib import metadata

from shivam.errors import ShivamError
from shivam.validate.meter import POLL_INTERVAL_S, EnergyCounter, PolledEnergy


def _nvml():
    try:
        import pynvml
    except ImportError:
        raise ShivamError(
            "nvidia-ml-py is not installed; install the validator extra: pip install 'shivam[validate]'"
        ) from None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        raise ShivamError(
            f"no NVIDIA GPU found (NVML: {exc}); measure on a machine with one (and its driver)"
        ) from None
    return pynvml


def handle(index: int = 0):
    nv = _nvml()
    if index >= nv.nvmlDeviceGetCount():
        raise ShivamError(f"GPU index {index} does not exist; this machine has {nv.nvmlDeviceGetCount()}")
    return nv, nv.nvmlDeviceGetHandleByIndex(index)


_VALUE_MEMBERS = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal", 6: "usVal"}


def _field_value(v) -> float:
    return float(getattr(v.value, _VALUE_MEMBERS.get(v.valueType, "uiVal")))


def memory_power_reader(nv, h):
    """Hopper reports memory-domain power through field values with a power scope (on an H200: ~46 W idle,
    ~137 W during a device copy). Tries the instant and then the averaged power field; None where neither answers."""
    scope = getattr(nv, "NVML_POWER_SCOPE_MEMORY", 2)
    for name in ("NVML_FI_DEV_POWER_INSTANT", "NVML_FI_DEV_POWER_AVERAGE"):
        field = getattr(nv, name, None)
        if field is None:
            continue

        def read(field=field):
            try:
                v = nv.nvmlDeviceGetFieldValues(h, [(field, scope)])[0]
                return _field_value(v) / 1000.0 if v.nvmlReturn == 0 else None  # mW
            except Exception:  # noqa: BLE001 - an absent field is a missing reading, not an error
                return None

        first = read()
        if first is not None and first > 0:
            read.field = name
            return read
    return None


def counter(index: int, sync) -> EnergyCounter:
    nv, h = handle(index)
    try:
        nv.nvmlDeviceGetTotalEnergyConsumption(h)
        read_mj = lambda: float(nv.nvmlDeviceGetTotalEnergyConsumption(h))  # noqa: E731
        period = 0.1
    except nv.NVMLError:  # no counter on this GPU: integrate polled instantaneous power instead
        poller = PolledEnergy(lambda: nv.nvmlDeviceGetPowerUsage(h) / 1000.0)
        read_mj, period = poller.read_mj, 0.02
    return EnergyCounter(
        read_mj=read_mj, sync=sync, period_s=period, memory_power_w=memory_power_reader(nv, h), threaded=True
    )


def _try(f, *a):
    try:
        return f(*a)
    except Exception:  # noqa: BLE001 - environment fields are best-effort; a missing one is recorded as None
        return None


def snapshot(index: int) -> dict:
    """Clocks, temperature, power and throttle state now: recorded with every measurement."""
    nv, h = handle(index)
    reasons = _try(
        getattr(nv, "nvmlDeviceGetCurrentClocksEventReasons", nv.nvmlDeviceGetCurrentClocksThrottleReasons), h
    )
    return {
        "sm_clock_mhz": _try(nv.nvmlDeviceGetClockInfo, h, nv.NVML_CLOCK_SM),
        "mem_clock_mhz": _try(nv.nvmlDeviceGetClockInfo, h, nv.NVML_CLOCK_MEM),
        "temperature_c": _try(nv.nvmlDeviceGetTemperature, h, nv.NVML_TEMPERATURE_GPU),
        "power_w": (_try(nv.nvmlDeviceGetPowerUsage, h) or 0) / 1000.0,
        "throttle_reasons": reasons,
    }


def environment(index: int, command: str) -> dict:
    nv, h = handle(index)
    versions = {}
    for pkg in ("torch", "transformers", "nvidia-ml-py", "numpy", "codecarbon"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    try:
        import torch

        versions["cuda"] = torch.version.cuda
    except ImportError:
        pass
    import hashlib
    from pathlib import Path

    from shivam import _version

    pkg = Path(_version.__file__).parent
    digest = hashlib.sha1(b"".join(p.read_bytes() for p in sorted(pkg.rglob("*.py")))).hexdigest()[:12]
    versions["shivam"] = f"{_version.__version__} (source sha1 {digest})"
    name = nv.nvmlDeviceGetName(h)
    return {
        "record": "environment",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "command": command,
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "gpu": name.decode() if isinstance(name, bytes) else name,
        "gpu_uuid": _try(nv.nvmlDeviceGetUUID, h),  # the physical card: cloud machines differ run to run
        "gpu_serial": _try(nv.nvmlDeviceGetSerial, h),
        "driver": _try(nv.nvmlSystemGetDriverVersion),
        "max_sm_clock_mhz": _try(nv.nvmlDeviceGetMaxClockInfo, h, nv.NVML_CLOCK_SM),
        "max_mem_clock_mhz": _try(nv.nvmlDeviceGetMaxClockInfo, h, nv.NVML_CLOCK_MEM),
        "power_limit_w": (_try(nv.nvmlDeviceGetPowerManagementLimit, h) or 0) / 1000.0,
        "memory_total_bytes": _try(lambda: nv.nvmlDeviceGetMemoryInfo(h).total),
        "memory_power_field": getattr(memory_power_reader(nv, h), "field", None),
        "meter": {"counter_poll_interval_s": POLL_INTERVAL_S, "counter_period_s": 0.1},
        "versions": versions,
        **{f"start_{k}": v for k, v in snapshot(index).items()},
    }
