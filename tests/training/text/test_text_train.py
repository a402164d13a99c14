"""The text training loop: it learns a separable toy, its schedule, its OE batches and exact resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from training import train as epoch_module
from training.text import train as train_module
from training.text.config import TextOEConfig, TextOptimConfig
from training.text.data import TextSet
from training.text.encoder import SentenceEncoder, pretrained_dir
from training.text.nets import TINY, TextClassifier
from training.text.tokenize import TextTokenizer
from training.text.train import _linear_schedule, predict_text_logits, train_text_stage

TOPICS = {
    "cooking": ["recipe", "oven", "bake", "flour", "sugar", "butter", "dough", "kitchen"],
    "space": ["planet", "rocket", "orbit", "star", "galaxy", "astronaut", "moon", "telescope"],
    "sports": ["football", "goal", "match", "team", "score", "referee", "stadium", "coach"],
}


def topic_texts(per_topic: int, seed: int) -> TextSet:
    """Texts of 4 to 8 words drawn from one topic's vocabulary; labels in sorted topic order."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for label, words in enumerate(TOPICS.values()):
        for _ in range(per_topic):
            texts.append(" ".join(rng.choice(words, size=rng.integers(4, 9))))
            labels.append(label)
    return TextSet(tuple(texts), np.array(labels, dtype=np.int64))


OUTLIERS = tuple(f"an unrelated sentence number {i} about nothing in particular" for i in range(10))


@pytest.fixture(scope="module")
def tokenizer() -> TextTokenizer:
    return TextTokenizer(pretrained_dir() / "tokenizer.json", 16)


def _net(seed: int = 0) -> TextClassifier:
    torch.manual_seed(seed)
    return TextClassifier(SentenceEncoder(TINY), len(TOPICS), trainable_layers=2, dropout=0.1)


def _run(
    tokenizer: TextTokenizer, run_dir: Path, epochs: int, *, resume: bool = False, outliers: bool = False
) -> tuple[TextClassifier, dict[str, Any]]:
    net = _net()
    cfg_args = {"epochs": epochs, "batch_size": 8, "lr": 1e-3, "head_lr": 1e-2, "warmup_fraction": 0.1}
    cfg = TextOEConfig(**cfg_args, outlier_batch_ratio=0.5) if outliers else TextOptimConfig(**cfg_args)
    state = train_text_stage(
        stage="oe" if outliers else "baseline", net=net, tokenizer=tokenizer, train=topic_texts(10, 0),
        val=topic_texts(4, 1), cfg=cfg, run_dir=run_dir, seed=0, extra_state={"note": "toy"},
        outliers=OUTLIERS if outliers else None, resume=resume,
    )  # fmt: skip
    return net, state


def test_training_learns_the_toy_topics(tokenizer: TextTokenizer, tmp_path: Path) -> None:
    net, state = _run(tokenizer, tmp_path, epochs=6)
    history = state["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4, 5, 6]
    assert history[-1]["train_loss"] < history[0]["train_loss"] - 0.3  # about 1.12 -> 0.70 (ln 3 = 1.10 at chance)
    val_nll = [h["val_nll"] for h in history]
    assert val_nll == sorted(val_nll, reverse=True) and val_nll[-1] < 0.75
    assert history[-1]["train_accuracy"] >= 0.9
    assert history[-1]["val_accuracy"] == 1.0
    assert state["note"] == "toy" and state["stage"] == "baseline" and state["epochs"] == 6
    val = topic_texts(4, 1)
    assert val.labels is not None
    assert predict_text_logits(net, tokenizer, val.texts).argmax(1).tolist() == val.labels.tolist()
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 6


@pytest.mark.parametrize(
    ("total", "warmup", "expected"),
    [
        (10, 2, [0.5, 1.0, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125, 0.0]),
        (4, 0, [1.0, 0.75, 0.5, 0.25, 0.0]),
        (5, 4, [0.25, 0.5, 0.75, 1.0, 1.0, 0.0]),
    ],
)
def test_linear_schedule_warms_up_then_decays_to_zero(total: int, warmup: int, expected: list[float]) -> None:
    assert [_linear_schedule(step, total, warmup) for step in range(total + 1)] == expected


def test_the_learning_rates_follow_the_schedule_per_group(
    tokenizer: TextTokenizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[list[float]] = []
    real_step = torch.optim.AdamW.step

    def record_then_step(self: torch.optim.AdamW, *args: Any, **kwargs: Any) -> Any:
        seen.append([group["lr"] for group in self.param_groups])
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", record_then_step)
    _run(tokenizer, tmp_path, epochs=2)  # 30 texts / 8 = 4 steps per epoch, 8 in all, warm-up ceil(0.8) = 1
    scales = [1.0, 1.0, 6 / 7, 5 / 7, 4 / 7, 3 / 7, 2 / 7, 1 / 7]
    assert len(seen) == 8
    for lrs, scale in zip(seen, scales, strict=True):
        # Groups sorted by (is_head, no_decay): encoder decayed, encoder biases/norms, head weight, head bias.
        assert lrs == pytest.approx([1e-3 * scale, 1e-3 * scale, 1e-2 * scale, 1e-2 * scale], rel=1e-12)


def test_oe_steps_forward_in_and_outlier_texts_together(
    tokenizer: TextTokenizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[int, int, float]] = []
    real_loss = train_module.outlier_exposure_loss

    def spy(logits: torch.Tensor, y: torch.Tensor, weight: float) -> torch.Tensor:
        calls.append((logits.shape[0], y.shape[0], weight))
        return real_loss(logits, y, weight)

    monkeypatch.setattr(train_module, "outlier_exposure_loss", spy)
    _run(tokenizer, tmp_path / "oe", epochs=1, outliers=True)
    # 30 texts in batches of 8 (the last one 6), each with round(8 * 0.5) = 4 outliers; weight 1.0.
    assert calls == [(12, 8, 1.0), (12, 8, 1.0), (12, 8, 1.0), (10, 6, 1.0)]
    calls.clear()
    _run(tokenizer, tmp_path / "baseline", epochs=1)
    assert calls == [(8, 8, 0.0), (8, 8, 0.0), (8, 8, 0.0), (6, 6, 0.0)]


def test_the_matched_stage_repeats_the_oe_stage_without_the_oe_term(
    tokenizer: TextTokenizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The matched twin's stage: the OE stage's in-distribution batches, order and learning rates, step for step,
    with no outlier rows and the OE term's weight 0."""
    steps: list[tuple[list[int], int, float, list[float]]] = []
    real_loss, real_step = train_module.outlier_exposure_loss, train_module.step_on
    seen: dict[str, Any] = {}

    def loss_spy(logits: torch.Tensor, y: torch.Tensor, weight: float) -> torch.Tensor:
        seen.update(y=y.tolist(), rows=logits.shape[0], weight=weight)
        return real_loss(logits, y, weight)

    def step_spy(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> float:
        steps.append((seen["y"], seen["rows"], seen["weight"], [g["lr"] for g in optimizer.param_groups]))
        return real_step(optimizer, loss)

    monkeypatch.setattr(train_module, "outlier_exposure_loss", loss_spy)
    monkeypatch.setattr(train_module, "step_on", step_spy)
    cfg = TextOEConfig(epochs=2, batch_size=8, lr=1e-3, head_lr=1e-2, warmup_fraction=0.25, outlier_batch_ratio=0.5)
    runs: dict[str, list[tuple[list[int], int, float, list[float]]]] = {}
    for stage, outliers in (("oe", OUTLIERS), ("matched", None)):
        steps.clear()
        state = train_text_stage(
            stage=stage, net=_net(), tokenizer=tokenizer, train=topic_texts(10, 0), val=topic_texts(4, 1), cfg=cfg,
            run_dir=tmp_path / stage, seed=0, extra_state={}, outliers=outliers,
        )  # fmt: skip
        assert state["stage"] == stage and state["epochs"] == 2
        assert (tmp_path / stage / "checkpoints" / f"{stage}.pt").is_file()
        runs[stage] = list(steps)
    oe, matched = runs["oe"], runs["matched"]
    assert len(oe) == len(matched) == 8  # 2 epochs of 30 texts in batches of 8
    assert [s[0] for s in matched] == [s[0] for s in oe]  # the same labels in the same order: the same batches
    assert len({tuple(s[0]) for s in oe[:4]}) > 1 and [s[0] for s in oe[:4]] != [s[0] for s in oe[4:]]
    assert [s[3] for s in matched] == [s[3] for s in oe]  # the same schedule, step for step
    assert [(s[1] - len(s[0]), s[2]) for s in oe] == [(4, 1.0)] * 8  # round(8 * 0.5) outliers, weight 1.0
    assert [(s[1] - len(s[0]), s[2]) for s in matched] == [(0, 0.0)] * 8  # no outlier rows, no OE term


@pytest.mark.parametrize("outliers", [False, True], ids=["baseline", "oe"])
def test_resumed_run_equals_uninterrupted_run(
    tokenizer: TextTokenizer, tmp_path: Path, outliers: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    straight, _ = _run(tokenizer, tmp_path / "straight", epochs=2, outliers=outliers)

    class KilledError(Exception):
        pass

    real_save = epoch_module.save_checkpoint  # end_epoch (shared with the image loop) checkpoints

    def save_then_die(path: Path, state: dict[str, object]) -> None:
        real_save(path, state)
        raise KilledError

    monkeypatch.setattr(epoch_module, "save_checkpoint", save_then_die)
    with pytest.raises(KilledError):
        _run(tokenizer, tmp_path / "killed", epochs=2, outliers=outliers)
    monkeypatch.setattr(epoch_module, "save_checkpoint", real_save)
    stage = "oe" if outliers else "baseline"
    checkpoint = tmp_path / "killed" / "checkpoints" / f"{stage}.pt"
    assert torch.load(checkpoint, weights_only=False)["epoch"] == 1

    with pytest.raises(FileExistsError, match="pass --resume"):
        _run(tokenizer, tmp_path / "killed", epochs=2, outliers=outliers)
    resumed, state = _run(tokenizer, tmp_path / "killed", epochs=2, resume=True, outliers=outliers)
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert [h["epoch"] for h in state["history"]] == [1, 2]

    # Resuming a finished stage runs nothing and hands back its final weights.
    again, state = _run(tokenizer, tmp_path / "killed", epochs=2, resume=True, outliers=outliers)
    assert state["epoch"] == 2
    for (name, a), (_, b) in zip(straight.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_outliers_need_an_oe_config_and_sets_need_labels(tokenizer: TextTokenizer, tmp_path: Path) -> None:
    train, val = topic_texts(2, 0), topic_texts(1, 1)
    common: dict[str, Any] = {"stage": "oe", "tokenizer": tokenizer, "run_dir": tmp_path, "seed": 0, "extra_state": {}}
    with pytest.raises(TypeError, match="outliers need a TextOEConfig"):
        train_text_stage(net=_net(), train=train, val=val, cfg=TextOptimConfig(), outliers=OUTLIERS, **common)
    with pytest.raises(ValueError, match="needs labelled train and val sets"):
        train_text_stage(net=_net(), train=TextSet(train.texts), val=val, cfg=TextOptimConfig(), **common)
    matched = {**common, "stage": "matched"}
    with pytest.raises(TypeError, match="matched stage takes the OE stage's TextOEConfig and no outliers"):
        train_text_stage(net=_net(), train=train, val=val, cfg=TextOEConfig(), outliers=OUTLIERS, **matched)
    with pytest.raises(TypeError, match="matched stage takes the OE stage's TextOEConfig and no outliers"):
        train_text_stage(net=_net(), train=train, val=val, cfg=TextOptimConfig(), **matched)
    assert not (tmp_path / "checkpoints").exists()


def test_predict_text_logits_returns_input_order(tokenizer: TextTokenizer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(train_module, "EVAL_BATCH", 3)  # several length-sorted batches
    net = _net().eval()
    texts = [" ".join(["star"] * n) for n in (7, 1, 12, 3, 3, 9, 2)]
    together = predict_text_logits(net, tokenizer, texts)
    alone = torch.cat([predict_text_logits(net, tokenizer, [text]) for text in texts])
    assert together.shape == (7, 3)
    assert torch.allclose(together, alone, atol=1e-5, rtol=0)
    assert predict_text_logits(net, tokenizer, []).shape == (0, 3)
