"""Shared fixtures: the real MiniLM, and tiny random-weight transformers models.

The tiny models are built from configs (no download); they share a byte-level
BPE tokenizer trained here on a few sentences, so their tokens carry real
``Ġ`` markers.
"""

from __future__ import annotations

import os

import pytest
from tiny_models import CORPUS

os.environ.setdefault("HF_HUB_OFFLINE", "1")

@pytest.fixture(scope="session")
def minilm():
    pytest.importorskip("transformers")
    from attnwidget.models import load_minilm

    return load_minilm()


@pytest.fixture(scope="session")
def bpe_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=420, special_tokens=["<s>", "</s>", "<pad>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        unk_token="<unk>", model_max_length=64,
    )
