"""Snapshot of reconstruct / forward outputs on small random kernels, for byte-for-byte before/after checks.

    python benchmarks/reconstruct_bytes.py before.npz   # on the old code
    python benchmarks/reconstruct_bytes.py after.npz    # on the new code, then compare every array's bytes

Used for issue 21: the bias/activation support left all 684 arrays byte-identical.
"""

import sys

import numpy as np

from prunelib.core import forward, pruning
from prunelib.core.reconstruct import obs_weight_masks, reconstruct

out = {}
rng = np.random.default_rng(0)
for seed in range(4):
    r = np.random.default_rng(seed)
    d = 20 if seed < 3 else 120
    ks = [
        r.standard_normal((d, 16)).astype(np.float32),
        r.standard_normal((16, 12)).astype(np.float32),
        r.standard_normal((12, 5)).astype(np.float32),
    ]
    x = r.random((256, d)).astype(np.float32)
    bs = [r.standard_normal(16).astype(np.float32), r.standard_normal(12).astype(np.float32), None]
    for method in ("weight", "unit", "global-weight"):
        for k in (0, 25, 50, 90):
            m = pruning.compute_masks(ks, k, method)
            for lt in (True, False):
                for i, w in enumerate(reconstruct(ks, m, x, logit_targets=lt)):
                    out[f"{seed}{method}{k}{lt}{i}"] = w
                for i, w in enumerate(reconstruct(ks, m, x, logit_targets=lt, biases=bs)):
                    out[f"b{seed}{method}{k}{lt}{i}"] = w
            out[f"fw{seed}{method}{k}"] = forward.logits(pruning.apply_masks(ks, m), x)
            out[f"fwb{seed}{method}{k}"] = forward.logits(pruning.apply_masks(ks, m), x, bs)
    for i, m in enumerate(obs_weight_masks(ks, 70, x)):
        out[f"obs{seed}{i}"] = m
np.savez(sys.argv[1], **out)
