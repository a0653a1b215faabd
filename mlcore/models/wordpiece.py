"""WordPiece tokenizer training with the `tokenizers` library."""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def train_wordpiece(texts: Iterable[str], vocab_size: int, max_length: int) -> PreTrainedTokenizerFast:
    """A BERT-style uncased WordPiece tokenizer trained on `texts`."""
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=max_length,
    )


def train_or_reuse(texts: list[str], vocab_size: int, max_length: int, cache: Path) -> PreTrainedTokenizerFast:
    """Train the tokenizer, or reuse the one an interrupted run of these settings trained
    (kept in `cache`): the trainer is not reproducible across processes, and a resumed
    model needs the vocabulary it was trained with."""
    key = hashlib.md5(json.dumps([texts, vocab_size, max_length]).encode()).hexdigest()
    if (cache / "key.txt").is_file() and (cache / "key.txt").read_text() == key:
        return AutoTokenizer.from_pretrained(cache)
    tokenizer = train_wordpiece(texts, vocab_size, max_length)
    tokenizer.save_pretrained(cache)
    (cache / "key.txt").write_text(key)
    return tokenizer


def vocab_digest(tokenizer) -> str:
    """Identity of a vocabulary: a checkpoint is resumed only onto the one it was trained with."""
    return hashlib.md5(json.dumps(sorted(tokenizer.get_vocab().items())).encode()).hexdigest()
