"""shivam: energy per generated token of LLM inference, predicted from first principles and checked on a real GPU."""

__version__ = "0.1.0"
