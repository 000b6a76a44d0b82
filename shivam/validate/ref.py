"""The reference engine `ref`: a decoder built for speed the way serving engines are.

Same weights as the graph engine's Decoder (fused q/k/v and gate/up GEMMs, static KV cache), but
  - every operator between the GEMMs is one Triton kernel (shivam.validate.kernels): the residual add fused into the
    norm after it, SiLU-and-multiply, and attention, which for decode and verify also rotates q and the new keys
    and writes them into the cache (a prefill rotates and writes them in a kernel of its own);
  - attention is split-KV over the cache with GQA packing, causal within the new tokens (lower-right aligned) or
    under a tree mask, with each sequence's cached length read from the device: decode, verify and prefill run
    the same kernels, planned per (batch, new tokens, cache bucket); the validator captures one CUDA graph per shape
    and context (the kernels would let one graph serve every context of its bucket);
  - the logits of every new position come out (bf16), sampling is an argmax on the device;
  - the k draft steps of a speculative iteration are one CUDA graph; the host syncs once per iteration.
On the CPU (TRITON_INTERPRET=1) it runs eagerly: its logits are tested against the plain PyTorch Decoder.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from shivam.errors import ShivamError
from shivam.sim.workload import split_kv_capacity
from shivam.validate import kernels
from shivam.validate.engines import Decoder


def bucket_for(keys: int, max_context: int) -> int:
    """Cache capacity a graph's attention is planned for: the ref profile's rule (shivam.sim.workload.
    split_kv_capacity: the next power of two of the keys from 256, at most max(keys, 1024)), and at most the cache
    itself, whatever larger cache a decoder was reused with."""
    return min(int(split_kv_capacity(keys, kernels.SPLIT_KV)), max_context)


class RefDecoder(Decoder):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._plans: dict = {}
        self._arange = torch.arange(self.max_context, device=self.device)

    def plan(self, n: int, keys: int) -> kernels.AttentionPlan:
        s, bucket = self.spec, bucket_for(keys, self.max_context)
        key = (n, bucket)
        if key not in self._plans:
            self._plans[key] = kernels.AttentionPlan(
                self.batch, n, s.heads, s.kv_heads, s.head_dim, bucket, self.device
            )
        return self._plans[key]

    def ref_logits(
        self,
        tokens: torch.Tensor,
        lens: torch.Tensor,
        plan: kernels.AttentionPlan,
        tree: torch.Tensor | None = None,
        pos_offset: int = 0,
    ) -> torch.Tensor:
        """Logits [batch, n, vocab] of tokens [batch, n] after lens + pos_offset cached tokens per sequence."""
        s, (b, n) = self.spec, tokens.shape
        layernorm = s.norm == "layernorm"
        x = F.embedding(tokens, self.embed)
        if self.proj:
            x = F.linear(x, self.proj[0])
        if self.positions is not None:
            first = lens[:, None] + (pos_offset + (2 if s.family == "opt" else 0))
            x = x + F.embedding(first + self._arange[:n][None], self.positions)
        x = x.contiguous()
        normed = torch.empty_like(x)
        att = torch.empty((b, n, s.heads, s.head_dim), device=self.device, dtype=self.dtype)
        q = None if plan.fused else torch.empty_like(att)
        delta = None
        for i, layer in enumerate(self.layers):
            kernels.add_norm(x, delta, *layer["n1"], normed, layernorm)
            qkv = self._linear(normed, layer["qkv"])
            kc, vc = self.k_cache[i], self.v_cache[i]
            cos, sin = (self.cos, self.sin) if self.positions is None else (None, None)
            if plan.fused:  # decode and verify: RoPE and the cache write happen inside attention
                kernels.attention(None, kc, vc, lens, plan, att, tree, pos_offset, qkv, cos, sin)
            else:  # prefill
                kernels.rope_to_cache(qkv, cos, sin, lens, q, kc, vc, s.heads, s.kv_heads, cos is not None, pos_offset)
                kernels.attention(q, kc, vc, lens, plan, att, tree, pos_offset)
            delta = self._linear(att.view(b, n, -1), layer["o_proj"])
            kernels.add_norm(x, delta, *layer["n2"], normed, layernorm)
            up = self._linear(normed, layer["up"])
            width = up.shape[-1] // 2 if s.gated_mlp else up.shape[-1]
            act = torch.empty((b, n, width), device=self.device, dtype=self.dtype)
            kernels.gated_act(up, act, s.gated_mlp)
            delta = self._linear(act, layer["down"])
        if self.final_norm is not None:
            kernels.add_norm(x, delta, *self.final_norm, normed, layernorm)
            x = normed
        else:
            x = x + delta
        if len(self.proj) > 1:
            x = F.linear(x, self.proj[1])
        return F.linear(x, self.lm_head)

    def lens_for(self, c: int, lens=None) -> torch.Tensor:
        """Each sequence's cached length on the device: c for all, or a ragged batch's own (one per sequence)."""
        if lens is None:
            return torch.full((self.batch,), c, device=self.device, dtype=torch.int32)
        if len(lens) != self.batch or min(lens) < 0:
            raise ValueError(f"a ragged batch needs {self.batch} non-negative lengths, got {list(lens)}")
        return torch.tensor(list(lens), device=self.device, dtype=torch.int32)

    def logits(self, tokens: torch.Tensor, c: int, lens=None) -> torch.Tensor:
        """The Decoder's interface: every sequence at context c, causal; or each at its own context (`lens`, a ragged
        batch: sequence i's new tokens follow its lens[i] cached ones)."""
        n = tokens.shape[1]
        lens_t = self.lens_for(c, lens)
        keys = (max(lens) if lens is not None else c) + n
        return self.ref_logits(tokens, lens_t, self.plan(n, keys)).float()

    def step_fn(self, tokens, c, out=None, out_vocab=None, tree=None, lens=None):
        """forward of tokens at context c (every sequence, or each at lens[i]: a ragged batch), replayed from one CUDA
        graph per (shape, context); greedy tokens of every position come back; the last is written into `out`
        when given."""
        n = tokens.shape[1]
        lens_t = self.lens_for(c, lens)
        plan = self.plan(n, (max(lens) if lens is not None else c) + n)

        def run():
            result = self.ref_logits(tokens, lens_t, plan, tree).argmax(dim=-1)
            if out is not None:
                last = result[:, -1:]
                out.copy_(last.remainder(out_vocab) if out_vocab else last)
            return result

        tree_key = None if tree is None else tree.data_ptr()
        ragged = None if lens is None else tuple(lens)
        out_key = None if out is None else out.data_ptr()
        key = ("step", tokens.data_ptr(), tokens.shape, c, out_key, out_vocab, tree_key, ragged)
        return self.graphed(key, run)

    def chain_fn(self, buf, c, k, out_vocab=None, lens=None):
        """The k draft steps of an iteration in one CUDA graph: step i reads buf[:, i] at context c + i (or lens + i,
        a ragged batch: a constant offset over the same device lengths) and writes its greedy token into
        buf[:, i + 1]."""
        if k == 0:
            return lambda: None
        deepest = max(lens) if lens is not None else c
        if deepest + k > self.max_context:
            raise ShivamError(f"context {deepest} + {k} draft tokens exceeds the draft's cache of {self.max_context}")
        lens_t = self.lens_for(c, lens)
        plan = self.plan(1, deepest + k)

        def run():
            for i in range(k):
                token = self.ref_logits(buf[:, i : i + 1], lens_t, plan, None, i).argmax(dim=-1)
                buf[:, i + 1 : i + 2].copy_(token.remainder(out_vocab) if out_vocab else token)
            return buf

        return self.graphed(("chain", buf.data_ptr(), buf.shape, c, k, None if lens is None else tuple(lens)), run)
