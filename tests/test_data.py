import json

import pandas as pd
import pytest

from mlcore.data import cleaning as D
from mlcore.data.tables import read_table, require_columns
from mlcore.errors import UserError
from tests.conftest import make_reviews


def test_clean_normalises_drops_and_reports():
    df = pd.DataFrame({
        "t": ["  good   film ", "good film", "", "   ", "bad film", "bad film", "odd one", "odd one", "a plot", "x"],
        "y": ["pos", "pos", "pos", "neg", "neg", "neg", "pos", "neg", "plot", ""],
        "g": list("abcdefghij"),
    })
    res = D.clean(df, "t", "y", "g", ["plot"])
    assert res.stats["empty_text_dropped"] == 2
    assert res.stats["conflicting_label_texts_dropped"] == 1
    assert res.stats["duplicates_dropped"] == 2
    assert sorted(res.labelled["text"]) == ["bad film", "good film"]
    assert sorted(res.unlabelled["text"]) == ["a plot", "x"]


def test_missing_values_from_parquet_count_as_empty_or_unlabelled():
    df = pd.DataFrame({"t": ["good", None, float("nan"), "fine"], "y": [1, 0, 1, None]})
    res = D.clean(df, "t", "y", None, [])
    assert res.stats["empty_text_dropped"] == 2
    assert list(res.labelled["label"]) == ["1"] and list(res.unlabelled["text"]) == ["fine"]


def test_grouped_split_has_no_leak_and_is_stratified_and_seeded():
    df = D.clean(make_reviews(n=600, n_movies=60), "text", "category", "movie_name", ["plot"]).labelled
    a = D.split(df, 0.1, 0.1, seed=7, grouped=True)
    b = D.split(df, 0.1, 0.1, seed=7, grouped=True)
    assert all(a[k].equals(b[k]) for k in a)
    groups = {k: set(v["group"]) for k, v in a.items()}
    assert (not (groups["train"] & groups["test"]) and not (groups["train"] & groups["val"])
            and not (groups["val"] & groups["test"]))
    assert sum(len(v) for v in a.values()) == len(df)
    for part in a.values():
        share = (part["label"] == "fresh").mean()
        assert 0.3 < share < 0.7
    assert 0.05 < len(a["test"]) / len(df) < 0.2


def test_ungrouped_split_sizes():
    df = D.clean(make_reviews(n=200), "text", "category", None, ["plot"]).labelled
    parts = D.split(df, 0.1, 0.2, seed=0, grouped=False)
    assert len(parts["test"]) == 40 and len(parts["val"]) == 20


def test_split_rejects_single_class():
    df = pd.DataFrame({"text": ["a", "b", "c", "d"], "label": ["x"] * 4, "group": list("abcd")})
    with pytest.raises(UserError, match="at least 2"):
        D.split(df, 0.1, 0.1, 0, grouped=False)


def test_report_counts_per_class_and_split():
    df = D.clean(make_reviews(n=200), "text", "category", "movie_name", ["plot"])
    parts = D.split(df.labelled, 0.15, 0.15, 0, grouped=True)
    rep = D.report(parts, df.unlabelled, df.stats)
    assert rep["groups_shared_across_splits"] == 0
    assert sum(rep["splits"][s]["rows"] for s in parts) == 200
    assert set(rep["splits"]["train"]["per_class"]) == {"fresh", "rotten"}
    json.dumps(rep)


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet", ".csv.bz2"])
def test_read_table_formats(tmp_path, suffix):
    df = make_reviews(n=20, n_plots=0)
    path = tmp_path / f"data{suffix}"
    if suffix == ".tsv":
        df.to_csv(path, sep="\t", index=False)
    elif suffix == ".jsonl":
        df.to_json(path, orient="records", lines=True)
    elif suffix == ".parquet":
        df.to_parquet(path)
    else:
        df.to_csv(path, index=False)
    back = read_table(path)
    assert list(back["text"]) == list(df["text"])


def test_read_table_errors_name_the_file_and_column(tmp_path):
    with pytest.raises(UserError, match="not found"):
        read_table(tmp_path / "missing.csv")
    with pytest.raises(UserError, match="extension"):
        read_table(tmp_path / "x.txt") if (tmp_path / "x.txt").write_text("a") else None
    path = tmp_path / "d.csv"
    pd.DataFrame({"review": ["a"], "label": ["b"]}).to_csv(path, index=False)
    df = read_table(path)
    with pytest.raises(UserError) as err:
        require_columns(df, path, {"prepare.text_column": "text"})
    assert "prepare.text_column" in str(err.value) and "'text'" in str(err.value) and "review" in str(err.value)


def test_stratified_subsample_is_seeded_and_keeps_label_shares():
    import numpy as np

    from mlcore.data.sampling import stratified_subsample

    labels = np.array(["fresh"] * 740 + ["rotten"] * 540 + ["rare"] * 3)
    rows = stratified_subsample(labels, 200, seed=42)
    assert len(rows) == 200 and len(set(rows)) == 200 and list(rows) == sorted(rows)
    counts = {k: int((labels[rows] == k).sum()) for k in ("fresh", "rotten", "rare")}
    assert counts == {"fresh": 115, "rotten": 84, "rare": 1}  # 115.3, 84.2, 0.5: each label kept
    assert list(stratified_subsample(labels, 200, seed=42)) == list(rows)  # deterministic
    assert list(stratified_subsample(labels, 200, seed=43)) != list(rows)
    assert list(stratified_subsample(list(labels), 200, seed=42)) == list(rows)  # any sequence of labels
    assert list(stratified_subsample(labels, None, seed=1)) == list(range(len(labels)))
    assert list(stratified_subsample(labels, 5000, seed=1)) == list(range(len(labels)))
    assert len(stratified_subsample(labels, 2, seed=1)) == 2
