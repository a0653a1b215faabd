"""Reading labelled images for `prepare`: class folders, IDX files and tables of paths, decoded to
one stored size and channel count, de-duplicated and split as texts are; and every kind of bad
input refused or skipped with a message naming the file."""
import gzip
import io
import struct
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mlcore.config import PrepareConfig
from mlcore.data import idx, images
from mlcore.data.images import decode_image, detect_modality, prepare_image_splits, to_array
from mlcore.errors import UserError

COLOURS = {"cat": (200, 30, 30), "dog": (30, 200, 30), "fox": (30, 30, 200)}


def _picture(colour, i: int, size=(10, 10)) -> Image.Image:
    """A flat colour with one pixel set from i, so that no two pictures are identical."""
    arr = np.full((size[1], size[0], 3), colour, np.uint8)
    arr[0, 0] = (i % 256, (i * 7) % 256, (i * 13) % 256)
    return Image.fromarray(arr, "RGB")


def _folder(root: Path, per_class: int = 10, classes=COLOURS) -> Path:
    for label, colour in classes.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            _picture(colour, i).save(root / label / f"{i}.png")
    return root


def _config(path, **kw) -> PrepareConfig:
    return PrepareConfig(input=str(path), val_fraction=0.2, test_fraction=0.2, **kw)


def _png(im: Image.Image, fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    im.save(out, fmt)
    return out.getvalue()


def _write_idx(path: Path, arr: np.ndarray, extra: bytes = b"", cut: int = 0) -> Path:
    data = struct.pack(">I", 0x800 + arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes() + extra
    data = data[:len(data) - cut]
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def _idx_pair(folder: Path, part: str, images_arr: np.ndarray, labels: np.ndarray, gz: bool = True) -> None:
    suffix = ".gz" if gz else ""
    _write_idx(folder / f"{part}-images-idx3-ubyte{suffix}", images_arr)
    _write_idx(folder / f"{part}-labels-idx1-ubyte{suffix}", labels.astype(np.uint8))


def _distinct_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 6, 6), dtype=np.uint8), np.arange(n) % 3


# --- class folders ---------------------------------------------------------------------------------

def test_a_folder_of_class_folders_is_read_split_and_stored_as_rgb_rows(tmp_path):
    root = _folder(tmp_path / "pets")
    (root / "cat" / "notes.txt").write_text("taken in 2024")
    (root / "dog" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "README.md").write_text("pets")
    p = _config(root)
    assert detect_modality(p) == ("image", "prepare.input is a folder of 3 class folders")
    cleaned, splits = prepare_image_splits(p)
    assert {k: len(v) for k, v in splits.items()} == {"train": 18, "val": 6, "test": 6}
    for part in splits.values():
        assert list(part.columns) == ["pixels", "height", "width", "channels", "label", "group", "source"]
        assert part["label"].value_counts().to_dict() == {label: len(part) // 3 for label in COLOURS}  # stratified
    stats = cleaned.stats
    assert stats["rows_in"] == 30 and stats["non_image_files_skipped"] == 2
    assert stats["files_outside_class_folders_skipped"] == 1
    assert (stats["image_size"], stats["channels"], stats["image_modes_seen"]) == (10, 3, {"RGB": 30})
    assert list(cleaned.unlabelled.columns) == list(splits["train"].columns) and cleaned.unlabelled.empty
    arr = to_array(splits["train"])
    assert arr.shape == (18, 10, 10, 3) and arr.dtype == np.uint8 and arr.flags.writeable
    row = splits["train"].iloc[0]
    assert tuple(arr[0, 5, 5]) == COLOURS[row["label"]] and row["source"].startswith(f"{row['label']}/")
    seen = [set(part["source"]) for part in splits.values()]
    assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])


def test_a_corrupt_image_is_skipped_and_counted_but_a_class_of_only_broken_ones_is_an_error(tmp_path):
    root = _folder(tmp_path / "pets")
    whole = (root / "cat" / "0.png").read_bytes()
    (root / "cat" / "half.png").write_bytes(whole[: len(whole) // 2])
    (root / "dog" / "fake.jpg").write_text("not a jpeg")
    cleaned, splits = prepare_image_splits(_config(root))
    assert cleaned.stats["unreadable_images_dropped"] == 2 and sum(map(len, splits.values())) == 30
    assert any("cat/half.png" in m for m in cleaned.stats["unreadable_examples"])
    report = images.image_report(splits, cleaned.stats)
    assert report["dropped"]["unreadable_images_dropped"]["count"] == 2
    for f in (root / "fox").iterdir():
        f.write_bytes(f.read_bytes()[:30])
    with pytest.raises(UserError, match=r"pets/fox: all 10 images of class 'fox' are unreadable"):
        prepare_image_splits(_config(root))


def test_an_empty_class_folder_fewer_than_two_classes_and_split_folders_are_errors(tmp_path):
    root = _folder(tmp_path / "pets")
    (root / "owl").mkdir()
    with pytest.raises(UserError, match=r"pets/owl: this class folder holds no image files"):
        prepare_image_splits(_config(root))
    (root / "owl" / "notes.txt").write_text("todo")
    with pytest.raises(UserError, match=r"owl: this class folder holds no image files \(1 other files"):
        prepare_image_splits(_config(root))
    one = _folder(tmp_path / "one", classes={"cat": COLOURS["cat"]})
    with pytest.raises(UserError, match=r"one: holds 1 class folder\(s\) \['cat'\]; a classifier needs at least 2"):
        prepare_image_splits(_config(one))
    splits = tmp_path / "splits"
    _folder(splits / "train")
    _folder(splits / "test")
    with pytest.raises(UserError, match=r"look like splits, not classes.*prepare.test_input"):
        prepare_image_splits(_config(splits))
    with pytest.raises(UserError, match="split_column"):
        prepare_image_splits(_config(root, split_column="part"))


def test_a_train_folder_and_a_test_folder(tmp_path):
    train, test = _folder(tmp_path / "train"), _folder(tmp_path / "test", per_class=4)
    for label in COLOURS:  # test pictures of their own: a colour a little off
        for i in range(4):
            _picture(tuple(c + 5 for c in COLOURS[label]), i).save(test / label / f"{i}.png")
    cleaned, splits = prepare_image_splits(_config(train, test_input=str(test)))
    assert len(splits["test"]) == 12 and len(splits["val"]) + len(splits["train"]) == 30
    assert set(cleaned.labelled["split"]) == {"train", "test"} and cleaned.stats["test_rows_kept_as_given"] == 12


# --- decoding --------------------------------------------------------------------------------------

def test_decode_image_handles_every_mode_the_one_same_way():
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent: white
    assert decode_image(_png(rgba), 3, None, "a.png")[0, 0].tolist() == [255, 255, 255]
    assert decode_image(_png(rgba), 1, None, "a.png")[0, 0].tolist() == [255]
    half = Image.new("LA", (4, 4), (0, 128))
    assert decode_image(_png(half), 1, None, "la.png")[0, 0, 0] in (127, 128)
    pal = Image.new("RGB", (4, 4), (10, 20, 30)).convert("P", palette=Image.Palette.ADAPTIVE)
    assert decode_image(_png(pal), 3, None, "p.png")[0, 0].tolist() == [10, 20, 30]
    wide = Image.fromarray(np.array([[0, 32896, 65535, 1000]], dtype=np.uint16))
    assert wide.mode == "I;16"
    assert decode_image(_png(wide), 1, None, "16.png")[0, :, 0].tolist() == [0, 128, 255, 4]
    cmyk = Image.new("CMYK", (4, 4), (0, 255, 255, 0))  # red ink-free cyan: RGB red
    assert decode_image(_png(cmyk, "JPEG"), 3, None, "c.jpg")[1, 1].tolist()[0] > 200
    grey = decode_image(_png(Image.new("L", (4, 4), 77)), 3, None, "g.png")
    assert grey.shape == (4, 4, 3) and grey[0, 0].tolist() == [77, 77, 77]


def test_decode_image_resizes_the_short_side_and_centre_crops_deterministically():
    arr = np.zeros((10, 20, 3), np.uint8)
    arr[:, :5], arr[:, 5:15], arr[:, 15:] = (255, 0, 0), (0, 255, 0), (0, 0, 255)
    data = _png(Image.fromarray(arr, "RGB"))
    out = decode_image(data, 3, (5, 5), "wide.png")
    assert out.shape == (5, 5, 3) and out.flags.c_contiguous
    assert out[2, 2].tolist() == [0, 255, 0]  # the centre stays; the red and blue edges are cropped
    assert np.array_equal(out, decode_image(data, 3, (5, 5), "wide.png"))


def test_truncated_non_image_and_decompression_bomb_files_raise_naming_the_source(monkeypatch):
    whole = _png(_picture((1, 2, 3), 0, (32, 32)))
    with pytest.raises(UserError, match=r"^cat/7.png: could not be read as an image: it is truncated"):
        decode_image(whole[: len(whole) // 2], 3, None, "cat/7.png")
    with pytest.raises(UserError, match=r"^x.png: .*not an image file"):
        decode_image(b"hello", 3, None, "x.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    for side in (30, 12):  # over twice the limit Pillow raises; between, it only warns: refused alike
        with pytest.raises(UserError, match=r"^big.png: .*decompression-bomb limit"):
            decode_image(_png(Image.new("L", (side, side))), 1, None, "big.png")


def test_mixed_sizes_and_modes_are_converted_to_one_size_and_counted(tmp_path):
    root = tmp_path / "mixed"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    for i in range(5):
        Image.new("RGBA", (12, 12), (200, 0, 0, 255 - i)).save(root / "a" / f"rgba{i}.png")
        Image.new("RGB", (16 + i, 24), (0, 0, 200 - i)).convert("P").save(root / "b" / f"p{i}.gif")
    Image.fromarray(np.full((20, 20), 30000, np.uint16)).save(root / "a" / "wide.png")  # I;16
    Image.new("CMYK", (30, 40), (200, 0, 0, 0)).save(root / "b" / "cmyk.jpg")
    cleaned, splits = prepare_image_splits(_config(root, image_size="auto"))
    stats = cleaned.stats
    assert stats["channels"] == 3 and stats["image_size"] == 16  # the median short side
    assert stats["converted_images"] == {"RGBA": 5, "P": 5, "I;16": 1, "CMYK": 1}
    assert stats["resized_images"] == 12 and stats["image_sizes_seen"]["12x12"] == 5
    assert to_array(cleaned.labelled).shape == (12, 16, 16, 3)
    fixed, _ = prepare_image_splits(_config(root, image_size=8))
    assert to_array(fixed.labelled).shape == (12, 8, 8, 3) and fixed.stats["resized_images"] == 12


def test_a_dataset_of_only_grey_images_is_stored_with_one_channel(tmp_path):
    root = tmp_path / "grey"
    for label, value in (("dark", 40), ("light", 220)):
        (root / label).mkdir(parents=True)
        for i in range(5):
            Image.new("L", (6, 6), value + i).save(root / label / f"{i}.png")
    Image.fromarray(np.full((6, 6), 60000, np.uint16)).save(root / "light" / "wide.png")
    Image.new("1", (6, 6), 1).save(root / "light" / "bw.bmp")
    cleaned, _ = prepare_image_splits(_config(root))
    assert cleaned.stats["channels"] == 1 and to_array(cleaned.labelled).shape == (12, 6, 6, 1)


# --- de-duplication --------------------------------------------------------------------------------

def test_identical_images_are_kept_once_and_conflicting_ones_dropped(tmp_path):
    root = _folder(tmp_path / "pets")
    (root / "cat" / "copy.png").write_bytes((root / "cat" / "3.png").read_bytes())
    _picture(COLOURS["cat"], 4).save(root / "cat" / "same_pixels.bmp")  # other bytes, same pixels
    (root / "dog" / "cat_in_dog.png").write_bytes((root / "cat" / "5.png").read_bytes())
    cleaned, splits = prepare_image_splits(_config(root))
    stats = cleaned.stats
    assert stats["duplicate_images_dropped"] == 2 and stats["conflicting_label_images_dropped"] == 1
    assert stats["conflicting_examples"] == ["cat/5.png"]
    kept = set(cleaned.labelled["source"])
    assert "cat/5.png" not in kept and "dog/cat_in_dog.png" not in kept and len(kept) == 33 - 2 - 2
    assert images.image_summary(splits, cleaned)["duplicate_images_dropped"] == 2


def test_a_test_image_stays_as_given_and_its_copies_leave_train(tmp_path):
    train_x, train_y = _distinct_digits(30, 0)
    test_x, test_y = _distinct_digits(9, 1)
    train_x[0], train_y[0] = test_x[0], (test_y[0] + 1) % 3  # a test image, labelled otherwise in train
    _idx_pair(tmp_path, "train", train_x, train_y)
    _idx_pair(tmp_path, "t10k", test_x, test_y)
    cleaned, splits = prepare_image_splits(_config(tmp_path))
    assert len(splits["test"]) == 9 and cleaned.stats["train_val_images_dropped_as_test_images"] == 1
    assert "train-images-idx3-ubyte.gz#0" not in set(splits["train"]["source"]) | set(splits["val"]["source"])


# --- IDX -------------------------------------------------------------------------------------------

def test_idx_folders_give_t10k_as_the_test_split_and_labels_txt_names_the_classes(tmp_path):
    train_x, train_y = _distinct_digits(30, 0)
    test_x, test_y = _distinct_digits(9, 1)
    _idx_pair(tmp_path, "train", train_x, train_y)
    _idx_pair(tmp_path, "t10k", test_x, test_y, gz=False)
    (tmp_path / "labels.txt").write_text("zero\none\ntwo\n")
    p = _config(tmp_path)
    assert detect_modality(p) == ("image", "prepare.input is a folder of IDX files")
    cleaned, splits = prepare_image_splits(p)
    assert {k: len(v) for k, v in splits.items()} == {"train": 24, "val": 6, "test": 9}  # val: a share of train
    test = splits["test"]
    assert test["source"].tolist() == [f"t10k-images-idx3-ubyte#{i}" for i in range(9)]
    assert test["label"].tolist() == [["zero", "one", "two"][y] for y in test_y]
    assert np.array_equal(to_array(test)[..., 0], test_x)
    single = _config(tmp_path / "train-images-idx3-ubyte.gz")
    assert detect_modality(single) == ("image", "prepare.input is an IDX file")
    cleaned, splits = prepare_image_splits(single)
    assert sum(map(len, splits.values())) == 30 and "split" not in cleaned.labelled


@pytest.mark.parametrize("gz", [False, True])
def test_an_idx_header_that_disagrees_with_the_file_length_is_an_error(tmp_path, gz):
    arr = np.zeros((5, 4, 4), np.uint8)
    name = "train-images-idx3-ubyte" + (".gz" if gz else "")
    short = _write_idx(tmp_path / name, arr, cut=10)
    with pytest.raises(UserError, match=rf"{name}: the IDX header says 5 × 4 × 4 values, so 96 bytes.*holds 86 "
                                        r"\(truncated\)"):
        idx.read_idx(short)
    long = _write_idx(tmp_path / name, arr, extra=b"\0\0")
    with pytest.raises(UserError, match=r"holds 98 \(it has extra bytes at the end\)"):
        idx.read_idx(long)


def test_bad_idx_files_name_the_file(tmp_path):
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x89PNG\r\n\x1a\n....")
    with pytest.raises(UserError, match=r"train-images-idx3-ubyte: is not an IDX file.*starts with 0x89504e47"):
        idx.read_idx(tmp_path / "train-images-idx3-ubyte")
    (tmp_path / "cut.gz").write_bytes(gzip.compress(b"\0" * 100)[:-12])
    with pytest.raises(UserError, match=r"cut.gz: could not be read as an IDX file: the compressed stream ends"):
        idx.read_idx(tmp_path / "cut.gz")
    _write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((5, 4, 4), np.uint8))
    with pytest.raises(UserError, match=r"labels file .*train-labels-idx1-ubyte\[.gz\] is missing"):
        prepare_image_splits(_config(tmp_path / "train-images-idx3-ubyte"))
    _write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(4, np.uint8))
    with pytest.raises(UserError, match=r"train-images-idx3-ubyte holds 5 images but .*train-labels-idx1-ubyte "
                                        r"holds 4 labels"):
        prepare_image_splits(_config(tmp_path))
    _write_idx(tmp_path / "train-labels-idx1-ubyte", np.array([0, 1, 2, 3, 4], np.uint8))
    (tmp_path / "labels.txt").write_text("a\nb\n")
    with pytest.raises(UserError, match=r"labels.txt: it names 2 classes but the labels go up to id 4"):
        prepare_image_splits(_config(tmp_path))


# --- tables of paths -------------------------------------------------------------------------------

def _table(root: Path, n: int = 10, **extra) -> pd.DataFrame:
    (root / "imgs").mkdir(parents=True)
    rows = []
    for label, colour in COLOURS.items():
        for i in range(n):
            _picture(colour, i).save(root / "imgs" / f"{label}{i}.jpg", quality=95)
            rows.append({"image": f"imgs/{label}{i}.jpg", "label": label, "owner": f"{label}-{i // 2}"})
    return pd.DataFrame(rows).assign(**extra)


def test_a_table_of_paths_is_split_by_groups(tmp_path):
    df = _table(tmp_path)
    df.loc[0, "label"] = ""  # no label: skipped, as no unlabelled images are used yet
    df.to_csv(tmp_path / "pets.csv", index=False)
    p = _config(tmp_path / "pets.csv", label_column="label", group_column="owner")
    assert detect_modality(p) == ("image", "the table has the column 'image'")
    cleaned, splits = prepare_image_splits(p)
    assert cleaned.stats["unlabelled_images_skipped"] == 1 and sum(map(len, splits.values())) == 29
    owners = [set(part["group"]) for part in splits.values()]
    assert not (owners[0] & owners[1] or owners[0] & owners[2] or owners[1] & owners[2])
    assert splits["train"]["source"].str.startswith("imgs/").all()
    text = _config(tmp_path / "pets.csv", image_column="picture")
    assert detect_modality(text) == ("text", "the table has no column 'picture' (prepare.image_column)")
    assert detect_modality(_config(tmp_path / "pets.csv", modality="text")) == ("text", "prepare.modality")


def test_a_table_split_column_fixes_the_splits(tmp_path):
    df = _table(tmp_path)
    df["part"] = ["test" if i % 5 == 0 else "train" for i in range(len(df))]
    df.to_parquet(tmp_path / "pets.parquet")
    cleaned, splits = prepare_image_splits(_config(tmp_path / "pets.parquet", label_column="label",
                                                   group_column=None, split_column="part"))
    assert len(splits["test"]) == 6 and len(splits["train"]) + len(splits["val"]) == 24
    assert set(splits["test"]["source"]) == set(df.loc[df["part"] == "test", "image"])


@pytest.mark.parametrize("path, message", [
    ("imgs/nowhere.jpg", r"data row 4: 'image' \(prepare.image_column\) is 'imgs/nowhere.jpg', which is not a file "
                         r"under .*; 2 of 30 image paths are missing"),
    ("/etc/passwd", r"data row 4: 'image' \(prepare.image_column\) is '/etc/passwd', which is absolute"),
    ("../secret.png", r"data row 4: .*'../secret.png', which leaves the folder of the table"),
    ("imgs/../../x.png", r"data row 4: .*which leaves the folder of the table"),
    ("https://example.com/x.png", r"data row 4: 'image' is a URL"),
])
def test_bad_paths_in_a_table_name_the_row(tmp_path, path, message):
    df = _table(tmp_path)
    df.loc[3, "image"] = path
    df.loc[7, "image"] = "imgs/gone.jpg"
    df.to_csv(tmp_path / "pets.csv", index=False)
    with pytest.raises(UserError, match=rf"pets.csv: {message}"):
        prepare_image_splits(_config(tmp_path / "pets.csv", label_column="label", group_column=None))


def test_an_empty_table_and_a_missing_column_are_errors(tmp_path):
    (tmp_path / "empty.csv").write_text("image,label\n")
    with pytest.raises(UserError, match=r"empty.csv: has no data rows"):
        prepare_image_splits(_config(tmp_path / "empty.csv", label_column="label", group_column=None,
                                     modality="image"))
    _table(tmp_path).to_csv(tmp_path / "pets.csv", index=False)
    with pytest.raises(UserError, match=r"column 'movie_name' \(params.yaml prepare.group_column\) is missing.*"
                                  r"Set prepare.group_column to one of them, or to null \(no grouping\)\."):
        prepare_image_splits(_config(tmp_path / "pets.csv", label_column="label"))


# --- realistic data and speed ----------------------------------------------------------------------

def test_scikit_learns_digits_as_class_folders_split_stratified_and_seeded(tmp_path):
    from sklearn.datasets import load_digits

    digits = load_digits()
    for i, (x, y) in enumerate(zip(digits.images, digits.target, strict=True)):
        (tmp_path / str(y)).mkdir(exist_ok=True)
        Image.fromarray((x * 255 / 16).round().astype(np.uint8), "L").save(tmp_path / str(y) / f"{i}.png")
    p = PrepareConfig(input=str(tmp_path), val_fraction=0.1, test_fraction=0.1)
    cleaned, splits = prepare_image_splits(p)
    stats = cleaned.stats
    assert (stats["rows_in"], stats["image_size"], stats["channels"], stats["classes"]) == (1797, 8, 1, 10)
    kept = 1797 - stats["duplicate_images_dropped"] - 2 * stats["conflicting_label_images_dropped"]
    assert sum(map(len, splits.values())) >= kept - 2 and len(splits["test"]) == pytest.approx(180, abs=2)
    total = cleaned.labelled["label"].value_counts()
    for part in splits.values():
        share = part["label"].value_counts() / len(part)
        assert (abs(share - total / total.sum()) < 0.02).all()  # stratified
    train = to_array(splits["train"])
    first = splits["train"].iloc[0]
    index = int(first["source"].split("/")[1].removesuffix(".png"))
    assert np.array_equal(train[0, ..., 0], (digits.images[index] * 255 / 16).round().astype(np.uint8))
    _, again = prepare_image_splits(p)
    assert again["test"]["source"].tolist() == splits["test"]["source"].tolist()


def test_to_array_turns_60000_rows_of_28_by_28_into_one_array_in_well_under_a_second():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (60_000, 28, 28, 1), dtype=np.uint8)
    df = pd.DataFrame({"pixels": list(map(bytes, pixels.reshape(60_000, -1))), "height": 28, "width": 28,
                       "channels": 1})
    start = time.perf_counter()
    arr = to_array(df)
    assert time.perf_counter() - start < 1.0
    assert arr.shape == (60_000, 28, 28, 1) and np.array_equal(arr, pixels)
    with pytest.raises(UserError, match="the prepared data is damaged"):
        to_array(df.assign(pixels=df["pixels"].where(df.index != 5, b"\0")))


def test_a_photos_rotation_tag_is_applied():
    photo = Image.new("RGB", (4, 2), (90, 90, 90))
    exif = photo.getexif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to view
    out = io.BytesIO()
    photo.save(out, "JPEG", exif=exif)
    assert decode_image(out.getvalue(), 3, None, "phone.jpg").shape == (4, 2, 3)


def test_a_table_without_labelled_rows_is_an_error(tmp_path):
    _table(tmp_path, n=2).assign(label="").to_csv(tmp_path / "pets.csv", index=False)
    with pytest.raises(UserError, match=r"pets.csv: holds no labelled images"):
        prepare_image_splits(_config(tmp_path / "pets.csv", label_column="label", group_column=None))
