"""TensorComparisons from the fused verifier (fp8/kernels/fused_verify.py): the same fields, counts
and first mismatch as `compare_fp8` over two materialised quantizations, without materialising them.

Per-tensor totals are reduced on the device (one small copy to the host); per-block detail is read
back only when some tensor differs; both sides' codes are computed again (`FusedLaunch.dump`) only
for each differing tensor's first differing block and for blocks whose fp8-step distances the
kernel did not fully count (distances above 2, or blocks taken by the full cast rule).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from refit_verify.compare.bitwise import Mismatch, TensorComparison
from refit_verify.fp8 import format as fmt
from refit_verify.fp8.kernels import fused_verify as fv

DUMP_CHUNK = 256  # blocks whose codes are dumped at once (2 x 16 KiB each, plus ~6x that in torch temporaries)


def _valid(m_rem: torch.Tensor, n_rem: torch.Tensor) -> torch.Tensor:
    ar = torch.arange(128, device=m_rem.device)
    return (ar[None, :, None] < m_rem[:, None, None]) & (ar[None, None, :] < n_rem[:, None, None])


class _Geometry:
    """Block index (in the batch) -> tensor, block row/column, valid rows/columns."""

    def __init__(self, tensors, counts):
        self.starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        self.shapes = [tuple(t.shape) for t in tensors]
        self.nbn = np.array([math.ceil(s[1] / 128) for s in self.shapes], dtype=np.int64)
        self.counts = counts
        self.m = np.array([s[0] for s in self.shapes], dtype=np.int64)
        self.n = np.array([s[1] for s in self.shapes], dtype=np.int64)
        self._tid = None

    @property
    def tid(self) -> np.ndarray:
        if self._tid is None:
            self._tid = np.repeat(np.arange(len(self.shapes)), self.counts)
        return self._tid

    def rem(self, blocks: np.ndarray):
        t = self.tid[blocks]
        local = blocks - self.starts[t]
        bi, bj = local // self.nbn[t], local % self.nbn[t]
        return t, bi, bj, np.minimum(128, self.m[t] - bi * 128), np.minimum(128, self.n[t] - bj * 128)


def _dumped_hist(launch, geo, blocks: np.ndarray, full_rule: bool, n_tensors: int) -> np.ndarray:
    """(tensors, 256) counts of fp8-step distances between differing finite codes of `blocks`."""
    dev = launch.rec.device
    hist = torch.zeros(n_tensors * 256, dtype=torch.int64, device=dev)
    for i in range(0, len(blocks), DUMP_CHUNK):
        part = blocks[i:i + DUMP_CHUNK]
        t, _, _, mr, nr = geo.rem(part)
        codes = launch.dump(part, full_rule)
        a, b = codes[:, 0], codes[:, 1]
        valid = _valid(torch.as_tensor(mr, device=dev), torch.as_tensor(nr, device=dev))
        fin = (a != b) & valid & ~fmt.is_nan_code(a) & ~fmt.is_nan_code(b)
        d = (fmt.ordered_code(a) - fmt.ordered_code(b)).abs()
        key = torch.as_tensor(t, device=dev)[:, None, None].expand_as(d) * 256 + d
        hist += torch.bincount(key[fin], minlength=n_tensors * 256)
    return hist.view(n_tensors, 256).cpu().numpy()


def _rel(e: float, w2: float) -> float:
    return math.sqrt(e / w2) if w2 > 0 else (0.0 if e == 0 else math.inf)


def fused_comparisons(items, recipe_a, recipe_b, metrics: bool = True, **launch_kw) -> list:
    """TensorComparisons of (name, w) items (2-D, one dtype, one device) from one fused batch."""
    names = [n for n, _ in items]
    ws = [w if w.stride(1) == 1 else w.contiguous() for _, w in items]
    launch = fv.fused_block_stats(ws, recipe_a, recipe_b, metrics, **launch_kw)
    T = len(ws)
    per_t, sums = _tensor_totals(launch, T, metrics)
    geo = _Geometry(ws, launch.counts)
    differ = (per_t[:, 0] + per_t[:, 1]) > 0
    detail = _block_detail(launch, geo, T) if differ.any() else None
    firsts = _first_mismatches(launch, geo, detail, names, differ) if detail else {}
    out, zeros = [], {}
    totals, sums = per_t.tolist(), (sums.tolist() if metrics else None)
    if detail:
        ndt = torch.from_numpy(detail["ndiff"])
        tails = detail["hist"].any(axis=1).tolist()  # tensors with blocks the kernel did not count
    starts, counts = geo.starts.tolist(), launch.counts
    for k, name in enumerate(names):
        m, n = geo.shapes[k]
        mb, nb = -(-m // 128), -(-n // 128)
        n_code, n_scale, nan_a, nan_b, ones = totals[k]
        hist, first = {}, None
        if n_code or n_scale:
            per_block = ndt[starts[k]:starts[k] + counts[k]].view(mb, nb)
            if tails[k]:
                h = detail["hist"][k]
                h[1] += ones
                hist = {int(v): int(h[v]) for v in np.flatnonzero(h)}
            elif ones:
                hist = {1: ones}
            first = firsts[k]
        else:
            if (mb, nb) not in zeros:  # one all-zero count tensor per shape (read-only, like the others)
                zeros[(mb, nb)] = torch.zeros((mb, nb), dtype=torch.int64)
            per_block = zeros[(mb, nb)]
        mags = {}
        if metrics:
            w2, ea2, eb2, eab2 = sums[k]
            if not (n_code or n_scale):
                eb2 = ea2
            mags = {"rel_l2_a": _rel(ea2, w2), "rel_l2_b": _rel(eb2, w2), "rel_l2_ab": _rel(eab2, w2)}
        out.append(TensorComparison(name, "fp8", (m, n), n_code, n_scale, m * n, (128, 128), mb * nb, first,
                                    per_block, hist, (nan_a, nan_b), mags))
    return out


def _counted(cls, far):
    """Blocks whose fp8-step histogram the kernel's counts give whole: fast-compared, no distance
    above one step (every differing code is one step away)."""
    return (cls == fv.FAST) & (far == 0)


def _tensor_totals(launch, n_tensors: int, metrics: bool):
    """Per tensor, reduced on the device: (int64 [T, 5]: differing codes, differing scales, NaN codes
    a, b, differing codes in counted blocks (all one step apart); float64 [T, 4] sums or None)."""
    rec = launch.rec
    tid = launch.bmap.long()
    ndiff = rec[:, fv.R_NDIFF]
    counted = _counted(rec[:, fv.R_CLASS], rec[:, fv.R_FAR])
    cols = torch.stack([ndiff, (rec[:, fv.R_SA] != rec[:, fv.R_SB]).int(), rec[:, fv.R_NAN_A], rec[:, fv.R_NAN_B],
                        torch.where(counted, ndiff, 0)], 1).long()
    per_t = torch.zeros((n_tensors, 5), dtype=torch.int64, device=rec.device).index_add_(0, tid, cols)
    sums = None
    if metrics:
        sums = torch.zeros((n_tensors, 4), dtype=torch.float64, device=rec.device)
        sums = sums.index_add_(0, tid, launch.fsum.double()).cpu().numpy()
    return per_t.cpu().numpy(), sums


def _block_detail(launch, geo, n_tensors) -> dict:
    """What the host needs when something differs, selected on the device: per-block code counts
    (one int32 a block), each tensor's first block with a code or scale difference, and the
    histogram of the blocks the kernel did not count (their codes dumped)."""
    rec = launch.rec
    nd, cls = rec[:, fv.R_NDIFF], rec[:, fv.R_CLASS]
    sd = rec[:, fv.R_SA] != rec[:, fv.R_SB]
    nblk = rec.shape[0]
    idx = torch.arange(nblk, device=rec.device)
    # a tensor's blocks are contiguous and row-major: the smallest flagged index is compare_fp8's first
    first = torch.full((n_tensors,), nblk, dtype=torch.int64, device=rec.device).scatter_reduce_(
        0, launch.bmap.long(), torch.where((nd > 0) | sd, idx, nblk), "amin")
    fb = first.clamp(max=nblk - 1)
    at_first = torch.stack([first, nd[fb].long(), sd[fb].long(), cls[fb].long(), rec[fb, fv.R_SA].long(),
                            rec[fb, fv.R_SB].long()], 1)
    tail = ((cls == fv.FAST) & ~_counted(cls, rec[:, fv.R_FAR]) & (nd > 0)) | ((cls == fv.FULL) & (nd > 0))
    host = torch.cat([nd.long(), at_first.flatten(), torch.nonzero(tail).flatten()]).cpu().numpy()
    ndiff, at_first = host[:nblk], host[nblk:nblk + 6 * n_tensors].reshape(n_tensors, 6)
    tails = host[nblk + 6 * n_tensors:]
    hist = np.zeros((n_tensors, 256), dtype=np.int64)
    if len(tails):
        tail_cls = rec[torch.as_tensor(tails, device=rec.device), fv.R_CLASS].cpu().numpy()
        for full_rule in (False, True):
            blocks = tails[(tail_cls == fv.FULL) == full_rule].astype(np.int32)
            if len(blocks):
                hist += _dumped_hist(launch, geo, blocks, full_rule, n_tensors)
    return {"ndiff": ndiff, "at_first": at_first, "hist": hist}


def _first_elements(launch, geo, blocks: np.ndarray, full_rule: bool) -> dict:
    """{block: ((row, col), code a, code b) or None} of the first differing element (row-major)."""
    if not len(blocks):
        return {}
    dev = launch.rec.device
    t, bi, bj, mr, nr = geo.rem(blocks)
    codes = launch.dump(blocks, full_rule)
    diff = ((codes[:, 0] != codes[:, 1]) & _valid(torch.as_tensor(mr, device=dev), torch.as_tensor(nr, device=dev)))
    flat = diff.view(len(blocks), -1)
    pos = flat.int().argmax(dim=1)  # the first True (argmax returns the first maximum)
    rows = torch.arange(len(blocks), device=dev)
    got = torch.stack([flat[rows, pos].int(), pos.int(), codes[:, 0].reshape(len(blocks), -1)[rows, pos].int(),
                       codes[:, 1].reshape(len(blocks), -1)[rows, pos].int()], 1).cpu().numpy()
    out = {}
    for k, (blk, ok, p, ca, cb) in enumerate(zip(blocks.tolist(), *got.T.tolist())):
        out[blk] = ((int(bi[k]) * 128 + p // 128, int(bj[k]) * 128 + p % 128), ca, cb) if ok else None
    return out


def _first_mismatches(launch, geo, detail, names, differ) -> dict:
    """compare_fp8's first mismatch of each differing tensor: the earliest block (row-major) with a
    code or scale difference, and its first differing element; {tensor index: Mismatch}."""
    tids = np.flatnonzero(differ)
    first, nd, sd, cl, sa_bits, sb_bits = detail["at_first"][tids].T
    scales = np.stack([sa_bits, sb_bits], 1).astype(np.uint32).view(np.float32).tolist()
    code = nd > 0
    els = {**_first_elements(launch, geo, first[code & (cl != fv.FULL)].astype(np.int32), False),
           **_first_elements(launch, geo, first[code & (cl == fv.FULL)].astype(np.int32), True)}
    _, bis, bjs, _, _ = geo.rem(first)
    out = {}
    for k, (t, blk, bi, bj) in enumerate(zip(tids.tolist(), first.tolist(), bis.tolist(), bjs.tolist())):
        where, (a_s, b_s) = (bi, bj), scales[k]
        if nd[k] == 0:
            out[t] = Mismatch(names[t], "scale", where, None, None, None, a_s, b_s, "codes identical in this block")
        elif els.get(blk) is None:  # counts and codes disagree: say so rather than invent an element
            out[t] = Mismatch(names[t], "code", where, None, None, None, a_s, b_s,
                              f"no differing code inside block {where} of size (128, 128)")
        else:
            el, ca, cb = els[blk]
            out[t] = Mismatch(names[t], "code", where, el, ca, cb, a_s, b_s, "scales differ too" if sd[k] else "")
    return out


def findings_differ(fused: TensorComparison, ref: TensorComparison, rel: float = 1e-3) -> list:
    """What differs between two comparisons of one tensor (counts, first mismatch, per-block counts,
    histogram, NaN codes exactly; magnitudes to `rel`); NaN scales compare equal to NaN."""
    out = []
    fd, rd = fused.to_dict(), ref.to_dict()
    for k in fd:
        a, b = fd[k], rd[k]
        if k == "magnitudes":
            for kk in set(a) | set(b):
                x, y = a.get(kk), b.get(kk)
                if x is None or y is None or not (x == y or abs(x - y) <= rel * abs(y) + 1e-6):
                    out.append(f"{fused.tensor}: {kk} {x} vs {y}")
        elif k == "first_mismatch" and a and b:
            for kk in a:
                x, y = a[kk], b[kk]
                if x != y and not (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y)):
                    if kk != "describe":
                        out.append(f"{fused.tensor}: first_mismatch.{kk} {x} vs {y}")
        elif a != b:
            out.append(f"{fused.tensor}: {k} {a} vs {b}")
    if fused.block_mismatch_counts is None or not torch.equal(fused.block_mismatch_counts, ref.block_mismatch_counts):
        out.append(f"{fused.tensor}: per-block code mismatch counts differ")
    return out
