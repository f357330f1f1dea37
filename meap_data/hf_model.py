"""A pretrained Hugging Face causal LM behind the trainer's model interface.

``meap-train --init-from DIR`` fine-tunes a local checkpoint (``config.json``,
safetensors weights, ``tokenizer.json``) loaded with ``AutoModelForCausalLM``. The
dataset must have been prepared with that model's tokenizer (``prepare --tokenizer DIR``):
its vocabulary then holds the model's tokens with the same ids, plus what prepare added
(``[MASK]``, and an end-of-document token when the model had none). The embedding
(and an untied output layer) is resized to the dataset's vocabulary; new rows start at the
mean of the old ones (``mean_resizing``), so the added tokens begin as an average token
rather than noise. The result saves with ``save_pretrained`` together with the dataset's
tokenizer, so ``AutoModelForCausalLM.from_pretrained(OUT/hf)`` and
``AutoTokenizer.from_pretrained(OUT/hf)`` load it.
"""

from __future__ import annotations

import os

import torch
import torch.nn as nn

from .errors import MeapDataError
from .model import next_token_loss
from .tokenizer import MASK_TOKEN


def check_tokenizer(model_dir: str, dataset_tokenizer_json: str, dataset: str) -> None:
    """Refuse a dataset whose tokenizer is not the model's (same tokens at the same ids)."""
    from tokenizers import Tokenizer

    path = os.path.join(model_dir, "tokenizer.json")
    if not os.path.isfile(path):
        raise MeapDataError(f"--init-from {model_dir!r} has no tokenizer.json; save the model's tokenizer there "
                            "(tokenizer.save_pretrained) and prepare the data with --tokenizer that directory")
    model_vocab = Tokenizer.from_file(path).get_vocab(with_added_tokens=True)
    data_vocab = Tokenizer.from_str(dataset_tokenizer_json).get_vocab(with_added_tokens=True)
    differ = [t for t, i in model_vocab.items() if data_vocab.get(t) != i]
    if differ:
        raise MeapDataError(
            f"{dataset!r} was prepared with another tokenizer than the model in {model_dir!r} ({len(differ)} of "
            f"its {len(model_vocab)} tokens differ, e.g. {differ[0]!r}); prepare it with --tokenizer {model_dir}")


class HFCausalLM(nn.Module):
    """``forward(input_ids, labels, doc_ids, position_ids)`` as :class:`meap_data.model.GPT`:
    the mean next-token loss over the targets (nats per target token) when labels are
    given (the labels are shifted here, as GPT does), else the logits."""

    def __init__(self, hf: nn.Module):
        super().__init__()
        self.hf = hf

    @property
    def config(self):
        return self.hf.config

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None,
                doc_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None) -> torch.Tensor:
        logits = self.hf(input_ids=input_ids, position_ids=position_ids, use_cache=False).logits
        return logits if labels is None else next_token_loss(logits, labels)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameters; ``non_embedding`` leaves out tables that are only looked up (the input
        embedding unless it is tied to the output layer, and learned position tables)."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            emb = self.hf.get_input_embeddings().weight
            out = self.hf.get_output_embeddings()
            if out is None or out.weight is not emb:
                n -= emb.numel()
            for name, p in self.hf.named_parameters():
                if "position" in name and name.endswith("weight") and p.dim() == 2:
                    n -= p.numel()  # learned position table (GPT-2's wpe)
        return n

    def configure_optimizer(self, lr: float, weight_decay: float, betas: tuple[float, float]) -> torch.optim.AdamW:
        from .model import adamw

        return adamw(self, lr, weight_decay, betas)

    def shape(self) -> tuple[int, int]:
        """(layers, width) for the FLOPs formula."""
        c = self.hf.config
        layers = getattr(c, "num_hidden_layers", None) or getattr(c, "n_layer")
        width = getattr(c, "hidden_size", None) or getattr(c, "n_embd")
        return int(layers), int(width)


def load_pretrained(model_dir: str, vocab_size: int, gradient_checkpointing: bool = False) -> HFCausalLM:
    """The model in ``model_dir`` (float32 weights), its vocabulary grown to ``vocab_size``."""
    from transformers import AutoModelForCausalLM

    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        raise MeapDataError(f"--init-from {model_dir!r} is not a Hugging Face model directory (no config.json); "
                            "pass a directory written by save_pretrained")
    try:
        hf = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise MeapDataError(f"--init-from {model_dir!r}: cannot load the model ({exc})") from exc
    current = hf.get_input_embeddings().weight.shape[0]
    if vocab_size > current:
        hf.resize_token_embeddings(vocab_size, mean_resizing=True)
    if gradient_checkpointing:
        hf.gradient_checkpointing_enable()
    return HFCausalLM(hf)


def save_pretrained(model: HFCausalLM, out_dir: str, tokenizer_json: str, eos_token: str, pad_token: str) -> None:
    """``save_pretrained`` the model and the dataset's tokenizer (with its eos, pad and
    mask tokens named) into ``out_dir``, replacing it atomically enough for readers:
    the files are written to ``out_dir.tmp`` first, then swapped in."""
    import shutil

    from transformers import PreTrainedTokenizerFast

    tmp = f"{out_dir}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    path = os.path.join(tmp, "tokenizer.json")
    with open(path, "w", encoding="utf-8") as f:
        f.write(tokenizer_json)
    tok = PreTrainedTokenizerFast(tokenizer_file=path, eos_token=eos_token, pad_token=pad_token, mask_token=MASK_TOKEN)
    for config in (model.hf.config, model.hf.generation_config):
        config.eos_token_id, config.pad_token_id = tok.eos_token_id, tok.pad_token_id
    model.hf.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
