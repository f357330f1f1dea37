"""Hugging Face ``transformers`` Trainer fed by the meap-data loader.

    pip install transformers   # with torch held to your pinned wheel
    python examples/hf_trainer.py --data DIR --steps 20 --output runs/hf

A tiny Llama-style model (hidden 64, 2 layers) trains on MEAP batches. The Trainer's own
DataLoader would re-batch and re-shuffle, so ``get_train_dataloader`` is overridden to
return the meap-data loader: it already yields whole batches, split by rank from
``torch.distributed``, shuffled by its own seeded global order. The loader's state is
written into every checkpoint folder (``meap_loader_state.json``) and read back on
resume; ``ignore_data_skip=True`` stops the Trainer from also skipping batches itself.

Batches carry ``position_ids`` that restart at each packed document: Llama's rotary
embeddings then see per-document positions. Attention itself still spans the whole
sample unless the model runs ``attn_implementation="flash_attention_2"`` (which derives
document boundaries from ``position_ids``), or the loader's ``doc_ids``/``cu_seqlens``
drive a varlen or block-mask kernel.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainerCallback, TrainingArguments  # noqa: E402

from meap_data.loader import ShardDataLoader, ShardIterableDataset  # noqa: E402
from meap_data.manifest import DatasetManifest  # noqa: E402

LOADER_STATE = "meap_loader_state.json"


class LoaderStateCallback(TrainerCallback):
    """Saves the loader's position into each checkpoint folder."""

    def __init__(self, loader: ShardDataLoader):
        self.loader = loader

    def on_save(self, args, state, control, **kwargs):
        folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, LOADER_STATE), "w") as f:
            json.dump(self.loader.state_dict(), f)


class ShardTrainer(Trainer):
    """A Trainer whose training batches come from a meap-data loader."""

    def __init__(self, *args, train_loader: ShardDataLoader, **kwargs):
        super().__init__(*args, **kwargs)
        self.train_loader = train_loader

    def get_train_dataloader(self):
        return self.train_loader


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="dataset directory written by 'meap-data prepare'")
    p.add_argument("--output", required=True, help="Trainer output_dir")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--save-steps", type=int, default=0, help="checkpoint every N steps (0: never)")
    p.add_argument("--resume", default=None, help="a checkpoint folder to resume from")
    args = p.parse_args(argv)

    manifest = DatasetManifest.read(args.data)
    # Only the keys LlamaForCausalLM.forward accepts: the Trainer passes the batch as **kwargs.
    dataset = ShardIterableDataset(args.data, args.batch_size, seed=0, fields=("input_ids", "labels", "position_ids"))
    loader = ShardDataLoader(dataset)
    if args.resume:
        with open(os.path.join(args.resume, LOADER_STATE)) as f:
            loader.load_state_dict(json.load(f))

    config = LlamaConfig(
        vocab_size=manifest.vocab_size, hidden_size=64, intermediate_size=128,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=manifest.seq_len, pad_token_id=manifest.pad_token_id,
        eos_token_id=manifest.eos_token_id, bos_token_id=None, tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    training_args = TrainingArguments(
        output_dir=args.output, max_steps=args.steps, learning_rate=3e-3, lr_scheduler_type="constant",
        per_device_train_batch_size=args.batch_size, logging_steps=max(1, args.steps // 4), report_to="none",
        save_strategy="steps" if args.save_steps else "no", save_steps=args.save_steps or 500,
        ignore_data_skip=True, use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0, seed=0,
    )
    trainer = ShardTrainer(model=model, args=training_args, train_loader=loader, callbacks=[LoaderStateCallback(loader)])
    result = trainer.train(resume_from_checkpoint=args.resume)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    print(f"trained {result.global_step} steps; losses {[round(x, 3) for x in losses]}")
    return {"global_step": result.global_step, "losses": losses, "loader_state": loader.state_dict()}


if __name__ == "__main__":
    main()
