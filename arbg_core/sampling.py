"""Generation with a KV cache, and exact teacher-forced log densities; both return log q in nats.

`extend` is the unit of work: it continues a batch from position `start` to `stop` one token at a
time, updating the cache, and returns the new bins with their log probability. `sample` calls it
once for the whole conformation; twisted SMC calls it once per residue block and reorders the
cache between blocks. For a sample x (nm), log q(x) = sum_j log P_j(k_j) + tokenizer.log_jacobian,
and `log_prob(x)` recomputes the same number from one teacher-forced pass.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Callable

import numpy as np
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from . import frames
from .model import ArBG, Conditioning, KVCache, conditioning, token_log_probs
from .peptide import AtomFeatures
from .tokenizer import Tokenizer

Progress = Callable[[int, int], None]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


# cuDNN attention builds a plan for every new key length (seconds per new shape in bf16 on an
# H100): generation changes the key length at every step, so leave it out.
_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


@contextmanager
def inference(model: ArBG, device: torch.device, bf16: bool | None = None):
    """Everything a generation or scoring pass runs under; yields the dtype for a KVCache.

    The model must already be on `device` and in eval mode (`checkpoint.load` and
    `checkpoint.prepare_for_inference` make it so, once): a model shared between app users is
    never moved or switched here. Inference mode; bf16 autocast of the forward pass if `bf16`
    (default: on CUDA only), while log probabilities stay fp32/fp64. smc.py wraps its `extend`
    calls in this too.
    """
    check_ready(model, device)
    bf16 = device.type == "cuda" if bf16 is None else bool(bf16)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    with torch.inference_mode(), sdpa_kernel(_BACKENDS), autocast:
        yield torch.bfloat16 if bf16 else next(model.parameters()).dtype


def model_device(model: ArBG) -> torch.device:
    return next(model.parameters()).device


def check_ready(model: ArBG, device: torch.device) -> None:
    """ValueError unless `model` is in eval mode on `device` (what a sampling pass needs)."""
    here = model_device(model)
    if here.type != device.type or (device.index is not None and here.index != device.index):
        raise ValueError(f"the model is on {here}, the pass asks for {device}: load it there "
                         "(checkpoint.load(path, device) or checkpoint.prepare_for_inference)")
    if model.training:
        raise ValueError("the model is in training mode: call checkpoint.prepare_for_inference "
                         "(or .eval()) once before sampling")


def _draw(logits: torch.Tensor, tau: float, generator: torch.Generator | None):
    """logits (B, V) -> (bins (B,) long, log P(bin) (B,) float64) at temperature tau.

    Inverse-CDF sampling: one uniform per row against the cumulative probabilities. Exact, and
    on CPU ~20x cheaper than torch.multinomial, which draws an exponential per bin.
    """
    logp = torch.log_softmax(logits.float() / tau, dim=-1)  # (B, V) fp32
    cdf = logp.exp().cumsum(dim=-1)  # (B, V)
    u = torch.rand(cdf.shape[0], 1, generator=generator, device=cdf.device) * cdf[:, -1:]
    # side="right": c[k-1] <= u < c[k], so the chosen bin always has P > 0.
    k = torch.searchsorted(cdf, u, right=True).clamp_(max=cdf.shape[1] - 1)  # (B, 1)
    return k.squeeze(1), logp.gather(1, k).squeeze(1).double()


def extend(model: ArBG, cond: Conditioning, cache: KVCache, last_token: torch.Tensor, start: int,
           stop: int, tau: float = 1.0, generator: torch.Generator | None = None,
           on_token: Callable[[int], None] | None = None, log_p1: torch.Tensor | None = None
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Generate coordinates [start, stop) with the cache; cache.length goes start -> stop.

    last_token (B,) is the input at position `start`: BOS when start == 0, else the bin of
    coordinate start - 1 (the last column of the previous call's bins). cond has batch B or 1.
    Returns new_bins (B, stop - start) long and log_p (B,) float64, the sum of their log P_j.
    Call it under `inference(model, device)`, as `sample` does. log_p1 (B,) float64, if given,
    gets the tau = 1 log P of the new bins added in place (the same logits: no extra pass).
    """
    B = last_token.shape[0]
    bins = torch.empty(B, stop - start, dtype=torch.long, device=last_token.device)
    log_p = torch.zeros(B, dtype=torch.float64, device=last_token.device)
    token = last_token
    for j in range(start, stop):
        logits = model(token[:, None], cond, kv_cache=cache, start=j)  # (B, 1, V)
        token, lp = _draw(logits[:, -1], tau, generator)
        bins[:, j - start] = token
        log_p += lp
        if log_p1 is not None:
            log_p1 += lp if tau == 1.0 else torch.log_softmax(logits[:, -1].float(), -1).gather(
                1, token[:, None]).squeeze(1).double()
        if on_token is not None:
            on_token(j - start + 1)
    return bins, log_p


def _generate_uncached(model: ArBG, cond: Conditioning, B: int, tau: float,
                       generator: torch.Generator | None, on_token=None):
    """Reference path: re-encode the whole prefix for every token (for the benchmark)."""
    T = cond.n_tokens
    tokens = torch.full((B, T + 1), model.bos, dtype=torch.long, device=cond.valid.device)
    log_p = torch.zeros(B, dtype=torch.float64, device=cond.valid.device)
    for j in range(T):
        logits = model(tokens[:, : j + 1], cond)  # (B, j + 1, V)
        k, lp = _draw(logits[:, -1], tau, generator)
        tokens[:, j + 1] = k
        log_p += lp
        if on_token is not None:
            on_token(j + 1)
    return tokens[:, 1:], log_p


def sample(model: ArBG, tokenizer: Tokenizer, features: AtomFeatures, n: int, tau: float = 1.0,
           seed: int = 0, batch_size: int = 1024, device: str | torch.device = "auto",
           use_kv_cache: bool = True, progress: Progress | None = None,
           bf16: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Draw n conformations of one system: xyz (n, A, 3) float32 nm and log_q (n,) float64.

    xyz are not re-centered (centered frame: q is a density on R^{3A}; body frame: on the
    conformations with the first frame atom at the origin; score them with
    `log_prob(center=False)`). Same seed and device -> same samples. progress(done, total)
    counts generated tokens (total = n * T). bf16: autocast the forward pass (default: CUDA only).
    """
    device = resolve_device(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    cond = conditioning(features, device=device, frame=tokenizer.cfg.frame)
    T = cond.n_tokens
    if T > model.cfg.max_tokens:
        raise ValueError(f"{T // 3} atoms exceed the model's max_atoms {model.cfg.max_atoms}")
    xyz, log_q = [], []
    with inference(model, device, bf16) as dtype:
        for first in range(0, n, batch_size):
            B = min(batch_size, n - first)
            on_token = None
            if progress is not None:
                def on_token(j, done=first * T, B=B):
                    progress(done + B * j, n * T)
            if use_kv_cache:
                cache = KVCache(model.cfg, B, T, device=device, dtype=dtype)
                bos = torch.full((B,), model.bos, dtype=torch.long, device=device)
                bins, lp = extend(model, cond, cache, bos, 0, T, tau, generator, on_token)
            else:
                bins, lp = _generate_uncached(model, cond, B, tau, generator, on_token)
            x, frame_jac = tokenizer.decode_system(bins, features, generator)  # (B, A, 3), (B,)
            xyz.append(x.cpu().numpy())
            log_q.append(lp.cpu().numpy() + tokenizer.log_jacobian_tokens(T)
                         + frame_jac.cpu().numpy())
    if not xyz:
        return np.zeros((0, features.n_atoms, 3), np.float32), np.zeros(0, np.float64)
    return np.concatenate(xyz), np.concatenate(log_q)


def bins_log_prob(model: ArBG, bins: torch.Tensor, cond: Conditioning,
                  tau: float = 1.0) -> torch.Tensor:
    """Teacher-forced sum_j log P_j(k_j) over valid tokens: bins (B, T) -> (B,) float64."""
    return token_log_probs(model, bins, cond, tau).double().sum(dim=1)


KV_CACHE_BYTES = 2**30  # one batch's keys and values (float32)


def batch_for(model: ArBG, n_atoms: int, n: int, kv_bytes: int = KV_CACHE_BYTES) -> int:
    """Proposals to generate together: as many as `n` allows within `kv_bytes` of KV cache.

    Larger batches amortize each step's per-operation overhead. On the 2-core EPYC of the
    README (2,000 samples, idle, warm): ala2 256 -> 9.4-9.8 s, 1,024 -> 7.2-7.4 s, 2,000 ->
    6.2-6.7 s; capped tri-alanine 256 -> 20.6 s, 2,048 -> 16.3 s."""
    c = model.cfg
    per_sample = 2 * c.n_layers * c.n_heads * c.head_dim * 3 * n_atoms * 4
    return max(1, min(int(n), kv_bytes // per_sample))


CPU_LOGITS_PER_PASS = 2**23  # floats (32 MiB): beyond that a CPU pass slows ~3x (bench: cache)


def pass_rows(n_tokens: int, n_bins: int) -> int:
    """Frames per teacher-forced pass on a CPU: the (frames, tokens, bins) logits of one pass
    stay about cache-sized. Measured on ala2 (2,048 mirror images, 2 cores): 64-256 frames per
    pass took 3.5-4.6 s, 1,024 frames 11.3 s, with identical results."""
    return max(1, CPU_LOGITS_PER_PASS // (n_tokens * n_bins))


def log_prob(model: ArBG, tokenizer: Tokenizer, features: AtomFeatures, xyz: np.ndarray,
             tau: float = 1.0, batch_size: int = 256, device: str | torch.device = "auto",
             center: bool = False, bf16: bool | None = None) -> np.ndarray:
    """Exact log q of given conformations xyz (n, A, 3) nm: (n,) float64, one pass per batch.

    center=False scores x exactly as given (use it for samples and their mirror images);
    center=True first removes each frame's centroid (data frames, whose position is arbitrary).
    The body frame scores any x by its conformation (position and orientation removed).
    Points outside the box are scored as their clamped bin.
    """
    device = resolve_device(device)
    xyz = np.asarray(xyz)
    if xyz.ndim != 3 or xyz.shape[1:] != (features.n_atoms, 3):
        raise ValueError(f"xyz must be (n, {features.n_atoms}, 3), got {xyz.shape}")
    cond = conditioning(features, device=device, frame=tokenizer.cfg.frame)
    jac = tokenizer.log_jacobian_tokens(cond.n_tokens)
    if device.type == "cpu":
        batch_size = min(batch_size, pass_rows(cond.n_tokens, model.cfg.n_bins))
    out = []
    with inference(model, device, bf16):
        for first in range(0, len(xyz), batch_size):
            bins, _, frame_jac = tokenizer.encode_system(xyz[first:first + batch_size], features,
                                                         center=center)
            lp = bins_log_prob(model, bins.to(device), cond, tau).cpu().numpy()
            out.append(lp + jac + frame_jac.numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float64)


class BlockProposal:
    """The model as twisted SMC's proposal (smc.py): n particles grown one residue block at a time.

    The one place SMC touches the model. It owns the particles' KV cache, bins (n, T) and
    accumulated log q (n,). `proposal(r)`, r = 1..R in order, generates the atoms of
    blocks[r - 1] = [start, stop), tokens [3 start, 3 stop) (body frame: 6 fewer, all from the
    first block, which holds the frame atoms), and returns their coordinates xyz
    (n, stop - start, 3) float32 nm (uniformly dequantized with the generator, not centered; body
    frame: rotated by each particle's uniform rotation, drawn with the first block) and the log q
    increment (n,) float64: the block's log P_j plus its share of the Jacobian, so the increments
    of all blocks sum to log q(x) as `sample` returns it. `reorder(indices)` applies SMC
    resampling to the cache, bins, rotations and log q together.
    """

    def __init__(self, model: ArBG, tokenizer: Tokenizer, features: AtomFeatures, n: int,
                 blocks, tau: float = 1.0, generator: torch.Generator | None = None,
                 seed: int = 0, device: str | torch.device = "auto", bf16: bool | None = None):
        self.model, self.tokenizer, self.tau, self.bf16 = model, tokenizer, float(tau), bf16
        self.device = resolve_device(device)
        self.generator = generator or torch.Generator(device=self.device).manual_seed(seed)
        self.blocks = [(int(a), int(b)) for a, b in blocks]
        if getattr(frames.get_frame(tokenizer.cfg.frame), "heavy_first", False):
            raise ValueError("twisted SMC needs each residue's tokens together; the "
                             f"{tokenizer.cfg.frame!r} frame puts heavy atoms first: use SNIS")
        self.features, self.body = features, tokenizer.cfg.frame == "body"
        self.cond = conditioning(features, device=self.device, frame=tokenizer.cfg.frame)
        T = self.cond.n_tokens
        if T > model.cfg.max_tokens:
            raise ValueError(f"{T // 3} atoms exceed the model's max_atoms {model.cfg.max_atoms}")
        if self.blocks[0][0] != 0 or self.blocks[-1][1] != features.n_atoms or any(
                a[1] != b[0] for a, b in zip(self.blocks, self.blocks[1:])):
            raise ValueError("blocks must tile the atoms [0, n_atoms) in order")
        if self.body and max(frames.frame_atoms(features)) >= self.blocks[0][1]:
            raise ValueError("the body frame's atoms must lie in the first block")
        self.rotations = None  # body frame: (n, 3, 3), drawn with the first block
        with inference(model, self.device, bf16) as dtype:
            self.cache = KVCache(model.cfg, n, T, device=self.device, dtype=dtype)
        self.bins = torch.zeros(n, T, dtype=torch.long, device=self.device)
        self.log_q = np.zeros(n, dtype=np.float64)
        self.n_blocks_done = 0
        self.n_evaluations = 0  # conditionals evaluated: particles x tokens

    @property
    def n(self) -> int:
        return int(self.bins.shape[0])

    def __call__(self, r: int) -> tuple[np.ndarray, np.ndarray]:
        if r != self.n_blocks_done + 1:
            raise ValueError(f"block {r} requested after {self.n_blocks_done} blocks")
        start, stop = self._tokens(r)
        if start == 0:
            last = torch.full((self.n,), self.model.bos, dtype=torch.long, device=self.device)
        else:
            last = self.bins[:, start - 1]
        with inference(self.model, self.device, self.bf16):
            new, lp = extend(self.model, self.cond, self.cache, last, start, stop, self.tau,
                             self.generator)
            self.bins[:, start:stop] = new
            xyz, frame_jac = self._decode(r, new)  # (n, A_r, 3), (n,)
        inc = lp.cpu().numpy() + self.tokenizer.log_jacobian_tokens(stop - start) + frame_jac
        self.log_q = self.log_q + inc
        self.n_blocks_done = r
        self.n_evaluations += self.n * (stop - start)
        return xyz, inc

    def _tokens(self, r: int) -> tuple[int, int]:
        """Token range [start, stop) of block r (1-based)."""
        start, stop = 3 * self.blocks[r - 1][0], 3 * self.blocks[r - 1][1]
        if self.body:  # the frame atoms' six fixed coordinates are no tokens
            start, stop = max(start - 6, 0), stop - 6
        return start, stop

    def _decode(self, r: int, new: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Block r's bins (n, t) -> (xyz (n, A_r, 3) float32 nm, frame log-Jacobian (n,))."""
        values = self.tokenizer.decode(new, self.generator).double()  # (n, t / 3, 3) nm
        if not self.body:
            return values.float().cpu().numpy(), np.zeros(self.n)
        if r > 1:
            return frames.rebuild(values, self.rotations).float().cpu().numpy(), np.zeros(self.n)
        stop = self.blocks[0][1]  # the first block: the frame and the rest of its atoms
        frame = frames.frame_atoms(self.features)
        atom, axis = frames.token_atoms_and_axes(self.features.n_atoms, frame)
        t = 3 * stop - 6
        c = torch.zeros(self.n, stop, 3, dtype=torch.float64, device=values.device)
        c[:, atom[:t], axis[:t]] = values.flatten(1)
        self.rotations = frames.random_rotations(self.n, self.generator, device=values.device)
        jac = frames.log_jacobian(c, frame).cpu().numpy()
        return frames.rebuild(c, self.rotations).float().cpu().numpy(), jac

    def reorder(self, indices) -> None:
        """Particle i becomes old particle indices[i] (repeats allowed; n may change)."""
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.long, device=self.device)
        with inference(self.model, self.device, self.bf16):
            self.cache.reorder(idx)
            self.bins = self.bins.index_select(0, idx)
            if self.rotations is not None:
                self.rotations = self.rotations.index_select(0, idx)
        self.log_q = self.log_q[np.asarray(indices)]
