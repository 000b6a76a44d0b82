"""Reading Hopper's memory-domain power from NVML field values, against a fake NVML (no GPU needed)."""

from types import SimpleNamespace

from shivam.validate.nvml import memory_power_reader


def fake_nvml(answers: dict):
    """answers: field id -> (nvmlReturn, valueType, value) for the memory scope."""

    def get(handle, ids):
        ((field, scope),) = ids
        assert scope == 2  # NVML_POWER_SCOPE_MEMORY
        ret, vtype, val = answers[field]
        value = SimpleNamespace(
            dVal=float(val),
            uiVal=int(val),
            ulVal=int(val),
            ullVal=int(val),
            sllVal=int(val),
            siVal=int(val),
            usVal=int(val),
        )
        return [SimpleNamespace(nvmlReturn=ret, valueType=vtype, value=value)]

    return SimpleNamespace(
        NVML_FI_DEV_POWER_INSTANT=186,
        NVML_FI_DEV_POWER_AVERAGE=185,
        NVML_POWER_SCOPE_MEMORY=2,
        nvmlDeviceGetFieldValues=get,
    )


def test_instant_memory_power_in_milliwatts():
    read = memory_power_reader(fake_nvml({186: (0, 1, 46_000), 185: (0, 1, 45_000)}), None)
    assert read() == 46.0 and read.field == "NVML_FI_DEV_POWER_INSTANT"


def test_falls_back_to_the_averaged_field():
    read = memory_power_reader(fake_nvml({186: (3, 1, 0), 185: (0, 3, 137_000)}), None)
    assert read() == 137.0 and read.field == "NVML_FI_DEV_POWER_AVERAGE"


def test_none_when_nvml_has_no_memory_power():
    assert memory_power_reader(fake_nvml({186: (3, 1, 0), 185: (3, 1, 0)}), None) is None
