"""How many operators transformers dispatches per decode step, per model family: the eager (hf) engine's host cost.

An eager generate() is host-bound (docs/validation.md): each dispatched operator costs the host about the same,
whether it launches a kernel or only makes a view, so the count of dispatched operators, not the fused graph
decoder's kernel count, is what the hf engine's time scales with. Counted on the CPU with a TorchDispatchMode over
one cached decode step (1 new token after 16), for the model with 1 and with 2 layers: the difference is the count
per layer, the rest is outside the layers (embedding, final norm, logits). Weights are random; counts do not depend
on them or on the widths.

Run: python validation/count_eager_ops.py > counts.json, then put its object under eager_dispatches in
hardware/engines/hf.json (needs torch and transformers)
"""

import datetime
import json
import sys

import torch
import transformers
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import AutoConfig, AutoModelForCausalLM

from shivam.specs.model import load_model, resolve_model

# one bundled model per family (mixture-of-experts is left out: its dispatch count depends on the routing)
FAMILY_MODELS = ("opt-125m", "gpt2", "llama-68m", "mistral-7b", "qwen2-0.5b", "phi-3-mini", "gemma-2b")


class _Count(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n += 1
        return func(*args, **(kwargs or {}))


def dispatches(ref: str, layers: int) -> int:
    _, cfg, _ = resolve_model(ref)
    cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
    for key in ("num_hidden_layers", "n_layer"):
        if key in cfg:
            cfg[key] = layers
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**cfg)).eval()
    ids = torch.randint(3, 100, (1, 16))
    with torch.inference_mode():
        out = model(ids, use_cache=True)
        nxt = out.logits[:, -1:].argmax(-1)
        with _Count() as count:
            model(nxt, past_key_values=out.past_key_values, use_cache=True)
    return count.n


def main() -> None:
    families = {}
    for ref in FAMILY_MODELS:
        one, two = dispatches(ref, 1), dispatches(ref, 2)
        families[load_model(ref).family] = {"per_layer": two - one, "outside_layers": 2 * one - two, "counted_on": ref}
    json.dump(
        {
            "what": "operators dispatched per cached decode step by transformers' eager forward, per family",
            "measured_by": "validation/count_eager_ops.py",
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "date": datetime.date.today().isoformat(),
            "families": families,
        },
        sys.stdout,
        indent=1,
    )
    print()


if __name__ == "__main__":
    main()
