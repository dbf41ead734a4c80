"""Tiny transformer language models that train on 2 CPU cores in seconds to minutes.

* :class:`TinyLM`: token + learned position embeddings, ``n_layers`` blocks of
  multi-head attention (``attnwidget.scratch.attention``, so the weights are
  the ones the labs compute by hand) and, unless ``attn_only``, an MLP; a
  linear unembedding. The mask is ``"causal"`` (a language model),
  ``"reverse"`` (every query sees itself and the future: the model can copy the
  answer, which is the cheat the masks lab shows) or ``"none"`` (no mask, every
  query sees every position as in a bidirectional encoder: the same cheat,
  since the future is in view too).
* :func:`train`: a seeded, reproducible AdamW loop with a progress bar.
* :func:`induction_batch` / :func:`train_induction`: sequences of random
  tokens repeated twice; a two-layer attention-only model learns to predict the
  second copy with a previous-token head in layer 0 and an induction head in
  layer 1 (Olsson et al. 2022). The trained weights ship with the package
  (``attnwidget.models.load_tiny_lm``); ``scripts/train_tiny_lm.py`` reproduces them.
* :class:`CharTokenizer`: one token per character, with the small interface
  ``extract_attention`` and ``AttentionView`` need from a tokenizer.

Each attention module returns ``(output, weights [B, H, T, T])``, which is how
``extract_attention`` finds it; its output projection ``o_proj`` is where
``attnwidget.ablate`` switches heads off.
"""

from __future__ import annotations

import dataclasses
import string
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from attnwidget.scratch import attention, causal_mask, reverse_mask

#: The masks a :class:`TinyConfig` takes: the two triangular ones, and ``"none"`` (bidirectional).
MASKS = ("causal", "reverse", "none")


@dataclasses.dataclass(frozen=True)
class TinyConfig:
    """Shape of a :class:`TinyLM`."""

    vocab_size: int = 64
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    max_len: int = 64
    attn_only: bool = True
    mask: str = "causal"

    def __post_init__(self) -> None:
        if self.mask not in MASKS:
            raise ValueError(
                f"mask: expected one of {MASKS[:2]} or 'none' (no mask: every position sees "
                f"every other, bidirectional), got {self.mask!r}"
            )
        if self.d_model % self.n_heads:
            raise ValueError(f"n_heads: must divide d_model={self.d_model}, got {self.n_heads}")


class TinyAttention(nn.Module):
    """Multi-head self-attention; returns ``(output [B, T, D], weights [B, H, T, T])``."""

    def __init__(self, config: TinyConfig) -> None:
        super().__init__()
        self.num_heads = config.n_heads
        self.head_dim = config.d_model // config.n_heads
        self.mask_kind = config.mask
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)
        self.o_proj = nn.Linear(config.d_model, config.d_model)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, T, D = x.shape
        q, k, v = (t.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)
                   for t in self.qkv(x).split(D, dim=-1))
        if self.mask_kind == "none":  # bidirectional: every query sees every key
            mask = None
        else:
            mask = (causal_mask(T) if self.mask_kind == "causal" else reverse_mask(T)).to(x.device)
        out, weights = attention(q, k, v, mask=mask)
        return self.o_proj(out.transpose(1, 2).reshape(B, T, D)), weights


class TinyBlock(nn.Module):
    def __init__(self, config: TinyConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(config.d_model)
        self.attn = TinyAttention(config)
        self.mlp = None if config.attn_only else nn.Sequential(
            nn.LayerNorm(config.d_model), nn.Linear(config.d_model, 4 * config.d_model), nn.GELU(),
            nn.Linear(4 * config.d_model, config.d_model),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))[0]
        return x if self.mlp is None else x + self.mlp(x)


class TinyLM(nn.Module):
    """A small GPT-style language model: ``model(input_ids [B, T]) -> logits [B, T, vocab]``."""

    def __init__(self, config: TinyConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        config = dataclasses.replace(config or TinyConfig(), **overrides)
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.pos = nn.Embedding(config.max_len, config.d_model)
        self.blocks = nn.ModuleList(TinyBlock(config) for _ in range(config.n_layers))
        self.ln_f = nn.LayerNorm(config.d_model)
        self.unembed = nn.Linear(config.d_model, config.vocab_size)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if input_ids.ndim == 1:
            input_ids = input_ids.unsqueeze(0)
        T = input_ids.shape[-1]
        if self.config.max_len < T:
            raise ValueError(f"input_ids: {T} tokens, but the model takes at most {self.config.max_len}")
        x = self.embed(input_ids) + self.pos(torch.arange(T, device=input_ids.device))
        for block in self.blocks:
            x = block(x)
        return self.unembed(self.ln_f(x))

    @torch.no_grad()
    def generate(
        self, input_ids: torch.Tensor, n_new: int, greedy: bool = True, seed: int = 0
    ) -> torch.Tensor:
        """Append ``n_new`` tokens (greedy, or sampled with ``seed``) to ``input_ids`` ``[T]``/``[1, T]``."""
        ids = input_ids.view(1, -1)
        gen = torch.Generator().manual_seed(seed)
        for _ in range(n_new):
            logits = self(ids[:, -self.config.max_len:])[:, -1]
            nxt = logits.argmax(-1, keepdim=True) if greedy else torch.multinomial(
                torch.softmax(logits, -1), 1, generator=gen)
            ids = torch.cat([ids, nxt], dim=1)
        return ids[0]


def next_token_loss(model: TinyLM, ids: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy (nats) of predicting token t+1 at every position t of ``ids`` ``[B, T]``."""
    logits = model(ids[:, :-1])
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))


def induction_batch(
    batch: int, length: int, vocab_size: int, generator: torch.Generator,
    periods: tuple[int, int] = (6, 24),
) -> torch.Tensor:
    """``[batch, length]`` random token ids whose first ``p`` tokens repeat right after themselves.

    ``p`` is drawn per sequence from ``periods`` (inclusive), so the copy's
    offset varies: a model cannot predict the second copy from positions
    alone and has to find "the token after the earlier occurrence of the
    current one", which is what an induction head does.
    """
    lo, hi = periods
    if not 1 <= lo <= hi or 2 * hi > length:
        raise ValueError(f"periods: expected 1 <= lo <= hi <= length / 2 = {length // 2}, got {periods}")
    ids = torch.randint(0, vocab_size, (batch, length), generator=generator)
    p = torch.randint(lo, hi + 1, (batch,), generator=generator)[:, None]
    # positions p..2p-1 read from 0..p-1: one gather instead of a slice copy per sequence
    pos = torch.arange(length)[None, :]
    copy = (pos >= p) & (pos < 2 * p)
    return ids.gather(1, torch.where(copy, pos - p, pos))


def train(
    model: TinyLM,
    batches: Any,
    steps: int,
    lr: float = 3e-3,
    seed: int = 0,
    progress: bool = True,
    log_every: int = 50,
) -> list[float]:
    """AdamW on :func:`next_token_loss`; returns the loss every ``log_every`` steps.

    ``batches(step, generator) -> ids [B, T]`` makes each batch from a
    generator seeded with ``seed``, so a run is reproducible (same seed, same
    thread count, same weights). A tqdm bar shows the loss with ``progress``.
    """
    from tqdm.auto import tqdm

    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 100))  # warm-up
    model.train()
    losses: list[float] = []
    bar = tqdm(range(steps), desc="training", disable=not progress)
    for step in bar:
        loss = next_token_loss(model, batches(step, gen))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % log_every == 0 or step == steps - 1:
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    return losses


#: How the shipped induction model was trained (scripts/train_tiny_lm.py uses exactly this).
INDUCTION_RECIPE = {"seed": 0, "steps": 3000, "batch": 64, "length": 48, "periods": (6, 24), "lr": 3e-3}


def train_induction(progress: bool = True, **recipe: Any) -> tuple[TinyLM, list[float]]:
    """Train the two-layer attention-only induction model; ``recipe`` overrides :data:`INDUCTION_RECIPE`."""
    r = {**INDUCTION_RECIPE, **recipe}
    torch.manual_seed(r["seed"])
    model = TinyLM(TinyConfig(vocab_size=64, d_model=64, n_layers=2, n_heads=4,
                              max_len=r["length"], attn_only=True))

    def batches(_step: int, gen: torch.Generator) -> torch.Tensor:
        return induction_batch(r["batch"], r["length"], model.config.vocab_size, gen, tuple(r["periods"]))

    losses = train(model, batches, r["steps"], lr=r["lr"], seed=r["seed"], progress=progress)
    return model, losses


class CharTokenizer:
    """One token per character of ``alphabet``; enough of a tokenizer for extraction and the widget.

    The default alphabet has 64 symbols (letters, digits, ``-`` and ``.``), one
    per token id of the induction model, so any text over it can be shown.
    """

    DEFAULT = string.ascii_lowercase + string.ascii_uppercase + string.digits + "-."

    def __init__(self, alphabet: str = DEFAULT) -> None:
        if len(set(alphabet)) != len(alphabet):
            raise ValueError("alphabet: expected distinct characters")
        self.alphabet = alphabet
        self.index = {c: i for i, c in enumerate(alphabet)}
        self.all_special_tokens: list[str] = []
        self.vocab_size = len(alphabet)

    def encode(self, text: str) -> list[int]:
        bad = sorted({c for c in text if c not in self.index})
        if bad:
            raise ValueError(f"text: characters {bad} are not in the tokenizer's alphabet {self.alphabet!r}")
        return [self.index[c] for c in text]

    def __call__(self, text: str, return_tensors: str | None = None, **_: Any) -> dict[str, Any]:
        ids = self.encode(text)
        return {"input_ids": torch.tensor([ids]) if return_tensors == "pt" else ids}

    def convert_ids_to_tokens(self, ids: Sequence[int]) -> list[str]:
        return [self.alphabet[int(i)] for i in ids]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.convert_ids_to_tokens(ids))


# --------------------------------------------------------------------------- text models
_SUBJECTS = ("the cat", "the dog", "a bird", "the old man", "my sister", "the teacher", "a child",
             "the farmer")
_VERBS = ("sees", "likes", "feeds", "follows", "finds", "watches", "helps", "calls")
_OBJECTS = ("the ball", "a fish", "the red door", "the small boat", "a green apple", "the tall tree",
            "the cat", "the dog")
_ENDINGS = (" today", " again", " at night", " in the garden", "", "", " slowly", " by the river")

#: Characters of the generated corpus: lower-case letters, space and full stop.
TEXT_ALPHABET = string.ascii_lowercase + " ."


def generated_corpus(n_sentences: int = 2000, seed: int = 0) -> str:
    """A small English-like corpus from a template grammar: ``"the cat sees a fish today. ..."``.

    Generated, not shipped: seeded, so every run (and every test) sees the same
    text. Word order, spelling and sentence ends are learnable; which noun or
    verb comes next is random, so even a perfect model keeps some loss.
    """
    gen = torch.Generator().manual_seed(seed)

    def pick(options: Sequence[str]) -> str:
        return options[int(torch.randint(len(options), (1,), generator=gen))]

    return " ".join(f"{pick(_SUBJECTS)} {pick(_VERBS)} {pick(_OBJECTS)}{pick(_ENDINGS)}."
                    for _ in range(n_sentences))


def train_text_model(
    text: str, mask: str = "causal", steps: int = 400, context: int = 32, batch: int = 32,
    seed: int = 0, progress: bool = True,
) -> tuple[TinyLM, CharTokenizer, list[float]]:
    """A two-layer character model (with MLPs) trained on random windows of ``text``.

    ``mask="reverse"`` trains the same model with the reverse mask, so each
    position also sees the character it must predict: the training loss falls
    to almost 0, yet the model has learnt nothing it can use when the future
    is not there (see :func:`honest_loss`). ``mask="none"`` (bidirectional, no
    mask) cheats the same way: the next character is in view as well.
    """
    tok = CharTokenizer(TEXT_ALPHABET)
    data = torch.tensor(tok.encode(text))
    if len(data) <= context + 1:
        raise ValueError(f"text: expected more than {context + 1} characters, got {len(data)}")
    torch.manual_seed(seed)
    model = TinyLM(TinyConfig(vocab_size=tok.vocab_size, d_model=64, n_layers=2, n_heads=4,
                              max_len=context, attn_only=False, mask=mask))

    window = torch.arange(context + 1)

    def batches(_step: int, gen: torch.Generator) -> torch.Tensor:
        starts = torch.randint(0, len(data) - context - 1, (batch,), generator=gen)
        return data[starts[:, None] + window]  # [batch, context + 1]: one window per start

    losses = train(model, batches, steps, lr=3e-3, seed=seed, progress=progress)
    return model, tok, losses


@torch.no_grad()
def honest_loss(model: TinyLM, ids: torch.Tensor) -> float:
    """Next-token loss (nats) when each prediction may only use the past, as in generation.

    Position t is predicted from a forward pass over ``ids[:t + 1]`` alone, so
    a model that learnt to read the answer from the future has nothing to read.
    For a causal model this equals its ordinary loss.
    """
    ids = ids.view(-1)
    total = 0.0
    for t in range(len(ids) - 1):
        logits = model(ids[: t + 1].unsqueeze(0))[0, -1]
        total += float(nn.functional.cross_entropy(logits.unsqueeze(0), ids[t + 1 : t + 2]))
    return total / (len(ids) - 1)
