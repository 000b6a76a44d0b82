"""shivam: energy per generated token of LLM inference, predicted from first principles and checked on a real GPU.

The public API (docs/api.md):

    import shivam
    r = shivam.predict(model="mistral-7b", gpu="l4", k=range(0, 9), alpha=0.8)
    print(r.best_k())
"""

from shivam._version import __version__
from shivam.api import Prediction, crossover, inspect, overview, predict, stage1
from shivam.errors import ShivamError
from shivam.specs import load_engine, load_gpu, load_model

__all__ = [
    "Prediction",
    "ShivamError",
    "__version__",
    "crossover",
    "inspect",
    "load_engine",
    "load_gpu",
    "load_model",
    "overview",
    "predict",
    "stage1",
]
