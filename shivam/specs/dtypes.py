"""Storage sizes of the number formats the simulator knows.

int4 is stored as packed nibbles plus, per group of INT4_GROUP_SIZE weights, one fp16 scale and one fp16 zero point
(the layout of GPTQ/AWQ-style weight-only quantization), so each weight costs 0.5 + 4/128 bytes.
"""

from dataclasses import dataclass

from shivam.errors import ShivamError

INT4_GROUP_SIZE = 128
_INT4_GROUP_OVERHEAD_BYTES = 2 + 2  # fp16 scale + fp16 zero point per group

BYTES_PER_ELEMENT = {
    "fp32": 4.0,
    "fp16": 2.0,
    "bf16": 2.0,
    "fp8": 1.0,
    "int8": 1.0,
    "int4": 0.5 + _INT4_GROUP_OVERHEAD_BYTES / INT4_GROUP_SIZE,
}

ALIASES = {
    "float32": "fp32",
    "float16": "fp16",
    "half": "fp16",
    "bfloat16": "bf16",
    "float8": "fp8",
    "fp8_e4m3": "fp8",
    "e4m3": "fp8",
}


def normalize(dtype: str, what: str = "dtype") -> str:
    key = ALIASES.get(dtype.lower(), dtype.lower())
    if key not in BYTES_PER_ELEMENT:
        raise ShivamError(f"unknown {what} {dtype[:40]!r}: use one of {', '.join(BYTES_PER_ELEMENT)}")
    return key


def nbytes(dtype: str) -> float:
    return BYTES_PER_ELEMENT[dtype]


@dataclass(frozen=True)
class Dtypes:
    weights: str = "bf16"
    activations: str = "bf16"
    kv: str = "bf16"

    @classmethod
    def of(cls, weights: str, activations: str | None = None, kv: str | None = None) -> "Dtypes":
        w = normalize(weights, "weights dtype (--weights-dtype)")
        a = normalize(activations or ("bf16" if w in ("fp8", "int8", "int4") else w), "activation dtype (--act-dtype)")
        if a in ("int8", "int4"):
            raise ShivamError(f"activation dtype (--act-dtype) {a} is not supported: use fp32, fp16, bf16 or fp8")
        return cls(w, a, normalize(kv or a, "KV-cache dtype (--kv-dtype)"))

    @property
    def compute(self) -> str:
        """The dtype the matmuls run in: the activations'. fp8 weights with fp8 activations run fp8 arithmetic;
        weight-only quantization (int8/int4 weights, 16-bit activations) dequantizes and runs at the 16-bit rate."""
        return self.activations
