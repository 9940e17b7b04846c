"""Device diagnosis (issue 15 run e): which side of the fused verifier disagrees, scales or codes."""

import torch

from refit_verify.fp8.kernels.fused_verify import fused_block_stats
from refit_verify.fp8.quantize import quantize

g = torch.Generator().manual_seed(21)
x = (torch.randn((256, 384), generator=g) * torch.rand((256, 384), generator=g).pow(8) * 3).to(torch.bfloat16)
x[5, 5] = float("-inf")
x = x.cuda()
for ra, rb in (("torchao", "nemo_rl"), ("nemo_rl", "torchao"), ("torchao", "torchao"), ("vllm_per_block_ue8m0", "deepgemm"),
               ("deepgemm", "vllm_per_block_ue8m0"), ("nemo_rl", "vllm_per_block")):
    for fast in (True, False):
        iout, fout, counts = fused_block_stats([x], ra, rb, fast_cast=fast)
        ii = iout.cpu()
        qa, qb = quantize(x, ra), quantize(x, rb)
        sa = qa.scale_inv.contiguous().view(torch.int32).reshape(-1).cpu()
        sb = qb.scale_inv.contiguous().view(torch.int32).reshape(-1).cpu()
        nd = (qa.data.view(torch.uint8) != qb.data.view(torch.uint8)).sum().item()
        print(f"{ra:>22} vs {rb:22} fast={fast}: scale_a ok {torch.equal(ii[:, 2], sa)} scale_b ok {torch.equal(ii[:, 3], sb)} "
              f"n_diff fused {int(ii[:, 0].sum())} ref {nd}; nan fused {int(ii[:, 4].sum())},{int(ii[:, 5].sum())} "
              f"ref {int(((qa.data.view(torch.uint8) & 0x7F) == 0x7F).sum())},{int(((qb.data.view(torch.uint8) & 0x7F) == 0x7F).sum())}",
              flush=True)
        if not torch.equal(ii[:, 2], sa):
            print("   scale_a fused", [hex(v & 0xFFFFFFFF) for v in ii[:, 2].tolist()], "ref", [hex(v & 0xFFFFFFFF) for v in sa.tolist()])
