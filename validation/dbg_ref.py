import torch, time
from shivam.specs.model import load_model
from shivam.validate.ref import RefDecoder

dec = RefDecoder(load_model("mistral-7b"), 32, 2048, device="cuda")
tok = torch.randint(0, 32000, (32, 5), device="cuda")
for n, c in ((5, 1024), (1, 1024)):
    t = tok[:, :n].contiguous()
    out = dec.logits(t, c)
    torch.cuda.synchronize()
    print("eager ok", n, c, out.shape, flush=True)
    f = dec.step_fn(t, c)
    f()
    torch.cuda.synchronize()
    print("graph ok", n, c, flush=True)
