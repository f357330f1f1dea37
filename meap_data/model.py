"""A small GPT-style decoder for ``train_shards.py`` (nanoGPT's model, trimmed).

Pre-LayerNorm blocks, learned absolute positions, GELU MLP, the token embedding tied to
the output layer. Attention goes through ``F.scaled_dot_product_attention`` with
``is_causal=True`` when samples may attend across packed documents (Flash attention on
Hopper). When they may not (``doc_ids`` given), the same-document-and-causal rule is
either a block mask for ``torch.nn.attention.flex_attention`` (``doc_attention="flex"``:
blocks no document pair shares are skipped, memory O(L) per sample instead of O(L^2);
fused when compiled) or a dense boolean (B, 1, L, L) SDPA mask (``"dense"``: no Flash
kernel; SDPA picks the memory-efficient kernel on CUDA, the math kernel on CPU). Both
compute the same function; :func:`choose_doc_attention` picks one.

The model shifts (Hugging Face convention): ``labels`` are aligned with ``input_ids`` and
the loss at position t predicts ``labels[t + 1]`` from inputs ``0..t``; -100 is ignored.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .sample_format import IGNORE_INDEX

# Rows of the output layer are padded to a multiple of this: matmuls with a dimension
# divisible by 64 use the tensor cores fully (nanoGPT's 50257 -> 50304 trick). The extra
# rows are never targets, so they only learn to stay improbable.
VOCAB_MULTIPLE = 64


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the decoder. ``vocab_size`` is the dataset tokenizer's (mask and eos
    included); ``seq_len`` is the longest input in tokens."""

    vocab_size: int
    seq_len: int
    n_layer: int = 12
    n_embd: int = 768
    n_head: int = 12
    dropout: float = 0.0
    # GPT-2 ties the output layer to the token table. Tiny models learn much faster
    # untied (a tied model has to build the bigram map in its blocks): on the stdlib test
    # corpus, 2 layers x 64 wide, untied is ~1.4 nats below the unigram entropy after 100
    # steps where tied is ~0.2.
    tie_embeddings: bool = True
    # How document-masked attention runs: "dense" (SDPA with a boolean mask) or "flex"
    # (flex attention with a block mask); see choose_doc_attention.
    doc_attention: str = "dense"
    # Token shift: add a learned per-channel share of the previous token's embedding to
    # each position's (RWKV's time-mix, modded-nanogpt's "smear"). It hands the first
    # layer the previous token, so one attention layer can match a key and copy the value
    # after it: induction without waiting for a previous-token head to form. The probe's
    # cpu preset uses it (a 2 x 64 model then learns key-matched retrieval in ~500 steps
    # instead of plateauing at the random-needle level); off elsewhere.
    token_shift: bool = False

    def __post_init__(self):
        if self.n_embd % self.n_head:
            raise ValueError(f"--width {self.n_embd} is not divisible by --heads {self.n_head}; pick a width that is")
        if self.doc_attention not in ("dense", "flex"):
            raise ValueError(f"doc_attention must be dense or flex, got {self.doc_attention!r}")
        if min(self.vocab_size, self.seq_len, self.n_layer, self.n_embd, self.n_head) < 1:
            raise ValueError(f"every model dimension must be positive, got {asdict(self)}")

    @property
    def padded_vocab_size(self) -> int:
        return -(-self.vocab_size // VOCAB_MULTIPLE) * VOCAB_MULTIPLE


def document_causal_mask(doc_ids: torch.Tensor) -> torch.Tensor:
    """(B, 1, L, L) bool, True where query i may attend to key j: same document and j <= i.
    ``doc_ids``: (B, L) document index per position (padding may form its own "document":
    every query still sees itself, so no row of the softmax is empty)."""
    length = doc_ids.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=doc_ids.device).tril()
    same_doc = doc_ids[:, :, None] == doc_ids[:, None, :]
    return (same_doc & causal)[:, None]


DOC_ATTENTION = ("auto", "flex", "dense")


def flex_attention_problem() -> str | None:
    """Why this torch cannot run flex attention, or None when it can."""
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention  # noqa: F401
    except ImportError as exc:
        return f"torch {torch.__version__} has no flex attention ({exc})"
    return None


def choose_doc_attention(requested: str, device: torch.device, dropout: float = 0.0,
                         training: bool = True) -> tuple[str, str]:
    """(backend, reason) for document-masked attention: ``"flex"`` or ``"dense"``.

    ``requested``: ``auto`` (flex on CUDA, where compiled it is a fused block-sparse
    kernel; dense elsewhere), ``flex`` or ``dense``. Flex falls back to dense, with the
    reason, where it cannot run: a torch without it, attention dropout (flex has none),
    or training off CUDA (flex attention has no backward on CPU; forward-only use on CPU
    runs its unfused reference, which materialises the same scores as the dense mask)."""
    if requested not in DOC_ATTENTION:
        raise ValueError(f"--doc-attention must be one of {', '.join(DOC_ATTENTION)}, got {requested!r}")
    if requested == "dense":
        return "dense", "dense SDPA mask (requested with --doc-attention dense)"
    problem = flex_attention_problem()
    if problem is None and dropout > 0:
        problem = f"flex attention takes no attention dropout (--dropout {dropout})"
    if problem is None and device.type != "cuda" and training:
        problem = f"flex attention has no backward on {device.type} (torch {torch.__version__})"
    if problem is None and requested == "auto" and device.type != "cuda":
        problem = f"on {device.type} flex attention is not fused (it would materialise the same scores)"
    if problem is not None:
        return "dense", f"dense SDPA mask: {problem}"
    return "flex", "flex attention with a block mask (blocks of different documents skipped)"


def document_block_mask(doc_ids: torch.Tensor):
    """The flex-attention ``BlockMask`` of :func:`document_causal_mask`'s rule: query i
    sees key j when j <= i in the same document. ``doc_ids``: (B, L) per position."""
    from torch.nn.attention.flex_attention import create_block_mask

    batch, length = doc_ids.shape

    def same_document_causal(b, h, q_idx, kv_idx):
        return (q_idx >= kv_idx) & (doc_ids[b, q_idx] == doc_ids[b, kv_idx])

    return create_block_mask(same_document_causal, batch, None, length, length, device=doc_ids.device)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=False)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)
        self.proj.residual_scaled = True
        self.dropout = cfg.dropout
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        # (B, T, C) -> (B, heads, T, head_dim)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if attn_mask is not None and not isinstance(attn_mask, torch.Tensor):  # a flex BlockMask
            from torch.nn.attention.flex_attention import flex_attention

            y = flex_attention(q, k, v, block_mask=attn_mask).transpose(1, 2).contiguous().view(B, T, C)
            return self.resid_dropout(self.proj(y))
        y = F.scaled_dot_product_attention(
            q, k, v,
            attn_mask=attn_mask,
            is_causal=attn_mask is None,
            dropout_p=self.dropout if self.training else 0.0,
        )
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.proj(y))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=False)
        self.proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=False)
        self.proj.residual_scaled = True
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x), approximate="tanh")))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), attn_mask)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """Decoder-only transformer. ``forward(input_ids, labels, doc_ids)`` returns the mean
    next-token cross-entropy (nats per supervised token) when labels are given, else the
    logits (B, T, padded vocab)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.padded_vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.seq_len, cfg.n_embd)
        self.shift = nn.Parameter(torch.full((cfg.n_embd,), 0.5)) if cfg.token_shift else None
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.padded_vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.wte.weight  # weight tying (GPT-2)
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        # GPT-2 init; projections into the residual stream scaled by 1/sqrt(2 * layers)
        # so the stream's variance does not grow with depth.
        if isinstance(module, nn.Linear):
            std = 0.02 / math.sqrt(2 * self.cfg.n_layer) if getattr(module, "residual_scaled", False) else 0.02
            nn.init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; ``non_embedding`` leaves out the tables that are only looked
        up (no FLOPs): the position table, and the token table unless it is tied to the
        output layer (then it does that layer's matmul and counts)."""
        n = sum(p.numel() for p in self.parameters())  # a tied table is counted once
        if non_embedding:
            n -= self.wpe.weight.numel()
            if not self.cfg.tie_embeddings:
                n -= self.wte.weight.numel()
        return n

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None,
                doc_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """``input_ids``, ``labels``: (B, T) token ids. ``doc_ids``: (B, T) document index
        of each position; when given, attention stays inside documents. ``position_ids``:
        (B, T) position of each token (e.g. restarting at every document); default 0..T-1."""
        B, T = input_ids.shape
        if T > self.cfg.seq_len:
            raise ValueError(f"input of {T} tokens is longer than the model's --seq-len {self.cfg.seq_len}")
        if position_ids is None:
            position_ids = torch.arange(T, device=input_ids.device)
        tokens = self.wte(input_ids)
        if self.shift is not None:
            previous = F.pad(tokens, (0, 0, 1, 0))[:, :-1]
            if doc_ids is not None:  # a document's first token has no previous token
                same = (doc_ids[:, 1:] == doc_ids[:, :-1]).to(tokens.dtype)
                previous = previous * F.pad(same, (1, 0)).unsqueeze(-1)
            tokens = tokens + self.shift * previous
        x = self.drop(tokens + self.wpe(position_ids))
        attn_mask = None
        if doc_ids is not None:
            attn_mask = document_block_mask(doc_ids) if self.cfg.doc_attention == "flex" else document_causal_mask(doc_ids)
        for block in self.blocks:
            x = block(x, attn_mask)
        logits = self.lm_head(self.ln_f(x))
        if labels is None:
            return logits
        return next_token_loss(logits, labels)

    def configure_optimizer(self, lr: float, weight_decay: float, betas: tuple[float, float]) -> torch.optim.AdamW:
        return adamw(self, lr, weight_decay, betas)

    def shape(self) -> tuple[int, int]:
        """(layers, width) for the FLOPs formula."""
        return self.cfg.n_layer, self.cfg.n_embd


def next_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy (nats per target token) of ``logits`` (B, T, V) predicting
    ``labels[:, t + 1]`` at position t (labels aligned with the inputs); -100 is skipped."""
    # Shift the labels, not the logits: position t predicts labels[t + 1], and the last
    # position predicts nothing (-100). Slicing the (B, T, vocab) logits instead would
    # copy the largest tensor of the step. Float32 for the log-sum-exp: bf16 logits
    # lose too much precision over a large vocabulary.
    B, T = labels.shape
    targets = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX).reshape(-1).long()
    # Sum over the count, the count at least 1: a batch with no target (a rank whose
    # micro-batch lost every row to an objective's view) gives 0 and no gradient
    # rather than NaN, without a host sync to check for it.
    total = F.cross_entropy(logits.reshape(B * T, -1).float(), targets, ignore_index=IGNORE_INDEX, reduction="sum")
    return total / (targets != IGNORE_INDEX).sum().clamp(min=1)


def cosine_lr(step: int, peak: float, warmup: int, total: int, floor: float) -> float:
    """Learning rate for optimiser step ``step`` (0-based): linear warmup to ``peak`` over
    ``warmup`` steps, then cosine down to ``floor`` at step ``total`` (and ``floor`` after)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    if step >= total:
        return floor
    progress = (step - warmup) / max(1, total - warmup)
    return floor + 0.5 * (1.0 + math.cos(math.pi * progress)) * (peak - floor)


def adamw(model: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float]) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on norm gains and biases). The fused
    kernel exists on CPU and CUDA alike, so both take the same path."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=True)


def flops_per_token(n_params: int, n_layer: int, n_embd: int, seq_len: int) -> float:
    """Training FLOPs per token (forward + backward), PaLM appendix B / nanoGPT:
    ``6 * N + 12 * n_layer * n_embd * seq_len``. ``N``: parameters doing matmuls (see
    :meth:`GPT.num_params`); 6 = 2 (multiply-add) x 3 (forward + two backward matmuls).
    The second term is attention's QK^T and AV, counted for the full L x L square as
    PaLM does, although causal attention needs only half of it."""
    return 6.0 * n_params + 12.0 * n_layer * n_embd * seq_len


# Dense bf16 tensor-core peak, FLOP/s, by a substring of torch.cuda.get_device_name();
# first match wins, so the PCIe and NVL H100s come before the generic H100 (SXM).
PEAK_FLOPS = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),  # SXM ("NVIDIA H100 80GB HBM3")
    ("H200", 989e12),  # also GH200
    ("A100", 312e12),
)


def peak_flops_of(device_name: str) -> float | None:
    """Dense bf16 peak FLOP/s of a GPU named ``device_name`` (as torch.cuda reports it),
    None when the table does not know it."""
    return next((flops for key, flops in PEAK_FLOPS if key in device_name), None)


def peak_flops(device: torch.device, override: float | None = None) -> float | None:
    """Peak FLOP/s of one device: ``override`` if given, else the PEAK_FLOPS entry for a
    known GPU, else None (MFU is then n/a)."""
    if override:
        return override
    return peak_flops_of(torch.cuda.get_device_name(device)) if device.type == "cuda" else None


def mfu(tokens_per_s: float, flops_per_tok: float, peak: float | None, devices: int) -> float | None:
    """Model FLOPs utilisation: tokens/s x FLOPs per token / (peak FLOP/s x devices);
    None without a peak."""
    return tokens_per_s * flops_per_tok / (peak * devices) if peak else None
