"""The from-scratch WordPiece vocabulary: reproducible across processes, the standard BERT format."""
import json
import os
import subprocess
import sys
from collections import Counter
from itertools import pairwise
from pathlib import Path

import pytest
from transformers import BertTokenizerFast

from mlcore.models.masking import continuation_ids
from mlcore.models.wordpiece import PREFIX, SPECIAL_TOKENS, learn_vocab, train_wordpiece
from tests.conftest import make_reviews

ROOT = Path(__file__).resolve().parents[1]
ODD = ["Café au lait, naïve résumé!", "It's a 10/10... or 9½?", "東京 story", "ΣΊΣΥΦΟΣ", "tab\tand\nnewline"]
PROBES = ["the film was great", "an unseenword with ODD caps", "Café 東京 9½ ΣΊΣΥΦΟΣ", "zzzz qqqq"]

WORKER = """
import json, sys
from mlcore.models.wordpiece import train_wordpiece
texts, out = json.load(open(sys.argv[1])), sys.argv[2]
tok = train_wordpiece(texts, vocab_size=300, max_length=32)
tok.backend_tokenizer.model.save(out)
json.dump([tok(t)["input_ids"] for t in json.load(open(sys.argv[3]))], open(out + "/ids.json", "w"))
"""


def _texts() -> list[str]:
    return make_reviews(n=300, seed=3)["text"].tolist() + ODD


def test_two_processes_with_different_hash_seeds_learn_the_same_vocabulary(tmp_path):
    (tmp_path / "texts.json").write_text(json.dumps(_texts()))
    (tmp_path / "probes.json").write_text(json.dumps(PROBES))
    for seed in ("1", "2"):
        (tmp_path / seed).mkdir()
        done = subprocess.run([sys.executable, "-c", WORKER, str(tmp_path / "texts.json"), str(tmp_path / seed),
                               str(tmp_path / "probes.json")], cwd=ROOT, capture_output=True, text=True,
                              timeout=300, env={**os.environ, "PYTHONHASHSEED": seed})
        assert done.returncode == 0, done.stderr[-3000:]
    first, second = ((tmp_path / s / "vocab.txt").read_bytes() for s in ("1", "2"))
    assert first == second and len(first.splitlines()) == 300
    assert (tmp_path / "1" / "ids.json").read_text() == (tmp_path / "2" / "ids.json").read_text()
    # ...and the same as this process (whatever its hash seed) learns.
    ours = train_wordpiece(_texts(), vocab_size=300, max_length=32)
    ours.backend_tokenizer.model.save(str(tmp_path))
    assert (tmp_path / "vocab.txt").read_bytes() == first


def test_a_standard_bert_tokenizer_reads_the_vocabulary_the_same_way(tmp_path):
    ours = train_wordpiece(_texts(), vocab_size=300, max_length=32)
    ours.backend_tokenizer.model.save(str(tmp_path))
    bert = BertTokenizerFast(vocab=str(tmp_path / "vocab.txt"), do_lower_case=True)
    assert bert.get_vocab() == ours.get_vocab()
    for text in PROBES + ODD:
        assert ours(text)["input_ids"] == bert(text)["input_ids"], text
    assert [ours.convert_ids_to_tokens(i) for i in range(len(SPECIAL_TOKENS))] == SPECIAL_TOKENS


def test_every_seen_character_is_known_and_continuations_carry_the_prefix():
    texts = _texts()
    tok = train_wordpiece(texts, vocab_size=300, max_length=32)
    ids = tok(texts, add_special_tokens=False)["input_ids"]
    assert all(tok.unk_token_id not in row for row in ids)  # no [UNK] on the training text
    pieces = tok.tokenize("wonderfully")
    assert len(pieces) > 1 and not pieces[0].startswith(PREFIX) and all(p.startswith(PREFIX) for p in pieces[1:])
    continuation = continuation_ids(tok)  # whole-word masking's reading of the vocabulary
    assert {t for t, i in tok.get_vocab().items() if continuation[i]} == {
        t for t in tok.get_vocab() if t.startswith(PREFIX)}


def test_ties_go_to_the_highest_count_then_the_smallest_pair():
    # 10 symbols (6 characters, 4 seen as continuations), then 3 merges: ef (3), then ab, ba, cd tied at 2.
    vocab = learn_vocab({"cd": 2, "ba": 2, "ef": 3, "ab": 2}, vocab_size=len(SPECIAL_TOKENS) + 10 + 3)
    assert vocab[len(SPECIAL_TOKENS):] == ["a", "b", "c", "d", "e", "f", "##a", "##b", "##d", "##f", "ef", "ab", "ba"]


def _naive(counts: dict[str, int], vocab_size: int) -> list[str]:
    """The same learner, recounting every pair at every step."""
    splits = {w: [w[0]] + [PREFIX + c for c in w[1:]] for w in counts}
    vocab = list(dict.fromkeys([*SPECIAL_TOKENS, *sorted({c for w in counts for c in w}),
                                *sorted({p for s in splits.values() for p in s[1:]})]))
    while len(vocab) < vocab_size:
        pairs = Counter()
        for word, symbols in splits.items():
            for pair in pairwise(symbols):
                pairs[pair] += counts[word]
        if not pairs:
            break
        a, b = min(pairs, key=lambda p: (-pairs[p], p))
        new = a + b[len(PREFIX):]
        vocab += [new] if new not in vocab else []
        for word, symbols in splits.items():
            out, i = [], 0
            while i < len(symbols):
                if symbols[i:i + 2] == [a, b]:
                    out, i = [*out, new], i + 2
                else:
                    out, i = [*out, symbols[i]], i + 1
            splits[word] = out
    return vocab


@pytest.mark.parametrize("seed", [0, 1])
def test_the_incremental_learner_matches_a_full_recount(seed):
    words = " ".join(make_reviews(n=60, seed=seed)["text"]).split() + ["aaaa", "abab", "ababab", "aaaaaaa", "baba"]
    counts = Counter(words)
    for size in (100, 200, 10**6):  # the last runs out of pairs to merge
        assert learn_vocab(counts, size) == _naive(counts, size)
