"""Vision Transformer backbone for images and video, with BEiT / VideoMAE v2 names.

Parameter names follow VideoMAE v2's listing: ``cls_token``, ``pos_embed``, ``patch_embed.proj``,
``blocks.N.norm1``, ``blocks.N.attn.qkv`` (weight only) with ``blocks.N.attn.q_bias`` and
``blocks.N.attn.v_bias``, ``blocks.N.attn.proj``, ``blocks.N.norm2``, ``blocks.N.mlp.fc1`` /
``fc2`` and ``norm``, so the layer-decay resolver places every parameter and STMixer group
listings are reproduced name by name. Video input (B x C x T x H x W) goes through a Conv3d
tubelet embedding under the same names (VideoMAE v2, STMixer).

pgtrain checkpoints of the model load as they are (``model.load_state_dict`` resizes a
``pos_embed`` trained at another resolution); `load_vit_state_dict` maps timm / MAE / BEiT /
VideoMAE state dicts.
"""

import logging
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pgtrain.config import check_arguments
from pgtrain.errors import ConfigError
from pgtrain.modeling.registries import BACKBONES
from pgtrain.utils.suggest import did_you_mean

__all__ = ["VisionTransformer", "vit_base", "vit_small", "vit_tiny"]

logger = logging.getLogger("pgtrain.modeling")

Grid = tuple[int, int, int]  # tokens along (time, height, width)
_POS_EMBEDS = ("learned", "sincos")


class _PatchEmbed(nn.Module):
    """Cuts an image into patches (a clip into tubelets) and projects each one to a token."""

    def __init__(self, patch_size: int, in_chans: int, dim: int, tubelet_size: int, video: bool):
        super().__init__()
        self.video = video
        if video:
            kernel = (tubelet_size, patch_size, patch_size)
            self.proj: nn.Module = nn.Conv3d(in_chans, dim, kernel, stride=kernel)
        else:
            self.proj = nn.Conv2d(in_chans, dim, patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        expected = 5 if self.video else 4
        if x.dim() != expected:
            layout = "B x C x T x H x W (video: num_frames > 1)" if self.video else "B x C x H x W"
            raise ConfigError(
                f"VisionTransformer takes {layout} input, got shape {tuple(x.shape)}; set "
                "num_frames / tubelet_size to match the input"
            )
        # (B, D, [T,] H, W) -> (B, N, D), time-major then row-major (VideoMAE's token order).
        return self.proj(x).flatten(2).transpose(1, 2)


class _DropPath(nn.Module):
    """Drops the residual branch for a random subset of samples while training."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


class _Attention(nn.Module):
    """Multi-head self-attention with BEiT's biases: q and v learned, k fixed at zero."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        # A key bias adds the same q.b to every logit of a query, which softmax cancels: BEiT and
        # VideoMAE drop it, and VideoMAE v2 has q_bias / v_bias only.
        self.q_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.v_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        bias = None
        if self.q_bias is not None:
            bias = torch.cat([self.q_bias, torch.zeros_like(self.v_bias), self.v_bias])
        qkv = F.linear(x, self.qkv.weight, bias).reshape(b, n, 3, self.num_heads, -1)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """A pre-norm transformer block with stochastic depth on both residual branches."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, drop: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = _Attention(dim, num_heads, qkv_bias)
        self.drop_path = _DropPath(drop)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = _Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class VisionTransformer(nn.Module):
    """A plain ViT without a classification head (a project adds ``head``).

    Attributes:
        embed_dim: Token width; `forward` returns features of this size (``num_features``).
        patch_size: Side of a square patch in pixels (the stride of the token map).
        grid: Tokens along (time, height, width) at ``img_size`` and ``num_frames``; inputs of
            another size get ``pos_embed`` interpolated over the grid.
        num_prefix_tokens: 1 with a cls token, else 0.
    """

    def __init__(
        self,
        *,
        img_size: int | Sequence[int] = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.0,
        use_cls_token: bool = True,
        pos_embed: str = "learned",
        num_frames: int = 1,
        tubelet_size: int = 1,
    ) -> None:
        """Builds the model.

        Args:
            img_size: Pre-training input side (or (height, width)); sets the pos_embed grid.
            patch_size: Patch side in pixels.
            in_chans: Input channels.
            embed_dim: Token width.
            depth: Number of blocks.
            num_heads: Attention heads (must divide `embed_dim`).
            mlp_ratio: MLP hidden width over `embed_dim`.
            qkv_bias: Learn ``q_bias`` and ``v_bias``.
            drop_path_rate: Stochastic depth of the last block; block i gets
                ``rate * i / (depth - 1)``.
            use_cls_token: Prepend a learned cls token; `forward` pools it (else the mean of
                the patch tokens).
            pos_embed: "learned" (a parameter) or "sincos" (VideoMAE v2's fixed table, a buffer
                outside the state dict).
            num_frames: Frames of a video clip; above 1 (or with ``tubelet_size > 1``) the
                input is B x C x T x H x W and patches are tubelets.
            tubelet_size: Frames per tubelet.

        Raises:
            ConfigError: An option is out of range or sizes do not divide.
        """
        super().__init__()
        hw = _check_options(dict(locals()))
        self.embed_dim = self.num_features = embed_dim
        self.patch_size, self.tubelet_size = patch_size, tubelet_size
        video = num_frames > 1 or tubelet_size > 1
        self.patch_embed = _PatchEmbed(patch_size, in_chans, embed_dim, tubelet_size, video)
        self.grid: Grid = (num_frames // tubelet_size, hw[0] // patch_size, hw[1] // patch_size)
        self.num_prefix_tokens = int(use_cls_token)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if use_cls_token else None
        num_patches = math.prod(self.grid)
        if pos_embed == "learned":
            size = (1, self.num_prefix_tokens + num_patches, embed_dim)
            self.pos_embed = nn.Parameter(torch.zeros(size))
        else:
            table = _sinusoid_table(num_patches, embed_dim)
            table = torch.cat([torch.zeros(1, self.num_prefix_tokens, embed_dim), table], dim=1)
            # Not persistent: the table is a function of the grid, so checkpoints need not
            # carry it (VideoMAE's do not either).
            self.register_buffer("pos_embed", table, persistent=False)
        rates = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, rate) for rate in rates
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self._init_weights()
        self.register_load_state_dict_pre_hook(_resize_loaded_pos_embed)

    def _init_weights(self) -> None:
        """Initializes as MAE / timm: truncated normal linears and tokens, xavier patches."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        proj = self.patch_embed.proj
        nn.init.xavier_uniform_(proj.weight.view(proj.weight.shape[0], -1))
        nn.init.zeros_(proj.bias)
        for p in (self.cls_token, self.pos_embed):
            if isinstance(p, nn.Parameter):
                nn.init.trunc_normal_(p, std=0.02)

    def no_weight_decay(self) -> set[str]:
        """Returns the parameter names that take no weight decay: pos_embed and cls_token."""
        params = dict(self.named_parameters(recurse=False))
        return {n for n in ("pos_embed", "cls_token") if n in params}

    def token_grid(self, x: Tensor) -> Grid:
        """Returns the (time, height, width) token grid of an input of ``x``'s shape."""
        t = x.shape[2] // self.tubelet_size if x.dim() == 5 else 1
        return (t, x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size)

    def pos_embed_for(self, grid: Grid) -> Tensor:
        """Returns pos_embed for a token grid, interpolated over the patch grid if it differs."""
        if tuple(grid) == self.grid:
            return self.pos_embed
        return _resize_pos_embed(self.pos_embed, self.num_prefix_tokens, self.grid, grid)

    def forward_features(self, x: Tensor) -> Tensor:
        """Returns the normed tokens, (B, [1 +] N, D), cls token first if there is one."""
        tokens = self.patch_embed(x)
        if self.cls_token is not None:
            tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        tokens = tokens + self.pos_embed_for(self.token_grid(x)).to(tokens.dtype)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)

    def forward(self, x: Tensor) -> Tensor:
        """Returns the pooled feature (B, D): the cls token, or the mean of the patch tokens."""
        tokens = self.forward_features(x)
        return tokens[:, 0] if self.cls_token is not None else tokens.mean(dim=1)

    def fit_pos_embed(self, value: Tensor) -> Tensor | None:
        """Returns a checkpoint's pos_embed fitted to this model, or None if it cannot be.

        The file's grid is inferred from its token count (square, with or without a cls
        position, over this model's frames or a single frame); its cls position is dropped or
        zero-filled to match this model, then the grid is interpolated.
        """
        if value.dim() != 3 or value.shape[0] != 1 or value.shape[2] != self.embed_dim:
            return None
        for frames in dict.fromkeys((self.grid[0], 1)):
            for prefix in dict.fromkeys((self.num_prefix_tokens, 1 - self.num_prefix_tokens)):
                patches = value.shape[1] - prefix
                side = math.isqrt(max(patches, 0) // frames)
                if side > 0 and frames * side * side == patches:
                    head = value[:, :prefix][:, : self.num_prefix_tokens]
                    if head.shape[1] < self.num_prefix_tokens:
                        head = value.new_zeros(1, self.num_prefix_tokens, self.embed_dim)
                    padded = torch.cat([head, value[:, prefix:]], dim=1)
                    grid = (frames, side, side)
                    return _resize_pos_embed(padded, self.num_prefix_tokens, grid, self.grid)
        return None


def _check_options(given: dict[str, Any]) -> tuple[int, int]:
    """Validates the constructor's arguments (by name); returns img_size as (height, width)."""
    img_size, patch, pos_embed = given["img_size"], given["patch_size"], given["pos_embed"]
    dim, heads = given["embed_dim"], given["num_heads"]
    hw = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    positive = ("patch_size", "in_chans", "embed_dim", "depth", "num_heads", "num_frames")
    for key in (*positive, "tubelet_size"):
        if not isinstance(given[key], int) or isinstance(given[key], bool) or given[key] < 1:
            raise ConfigError(f"VisionTransformer: {key}={given[key]!r} must be a positive integer")
    if len(hw) != 2 or any(not isinstance(s, int) or s < patch or s % patch for s in hw):
        raise ConfigError(
            f"VisionTransformer: img_size={img_size!r} must be a multiple of patch_size={patch} "
            "(one int or (height, width))"
        )
    if dim % heads:
        raise ConfigError(f"VisionTransformer: num_heads={heads} must divide embed_dim={dim}")
    if given["num_frames"] % given["tubelet_size"]:
        raise ConfigError(
            f"VisionTransformer: tubelet_size={given['tubelet_size']} must divide "
            f"num_frames={given['num_frames']}"
        )
    if pos_embed not in _POS_EMBEDS:
        raise ConfigError(
            f"VisionTransformer: pos_embed={pos_embed!r} is not one of {list(_POS_EMBEDS)}"
            f"{did_you_mean(str(pos_embed), _POS_EMBEDS)}"
        )
    if not 0.0 <= given["drop_path_rate"] < 1.0:
        raise ConfigError(
            f"VisionTransformer: drop_path_rate={given['drop_path_rate']!r} must be in [0, 1)"
        )
    return hw


def _sinusoid_table(num_positions: int, dim: int) -> Tensor:
    """Returns VideoMAE's fixed (1, positions, dim) table: sin on even, cos on odd channels."""
    position = torch.arange(num_positions, dtype=torch.float64).unsqueeze(1)
    exponent = 2 * torch.div(torch.arange(dim), 2, rounding_mode="floor").double() / dim
    angles = position / torch.pow(10000.0, exponent)
    table = torch.where(torch.arange(dim) % 2 == 0, torch.sin(angles), torch.cos(angles))
    return table.float().unsqueeze(0)


def _resize_pos_embed(pos: Tensor, prefix: int, old: Grid, new: Grid) -> Tensor:
    """Interpolates the grid part of `pos` from `old` to `new`, keeping the prefix rows.

    Bicubic over height and width per frame (what a ViT fine-tuned at another resolution
    uses), then linear over time if the frame count differs.
    """
    (t0, h0, w0), (t1, h1, w1) = old, tuple(new)
    dim = pos.shape[-1]
    grid = pos[:, prefix:].float().reshape(t0, h0, w0, dim).permute(0, 3, 1, 2)
    if (h0, w0) != (h1, w1):
        grid = F.interpolate(grid, size=(h1, w1), mode="bicubic", align_corners=False)
    if t0 != t1:  # (T, D, H, W) -> (1, D, T, H, W) for interpolation over time
        grid = grid.permute(1, 0, 2, 3).unsqueeze(0)
        grid = F.interpolate(grid, size=(t1, h1, w1), mode="trilinear", align_corners=False)
        grid = grid.squeeze(0).permute(1, 0, 2, 3)
    grid = grid.permute(0, 2, 3, 1).reshape(1, t1 * h1 * w1, dim).to(pos.dtype)
    return torch.cat([pos[:, :prefix], grid], dim=1)


def _resize_loaded_pos_embed(
    module: VisionTransformer, state: dict[str, Any], prefix: str, *_: Any
) -> None:
    """Load pre-hook: fits a learned pos_embed of another grid in `state` before it loads."""
    key = f"{prefix}pos_embed"
    value = state.get(key)
    if not isinstance(module.pos_embed, nn.Parameter) or not isinstance(value, Tensor):
        return
    if value.shape == module.pos_embed.shape:
        return
    fitted = module.fit_pos_embed(value)
    if fitted is not None:  # else load_state_dict reports the size mismatch itself
        logger.info("Resized %s from %s to %s", key, tuple(value.shape), tuple(fitted.shape))
        state[key] = fitted


# Keys of other code bases that are not part of the backbone: classification heads, MAE /
# VideoMAE decoders, distillation tokens.
def _sized_vit(name: str, dim: int, heads: int, depth: int, options: dict) -> VisionTransformer:
    """Builds a VisionTransformer of a named width, checking the other options."""
    fixed = sorted({"embed_dim", "num_heads"} & set(options))
    if fixed:
        raise ConfigError(
            f"{name} fixes embed_dim={dim} and num_heads={heads}; remove {fixed}, or build "
            "VisionTransformer(...) directly for another width"
        )
    check_arguments(VisionTransformer, options, name)
    return VisionTransformer(embed_dim=dim, depth=depth, num_heads=heads, **options)


@BACKBONES.register()
def vit_tiny(*, depth: int = 12, **options: Any) -> VisionTransformer:
    """Builds ViT-Tiny (width 192, 3 heads); other VisionTransformer options by keyword."""
    return _sized_vit("vit_tiny", 192, 3, depth, options)


@BACKBONES.register()
def vit_small(*, depth: int = 12, **options: Any) -> VisionTransformer:
    """Builds ViT-Small (width 384, 6 heads); other VisionTransformer options by keyword."""
    return _sized_vit("vit_small", 384, 6, depth, options)


@BACKBONES.register()
def vit_base(*, depth: int = 12, **options: Any) -> VisionTransformer:
    """Builds ViT-Base (width 768, 12 heads); other VisionTransformer options by keyword."""
    return _sized_vit("vit_base", 768, 12, depth, options)
