"""Predefined splits: prepare.split_column names each row's split, prepare.test_input gives the
test rows in a file of their own; a missing val split is carved from train."""
import pandas as pd
import pytest

from mlcore.config import PrepareConfig
from mlcore.data import cleaning
from mlcore.data.tables import read_input
from mlcore.errors import UserError


def _rows(n: int, prefix: str, split: str | None = None) -> pd.DataFrame:
    df = pd.DataFrame({"text": [f"{prefix} text {i}" for i in range(n)],
                       "label": ["pos" if i % 2 else "neg" for i in range(n)]})
    return df if split is None else df.assign(part=split)


def _splits(p: PrepareConfig) -> tuple[dict[str, pd.DataFrame], cleaning.CleanResult]:
    cleaned = cleaning.clean(read_input(p), p.text_column, p.label_column, p.group_column, p.unlabelled_labels,
                             split_col="__split__" if p.predefined else None)
    return cleaning.split_for(cleaned.labelled, p), cleaned


def test_a_split_column_fixes_every_row_and_a_duplicate_keeps_its_test_copy(tmp_path):
    train, val, test = _rows(40, "tr", "train"), _rows(10, "va", " Validation"), _rows(10, "te", "TEST")
    twin = test.iloc[[0]].assign(part="train", label="pos")  # the same text as a test row, labelled otherwise
    same = test.iloc[[1]].assign(part="train")  # the same text and label as a test row
    path = tmp_path / "all.csv"
    pd.concat([train, twin, same, val, test]).to_csv(path, index=False)
    p = PrepareConfig(input=str(path), label_column="label", group_column=None, split_column="part")
    splits, cleaned = _splits(p)
    assert set(splits["train"]["text"]) == set(train["text"])  # the test twin left train
    assert set(splits["val"]["text"]) == set(val["text"])
    assert splits["test"]["text"].tolist() == test["text"].tolist()  # scored as given, the twin's text too
    assert cleaned.stats["texts_in_several_splits"] == 2 and cleaned.stats["train_val_rows_dropped_as_test_texts"] == 2


def test_the_test_split_is_scored_as_given(tmp_path):
    """Repeated test texts and test texts labelled otherwise in train stay in test (as the
    published figures count them); train loses its copies instead."""
    train, test = _rows(40, "tr"), _rows(10, "te")
    test = pd.concat([test, test.iloc[[2]], test.iloc[[3]].assign(label="pos" if test["label"].iloc[3] == "neg"
                                                                   else "neg")])  # a repeat, a disagreement
    train = pd.concat([train, test.iloc[[4]].assign(label="pos")])
    train_path, test_path = tmp_path / "train.csv", tmp_path / "test.csv"
    train.to_csv(train_path, index=False)
    test.to_csv(test_path, index=False)
    p = PrepareConfig(input=str(train_path), test_input=str(test_path), label_column="label", group_column=None)
    splits, cleaned = _splits(p)
    assert len(splits["test"]) == 12 and sorted(splits["test"]["text"]) == sorted(test["text"])
    assert cleaned.stats["test_rows_kept_as_given"] == 12
    kept = set(splits["train"]["text"]) | set(splits["val"]["text"])
    assert kept == set(train["text"]) - {test["text"].iloc[4]} and not kept & set(test["text"])


def test_a_test_file_gives_the_test_split_and_val_is_carved_from_train(tmp_path):
    pd.concat([_rows(100, "tr"), pd.DataFrame({"text": ["an unlabelled train text"], "label": [""]})]).to_csv(
        tmp_path / "train.csv", index=False)
    test = pd.concat([_rows(20, "te"), pd.DataFrame({"text": ["an unlabelled test text"], "label": [""]})])
    test.to_csv(tmp_path / "test.csv", index=False)
    p = PrepareConfig(input=str(tmp_path / "train.csv"), test_input=str(tmp_path / "test.csv"), label_column="label",
                      group_column=None, val_fraction=0.2, seed=3)
    splits, cleaned = _splits(p)
    assert set(splits["test"]["text"]) == set(_rows(20, "te")["text"])
    assert (len(splits["train"]), len(splits["val"])) == (80, 20)
    assert set(splits["train"]["text"]) | set(splits["val"]["text"]) == set(_rows(100, "tr")["text"])
    assert splits["val"]["label"].value_counts().to_dict() == {"neg": 10, "pos": 10}  # stratified
    assert list(cleaned.unlabelled["text"]) == ["an unlabelled train text"]  # test text never reaches pretraining
    assert cleaned.stats["unlabelled_held_out_rows_dropped"] == 1
    again, _ = _splits(p)
    assert again["val"].equals(splits["val"])  # seeded


@pytest.mark.parametrize("case, message", [
    ("unknown", r"column 'part' \(prepare.split_column\) has values \['holdout'\] \(first at rows \[42\]\)"),
    ("unseen", r"label\(s\) \['meh'\] occur in the test split but never in train"),
    ("both", r"names test rows, and prepare.test_input"),
    ("no_test", r"no test rows after cleaning"),
    ("missing_column", r"column 'part' \(params.yaml prepare.split_column\) is missing"),
])
def test_bad_predefined_splits_are_user_errors_naming_the_file(tmp_path, case, message):
    rows = pd.concat([_rows(40, "tr", "train"), _rows(10, "te", "test")])
    if case == "unknown":
        rows.iloc[40, rows.columns.get_loc("part")] = "holdout"
    if case == "unseen":
        rows.iloc[45, rows.columns.get_loc("label")] = "meh"
    if case == "no_test":
        rows = rows[rows["part"] == "train"]
    if case == "missing_column":
        rows = rows.drop(columns="part")
    path = tmp_path / "all.csv"
    rows.to_csv(path, index=False)
    _rows(5, "extra").to_csv(tmp_path / "test.csv", index=False)
    p = PrepareConfig(input=str(path), label_column="label", group_column=None, split_column="part",
                      test_input=str(tmp_path / "test.csv") if case == "both" else None)
    with pytest.raises(UserError, match=message) as err:
        _splits(p)
    assert str(path) in str(err.value)
