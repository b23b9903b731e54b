"""Weight-only int8 and int4 layers in place of `nn.Linear`, in the spirit of gpt-fast's
`quantize.py`: quantization is a module swap (`quantize_linears`) that the model file knows
nothing about. The matmuls are PyTorch's own packed kernels (`_weight_int8pack_mm`,
`_weight_int4pack_mm` and its CPU twin).
"""

from __future__ import annotations

import functools
import threading

import torch
import torch.nn.functional as F
from torch import nn

PACKED_MAX_ROWS = 16  # up to this many tokens, int8 matmuls read the packed weights directly
QUANTIZE_ROWS = 1024  # rows quantized together at load


class Int8Linear(nn.Module):
    """Weight-only int8 (per output channel, symmetric) in place of an `nn.Linear`.

    On the CPU the matmul reads the int8 weights directly (`_weight_int8pack_mm`, bf16
    activations): a quarter of float32's bytes per decoded token, which is what decode speed
    is bound by. Elsewhere the weight is dequantized per call (fused by torch.compile in the
    static decode step).
    """

    def __init__(self, out_features: int, in_features: int, dtype: torch.dtype, packed: bool):
        super().__init__()
        self.packed = packed
        self.register_buffer("weight", torch.empty(out_features, in_features, dtype=torch.int8))
        self.register_buffer("scales", torch.empty(out_features, dtype=scale_dtype(dtype, packed)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // x.shape[-1]
        if self.packed and rows <= PACKED_MAX_ROWS:  # decoding: bandwidth-bound
            flat = x.reshape(rows, x.shape[-1]).to(torch.bfloat16)  # (tokens, in)
            out = torch.ops.aten._weight_int8pack_mm(flat, self.weight, self.scales)
            return out.to(x.dtype).reshape(*x.shape[:-1], -1)
        # Prefill (many rows) is compute-bound: one dequantization, then a dense matmul.
        return F.linear(x, self.weight.to(x.dtype)) * self.scales.to(x.dtype)

    def quantized(self, w: torch.Tensor) -> dict[str, torch.Tensor]:
        """This layer's buffers for the float weight `w` (out, in)."""
        weight, scales = quantize_weight(w, self.packed)
        return {"weight": weight, "scales": scales}


def scale_dtype(dtype: torch.dtype, packed: bool) -> torch.dtype:
    return torch.bfloat16 if packed else dtype


def quantize_weight(w: torch.Tensor, packed: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 weight, per-row scale) of a float weight (out, in), a block of rows at a time so
    the float32 temporaries stay small next to the weight itself."""
    q = torch.empty(w.shape, dtype=torch.int8, device=w.device)
    scales = torch.empty(w.shape[0], dtype=torch.float32, device=w.device)
    for start in range(0, w.shape[0], QUANTIZE_ROWS):
        block = w[start : start + QUANTIZE_ROWS].float()
        scale = block.abs().amax(dim=1).clamp(min=1e-8) / 127.0
        q[start : start + QUANTIZE_ROWS] = torch.round(block / scale[:, None]).to(torch.int8)
        scales[start : start + QUANTIZE_ROWS] = scale
    return q, scales.to(scale_dtype(w.dtype, packed))


class Int4Linear(nn.Module):
    """Weight-only int4 in place of an `nn.Linear`: asymmetric, one bf16 scale and zero per
    group of `group` inputs (w = (q - 8) * scale + zero, tinygemm's convention), the weights
    packed in the layout of PyTorch's own int4 matmul for the device (`_weight_int4pack_mm`,
    tinygemm, on CUDA: Ampere or newer; its `_for_cpu` twin on the CPU). An eighth of
    float32's bytes per decoded token: Codestral-22B's weights in 12.1 GB.

    The CPU kernel reads a few rows fast and many rows slowly (6x a bf16 matmul at 512 rows),
    so prefill there unpacks the weight into bf16 a block of outputs at a time (`_many_rows`),
    in the layout the running kernel packed (`cpu_int4_layout`).
    """

    def __init__(self, out_features: int, in_features: int, group: int, on_cuda: bool):
        super().__init__()
        self.group, self.on_cuda = group, on_cuda
        self.tiles = int4_tiles(in_features)
        if on_cuda:  # tinygemm's tiles (what _convert_weight_to_int4pack returns)
            shape = (out_features // 8, in_features // (self.tiles * 16), 32, self.tiles // 2)
            packed = torch.empty(shape, dtype=torch.int32)
        else:  # two nibbles a byte, in blocks of outputs (see `cpu_int4_layout`)
            packed = torch.empty(out_features, in_features // 2, dtype=torch.uint8)
        self.register_buffer("weight", packed)
        groups = torch.empty(in_features // group, out_features, 2, dtype=torch.bfloat16)
        self.register_buffer("scales_zeros", groups)
        self.out_features, self.in_features = out_features, in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // x.shape[-1]
        flat = x.reshape(rows, x.shape[-1]).to(torch.bfloat16)  # (tokens, in)
        packed, group, scales = self.weight, self.group, self.scales_zeros
        if self.on_cuda:
            out = torch.ops.aten._weight_int4pack_mm(flat, packed, group, scales)
        elif rows <= PACKED_MAX_ROWS or cpu_int4_layout() is None:
            out = torch.ops.aten._weight_int4pack_mm_for_cpu(flat, packed, group, scales)
        else:
            out = self._many_rows(flat)
        return out.to(x.dtype).reshape(*x.shape[:-1], -1)

    def _many_rows(self, flat: torch.Tensor) -> torch.Tensor:
        """flat (rows, in) bf16 @ the weight, unpacked a block of outputs at a time into
        reused buffers: a bounded working set, and no fresh pages to fault in per pass."""
        out = flat.new_empty((flat.shape[0], self.out_features))
        for start in range(0, self.out_features, UNPACK_OUTPUTS):
            stop = min(start + UNPACK_OUTPUTS, self.out_features)
            out[:, start:stop] = flat @ self._unpack(start, stop)
        return out

    def _unpack(self, start: int, stop: int) -> torch.Tensor:
        """Outputs [start, stop) of the weight in bf16, as (in, stop - start), in this thread's
        reused buffers. In (in, out) order the unpacking is one copy and the groups' scales
        and zeros apply without transposing anything."""
        layout = cpu_int4_layout()
        k, block, width = self.in_features, layout[0], stop - start
        packed = self.weight.view(-1, k, block // 2)[start // block : stop // block]
        levels = _levels(packed, layout, _buffer((width // block, k, block), torch.uint8))
        weight = _buffer((k, width // block, block), torch.bfloat16)
        weight.copy_(levels.permute(1, 0, 2))
        grouped = weight.view(k // self.group, self.group, width)
        # (groups, width) each, made contiguous: a strided operand takes a far slower path
        scales, zeros = (t.contiguous() for t in self.scales_zeros[:, start:stop].unbind(-1))
        torch.addcmul((zeros - 8 * scales)[:, None], grouped, scales[:, None], out=grouped)
        return weight.view(k, width)

    def quantized(self, w: torch.Tensor) -> dict[str, torch.Tensor]:
        """This layer's buffers for the float weight `w` (out, in)."""
        q, scales_zeros = quantize_int4(w, self.group)
        if self.on_cuda:
            nibbles = (q[:, ::2] << 4) | q[:, 1::2]
            packed = torch.ops.aten._convert_weight_to_int4pack(nibbles, self.tiles)
        else:
            packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.to(torch.int32), 1)
        return {"weight": packed, "scales_zeros": scales_zeros}


INT4_GROUPS = (128, 64, 32)  # the largest that divides a layer's inputs is its group
UNPACK_OUTPUTS = 1024  # outputs unpacked at a time for a many-row int4 pass on the CPU
# How PyTorch's CPU int4 packing lays outputs out depends on the kernel it picked for this
# processor (AVX-512: blocks of 64, AVX2: blocks of 32, its plain kernel: neighbours in blocks
# of 32): (outputs per block, whether a byte holds two neighbouring outputs).
_CPU_INT4_LAYOUTS = ((64, False), (32, False), (32, True))
_scratch = threading.local()  # each engine's worker thread unpacks into its own buffers


@functools.cache
def cpu_int4_layout() -> tuple[int, bool] | None:
    """The running CPU kernel's int4 layout, found by packing a probe and reading it back with
    each known layout; None if none matches (many-row passes then use the kernel itself)."""
    probe = torch.randint(0, 16, (128, 256), dtype=torch.int32, generator=torch.Generator())
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(probe, 1)
    for block, paired in _CPU_INT4_LAYOUTS:
        view = packed.view(-1, 256, block // 2)
        levels = torch.empty((*view.shape[:2], block), dtype=torch.uint8)
        _levels(view, (block, paired), levels)
        if torch.equal(levels.permute(0, 2, 1).reshape(128, 256), probe.to(torch.uint8)):
            return block, paired
    return None


def _levels(packed: torch.Tensor, layout: tuple[int, bool], out: torch.Tensor) -> torch.Tensor:
    """Packed bytes (blocks, in, block/2) -> `out` (blocks, in, block): each output's level."""
    if layout[1]:  # outputs 2j and 2j + 1 of a block share byte j
        torch.stack((packed & 0xF, packed >> 4), dim=3, out=out.view(*packed.shape, 2))
    else:  # outputs j and j + block/2 share byte j
        torch.cat((packed & 0xF, packed >> 4), dim=2, out=out)
    return out


def _buffer(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """A tensor of `shape`, a view of this thread's reused buffer, grown as needed (made outside
    inference mode, so passes inside and outside it can both write to it)."""
    numel = shape[0] * shape[1] * shape[2]
    buffers = _scratch.__dict__.setdefault("buffers", {})
    if dtype not in buffers or buffers[dtype].numel() < numel:
        with torch.inference_mode(False):
            buffers[dtype] = torch.empty(numel, dtype=dtype)
    return buffers[dtype][:numel].view(shape)


def int4_tiles(in_features: int) -> int:
    """tinygemm's inner K tiles for this many inputs (it needs in % (tiles * 16) == 0)."""
    return next(t for t in (8, 4, 2) if in_features % (t * 16) == 0)


def int4_group(out_features: int, in_features: int) -> int | None:
    """The group size for an int4 layer of this shape, or None where the kernels cannot take
    it (outputs in blocks of 64, inputs in groups of 32 or more): it then stays float."""
    if out_features % 64:
        return None
    return next((g for g in INT4_GROUPS if in_features % g == 0), None)


def quantize_int4(w: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(q (out, in) uint8 in 0..15, scales and zeros (in/group, out, 2) bf16) of a float weight:
    each group's range mapped onto 16 levels, a block of rows at a time."""
    n, k = w.shape
    q = torch.empty(n, k, dtype=torch.uint8, device=w.device)
    scales_zeros = torch.empty(k // group, n, 2, dtype=torch.bfloat16, device=w.device)
    for start in range(0, n, QUANTIZE_ROWS):
        block = w[start : start + QUANTIZE_ROWS].float().view(-1, k // group, group)
        low, high = block.amin(-1), block.amax(-1)
        scale = ((high - low) / 15).clamp(min=1e-6)
        levels = ((block - low[..., None]) / scale[..., None]).round().clamp(0, 15)
        q[start : start + QUANTIZE_ROWS] = levels.view(-1, k).to(torch.uint8)
        rows = slice(start, start + QUANTIZE_ROWS)
        scales_zeros[:, rows, 0] = scale.t().to(torch.bfloat16)
        scales_zeros[:, rows, 1] = (low + 8 * scale).t().to(torch.bfloat16)
    return q, scales_zeros


def quantize_linears(module: nn.Module, kind: str, dtype: torch.dtype, device: torch.device):
    """Swap every Linear below `module` for an empty quantized layer of `kind` ("int8" or
    "int4"), in place (on the meta device before loading, so the float weights never all
    exist at once); returns the quantized layers by name. A layer the int4 kernels cannot
    take stays float."""
    swapped: dict[str, nn.Module] = {}
    for name, child in module.named_children():
        if isinstance(child, nn.Linear):
            out_features, in_features = child.out_features, child.in_features
            if kind == "int8":
                layer = Int8Linear(out_features, in_features, dtype, device.type == "cpu")
            elif (group := int4_group(out_features, in_features)) is not None:
                layer = Int4Linear(out_features, in_features, group, device.type == "cuda")
            else:
                continue
            setattr(module, name, layer)
            swapped[name] = layer
        else:
            inner = quantize_linears(child, kind, dtype, device)
            swapped.update({f"{name}.{key}": layer for key, layer in inner.items()})
    return swapped
