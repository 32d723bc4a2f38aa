"""The causal transformer: one categorical over bins per Cartesian coordinate.

Position j predicts coordinate j (axis j % 3 of atom j // 3). Its input token is the bin of
coordinate j - 1 (BOS = n_bins at j = 0), and added embeddings describe the coordinate being
predicted: axis, atom slot, atom name, element, residue type, residue index and sequence length.
These also give the position, so there are no other positional embeddings.

The model is stateless: a `KVCache` is created by the caller and passed to `forward`, so one
model can be shared read-only between users (the app's `st.cache_resource`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .frames import get_frame
from .peptide import ATOM_NAMES, ELEMENTS, MAX_RESIDUES, RESIDUE_TYPES, AtomFeatures


# ModelConfig.preset's sizes, smallest first (the CLI's `--size` choices).
_PRESETS = {
    "tiny": dict(n_bins=64, d_model=32, n_layers=2, n_heads=2, max_atoms=128),
    "small": dict(n_bins=1024, d_model=128, n_layers=4, n_heads=4),
    "base": dict(n_bins=1024, d_model=256, n_layers=8, n_heads=8),
    # mlp_ratio 2.875 puts the count at the paper's ~132M parameters.
    "large": dict(n_bins=8192, d_model=768, n_layers=16, n_heads=12, mlp_ratio=2.875),
}
SIZES = tuple(_PRESETS)  # ("tiny", "small", "base", "large")


@dataclass(frozen=True)
class ModelConfig:
    n_bins: int = 1024  # V; the BOS id is n_bins
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    mlp_ratio: float = 8 / 3  # SwiGLU hidden width = mlp_ratio * d_model, rounded up to 32
    max_atoms: int = 512  # size of the atom-slot embedding: at most 3 * max_atoms tokens
    dropout: float = 0.0
    # Vocabulary sizes are stored so that a checkpoint keeps working if peptide.py appends ids.
    n_elements: int = len(ELEMENTS)
    n_atom_names: int = len(ATOM_NAMES)
    n_residue_types: int = len(RESIDUE_TYPES)
    max_residues: int = MAX_RESIDUES

    def __post_init__(self):
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def mlp_hidden(self) -> int:
        return 32 * math.ceil(self.mlp_ratio * self.d_model / 32)

    @property
    def max_tokens(self) -> int:
        return 3 * self.max_atoms

    @classmethod
    def preset(cls, name: str, n_bins: int | None = None, **overrides) -> "ModelConfig":
        """tiny (tests), small (CPU-trainable, ~1M), base (paper single-system), large (~132M)."""
        if name not in _PRESETS:
            raise ValueError(f"unknown model preset {name!r}; choose one of {', '.join(SIZES)}")
        kw = _PRESETS[name] | overrides
        if n_bins is not None:
            kw["n_bins"] = n_bins
        return cls(**kw)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {', '.join(sorted(unknown))}")
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------- conditioning

_COND_FIELDS = ("axis", "slot", "atom_name", "element", "residue_type", "residue_index", "seq_len")


@dataclass(frozen=True)
class Conditioning:
    """Per-token features of the coordinate each position predicts; all (B, T) tensors.

    Systems shorter than T are right-padded with id 0 and `valid=False`. A batch of 1 broadcasts
    against any token batch size in `ArBG.forward`.
    """

    axis: torch.Tensor
    slot: torch.Tensor
    atom_name: torch.Tensor
    element: torch.Tensor
    residue_type: torch.Tensor
    residue_index: torch.Tensor
    seq_len: torch.Tensor
    valid: torch.Tensor  # (B, T) bool

    @property
    def n_tokens(self) -> int:
        return int(self.valid.shape[1])

    @property
    def batch_size(self) -> int:
        return int(self.valid.shape[0])

    @property
    def lengths(self) -> torch.Tensor:
        """(B,) number of real tokens per system."""
        return self.valid.sum(dim=1)

    def _map(self, fn) -> "Conditioning":
        return Conditioning(*(fn(getattr(self, k)) for k in _COND_FIELDS + ("valid",)))

    def to(self, device) -> "Conditioning":
        return self._map(lambda t: t.to(device))

    def index_select(self, batch_idx: torch.Tensor) -> "Conditioning":
        return self._map(lambda t: t.index_select(0, batch_idx.to(t.device)))

    def expand(self, batch_size: int) -> "Conditioning":
        if self.batch_size != 1:
            raise ValueError("only a batch-1 Conditioning can be expanded")
        return self._map(lambda t: t.expand(batch_size, -1))

    def window(self, start: int, stop: int) -> "Conditioning":
        """Positions [start, stop)."""
        return self._map(lambda t: t[:, start:stop])


def conditioning(features: AtomFeatures | list[AtomFeatures], device=None,
                 frame: str = "centered") -> Conditioning:
    """Per-token conditioning for one system (B = 1) or a right-padded batch of systems. Which
    atom and axis each token is comes from the tokenizer's `frame` (frames.py): all 3A
    coordinates atom-major ("centered"), or the 3A - 6 of the body frame ("body")."""
    systems = [features] if isinstance(features, AtomFeatures) else list(features)
    if not systems:
        raise ValueError("conditioning needs at least one system")
    tokens = [get_frame(frame).tokens(f) for f in systems]  # [(atom (t,), axis (t,))]
    T = max(len(atom) for atom, _ in tokens)
    out = {k: np.zeros((len(systems), T), dtype=np.int64) for k in _COND_FIELDS}
    valid = np.zeros((len(systems), T), dtype=bool)
    for b, (f, (atom, axis)) in enumerate(zip(systems, tokens)):
        t = len(atom)
        out["axis"][b, :t] = axis
        out["slot"][b, :t] = atom
        out["atom_name"][b, :t] = np.asarray(f.atom_name)[atom]
        out["element"][b, :t] = np.asarray(f.element)[atom]
        out["residue_type"][b, :t] = np.asarray(f.residue_type)[atom]
        out["residue_index"][b, :t] = np.asarray(f.residue_index)[atom]
        out["seq_len"][b, :t] = f.n_residues
        valid[b, :t] = True
    tensors = [torch.from_numpy(out[k]) for k in _COND_FIELDS] + [torch.from_numpy(valid)]
    cond = Conditioning(*tensors)
    return cond.to(device) if device is not None else cond


# ---------------------------------------------------------------- KV cache


class KVCache:
    """Keys and values of every layer for positions [0, length); the caller owns it.

    k, v: (n_layers, B, n_heads, max_tokens, head_dim). `forward` writes the positions it is given
    and advances `length`; `reorder` permutes the batch (SMC resampling).
    """

    def __init__(self, cfg: ModelConfig, batch_size: int, max_tokens: int, device=None,
                 dtype: torch.dtype = torch.float32):
        shape = (cfg.n_layers, batch_size, cfg.n_heads, max_tokens, cfg.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0

    @property
    def batch_size(self) -> int:
        return int(self.k.shape[1])

    @property
    def max_tokens(self) -> int:
        return int(self.k.shape[3])

    def update(self, layer: int, start: int, k: torch.Tensor, v: torch.Tensor):
        """Store k, v (B, H, t, hd) at [start, start + t); return all keys/values up to there."""
        stop = start + k.shape[2]
        if stop > self.max_tokens:
            raise ValueError(f"KV cache holds {self.max_tokens} tokens; asked for {stop}")
        self.k[layer, :, :, start:stop] = k
        self.v[layer, :, :, start:stop] = v
        return self.k[layer, :, :, :stop], self.v[layer, :, :, :stop]

    def reorder(self, indices: torch.Tensor) -> None:
        """Batch element i becomes old element indices[i] (indices may repeat; B may change)."""
        indices = indices.to(self.k.device)
        self.k = self.k.index_select(1, indices)
        self.v = self.v.index_select(1, indices)


# ---------------------------------------------------------------- the network


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)

    def forward(self, x, layer: int, kv_cache: KVCache | None, start: int):
        B, t, C = x.shape
        H, hd = self.cfg.n_heads, self.cfg.head_dim
        q, k, v = self.qkv(x).view(B, t, 3, H, hd).permute(2, 0, 3, 1, 4)  # each (B, H, t, hd)
        if kv_cache is not None:
            k, v = kv_cache.update(layer, start, k, v)  # (B, H, start + t, hd)
            k, v = k.to(q.dtype), v.to(q.dtype)
        if x.device.type == "cpu" and q.dtype == torch.bfloat16:
            # On CPUs the bf16 attention kernels are slower than fp32 ones (7x for the backward
            # on this AMX machine) while bf16 matmuls are faster: attention stays in fp32.
            with torch.autocast("cpu", enabled=False):
                y = self._attend(q.float(), k.float(), v.float(), start).to(q.dtype)
        else:
            y = self._attend(q, k, v, start)
        y = y.transpose(1, 2).reshape(B, t, C)  # (B, t, C)
        return self.proj(y)

    def _attend(self, q, k, v, start: int):
        t = q.shape[2]
        dropout = self.cfg.dropout if self.training else 0.0
        if k.shape[2] == t:  # no earlier positions: plain causal attention
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout)
        if t == 1:  # decoding: one new query sees the whole prefix
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
        # a block of t new queries after `start` cached positions
        qpos = torch.arange(start, start + t, device=q.device)[:, None]
        mask = torch.arange(k.shape[2], device=q.device)[None, :] <= qpos  # (t, start + t)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)


class SwiGLU(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_up = nn.Linear(cfg.d_model, 2 * cfg.mlp_hidden, bias=False)
        self.down = nn.Linear(cfg.mlp_hidden, cfg.d_model, bias=False)

    def forward(self, x):
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn_norm, self.attn = RMSNorm(cfg.d_model), Attention(cfg)
        self.mlp_norm, self.mlp = RMSNorm(cfg.d_model), SwiGLU(cfg)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x, layer, kv_cache, start):
        x = x + self.dropout(self.attn(self.attn_norm(x), layer, kv_cache, start))
        return x + self.dropout(self.mlp(self.mlp_norm(x)))


class ArBG(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.tok_emb = nn.Embedding(cfg.n_bins + 1, d)  # + BOS
        self.axis_emb = nn.Embedding(3, d)
        self.slot_emb = nn.Embedding(cfg.max_atoms, d)
        self.name_emb = nn.Embedding(cfg.n_atom_names, d)
        self.element_emb = nn.Embedding(cfg.n_elements, d)
        self.rtype_emb = nn.Embedding(cfg.n_residue_types, d)
        self.rindex_emb = nn.Embedding(cfg.max_residues, d)
        self.seqlen_emb = nn.Embedding(cfg.max_residues + 1, d)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(d)
        self.head = nn.Linear(d, cfg.n_bins, bias=False)
        self.apply(self._init)
        for name, p in self.named_parameters():  # scaled residual projections (GPT-2)
            if name.endswith(("attn.proj.weight", "mlp.down.weight")):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg.n_layers))

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)

    @property
    def bos(self) -> int:
        return self.cfg.n_bins

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def new_cache(self, batch_size: int, max_tokens: int, device=None, dtype=None) -> KVCache:
        p = next(self.parameters())
        return KVCache(self.cfg, batch_size, max_tokens, device or p.device, dtype or p.dtype)

    def forward(self, tokens: torch.Tensor, cond: Conditioning, kv_cache: KVCache | None = None,
                start: int = 0) -> torch.Tensor:
        """tokens (B, t) long at positions [start, start + t) -> logits (B, t, V) float32.

        tokens[:, i] is the input at position start + i (BOS or the previous coordinate's bin);
        cond must cover those positions (batch B or 1). With a cache, start must equal
        kv_cache.length, and the cache advances by t.
        """
        B, t = tokens.shape
        if kv_cache is not None and start != kv_cache.length:
            raise ValueError(f"start {start} != KV cache length {kv_cache.length}")
        if start + t > cond.n_tokens:
            raise ValueError(f"positions up to {start + t} but conditioning has {cond.n_tokens}")
        c = cond.window(start, start + t)
        x = (self.tok_emb(tokens) + self.axis_emb(c.axis) + self.slot_emb(c.slot)
             + self.name_emb(c.atom_name) + self.element_emb(c.element)
             + self.rtype_emb(c.residue_type) + self.rindex_emb(c.residue_index)
             + self.seqlen_emb(c.seq_len))  # (B, t, C); a batch-1 cond broadcasts
        for layer, block in enumerate(self.blocks):
            x = block(x, layer, kv_cache, start)
        if kv_cache is not None:
            kv_cache.length = start + t
        return self.head(self.norm(x)).float()  # (B, t, V)


def shift_right(bins: torch.Tensor, bos: int) -> torch.Tensor:
    """(B, T) target bins -> (B, T) inputs: BOS, then bins[:, :-1]."""
    first = torch.full_like(bins[:, :1], bos)
    return torch.cat([first, bins[:, :-1]], dim=1)


def token_log_probs(model: ArBG, bins: torch.Tensor, cond: Conditioning,
                    tau: float = 1.0) -> torch.Tensor:
    """Teacher-forced log P_j(k_j) at temperature tau: (B, T) float32, 0 at padded positions.

    `model` may be a DDP wrapper: the forward goes through it (gradient sync), BOS comes from
    the module inside."""
    return token_log_probs_at(model, bins, cond, (tau,))[0]


def token_log_probs_at(model: ArBG, bins: torch.Tensor, cond: Conditioning,
                       taus: tuple[float, ...]) -> list[torch.Tensor]:
    """token_log_probs at each of `taus`, from one forward pass."""
    bos = getattr(model, "module", model).bos
    logits = model(shift_right(bins, bos), cond).float()  # (B, T, V)
    out = []
    for tau in taus:
        logp = torch.log_softmax(logits if tau == 1.0 else logits / tau, dim=-1)
        logp = logp.gather(-1, bins.unsqueeze(-1)).squeeze(-1)  # (B, T)
        out.append(logp.masked_fill(~cond.valid, 0.0))
    return out


def train_loss(model: ArBG, bins: torch.Tensor, cond: Conditioning) -> torch.Tensor:
    """Mean cross-entropy (nats per token) over valid tokens; bins (B, T) long, cond (B or 1, T).

    `Tokenizer.nats_per_coordinate(loss)` converts it to NLL of the continuous density.
    """
    valid = cond.valid.expand(bins.shape[0], -1)
    logp = token_log_probs(model, bins, cond)  # (B, T)
    return -(logp.sum() / valid.sum())
