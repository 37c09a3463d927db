"""Image sources: folder, CSV and Parquet agree; bad files are named or skipped and counted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dlforge.data.images import read_image_set, to_uint8_tensor
from dlforge.data.split import stratified_split
from dlforge.errors import DataError
from tests.conftest import write_digit_folder


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    return write_digit_folder(tmp_path / "images", labels=[0, 1, 2], per_class=6)


def _table(folder: Path) -> pd.DataFrame:
    rows = [(str(p.relative_to(folder.parent)), p.parent.name) for p in sorted(folder.rglob("*.png"))]
    return pd.DataFrame(rows, columns=["file", "digit"])


def test_folder_csv_and_parquet_give_the_same_set(folder: Path) -> None:
    by_folder = read_image_set(str(folder))
    table = _table(folder)
    table.to_csv(folder.parent / "labels.csv", index=False)
    table.to_parquet(folder.parent / "labels.parquet")
    by_csv = read_image_set(str(folder.parent / "labels.csv"), path_column="file", label_column="digit")
    by_parquet = read_image_set(str(folder.parent / "labels.parquet"), path_column="file", label_column="digit")
    for other in (by_csv, by_parquet):
        assert [p.resolve() for p in other.images] == [p.resolve() for p in by_folder.images]
        assert other.targets.tolist() == by_folder.targets.tolist()
        assert other.classes == by_folder.classes == ["0", "1", "2"]
    assert by_folder.channels == 3 and by_folder.native_size == (16, 16)
    assert len(by_folder) == 18


def test_builtin_digits() -> None:
    digits = read_image_set("builtin:digits")
    assert len(digits) == 1797 and digits.classes == [str(i) for i in range(10)]
    assert digits.images.dtype == np.uint8 and digits.images.max() == 255 and digits.channels == 1


def test_corrupt_image_is_named(folder: Path) -> None:
    bad = folder / "1" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png")
    with pytest.raises(DataError, match=r"broken\.png: cannot read image.*data\.on_error: skip"):
        read_image_set(str(folder))


def test_truncated_image_is_caught_before_training(folder: Path) -> None:
    good = sorted((folder / "2").glob("*.png"))[0]
    (folder / "2" / "cut.png").write_bytes(good.read_bytes()[:60])
    with pytest.raises(DataError, match=r"cut\.png"):
        read_image_set(str(folder))


def test_skip_counts_unreadable_images(folder: Path) -> None:
    (folder / "0" / "a.png").write_bytes(b"junk")
    (folder / "2" / "b.jpg").write_bytes(b"")
    images = read_image_set(str(folder), on_error="skip")
    assert len(images) == 18
    assert sorted(Path(f).name for f, _ in images.skipped) == ["a.png", "b.jpg"]


def test_csv_errors_name_file_and_line(folder: Path) -> None:
    table = _table(folder)
    table.loc[3, "file"] = "images/0/missing.png"
    table.to_csv(folder.parent / "labels.csv", index=False)
    with pytest.raises(DataError, match=r"labels\.csv:5: .*missing\.png: no such file"):
        read_image_set(str(folder.parent / "labels.csv"), path_column="file", label_column="digit")
    with pytest.raises(DataError, match=r"labels\.csv: no column 'path' \(data\.path_column\); columns: file, digit"):
        read_image_set(str(folder.parent / "labels.csv"))


def test_unknown_label_against_model_labels(folder: Path) -> None:
    with pytest.raises(DataError, match=r"label '2' is not one of the model's labels \['0', '1'\]"):
        read_image_set(str(folder), classes=["0", "1"])


def test_to_uint8_tensor_accepts_paths_pil_and_arrays(folder: Path) -> None:
    from PIL import Image

    path = sorted(folder.rglob("*.png"))[0]
    from_path = to_uint8_tensor(path, 3)
    from_pil = to_uint8_tensor(Image.open(path), 3)
    array = np.asarray(Image.open(path))
    from_array = to_uint8_tensor(array, 3)
    from_float = to_uint8_tensor(array.astype(np.float32) / 255.0, 3)
    for other in (from_pil, from_array, from_float):
        assert other.shape == (3, 16, 16) and bool((other == from_path).all())
    assert to_uint8_tensor(path, 1).shape == (1, 16, 16)
    with pytest.raises(DataError, match="expected uint8 or float"):
        to_uint8_tensor(array.astype(np.int32), 3)


def test_split_is_deterministic_disjoint_and_stratified() -> None:
    targets = np.repeat(np.arange(4), [100, 50, 30, 20])
    a = stratified_split(targets, 0.1, 0.2, seed=3)
    b = stratified_split(targets, 0.1, 0.2, seed=3)
    c = stratified_split(targets, 0.1, 0.2, seed=4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[2], c[2])
    train, val, test = a
    assert len(set(train) | set(val) | set(test)) == len(targets) == len(train) + len(val) + len(test)
    assert len(test) == 40 and len(val) == 20
    # Every class keeps its share in the test split (stratified).
    assert np.bincount(targets[test]).tolist() == [20, 10, 6, 4]
