"""Bit packing of quantized residuals (colbert-ai's ``binarize`` layout).

Each dimension's bucket index contributes ``nbits`` bits, least significant first; the resulting
bit stream is packed into bytes most significant bit first (``np.packbits`` default), so
dimension ``j`` lives in byte ``j * nbits // 8``.
"""
from __future__ import annotations

import numpy as np
import torch

VALID_NBITS = (1, 2, 4)


def check_nbits(nbits: int, dim: int) -> None:
    """Raise ValueError unless ``nbits`` is 1, 2 or 4 and ``dim * nbits`` fills whole bytes."""
    if nbits not in VALID_NBITS:
        raise ValueError(f"nbits must be one of {VALID_NBITS}, got {nbits!r}")
    if (dim * nbits) % 8:
        raise ValueError(f"dim * nbits must be divisible by 8 to pack residuals into bytes, "
                         f"got dim={dim}, nbits={nbits}")


def byte_table(nbits: int) -> np.ndarray:
    """(256, 8 // nbits) uint8: the bucket indices a packed byte holds, in dimension order."""
    bits = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1)  # MSB first = stream order
    bits = bits.reshape(256, 8 // nbits, nbits).astype(np.uint8)
    return (bits << np.arange(nbits, dtype=np.uint8)).sum(axis=2).astype(np.uint8)


def pack_buckets(buckets: np.ndarray, nbits: int) -> np.ndarray:
    """(n, dim) bucket indices in ``[0, 2**nbits)`` -> (n, dim * nbits / 8) packed uint8."""
    n, dim = buckets.shape
    check_nbits(nbits, dim)
    bits = (buckets.astype(np.uint8)[:, :, None] >> np.arange(nbits, dtype=np.uint8)) & 1
    return np.packbits(bits.reshape(n, dim * nbits), axis=1)


def unpack_buckets(packed: np.ndarray, nbits: int) -> np.ndarray:
    """Inverse of :func:`pack_buckets`: (n, bytes) uint8 -> (n, dim) bucket indices (uint8)."""
    return byte_table(nbits)[packed].reshape(packed.shape[0], packed.shape[1] * 8 // nbits)


def bucket_bytes(residuals: torch.Tensor, cutoffs: torch.Tensor, nbits: int) -> np.ndarray:
    """(n, dim) float32 residuals -> packed buckets, as ``pack_buckets(searchsorted(cutoffs, r, "left"))``.

    Bucket = number of cutoffs strictly below the value (bucket i holds cutoffs[i-1] < r <= cutoffs[i]);
    in the packed stream each bucket is written least significant bit first, bytes filled from their
    most significant bit, so a byte holds the bit-reversed buckets of ``8 // nbits`` dimensions.
    All in uint8 torch ops: ~4x faster than searchsorted + np.packbits.
    """
    buckets = (residuals > cutoffs[0]).to(torch.uint8)
    for cut in cutoffs[1:]:
        buckets += (residuals > cut).to(torch.uint8)
    reverse = torch.zeros_like(buckets)
    for bit in range(nbits):
        reverse |= ((buckets >> bit) & 1) << (nbits - 1 - bit)
    per_byte = 8 // nbits
    reverse = reverse.view(len(residuals), -1, per_byte)
    packed = reverse[:, :, 0] << (8 - nbits)
    for k in range(1, per_byte):
        packed |= reverse[:, :, k] << (8 - nbits * (k + 1))
    return packed.numpy()
