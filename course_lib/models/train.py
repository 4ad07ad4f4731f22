"""Training the capstone's language model: characters of Python's documentation, AdamW with decoupled
weight decay (none on norms and biases), an optional z-loss, gradient clipping, a progress bar, W&B.

Lecture 4, "Modern Transformer Models": Llama is trained with **AdamW**; Falcon "using **z-loss** for
stability and **weight decay**". Both are here:

* AdamW (Loshchilov & Hutter 2019) decays the weights *outside* the adaptive step,
  θ ← θ − η (m̂ / (√v̂ + ε) + λ θ), instead of adding λθ to the gradient (which Adam would then rescale);
  as in GPT-1 and nanoGPT, only matrices and embeddings decay: norm gains and biases do not (shrinking a gain
  towards 0 is not a sensible prior). ``param_groups`` makes the two groups.
* z-loss (PaLM, Chowdhery et al. 2022, §5): with Z = Σ_v exp(logit_v) the softmax normaliser,
  L = CE + c · (log Z)², c = 10⁻⁴ in PaLM; it keeps log Z near 0, so the logits do not drift to large
  values that make bfloat16 training unstable. ``z_loss`` is the mean of (log Z)² over the tokens.

Data: Python's own ``pydoc_data.topics`` (``course_lib.data.pydoc_text``, about 465 k characters of English
documentation prose, shipped with every Python), one token per character; the first 90 % of the text trains,
the last 10 % validates (as nanoGPT's shakespeare_char).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import pydoc_text

__all__ = ["CharTokenizer", "CharData", "char_data", "z_loss", "lm_loss", "param_groups", "make_optimizer",
           "lr_at", "TrainConfig", "get_batch", "evaluate", "train_lm", "config_dict"]


# ---------------------------------------------------------------------------------------------------------
# Data: characters of the pydoc topics
# ---------------------------------------------------------------------------------------------------------
class CharTokenizer:
    """One token per distinct character of ``text`` (sorted): ``encode`` str → int64 (n,), ``decode`` back."""

    def __init__(self, text: str):
        self.chars = sorted(set(text))
        self.stoi = {c: i for i, c in enumerate(self.chars)}

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, s: str) -> Tensor:
        unknown = sorted(set(s) - self.stoi.keys())
        if unknown:
            raise ValueError(f"characters not in the vocabulary: {''.join(unknown)!r}")
        return torch.tensor([self.stoi[c] for c in s], dtype=torch.int64)

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)


@dataclass
class CharData:
    tokenizer: CharTokenizer
    train: Tensor          # (n_train,) int64
    val: Tensor            # (n_val,) int64


def char_data(val_fraction: float = 0.1, text: str | None = None) -> CharData:
    """The pydoc text as characters: the first 1 − ``val_fraction`` trains, the rest validates."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    text = pydoc_text() if text is None else text
    tok = CharTokenizer(text)
    ids = tok.encode(text)
    n = int(len(ids) * (1 - val_fraction))
    return CharData(tok, ids[:n], ids[n:])


def get_batch(data: Tensor, batch_size: int, block_size: int, generator: torch.Generator,
              device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """Random windows of the token stream: inputs x (B, T) and targets y (B, T) = x shifted by one."""
    if len(data) <= block_size:
        raise ValueError(f"need more than block_size = {block_size} tokens, got {len(data)}")
    start = torch.randint(len(data) - block_size, (batch_size,), generator=generator)   # (B,)
    offsets = start[:, None] + torch.arange(block_size + 1)                             # (B, T + 1)
    chunk = data[offsets]
    return chunk[:, :-1].to(device), chunk[:, 1:].to(device)


# ---------------------------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------------------------
def z_loss(logits: Tensor) -> Tensor:
    """PaLM's z-loss: the mean over tokens of (log Z)², with log Z = log Σ_v exp(logit_v) the log of the
    softmax normaliser of each token's logits (Chowdhery et al. 2022, §5; the training loss adds c · z_loss).

    Inputs: logits (..., V), any number of leading (token) dimensions.
    Returns: a 0-dim tensor, the mean of (log Z)² over all leading positions. log Z is computed stably
      (logsumexp: subtract the max before exp) in float32 at least; the result is float32 (float64 for
      float64 logits). Its gradient is 2 · log Z · softmax(logits) / #tokens.
    """
    if logits.dim() < 1 or logits.shape[-1] == 0:
        raise ValueError(f"logits must have shape (..., V) with V >= 1, got {tuple(logits.shape)}")
    dt = torch.promote_types(logits.dtype, torch.float32)
    log_z = torch.logsumexp(logits.to(dt), dim=-1)          # (...,) log Σ_v exp(logit_v)
    return log_z.pow(2).mean()                              # ()


def lm_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy −log p(target) over all tokens: logits (B, T, V), targets (B, T)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))


# ---------------------------------------------------------------------------------------------------------
# The optimiser
# ---------------------------------------------------------------------------------------------------------
def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: matrices and embeddings (≥ 2 dims) decay; norm gains and biases (1 dim) do not.
    A parameter shared by two modules (tied embeddings) appears once."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():                     # named_parameters skips shared duplicates
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, lr: float, weight_decay: float = 0.1,
                   betas: tuple[float, float] = (0.9, 0.95)) -> torch.optim.AdamW:
    """AdamW (decoupled weight decay) on ``param_groups``; betas (0.9, 0.95) as GPT-3 and Llama."""
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas)


def lr_at(step: int, lr: float, steps: int, warmup: int, min_ratio: float = 0.1) -> float:
    """Linear warm-up for ``warmup`` steps, then cosine decay to ``min_ratio · lr`` at ``steps`` (Llama)."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, steps - warmup))
    return lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


# ---------------------------------------------------------------------------------------------------------
# The training loop
# ---------------------------------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    steps: int = 300
    batch_size: int = 32
    block_size: int = 64           # training context T
    lr: float = 3e-3
    warmup: int = 20
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1      # AdamW's λ on matrices and embeddings (0 for plain Adam)
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float | None = 1.0  # clip the global gradient norm (None: no clipping)
    z_loss: float = 0.0            # c: L = CE + c · z_loss(logits) (PaLM: 1e-4)
    moe_aux: float = 0.01          # coefficient of the MoE load-balancing loss (MoE models only)
    eval_every: int = 50
    eval_windows: int = 64         # validation windows of block_size tokens (the same ones every time)
    seed: int = 0


@torch.no_grad()
def evaluate(model: nn.Module, data: Tensor, block_size: int, windows: int, batch_size: int = 32) -> float:
    """Mean cross-entropy (nats per token) on the first ``windows`` non-overlapping windows of ``data``."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    n = min(windows, (len(data) - 1) // block_size)
    if n < 1:
        raise ValueError(f"validation data of {len(data)} tokens holds no window of {block_size + 1} tokens")
    x = data[: n * block_size].view(n, block_size)                     # (n, T)
    y = data[1: n * block_size + 1].view(n, block_size)                # (n, T)
    total = 0.0
    for i in range(0, n, batch_size):
        logits = model(x[i:i + batch_size].to(device))
        total += lm_loss(logits, y[i:i + batch_size].to(device)).item() * len(x[i:i + batch_size])
    model.train(was_training)
    return total / n


def train_lm(model: nn.Module, train_data: Tensor, val_data: Tensor, config: TrainConfig, *,
          z_loss_fn: Callable[[Tensor], Tensor] = z_loss, log: Callable[[dict], None] | None = None,
          progress: bool | str = True) -> dict[str, list]:
    """Train ``model`` (a ``GPT``) for ``config.steps`` AdamW steps on random windows of ``train_data``.

    Each step: loss = CE + c_z · z_loss_fn(logits) (+ MoE load balancing), backward, clip the gradient
    norm, warm-up/cosine learning rate, AdamW step. Every ``eval_every`` steps (and at the end) the
    validation loss on fixed windows of ``val_data``. ``log`` (e.g. a W&B run's ``log``) receives each
    step's metrics; ``progress``: a tqdm bar (a string is its label).
    Returns the history: step, loss, ce, log_z (mean |log Z|), grad_norm, lr, seconds; eval_step, val_loss.
    """
    from tqdm.auto import tqdm

    c = config
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(c.seed)
    opt = make_optimizer(model, c.lr, c.weight_decay, c.betas)
    hist: dict[str, list] = {k: [] for k in ("step", "loss", "ce", "log_z", "grad_norm", "lr", "seconds",
                                             "eval_step", "val_loss")}
    steps = range(c.steps)
    if progress:
        steps = tqdm(steps, desc=progress if isinstance(progress, str) else "training", leave=False)
    model.train()
    start = time.perf_counter()
    for step in steps:
        lr = lr_at(step, c.lr, c.steps, c.warmup, c.min_lr_ratio)
        for group in opt.param_groups:
            group["lr"] = lr
        x, y = get_batch(train_data, c.batch_size, c.block_size, gen, device)
        logits = model(x)                                               # (B, T, V)
        ce = lm_loss(logits, y)
        loss = ce
        if c.z_loss:
            loss = loss + c.z_loss * z_loss_fn(logits)                  # + c · mean (log Z)²
        if c.moe_aux and hasattr(model, "aux_loss"):
            loss = loss + c.moe_aux * model.aux_loss()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), c.grad_clip if c.grad_clip else float("inf"))
        opt.step()
        with torch.no_grad():
            log_z = torch.logsumexp(logits.detach().float(), dim=-1).abs().mean().item()
        hist["step"].append(step + 1)
        hist["loss"].append(loss.item())
        hist["ce"].append(ce.item())
        hist["log_z"].append(log_z)
        hist["grad_norm"].append(float(norm))
        hist["lr"].append(lr)
        hist["seconds"].append(time.perf_counter() - start)
        metrics = {"train/loss": loss.item(), "train/ce": ce.item(), "train/log_z": log_z,
                   "train/grad_norm": float(norm), "train/lr": lr}
        if (step + 1) % c.eval_every == 0 or step + 1 == c.steps:
            hist["eval_step"].append(step + 1)
            hist["val_loss"].append(evaluate(model, val_data, c.block_size, c.eval_windows))
            metrics["val/loss"] = hist["val_loss"][-1]
            if progress:
                steps.set_postfix(val_loss=f"{hist['val_loss'][-1]:.3f}")
        if log is not None:
            log({"step": step + 1, **metrics})
    return hist


def config_dict(model_config, train_config: TrainConfig) -> dict:
    """One flat dict of both configurations, for W&B."""
    return {**{f"model/{k}": v for k, v in asdict(model_config).items()},
            **{f"train/{k}": v for k, v in asdict(train_config).items()}}
