"""The retrieval probe: seeded needles, scoring that tells retrieval from the
first-needle shortcut, truly paired runs, exact statistics, the verdict, and the command
end to end (tiny sizes; the CPU preset's figures are in the README)."""

from __future__ import annotations

import dataclasses
import json
import os
import re

import numpy as np
import pytest

from meap_data.config import PrepareConfig
from meap_data.prepare import run_prepare
from meap_data.probe.haystack import dataset_haystack, stdlib_haystack
from meap_data.probe.needles import ContextBuilder, eval_set, needle_format
from meap_data.probe.report import LEARNED_FLOOR, verdict
from meap_data.probe.scoring import accuracy, by_depth, correct
from meap_data.probe.train import PRESETS, ProbeConfig, corrupt, evaluation_examples, init_model, train_objective
from meap_data.stats import sign_test, wilcoxon_signed_rank

TINY = ProbeConfig(seq_len=160, train_queries=2, n_layer=1, n_embd=32, n_head=2, batch_size=4, steps=3, warmup=1, eval_per_depth=6,
                   eval_every=2, quick_eval=8, seeds=2, needles=4, heldout_batches=1)


@pytest.fixture(scope="module")
def haystack():
    return stdlib_haystack(max_chars=1_500_000, vocab_size=1024)


def _builder(haystack, variant="kv", needles=None, queries=1):
    fmt = needle_format(variant)
    return ContextBuilder(haystack, haystack.held_out, fmt, 256, needles or fmt.default_needles, queries)


# ---------------------------------------------------------------------- needles


@pytest.mark.parametrize("variant", ["kv", "pairs", "passkey", "natural"])
def test_needles_are_seeded_and_the_answer_is_a_copy_of_its_needle(haystack, variant):
    a = eval_set(_builder(haystack, variant), (0.0, 0.5, 1.0), 10, seed=5)
    b = eval_set(_builder(haystack, variant), (0.0, 0.5, 1.0), 10, seed=5)
    c = eval_set(_builder(haystack, variant), (0.0, 0.5, 1.0), 10, seed=6)
    assert np.array_equal(a.ids, b.ids) and np.array_equal(a.target_rank, b.target_rank)
    assert not np.array_equal(a.ids, c.ids)
    assert a.ids.shape == (30, 256) and list(np.unique(a.depth)) == [0.0, 0.5, 1.0]
    for row, start, n in zip(a.ids, a.answer_start, a.answer_len):
        answer = row[start:start + n]
        earlier = row[:start]
        assert start + n == len(row)  # one query: the answer ends the context
        assert any(np.array_equal(earlier[i:i + n], answer) for i in range(len(earlier) - n + 1))
    if variant == "passkey":
        assert (a.target_rank == 0).all()
    else:  # the target is the first needle far more often at depth 0 than at depth 1
        assert (a.target_rank[a.depth == 0.0] == 0).mean() > (a.target_rank[a.depth == 1.0] == 0).mean()


def test_training_contexts_end_with_several_queries(haystack):
    ex = _builder(haystack, queries=3).batch(np.random.default_rng(0), 4)
    assert (ex.answer_start + ex.answer_len < 256).all()


# ---------------------------------------------------------------------- scoring


NEEDLE = re.compile(r"\nkey (\d+) holds (\d+)\.\n")


def _text_model(haystack, choose):
    """A hand-made model on the decoded text: ``choose(query_key, needles)`` picks the
    value to answer from the (key, value) needles found before the final query; its
    ids are predicted at the answer's positions (teacher forcing reads the true prefix)."""
    def predict(ids):
        pred = np.zeros_like(ids)
        for i, row in enumerate(ids):
            text = haystack.tokenizer.decode(row.tolist())
            cut = text.rindex("\nkey ")
            key = re.match(r"\nkey (\d+) holds ", text[cut:]).group(1)
            value = haystack.encode(choose(key, NEEDLE.findall(text[:cut + 1])))
            pred[i, len(row) - len(value) - 1:len(row) - 1] = value
        return pred
    return predict


def test_an_oracle_scores_100_and_the_first_needle_copier_exactly_the_primacy_baseline(haystack):
    examples = eval_set(_builder(haystack, "kv"), (0.0, 0.25, 0.5, 0.75, 1.0), 12, seed=3)
    by_key = _text_model(haystack, lambda key, needles: dict(needles)[key])
    oracle = accuracy(correct(by_key, examples), examples)
    assert oracle.accuracy == 1.0 and oracle.not_first == 1.0
    first = correct(_text_model(haystack, lambda key, needles: needles[0][1]), examples)
    shortcut = accuracy(first, examples)
    assert shortcut.accuracy == pytest.approx(shortcut.primacy) and 0 < shortcut.primacy < 1
    assert shortcut.not_first == 0.0 and shortcut.genuine == 0.0
    assert np.array_equal(first, examples.target_rank == 0)
    depth = by_depth(first, examples)
    # Half of the depth-1.0 zero: the target there is the last needle, never the first,
    # so the first-needle shortcut scores exactly 0 at depth 1 (and 1 at depth 0).
    assert depth[1.0].primacy == 0.0 and depth[1.0].accuracy == 0.0
    assert depth[0.0].primacy == 1.0 and depth[0.0].accuracy == 1.0


def test_evaluation_contexts_put_needles_where_training_contexts_do(haystack):
    """The other half of the depth-1.0 zero: evaluation contexts used to end with one
    query where training contexts end with several, so their haystack was longer and a
    depth-1.0 needle sat at positions no training needle ever took (learned positions:
    a trained model scored 0 there). Now both end with ``train_queries`` queries, and
    the scored first query starts where training contexts' first queries start."""
    cfg = ProbeConfig(seq_len=256, needles=4, train_queries=6, eval_per_depth=40)
    evals = evaluation_examples(cfg, haystack)
    train = ContextBuilder(haystack, haystack.train, needle_format(cfg.variant), cfg.seq_len, 4,
                           cfg.train_queries).batch(np.random.default_rng(0), 400)
    assert evals.answer_start.max() <= train.answer_start.max() + 2
    assert evals.answer_start.min() >= train.answer_start.min() - 2
    deepest = evals.take(evals.depth == 1.0)
    assert (deepest.answer_start < cfg.seq_len - 5 * 3).all()  # five more queries follow the scored one


# ---------------------------------------------------------------------- pairing


def test_paired_runs_get_identical_batches_and_initialisation(haystack):
    a, b = init_model(TINY, haystack.vocab_size, 7), init_model(TINY, haystack.vocab_size, 7)
    assert all(np.array_equal(x.detach().numpy(), y.detach().numpy())
               for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    seen = {}
    evals = eval_set(ContextBuilder(haystack, haystack.held_out, needle_format("kv"), TINY.seq_len, 4), (0.5,), 4, 1)
    for objective in ("ntp", "meap", "control"):
        train_objective(objective, TINY, haystack, 7, evals,
                        on_batch=lambda o, step, ids, inputs: seen.setdefault(o, []).append((ids.copy(), inputs.copy())))
    for step in range(TINY.steps):
        clean = seen["ntp"][step][0]
        assert np.array_equal(seen["meap"][step][0], clean) and np.array_equal(seen["control"][step][0], clean)
        assert np.array_equal(seen["ntp"][step][1], clean)
        masked = seen["meap"][step][1] != clean
        assert (seen["meap"][step][1][masked] == haystack.mask_id).all()
        assert masked.sum() == len(clean) * int(TINY.seq_len * TINY.mask_ratio)
        noisy = seen["control"][step][1] != clean
        assert not (noisy & ~masked).any() and haystack.mask_id not in seen["control"][step][1]
    assert not np.array_equal(corrupt("meap", clean, haystack, TINY, 7, 0), corrupt("meap", clean, haystack, TINY, 8, 0))


def test_the_cpu_presets_model_learns_key_matched_retrieval_at_every_depth():
    """What makes the cpu preset informative, at its own sizes on one seed (about 2.5
    minutes): NTP retrieves the queried needle's value (not the first needle's) at every
    depth after the preset's 1,000 steps. The filler haystack and token shift are what it
    takes (README: the same model without token shift stays at the random-needle level)."""
    cfg = dataclasses.replace(PRESETS["cpu"], objectives=("ntp",), seeds=1, eval_per_depth=40, eval_every=10_000,
                              quick_eval=20)
    hay = stdlib_haystack(vocab_size=cfg.vocab_size, text=cfg.haystack_text)
    evals = evaluation_examples(cfg, hay)
    result = train_objective("ntp", cfg, hay, 0, evals)
    depths = by_depth(np.array(result.outcomes), evals)
    assert set(depths) == set(cfg.depths)
    for depth, acc in depths.items():
        assert acc.genuine >= 0.5, (depth, acc)


# ---------------------------------------------------------------------- statistics and verdict


def test_sign_and_wilcoxon_tests_match_hand_computed_values():
    assert sign_test([0.1, 0.2, 0.3]) == 0.25  # 2 * (1/2)^3
    assert sign_test([1, 1, 1, 1, 1, 1, -1]) == pytest.approx(2 * 8 / 128)
    assert sign_test([0, 0]) == 1.0
    # 8 pairs, only the smallest negative: W+ = 35 of 36; P(W+ >= 35) = 2/256, two-sided 4/256.
    assert wilcoxon_signed_rank([0.5, 1.2, -0.3, 2.0, 1.1, 0.8, 0.9, 1.5]) == pytest.approx(4 / 256)
    assert wilcoxon_signed_rank([1, 2, 3]) == pytest.approx(2 / 8)
    # Ties: |d| = 1, 1, 2 -> ranks 1.5, 1.5, 3. The 8 sign patterns give W+ = 0, 1.5, 1.5, 3, 3,
    # 4.5, 4.5, 6 (centre 3). Observed 4.5: 6 patterns as far from 3 -> 0.75; all positive (6): 2/8.
    assert wilcoxon_signed_rank([1, -1, 2]) == pytest.approx(6 / 8)
    assert wilcoxon_signed_rank([1, 1, 2]) == pytest.approx(2 / 8)


def _report(ntp, meap, interval, p):
    return {"seeds": [0, 1, 2], "objectives": {"ntp": {"genuine": ntp}, "meap": {"genuine": meap}},
            "comparisons": {"meap-vs-ntp": {"interval": interval, "mean_difference": meap - ntp,
                                            "mcnemar_pooled": {"p_value": p}}}}


def test_the_verdict_follows_the_documented_rules():
    assert verdict(_report(LEARNED_FLOOR - 0.01, 0.9, [0.5, 0.9], 1e-9)).startswith("uninformative")
    assert verdict(_report(0.4, 0.6, [0.1, 0.3], 0.001)).startswith("MEAP helps")
    assert verdict(_report(0.4, 0.6, [0.1, 0.3], 0.2)).startswith("inconclusive")
    assert verdict(_report(0.6, 0.4, [-0.3, -0.1], 0.001)).startswith("MEAP hurts")
    assert verdict(_report(0.5, 0.51, [-0.03, 0.04], 0.8)).startswith("no effect")
    assert verdict(_report(0.5, 0.55, [-0.1, 0.2], 0.3)).startswith("inconclusive")
    # an exact test over thousands of discordant pairs underflows: said as a bound, not "p=0"
    assert verdict(_report(0.4, 0.9, [0.4, 0.6], 0.0)).endswith("pooled McNemar p<1e-300")
    assert verdict(_report(0.4, 0.6, [0.1, 0.3], 0.001)).endswith("pooled McNemar p=0.001")


# ---------------------------------------------------------------------- end to end


def test_probe_command_writes_the_report_on_a_users_dataset(tmp_path, stdlib, tokenizer_path, capsys):
    from meap_data import cli

    data = str(tmp_path / "data")
    run_prepare(PrepareConfig(inputs=(os.path.join(stdlib, "email", "**", "*.py"),), seq_len=128), data,
                tokenizer=tokenizer_path)
    hay = dataset_haystack(data)
    assert hay.mask_id == json.load(open(os.path.join(data, "manifest.json")))["mask_token_id"]
    out = str(tmp_path / "probe")
    args = ["probe", "--output", out, "--haystack", data, "--steps", "4", "--seeds", "2", "--seq-len", "160", "--train-queries", "2",
            "--n-layer", "1", "--n-embd", "32", "--n-head", "2", "--batch-size", "4", "--eval-per-depth", "4",
            "--eval-every", "2", "--quick-eval", "8", "--needles", "3", "--objectives", "ntp,meap,control",
            "--depths", "0,1", "--heldout-batches", "1", "-q"]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    report = json.load(open(os.path.join(out, "report.json")))
    assert set(report["objectives"]) == {"ntp", "meap", "control"} and report["seeds"] == [0, 1]
    assert set(report["comparisons"]) == {"meap-vs-ntp", "control-vs-ntp"}
    assert report["verdict"].startswith("uninformative")  # 4 steps learn no retrieval, and it says so
    assert f"verdict: {report['verdict']}" in printed and "| depth |" in printed
    assert report["needles"].startswith("variant pairs: needles like '\\n") and "Needles: variant pairs" in printed
    assert "answer tokens" in report["needles"]
    assert os.path.getsize(os.path.join(out, "probe.png")) > 10_000
    ntp = report["objectives"]["ntp"]
    assert len(ntp["curves"]["0"]) >= 2 and ntp["by_depth"]["0.0"]["primacy"] >= ntp["by_depth"]["1.0"]["primacy"]
    assert cli.main(args) == 2  # never overwrites a report
