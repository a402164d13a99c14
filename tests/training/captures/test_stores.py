"""A capture directory of several stores (one per service replica): read as one, labelled, curated and retrained on
together; and a store on a read-only mount (the retrain Job's view of the captures volume)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from service import capture_store
from tests.training.captures.conftest import Sent, add, png, stripes
from training.captures.curate import CurationConfig, curate, image_arrays
from training.captures.inputs import capture_pixels
from training.captures.retrain import _with_captures
from training.captures.store import Filter, read_captures, stores
from training.cli import main
from training.config import load_config
from training.pipeline import prepare

SHAPE = (1, 28, 28)
DIGITS = [str(d) for d in range(10)]


def two_replicas(root: Path) -> dict[str, list[Sent]]:
    """`root/oegate-a` and `root/oegate-b`, two stores written by the service's store code, interleaved in time."""
    sent: dict[str, list[Sent]] = {"oegate-a": [], "oegate-b": []}
    for i in range(6):
        replica = "oegate-a" if i % 2 == 0 else "oegate-b"
        store = root / replica
        store.mkdir(parents=True, exist_ok=True)
        sent[replica].append(add(store, f"{replica[-1]}{i}", png(stripes(i)), time=100.0 + i, source=f"app{i % 3}"))
    sent["oegate-b"].append(add(root / "oegate-b", "b-digit", png(stripes(50)), time=200.0, source="app0"))
    return sent


def test_a_directory_of_stores_reads_as_one_list_in_time_order(tmp_path: Path) -> None:
    sent = two_replicas(tmp_path)
    (tmp_path / "lost+found").mkdir()  # a volume's own directory: not a store, skipped
    (tmp_path / "oegate-c").mkdir()  # a replica that never wrote a capture: no index, skipped
    (tmp_path / "labels.txt").write_text("")
    assert stores(tmp_path) == [tmp_path / "oegate-a", tmp_path / "oegate-b"]
    assert stores(tmp_path / "oegate-a") == [tmp_path / "oegate-a"]
    captures = read_captures(tmp_path)
    assert [c.id for c in captures] == ["a0", "b1", "a2", "b3", "a4", "b5", "b-digit"]
    for capture in captures:
        replica = "oegate-a" if capture.id.startswith("a") else "oegate-b"
        assert capture.store == tmp_path / replica
        assert capture.path.read_bytes() == next(s.payload for s in sent[replica] if s.id == capture.id)
    assert [c.id for c in read_captures(tmp_path, Filter(source="app0", since=101.0))] == ["b3", "b-digit"]
    assert [c.id for c in read_captures(tmp_path / "oegate-b", Filter(until=104.0))] == ["b1", "b3"]


def test_neither_a_store_nor_a_directory_of_stores_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(ValueError) as error:
        read_captures(tmp_path / "empty")
    assert str(error.value) == (
        f"{tmp_path / 'empty'} is neither a capture store (no index.sqlite; is OEGATE_CAPTURE_DIR this directory?) "
        "nor a directory of stores (no subdirectory holds an index.sqlite)"
    )
    with pytest.raises(ValueError, match="is not a capture directory \\(no such directory\\)"):
        read_captures(tmp_path / "missing")


def test_the_same_id_in_two_stores_is_refused(tmp_path: Path) -> None:
    (tmp_path / "one").mkdir()
    add(tmp_path / "one", "same", png(stripes(0)), time=1.0)
    shutil.copytree(tmp_path / "one", tmp_path / "copy")
    with pytest.raises(ValueError) as error:
        read_captures(tmp_path)
    assert str(error.value) == (
        f"capture same is in two stores, {tmp_path / 'copy'} and {tmp_path / 'one'} (a copied store?): its label "
        "would be ambiguous"
    )


def test_commands_label_list_and_curate_across_stores(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    two_replicas(tmp_path)
    root = str(tmp_path)
    assert main(["captures", "label", root, "--source", "app1", "--as", "outlier"]) == 0
    assert capsys.readouterr().out == f"{tmp_path / 'labels.txt'}: 2 added, 0 changed to outlier\n"
    assert main(["captures", "label", root, "--ids", "b-digit", "--as", "in-distribution:7"]) == 0
    assert main(["captures", "label", root, "--until", "103", "--as", "outlier"]) == 0
    assert "2 added, 0 changed to outlier, 1 already labelled kept" in capsys.readouterr().out.splitlines()[-1]
    assert main(["captures", "list", root, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(row["id"], row["store"], row["label_review"]) for row in listed] == [
        ("a0", "oegate-a", "outlier"),
        ("b1", "oegate-b", "outlier"),
        ("a2", "oegate-a", "outlier"),
        ("b3", "oegate-b", None),
        ("a4", "oegate-a", "outlier"),
        ("b5", "oegate-b", None),
        ("b-digit", "oegate-b", "in-distribution:7"),
    ]
    assert main(["captures", "list", root, "--unlabelled"]) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()[1:-1]]
    assert [(row[0], row[-1]) for row in rows] == [("b3", "oegate-b"), ("b5", "oegate-b")]

    cfg = CurationConfig(holdout_percent=1.0)  # hold back (almost) nothing: every capture is checked below
    curated = curate(tmp_path, tmp_path / "labels.txt", "digits", cfg, shape=SHAPE, class_names=DIGITS)
    used = sorted(c.id for c, _ in curated.train + curated.heldout)
    assert used == ["a0", "a2", "a4", "b-digit", "b1"]
    assert curated.summary["stores"] == {"oegate-a": 3, "oegate-b": 2}
    outliers, valid, valid_labels = image_arrays(curated.train + curated.heldout, SHAPE, DIGITS)
    expected = {c.id: capture_pixels(c, SHAPE)[0] for c in read_captures(tmp_path)}
    assert np.array_equal(valid[0, 0], stripes(50)) and valid_labels.tolist() == [7]
    assert sorted(image.tobytes() for image in outliers[:, 0]) == sorted(
        expected[i].tobytes() for i in ("a0", "b1", "a2", "a4")
    )
    assert main(["captures", "curate", root, "--model", "digits", "--holdout-percent", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["stores"] == {"oegate-a": 3, "oegate-b": 2}


def test_retraining_adds_the_captures_of_every_store(tmp_path: Path) -> None:
    two_replicas(tmp_path / "captures")
    labels = tmp_path / "labels.txt"
    labels.write_text("a0 outlier\nb1 outlier\nb3 outlier\nb-digit in-distribution:7\n")
    overrides = ["data.in_distribution=mnist5k", "data.val_anomalies=val-uniform", f"run.run_dir='{tmp_path / 'run'}'"]
    ctx = prepare(load_config(None, overrides), "test", record=False)
    cfg = CurationConfig(holdout_percent=1.0)
    curated = curate(tmp_path / "captures", labels, "digits", cfg, shape=SHAPE, class_names=DIGITS)
    assert sorted(c.id for c, _ in curated.train) == ["a0", "b-digit", "b1", "b3"]
    pool = np.zeros((30, *SHAPE), np.uint8)
    train = ctx.data.train
    assert train.labels is not None
    retrain_ctx, mixed, record = _with_captures(ctx, curated, pool)
    # 3 outliers (2 from oegate-b, 1 from oegate-a) repeated to about a quarter of the pool: ceil(0.25*30/(0.75*3))
    assert record == {
        "base_pool_samples": 30,
        "outlier_captures": 3,
        "outlier_capture_repeats": 4,
        "outlier_capture_share": round(12 / 42, 4),
        "in_distribution_captures": 1,
    }
    by_id = {c.id: c for c in read_captures(tmp_path / "captures")}
    added = mixed[len(pool) :]
    for capture_id in ("a0", "b1", "b3"):
        picture = capture_pixels(by_id[capture_id], SHAPE)
        assert sum(np.array_equal(image, picture) for image in added) == 4
    new_train = retrain_ctx.data.train
    assert new_train.labels is not None and len(new_train.images) == len(train.images) + 1
    assert np.array_equal(new_train.images[-1], capture_pixels(by_id["b-digit"], SHAPE))
    assert int(new_train.labels[-1]) == 7


def read_only_view(source: Path, view: Path, script: str) -> subprocess.CompletedProcess[str]:
    """Run `python -c script VIEW` where VIEW is `source` bind-mounted read-only (a user and mount namespace, as
    `unshare -rm` makes them); skip when this machine allows no such namespace."""
    view.mkdir()
    shell = 'mount --bind "$1" "$2" && mount -o remount,bind,ro "$2" && exec "$3" -c "$4" "$2"'
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", shell, "sh", str(source), str(view), sys.executable, "pass"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if probe.returncode != 0:
        pytest.skip(f"no read-only bind mount here (unshare -rm: {probe.stderr.strip()})")
    return subprocess.run(
        ["unshare", "-rm", "sh", "-c", shell, "sh", str(source), str(view), sys.executable, script],
        capture_output=True, text=True, check=False, cwd=Path(__file__).parents[3],
    )  # fmt: skip


READ_IDS = (
    "import sys; from pathlib import Path; from training.captures.store import read_captures; "
    "print(','.join(c.id for c in read_captures(Path(sys.argv[1]))))"
)


def test_a_cleanly_closed_store_reads_on_a_read_only_mount(tmp_path: Path) -> None:
    two_replicas(tmp_path / "captures")
    # Closed cleanly: SQLite removed the WAL files, which a read-only reader could not create.
    assert not list((tmp_path / "captures").glob("*/index.sqlite-*"))
    result = read_only_view(tmp_path / "captures", tmp_path / "view", READ_IDS)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "a0,b1,a2,b3,a4,b5,b-digit\n"


def test_a_store_being_written_reads_on_a_read_only_mount(tmp_path: Path) -> None:
    two_replicas(tmp_path / "captures")
    store = tmp_path / "captures" / "oegate-a"
    with capture_store.opened(store) as writer:  # the replica is running: its log holds the newest rows
        record = capture_store.CaptureRecord(
            id="a-live", time=300.0, model="digits", version="1", kind="rejected", anomaly_score=0.9,
            threshold=0.5, label="3", label_index=3, reject=True, input_kind="image", media_type="image/png",
            extension=".png",
        )  # fmt: skip
        capture_store.add(store, writer, record, png(stripes(99)))
        assert (store / "index.sqlite-wal").stat().st_size > 0
        result = read_only_view(tmp_path / "captures", tmp_path / "view", READ_IDS)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "a0,b1,a2,b3,a4,b5,b-digit,a-live\n"
