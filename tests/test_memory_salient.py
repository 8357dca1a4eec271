"""Salient-token slot initialisation: which tokens it picks, and the slots it writes."""

from __future__ import annotations

import pytest
import torch

from lpm_local.chat.encoding import ChatFormat
from lpm_local.memory.config import MemoryConfig
from lpm_local.memory.salient import pick_salient, salient_slots, salient_token_ids, token_surprise
from lpm_local.memory.slots import init_slots
from lpm_local.memory.windows import history_tokens

pytestmark = pytest.mark.usefixtures("one_torch_thread")

USER, ASSISTANT = 0, 1


def test_pick_skips_openers_assistants_and_punctuation_and_goes_round_robin():
    # message A: positions 0-3, assistant 4-5, message B: 6-9
    ids = [10, 11, 12, 13, 14, 15, 20, 21, 22, 11]
    roles = [USER] * 4 + [ASSISTANT] * 2 + [USER] * 4
    surprise = torch.tensor([99.0, 5.0, 1.0, 7.0, 50.0, 50.0, 99.0, 3.0, 9.0, 8.0])
    is_word = [True, True, True, False, True, True, True, True, True, True]
    # A's best word is 11 (13 is punctuation, 10 opens the message); B's best is 22, then 11
    # (already taken), then 21. B first: its best surprise (9) beats A's (5).
    assert pick_salient(ids, roles, surprise, 2, is_word) == [1, 8]
    assert pick_salient(ids, roles, surprise, 4, is_word) == [1, 2, 7, 8]  # history order
    assert pick_salient(ids, roles, surprise, 9, is_word) == [1, 2, 7, 8]  # no repeats, no more
    assert pick_salient(ids, [ASSISTANT] * len(ids), surprise, 4, is_word) == []


def test_surprise_is_the_models_negative_log_likelihood(tiny_backbone):
    model = tiny_backbone.model
    ids = [5, 17, 3, 40]
    with torch.no_grad():
        logp = model(input_ids=torch.tensor([ids])).logits[0].float().log_softmax(-1)
    expected = torch.tensor([0.0] + [-logp[i, ids[i + 1]].item() for i in range(3)])
    assert torch.allclose(token_surprise(model, ids), expected, atol=1e-5)
    # in chunks: each chunk is scored on its own, its first token without context
    chunked = token_surprise(model, ids + ids + [9], chunk=4)
    assert torch.allclose(chunked, torch.cat([expected, expected, torch.zeros(1)]), atol=1e-5)


def test_slots_are_embeddings_of_the_users_own_words(tiny_backbone):
    model, chat = tiny_backbone.model, ChatFormat(tiny_backbone.tokenizer)
    turns = [
        ("user", "My sister works as a veterinarian in Lisbon."),
        ("assistant", "Noted, thanks!"),
        ("user", "I collect antique typewriters and play the bassoon."),
    ]
    config = MemoryConfig(
        hidden_size=tiny_backbone.hidden_size,
        slot_dim=tiny_backbone.hidden_size,
        heads=1,
        n_slots=4,
        n_soft_tokens=4,
    )
    chosen = salient_token_ids(model, chat, turns, config.n_slots, config.salient_max_tokens)
    user_ids = {i for i, r in zip(*history_tokens(chat, turns, 512)) if r == USER}
    assistant_only = set(chat.text_ids("Noted, thanks!")) - user_ids
    assert len(chosen) == 4 and len(set(chosen)) == 4
    assert set(chosen) <= user_ids and not set(chosen) & assistant_only
    slots = salient_slots(model, chat, turns, config, seed=3)
    weight = model.get_input_embeddings().weight.detach().float()
    assert torch.equal(slots, weight[chosen])
    assert torch.equal(salient_slots(model, chat, turns, config, seed=3), slots)  # deterministic


def test_short_or_empty_histories_are_topped_up_with_the_prompt_tuning_init(tiny_backbone):
    model, chat = tiny_backbone.model, ChatFormat(tiny_backbone.tokenizer)
    config = MemoryConfig(
        hidden_size=tiny_backbone.hidden_size,
        slot_dim=tiny_backbone.hidden_size,
        heads=1,
        n_slots=8,
        n_soft_tokens=8,
    )
    weight = model.get_input_embeddings().weight
    reference = init_slots(config, weight, seed=5)
    assert torch.equal(salient_slots(model, chat, [], config, seed=5), reference)
    assert torch.equal(
        salient_slots(model, chat, [("assistant", "Hello there!")], config, seed=5), reference
    )
    short = salient_slots(model, chat, [("user", "Hi, I am Ana")], config, seed=5)
    chosen = salient_token_ids(model, chat, [("user", "Hi, I am Ana")], 8, 512)
    assert 1 <= len(chosen) < 8
    assert torch.equal(short[len(chosen) :], reference[len(chosen) :])


def test_configs_written_with_the_retired_encoder_still_read():
    old = (
        MemoryConfig()
        .to_json()
        .replace('"salient_max_tokens": 16384', '"encoder_heads": 4, "encoder_max_tokens": 512')
    )
    assert "encoder_heads" in old
    assert MemoryConfig.from_json(old) == MemoryConfig()
    with pytest.raises(ValueError, match="unknown keys"):
        MemoryConfig.from_json(MemoryConfig().to_json().replace("heads", "hedas", 1))
