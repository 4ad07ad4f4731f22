"""Generative pre-training of a small decoder-only Transformer LM, then fine-tuning (Lecture 4, "Transformer
Language Model").

"Generative pre-training for a deep language model: each training example is an (unlabeled) sentence; the
objective function is the likelihood of the observed sentence. Practically, we can batch together many
such training examples to make training more efficient."

For a sentence w_1..w_n the model reads <bos> w_1 .. w_n and predicts w_1 .. w_n <eos>:

    log p(w_1..w_n) = Σ_{t=1}^{n+1} log p(w_t | w_<t),          w_{n+1} = <eos>            (one sentence)

Sentences of a batch have different lengths: they are right-padded with <pad> to the longest one and the
padding is masked out of the loss, so that the batch's objective is exactly the sum of its sentences'
log-likelihoods. The loss we minimise is the mean negative log-likelihood per (non-pad) token:

    L = − Σ_b log p(sentence_b) / Σ_b (n_b + 1)

With right padding and causal attention, a real token never attends to a pad (pads come after it), so a
batch gives the same numbers as the sentences one by one.

Text: Python's own documentation (``pydoc_data.topics``, shipped with every Python; ``course_lib.data``),
split into its distinct English sentences, then at random into a pre-training pool and a held-out test set.
The labelled task (labels made by code, ``word_order_task``): is a sentence real (1), or the same words
in a shuffled order (0)? Shapes: B sentences, T positions, V vocabulary, C classes, d = d_model.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..attention.core import causal_mask, multi_head_attention
from ..data import pydoc_topics

__all__ = ["PAD", "BOS", "EOS", "UNK", "split_sentences", "tokenize", "SentenceSplit", "pydoc_sentences",
           "shuffle_words", "word_order_task", "Vocab", "pad_batch", "masked_lm_loss", "sentence_log_likelihood",
           "LMConfig", "TransformerLM", "SentenceClassifier", "length_batches", "pretrain_lm", "evaluate_lm",
           "fine_tune_classifier", "accuracy", "prefers_real"]

# ---------------------------------------------------------------------------------------------------------
# Text: the sentences of the pydoc topics
# ---------------------------------------------------------------------------------------------------------
_TOKEN = re.compile(r"[a-z0-9_]+|[^\sa-z0-9_]")                    # words, numbers, single punctuation marks
_SENTENCE_END = re.compile(r'(?<=[.!?])\s+(?=["(*]?[A-Z])')         # ". " before a capital letter
_BOILERPLATE = ("New in version", "Changed in version", "Deprecated since", "Added in version")


def tokenize(sentence: str) -> list[str]:
    """Lower-cased words and single punctuation marks: 'The "if" statement.' → the " if " statement ."""
    return _TOKEN.findall(sentence.lower())


def _paragraphs(text: str):
    """Prose paragraphs of a pydoc topic: headings, grammar rules and interactive examples are dropped."""
    for block in re.split(r"\n\s*\n", text):
        lines = [line.strip() for line in block.splitlines() if line.strip()]
        if not lines or any(line.startswith((">>>", "...")) or "::=" in line for line in lines):
            continue
        if len(lines) >= 2 and set(lines[1]) <= set("*=-~^"):      # a heading and its underline
            continue
        if all(set(line) <= set("*=-~^+| ") for line in lines):     # a table rule
            continue
        yield " ".join(re.sub(r"^[*\-] ", "", line) for line in lines)   # bullets become plain text


def split_sentences(text: str, min_tokens: int = 5, max_tokens: int = 48) -> list[str]:
    """The English sentences of a pydoc topic: start with a capital letter, end with . ! or ?, mostly
    letters (code lines are dropped), between ``min_tokens`` and ``max_tokens`` tokens."""
    out = []
    for paragraph in _paragraphs(text):
        for s in _SENTENCE_END.split(paragraph):
            s = " ".join(s.split())
            if not re.match(r'^["(*]?[A-Z]', s) or not s.endswith((".", "!", "?")) or s.startswith(_BOILERPLATE):
                continue
            if sum(c.isalpha() or c == " " for c in s) < 0.75 * len(s):
                continue
            if min_tokens <= len(tokenize(s)) <= max_tokens:
                out.append(s)
    return out


@dataclass
class SentenceSplit:
    """train: the pre-training pool (unlabelled), from which the fine-tuning examples are also drawn;
    test: held out from pre-training *and* fine-tuning (the LM's held-out loss, the test accuracy)."""
    train: list[str]
    test: list[str]


def pydoc_sentences(test_fraction: float = 0.2, seed: int = 0) -> SentenceSplit:
    """Every distinct sentence of the pydoc topics, split at random (fixed seed) into train and test.

    Duplicates are kept once before the split ("if" and "else" are the same text, "compound" repeats the
    sections on each statement), so no sentence is on both sides.
    """
    distinct = sorted({s for text in pydoc_topics().values() for s in split_sentences(text)})
    order = torch.randperm(len(distinct), generator=torch.Generator().manual_seed(seed)).tolist()
    n_test = round(test_fraction * len(distinct))
    return SentenceSplit(train=[distinct[i] for i in order[n_test:]], test=[distinct[i] for i in order[:n_test]])


# ---------------------------------------------------------------------------------------------------------
# The labelled task: a real sentence (1) or the same words in a shuffled order (0)?
# ---------------------------------------------------------------------------------------------------------
def shuffle_words(ids: Sequence[int], generator: torch.Generator) -> list[int]:
    """The tokens of a sentence in a random order, all but the last one (the full stop stays at the end, so
    that "ends with a full stop" gives nothing away); a different order whenever one exists."""
    ids = list(ids)
    body, last = ids[:-1], ids[-1:]
    if len(set(body)) < 2:
        return ids
    while True:
        shuffled = [body[i] for i in torch.randperm(len(body), generator=generator).tolist()]
        if shuffled != body:
            return shuffled + last


def word_order_task(sentences: Sequence[Sequence[int]], generator: torch.Generator, *, both: bool = False
                    ) -> tuple[list[list[int]], list[int]]:
    """Labelled examples (token ids, label): 1 = the real sentence, 0 = its words shuffled.

    both=False: a random half of the sentences is shuffled (the fine-tuning examples);
    both=True: every sentence twice, real and shuffled (the test set: exactly balanced, paired).
    """
    if both:
        return ([list(s) for s in sentences] + [shuffle_words(s, generator) for s in sentences],
                [1] * len(sentences) + [0] * len(sentences))
    shuffled = set(torch.randperm(len(sentences), generator=generator)[: len(sentences) // 2].tolist())
    examples = [shuffle_words(s, generator) if i in shuffled else list(s) for i, s in enumerate(sentences)]
    return examples, [0 if i in shuffled else 1 for i in range(len(sentences))]


# ---------------------------------------------------------------------------------------------------------
# Vocabulary and batches
# ---------------------------------------------------------------------------------------------------------
PAD, BOS, EOS, UNK = 0, 1, 2, 3
_SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")


class Vocab:
    """Word-level vocabulary: the special tokens, then every token seen ``min_count`` times in the
    training sentences (others map to <unk>)."""

    def __init__(self, sentences: Sequence[str], min_count: int = 2):
        counts = Counter(tok for s in sentences for tok in tokenize(s))
        words = sorted(w for w, c in counts.items() if c >= min_count)
        self.itos: list[str] = [*_SPECIALS, *words]
        self.stoi: dict[str, int] = {w: i for i, w in enumerate(self.itos)}

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, sentence: str) -> list[int]:
        return [self.stoi.get(tok, UNK) for tok in tokenize(sentence)]

    def decode(self, ids: Sequence[int]) -> str:
        return " ".join(self.itos[i] for i in ids if i != PAD)


def pad_batch(sentences: Sequence[Sequence[int]], device: torch.device | str | None = None
              ) -> tuple[Tensor, Tensor, Tensor]:
    """Right-pad token-id sentences into one batch.

    Returns (inputs, targets, pad_mask), each (B, T) with T = 1 + the longest sentence:
      inputs  = <bos> w_1 .. w_n <pad> ...     (what the model reads)
      targets = w_1 .. w_n <eos> <pad> ...     (what it must predict at each position)
      pad_mask: True at padding positions (excluded from the loss).
    """
    if not sentences:
        raise ValueError("pad_batch needs at least one sentence")
    T = 1 + max(len(s) for s in sentences)
    inputs = torch.full((len(sentences), T), PAD, dtype=torch.long)
    targets = torch.full((len(sentences), T), PAD, dtype=torch.long)
    for b, s in enumerate(sentences):
        n = len(s)
        inputs[b, 0], inputs[b, 1:n + 1] = BOS, torch.tensor(s, dtype=torch.long)
        targets[b, :n], targets[b, n] = torch.tensor(s, dtype=torch.long), EOS
    pad_mask = torch.arange(T)[None, :] > torch.tensor([len(s) for s in sentences])[:, None]   # (B, T)
    return inputs.to(device), targets.to(device), pad_mask.to(device)


# ---------------------------------------------------------------------------------------------------------
# The objective: likelihood of each observed sentence, padding masked out
# ---------------------------------------------------------------------------------------------------------
def _check_lm_args(logits: Tensor, targets: Tensor, pad_mask: Tensor) -> None:
    if logits.dim() != 3 or targets.shape != logits.shape[:2] or pad_mask.shape != targets.shape:
        raise ValueError(f"expected logits (B, T, V), targets (B, T), pad_mask (B, T), got {tuple(logits.shape)}, "
                         f"{tuple(targets.shape)}, {tuple(pad_mask.shape)}")
    if pad_mask.dtype != torch.bool:
        raise TypeError(f"pad_mask must be a boolean tensor, got {pad_mask.dtype}")


def sentence_log_likelihood(logits: Tensor, targets: Tensor, pad_mask: Tensor) -> Tensor:
    """log p(sentence_b) = Σ_t log p(w_t | w_<t) over the real (non-pad) positions of each sentence.

    Inputs:
      logits: (B, T, V) the model's scores at each position;  targets: (B, T) int64, the next tokens;
      pad_mask: (B, T) bool, True at padding positions (their targets are ignored, whatever they hold).
    Returns: (B,) in logits' dtype (≤ 0; 0 for a sentence that is all padding).
    """
    _check_lm_args(logits, targets, pad_mask)
    log_p = torch.log_softmax(logits, dim=-1)                                   # (B, T, V), stable
    safe = targets.masked_fill(pad_mask, 0)                                     # any valid index at pads
    picked = log_p.gather(-1, safe[..., None]).squeeze(-1)                      # log p(w_t | w_<t)  (B, T)
    return picked.masked_fill(pad_mask, 0.0).sum(dim=-1)                        # Σ over real positions (B,)


def masked_lm_loss(logits: Tensor, targets: Tensor, pad_mask: Tensor) -> Tensor:
    """Mean negative log-likelihood per real token: −Σ_{b,t not pad} log p(targets[b,t]) / #(not pad).

    Inputs: as ``sentence_log_likelihood``; at least one position must be real.
    Returns: a 0-dim tensor in logits' dtype; equal to F.cross_entropy over the real positions only.
    """
    _check_lm_args(logits, targets, pad_mask)
    n_real = (~pad_mask).sum()
    if int(n_real) == 0:
        raise ValueError("masked_lm_loss: every position is padding")
    log_p = torch.log_softmax(logits, dim=-1)                                   # (B, T, V), stable
    safe = targets.masked_fill(pad_mask, 0)                                     # any valid index at pads
    picked = log_p.gather(-1, safe[..., None]).squeeze(-1)                      # log p(w_t | w_<t)  (B, T)
    return -picked.masked_fill(pad_mask, 0.0).sum() / n_real                    # mean NLL per real token


# ---------------------------------------------------------------------------------------------------------
# A small decoder-only Transformer (GPT-style, pre-LayerNorm), attention from course_lib.attention.core
# ---------------------------------------------------------------------------------------------------------
@dataclass
class LMConfig:
    vocab_size: int
    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 2
    d_ff: int = 256
    max_len: int = 64


class Block(nn.Module):
    """x ← x + MHA(LN(x)) with the causal mask;  x ← x + MLP(LN(x))."""

    def __init__(self, cfg: LMConfig):
        super().__init__()
        d = cfg.d_model
        self.n_heads = cfg.n_heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.W_q, self.W_k, self.W_v, self.W_o = (nn.Parameter(torch.randn(d, d) * 0.02) for _ in range(4))
        self.mlp = nn.Sequential(nn.Linear(d, cfg.d_ff), nn.GELU(), nn.Linear(cfg.d_ff, d))

    def forward(self, x: Tensor, M: Tensor) -> Tensor:
        x = x + multi_head_attention(self.ln1(x), self.W_q, self.W_k, self.W_v, self.W_o, self.n_heads, M)  # (B, T, d)
        return x + self.mlp(self.ln2(x))                                                               # (B, T, d)


class TransformerLM(nn.Module):
    """Token + learned position embeddings, n_layers blocks, final LayerNorm, output layer tied to the
    token embedding (shared input-output embeddings). ``forward(inputs)`` → logits (B, T, V)."""

    def __init__(self, cfg: LMConfig):
        super().__init__()
        self.cfg = cfg
        self.tok = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos = nn.Embedding(cfg.max_len, cfg.d_model)
        nn.init.normal_(self.tok.weight, std=0.02)
        nn.init.normal_(self.pos.weight, std=0.02)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)

    def hidden(self, inputs: Tensor) -> Tensor:
        """The last layer's states (B, T, d); position t has seen inputs[:, :t+1] only."""
        B, T = inputs.shape
        if T > self.cfg.max_len:
            raise ValueError(f"sequence of {T} tokens is longer than max_len={self.cfg.max_len}")
        x = self.tok(inputs) + self.pos(torch.arange(T, device=inputs.device))   # (B, T, d)
        M = causal_mask(T, device=inputs.device, dtype=x.dtype)                   # (T, T): 0 / −∞
        for block in self.blocks:
            x = block(x, M)
        return self.ln_f(x)                                                       # (B, T, d)

    def forward(self, inputs: Tensor) -> Tensor:
        return self.hidden(inputs) @ self.tok.weight.T                           # logits (B, T, V)


class SentenceClassifier(nn.Module):
    """A Transformer LM's states, averaged over the sentence's real positions, then a linear layer:
    logits (B, C). Fine-tuning trains all of it (the LM's parameters and the new head)."""

    def __init__(self, lm: TransformerLM, n_classes: int):
        super().__init__()
        self.lm = lm
        self.head = nn.Linear(lm.cfg.d_model, n_classes)

    def forward(self, inputs: Tensor, pad_mask: Tensor) -> Tensor:
        h = self.lm.hidden(inputs)                                   # (B, T, d)
        real = (~pad_mask).to(h.dtype)[..., None]                    # (B, T, 1): 1 at <bos> w_1..w_n
        pooled = (h * real).sum(dim=1) / real.sum(dim=1)             # mean over the real positions (B, d)
        return self.head(pooled)                                     # (B, C)


# ---------------------------------------------------------------------------------------------------------
# Training loops
# ---------------------------------------------------------------------------------------------------------
LossFn = Callable[[Tensor, Tensor, Tensor], Tensor]


@torch.no_grad()
def evaluate_lm(model: TransformerLM, sentences: Sequence[Sequence[int]], *, batch_size: int = 256,
                loss_fn: LossFn = masked_lm_loss) -> float:
    """Mean negative log-likelihood per token (nats) of ``sentences`` (lists of token ids)."""
    model.eval()
    total, count = 0.0, 0
    device = next(model.parameters()).device
    for i in range(0, len(sentences), batch_size):
        inputs, targets, pad = pad_batch(sentences[i:i + batch_size], device)
        n = int((~pad).sum())
        total += loss_fn(model(inputs), targets, pad).item() * n
        count += n
    model.train()
    return total / count


def length_batches(sentences: Sequence[Sequence[int]], batch_size: int, generator: torch.Generator) -> list[list[int]]:
    """One epoch of batches of sentences of similar lengths (less padding, same objective): the indices in
    a random order, sorted by length (stable, so ties keep the random order), cut into batches, and the
    batches shuffled."""
    order = torch.randperm(len(sentences), generator=generator).tolist()
    order.sort(key=lambda i: len(sentences[i]))
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def pretrain_lm(model: TransformerLM, sentences: Sequence[Sequence[int]], *, steps: int, batch_size: int, lr: float,
                generator: torch.Generator, loss_fn: LossFn = masked_lm_loss,
                held_out: Sequence[Sequence[int]] | None = None, eval_every: int = 50,
                log: Callable[[dict], None] | None = None, progress: Callable | None = None) -> dict[str, list]:
    """Generative pre-training: AdamW on the mean NLL per token of batches of whole sentences
    (``length_batches``, epoch after epoch, until ``steps`` steps).

    Returns curves: 'step', 'loss' (training loss of each step), and 'eval_step', 'held_out' (the held-out
    loss every ``eval_every`` steps and at the end) when ``held_out`` is given.
    """
    device = next(model.parameters()).device
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    curves: dict[str, list] = {"step": [], "loss": [], "eval_step": [], "held_out": []}
    steps_iter = progress(range(steps)) if progress is not None else range(steps)
    batches: list[list[int]] = []
    for step in steps_iter:
        if not batches:
            batches = length_batches(sentences, batch_size, generator)
        idx = batches.pop()
        inputs, targets, pad = pad_batch([sentences[i] for i in idx], device)
        loss = loss_fn(model(inputs), targets, pad)                  # − Σ log p(sentence) / #tokens
        opt.zero_grad()
        loss.backward()
        opt.step()
        curves["step"].append(step + 1)
        curves["loss"].append(loss.item())
        metrics = {"pretrain/step": step + 1, "pretrain/loss": loss.item()}
        if held_out is not None and ((step + 1) % eval_every == 0 or step + 1 == steps):
            curves["eval_step"].append(step + 1)
            curves["held_out"].append(evaluate_lm(model, held_out, loss_fn=loss_fn))
            metrics["pretrain/held_out_loss"] = curves["held_out"][-1]
        if log is not None:
            log(metrics)
    return curves


def fine_tune_classifier(model: SentenceClassifier, sentences: Sequence[Sequence[int]], labels: Sequence[int], *,
                         steps: int, batch_size: int, lr: float, generator: torch.Generator,
                         log: Callable[[dict], None] | None = None) -> list[float]:
    """Supervised fine-tuning of every parameter (AdamW on the cross-entropy), ``steps`` steps of batches
    of similar-length sentences, epoch after epoch. Returns the loss of each step."""
    device = next(model.parameters()).device
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    y_all = torch.tensor(list(labels), dtype=torch.long, device=device)
    history: list[float] = []
    batches: list[list[int]] = []
    for step in range(steps):
        if not batches:
            batches = length_batches(sentences, batch_size, generator)
        idx = batches.pop()
        inputs, _, pad = pad_batch([sentences[i] for i in idx], device)
        loss = F.cross_entropy(model(inputs, pad), y_all[torch.tensor(idx, device=device)])
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
        if log is not None:
            log({"finetune/step": step + 1, "finetune/loss": history[-1]})
    return history


@torch.no_grad()
def accuracy(model: SentenceClassifier, sentences: Sequence[Sequence[int]], labels: Sequence[int], *,
             batch_size: int = 256) -> float:
    """Percent of sentences whose most probable class is the true one."""
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for i in range(0, len(sentences), batch_size):
        inputs, _, pad = pad_batch(sentences[i:i + batch_size], device)
        y = torch.tensor(list(labels[i:i + batch_size]), device=device)
        correct += int((model(inputs, pad).argmax(-1) == y).sum())
    model.train()
    return 100.0 * correct / len(sentences)


@torch.no_grad()
def prefers_real(model: TransformerLM, real: Sequence[Sequence[int]], shuffled: Sequence[Sequence[int]], *,
                 log_likelihood: LossFn = sentence_log_likelihood, batch_size: int = 256) -> float:
    """Percent of pairs (real sentence, the same words shuffled) where the LM gives the real sentence the
    higher log-likelihood (the two have the same tokens, so their totals compare fairly); ties count half.
    ``log_likelihood(logits, targets, pad_mask)`` is the student's ``sentence_log_likelihood``."""
    if len(real) != len(shuffled):
        raise ValueError(f"expected pairs, got {len(real)} real and {len(shuffled)} shuffled sentences")
    model.eval()
    device = next(model.parameters()).device
    score = 0.0
    for i in range(0, len(real), batch_size):
        lls = []
        for group in (real[i:i + batch_size], shuffled[i:i + batch_size]):
            inputs, targets, pad = pad_batch(group, device)
            lls.append(log_likelihood(model(inputs), targets, pad))                  # (b,)
        score += float((lls[0] > lls[1]).sum()) + 0.5 * float((lls[0] == lls[1]).sum())
    model.train()
    return 100.0 * score / len(real)
