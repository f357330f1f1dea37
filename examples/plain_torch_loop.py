"""A plain PyTorch training loop fed by the meap-data loader, with exact resume.

    python examples/plain_torch_loop.py --data DIR --steps 50 --checkpoint run.pt
    python examples/plain_torch_loop.py --data DIR --steps 100 --checkpoint run.pt   # continues

The loader's state (epoch and position in the seeded global order) is saved in the
checkpoint next to the model and optimiser, so a resumed run sees exactly the samples
an uninterrupted run would have seen next, even with another --num-workers. The model
is a deliberately tiny causal transformer: the point is the data path.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from meap_data.loader import ShardDataLoader, ShardIterableDataset  # noqa: E402
from meap_data.manifest import DatasetManifest  # noqa: E402


class TinyCausalLM(nn.Module):
    """Embedding, one pre-norm transformer block with a causal mask, linear output head."""

    def __init__(self, vocab: int, width: int = 64, heads: int = 4, max_len: int = 4096):
        super().__init__()
        self.tok = nn.Embedding(vocab, width)
        self.pos = nn.Embedding(max_len, width)
        self.block = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        # position_ids restart at every document of a packed sample (from the loader).
        x = self.tok(input_ids) + self.pos(position_ids)
        causal = nn.Transformer.generate_square_subsequent_mask(input_ids.shape[1], device=input_ids.device)
        x = self.block(x, src_mask=causal, is_causal=True)
        return self.head(self.norm(x))


def main(argv: list[str] | None = None) -> list[float]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="dataset directory written by 'meap-data prepare'")
    p.add_argument("--steps", type=int, default=50, help="optimiser steps to reach (total, across resumes)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--masks", choices=("static", "per_epoch"), default="static")
    p.add_argument("--format", choices=("arrow", "webdataset"), default="arrow")
    p.add_argument("--checkpoint", default=None, help="save here at the end; resume from it when it exists")
    p.add_argument("--lr", type=float, default=3e-3)
    args = p.parse_args(argv)

    torch.manual_seed(0)
    manifest = DatasetManifest.read(args.data)
    dataset = ShardIterableDataset(args.data, args.batch_size, format=args.format, masks=args.masks, seed=0)
    loader = ShardDataLoader(dataset, num_workers=args.num_workers, pin_memory=torch.cuda.is_available())
    model = TinyCausalLM(manifest.vocab_size, max_len=manifest.seq_len)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    step = 0
    if args.checkpoint and os.path.exists(args.checkpoint):
        ckpt = torch.load(args.checkpoint, weights_only=False)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        loader.load_state_dict(ckpt["loader"])  # continue at exactly the next sample
        step = ckpt["step"]

    losses = []
    while step < args.steps:
        for batch in loader:  # one pass = the rest of the current epoch
            logits = model(batch["input_ids"], batch["position_ids"])
            # Hugging Face convention: labels are aligned with inputs; predict the next one.
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), batch["labels"][:, 1:].flatten(), ignore_index=-100)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            step += 1
            if step % 10 == 0 or step == args.steps:
                print(f"step {step} epoch {loader.state_dict()['epoch']} loss {loss.item():.3f}")
            if step >= args.steps:
                break
    if args.checkpoint:
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "loader": loader.state_dict(),
                    "step": step}, args.checkpoint)
    return losses


if __name__ == "__main__":
    main()
