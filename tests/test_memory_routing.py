"""The routed slot bank (``memory/routing.py``) on the tiny Qwen3: more slots than soft tokens,
each message reading the groups whose keys are nearest, keys fixed through a fit, empty groups
filled from new messages, and the app's refit and chat running on it."""

from __future__ import annotations

import threading

import pytest
import torch

from lpm_local.memory import refit_examples
from lpm_local.memory.config import MemoryConfig
from lpm_local.memory.fitting import fit_slots
from lpm_local.memory.frozen import load_frozen_memory
from lpm_local.memory.probes import Probe
from lpm_local.memory.refit import RefitSettings, run_refit
from lpm_local.memory.refit_examples import Examples, add_recall_examples
from lpm_local.memory.routing import (
    RoutedProjector,
    _read_layer,
    extend_bank,
    route_features,
    route_layer,
)
from lpm_local.memory.scheduler import locked_refit
from lpm_local.memory.slots import memory_from_bytes, slots_from_bytes
from lpm_local.memory.windows import make_windows, qa_window
from lpm_local.storage.records import NewMessage

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def bank_config(hidden: int, groups: int = 6, pick: int = 2, tokens: int = 4) -> MemoryConfig:
    return MemoryConfig(
        hidden_size=hidden,
        slot_dim=hidden,
        heads=1,
        n_slots=groups * (tokens + 1),
        n_soft_tokens=pick * tokens,
        identity_path=False,
        route_groups=groups,
        route_pick=pick,
    )


HISTORY = [
    ("user", "My cat is called Pixel and she is grey."),
    ("assistant", "A lovely name."),
    ("user", "I play the bassoon in an orchestra on Sundays."),
    ("assistant", "Wonderful."),
    ("user", "My brother Jonas lives in Montreal."),
    ("assistant", "A great city."),
]


def test_a_bank_needs_rows_for_every_key_and_token():
    assert bank_config(64).n_slots == 30 and bank_config(64).group_tokens == 4
    with pytest.raises(ValueError, match="rows"):
        MemoryConfig(
            hidden_size=64, slot_dim=64, heads=1, n_slots=24, n_soft_tokens=8,
            identity_path=False, route_groups=6, route_pick=2,
        )  # fmt: skip
    with pytest.raises(ValueError, match="route_pick"):
        MemoryConfig(
            hidden_size=64, slot_dim=64, heads=1, n_slots=30, n_soft_tokens=8,
            identity_path=False, route_groups=2, route_pick=4,
        )  # fmt: skip
    with pytest.raises(ValueError, match="identity_path"):
        MemoryConfig(
            hidden_size=64, slot_dim=64, heads=1, n_slots=30, n_soft_tokens=8,
            route_groups=6, route_pick=2,
        )  # fmt: skip
    # A config written before routing existed still reads back as a flat memory.
    assert not MemoryConfig.from_json(MemoryConfig().to_json()).routed


def test_a_message_reads_the_groups_nearest_to_it_and_only_their_token_rows():
    config = bank_config(8, groups=4, pick=2, tokens=3)
    projector = RoutedProjector(config)
    slots = torch.randn(config.n_slots, 8)
    keys = torch.eye(8)[:4] * 5
    for group, row in enumerate(projector.key_rows()):
        slots[row] = keys[group]
    query = (keys[3] + 0.5 * keys[1]).unsqueeze(0)  # nearest: group 3, then group 1
    assert projector.choose(slots, query).tolist() == [[1, 3]]
    slots.requires_grad_(True)
    soft, attention = projector(slots, query)
    assert soft.shape == (1, 6, 8) and attention.shape == (1, 1, 6, config.n_slots)
    expected = projector.token_rows(1) + projector.token_rows(3)  # bank order
    assert attention[0, 0].argmax(dim=-1).tolist() == expected
    assert torch.equal(soft[0], slots[expected].detach())
    (grad,) = torch.autograd.grad(soft.sum(), [slots])
    touched = sorted(set(grad.abs().sum(dim=-1).nonzero().flatten().tolist()))
    assert touched == expected  # no key row and no unchosen group receives a gradient


def test_empty_groups_are_read_only_when_too_few_groups_hold_a_key():
    config = bank_config(8, groups=4, pick=2, tokens=1)
    projector = RoutedProjector(config)
    slots = torch.zeros(config.n_slots, 8)
    slots[projector.key_rows()[2]] = torch.ones(8)
    picked = projector.choose(slots, -torch.ones(1, 8))  # far from the only key, still first
    assert 2 in picked[0].tolist()


def test_the_bank_files_each_message_under_its_own_reading(tiny_backbone):
    frozen = load_frozen_memory(tiny_backbone, bank_config(tiny_backbone.hidden_size))
    assert isinstance(frozen.projector, RoutedProjector)
    slots = frozen.fresh_slots(HISTORY, seed=0)
    keys = slots[frozen.projector.key_rows()]
    held = keys.abs().sum(dim=-1) > 0
    assert held.tolist() == [True, True, True, False, False, False]
    messages = [frozen.chat.text_ids(text) for role, text in HISTORY if role == "user"]
    readings = route_features(tiny_backbone.model, messages)
    assert torch.allclose(keys[:3], readings, atol=1e-5)  # in the order they were written
    # Token rows of a filled group start from the words of its own message.
    weight = tiny_backbone.model.get_input_embeddings().weight.detach()
    first = slots[frozen.projector.token_rows(0)[0]]
    assert any(torch.allclose(first, weight[i].float(), atol=1e-6) for i in messages[0])

    later = [*HISTORY, ("user", "I grew up in Tampere, in Finland."), ("assistant", "Nice.")]
    grown, sources = extend_bank(tiny_backbone.model, frozen.chat, frozen.projector, slots, later)
    assert torch.equal(grown[: 3 * 5], slots[: 3 * 5])  # groups with a key are left alone
    assert sources[: 3 * 5].tolist() == list(range(3 * 5))
    new = [r for r in range(3 * 5, 4 * 5) if grown[r].ne(slots[r]).any()]
    assert sources[new].eq(-1).all() and new[0] == 3 * 5  # the new key and words: written afresh
    assert (grown[frozen.projector.key_rows()].abs().sum(dim=-1) > 0).tolist() == [
        True, True, True, True, False, False,
    ]  # fmt: skip
    assert torch.equal(frozen.grown_slots(grown, later)[0], grown)  # nothing new: unchanged
    # A question asked in the chat tells nothing: it gets no group, or asking it again would
    # read the question's own group instead of the fact's.
    asked = [*later, ("user", "What is my cat called?"), ("assistant", "Pixel.")]
    assert torch.equal(frozen.grown_slots(grown, asked)[0], grown)
    # A fact told in front of a question is filed under the reading of the fact alone, with
    # token rows from the fact's words only.
    fact, question = "My sister Ilse is an architect.", " What should I bring her?"
    mixed = [*asked, ("user", fact + question), ("assistant", "A ruler.")]
    filed = frozen.grown_slots(grown, mixed)[0]
    alone = route_features(tiny_backbone.model, [frozen.chat.text_ids(fact)])[0]
    assert torch.allclose(filed[frozen.projector.key_rows()[4]], alone, atol=1e-5)
    asks_only = set(frozen.chat.text_ids(question)) - set(frozen.chat.text_ids(fact))
    rows = filed[frozen.projector.token_rows(4)]
    assert not any(torch.allclose(row, weight[i].float()) for row in rows for i in asks_only)
    assert any(torch.allclose(rows[0], weight[i].float()) for i in frozen.chat.text_ids(fact))


FULL = [
    ("user", "My cat is called Pixel and she is grey."),
    ("user", "I play the bassoon in an orchestra on Sundays."),
    ("user", "My brother Jonas lives in Montreal."),
    ("user", "I grew up in Tampere, in Finland."),
    ("user", "I drive an old green Volvo estate."),
    ("user", "My favourite dish is mushroom risotto."),
]


def _turns(messages: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [turn for message in messages for turn in (message, ("assistant", "Noted."))]


def test_a_full_bank_files_a_new_message_in_place_of_the_older_of_its_two_most_alike_groups(
    tiny_backbone,
):
    frozen = load_frozen_memory(tiny_backbone, bank_config(tiny_backbone.hidden_size))
    projector, step = frozen.projector, 5
    slots = frozen.fresh_slots(_turns(FULL), seed=0)
    assert projector.filled(slots).all()  # six messages, six groups: full
    update = ("user", "I play the cello in an orchestra on Sundays now.")
    grown, sources = extend_bank(
        tiny_backbone.model, frozen.chat, frozen.projector, slots, _turns([*FULL, update])
    )

    def reading(text):
        return route_features(tiny_backbone.model, [frozen.chat.text_ids(text)])[0]

    keys = grown[projector.key_rows()]
    assert torch.allclose(keys[-1], reading(update[1]), atol=1e-5)  # newest: the last group
    old_keys = slots[projector.key_rows()]
    kept = [g for g in range(6) if any(torch.equal(keys[p], old_keys[g]) for p in range(5))]
    assert len(kept) == 5
    (gone,) = set(range(6)) - set(kept)
    # The older of the two most alike keys (centred, as routing reads them) made way.
    stacked = torch.cat([old_keys, keys[-1:]])
    unit = torch.nn.functional.normalize(stacked - stacked.mean(dim=0), dim=-1)
    alike = unit @ unit.T
    alike.fill_diagonal_(-2.0)
    assert gone == min(divmod(int(alike.argmax()), 7))
    assert gone == 1  # here: the bassoon made way for the cello
    # The groups that stay keep their rows and their order, moved up past the one that went;
    # ``sources`` says where each row came from (the new group's key and words: nowhere).
    for place, group in enumerate(kept):
        rows = list(range(place * step, (place + 1) * step))
        assert sources[rows].tolist() == list(range(group * step, (group + 1) * step))
        assert torch.equal(grown[rows], slots[sources[rows]])
    assert sources[5 * step] == -1 and sources[5 * step + 1] == -1
    # Its token rows are its own words, or vocabulary rows: none of them is left over from the
    # message that made way (unless it is a word the two share).
    weight = tiny_backbone.model.get_input_embeddings().weight.detach().float()
    own = [weight[i] for i in frozen.chat.text_ids(update[1])]
    for r in range(5 * step + 1, 6 * step):
        if any(torch.equal(grown[r], slots[gone * step + t]) for t in range(1, step)):
            assert any(torch.equal(grown[r], w) for w in own)

    # The message that made way stays out: the next refit of the same history changes nothing.
    again, same = extend_bank(
        tiny_backbone.model, frozen.chat, frozen.projector, grown, _turns([*FULL, update])
    )
    assert torch.equal(again, grown) and same.tolist() == list(range(30))
    # A message older than the newest filed one never takes a group from another.
    earlier = [*FULL[:3], ("user", "I speak Finnish and Swedish."), *FULL[3:], update]
    assert torch.equal(frozen.grown_slots(grown, _turns(earlier))[0], grown)


def test_each_rows_learned_change_moves_with_it_when_a_full_bank_makes_room(tiny_backbone):
    frozen = load_frozen_memory(tiny_backbone, bank_config(tiny_backbone.hidden_size))
    slots = frozen.fresh_slots(_turns(FULL), seed=0)
    a, b = torch.randn(30, 3), torch.randn(3, tiny_backbone.hidden_size)
    update = ("user", "I play the cello in an orchestra on Sundays now.")
    grown, (a2, b2) = frozen.grown_slots(slots, _turns([*FULL, update]), (a, b))
    _, sources = extend_bank(
        tiny_backbone.model, frozen.chat, frozen.projector, slots, _turns([*FULL, update])
    )
    moved = sources >= 0
    assert (sources[moved] != torch.arange(30)[moved]).any()  # groups moved up past the gone one
    assert torch.equal(a2[moved], a[sources[moved]]) and torch.equal(b2, b)
    assert not a2[~moved].any()  # the new message's key and words start unchanged
    unchanged, (a3, _) = frozen.grown_slots(slots, _turns(FULL), (a, b))
    assert torch.equal(unchanged, slots) and torch.equal(a3, a)  # nothing new: as it was


def test_a_bank_probes_the_messages_it_files_and_not_one_that_made_way(tiny_backbone, monkeypatch):
    frozen = load_frozen_memory(tiny_backbone, bank_config(tiny_backbone.hidden_size))
    update = ("user", "I play the cello in an orchestra on Sundays now.")
    turns = _turns([*FULL, update])
    slots = frozen.fresh_slots(turns, seed=0)  # the bassoon made way for the cello (above)
    filed = frozen.filed_statements(slots, turns)
    assert filed == {text for _, text in [*FULL, update]} - {FULL[1][1]}
    assert frozen.filed_statements(slots, turns + [("user", "What is my job?")]) == filed

    seen: list[str] = []

    def write_probes(backbone, chat, messages, **_):  # the backbone's questions, stood in for
        seen.extend(messages)
        return [Probe(question="Q?", answer=f"You said: {m}", message=m) for m in messages[1:]]

    monkeypatch.setattr(refit_examples, "write_probes", write_probes)
    examples = Examples(windows=[], owner={0: 1}, tokens=len(turns), turns={1: turns})
    examples.windows = [object()] * 12  # room for an open recall example per message
    add_recall_examples(frozen, examples, probed_messages=32, filed=filed)
    assert seen == [text for _, text in reversed([*FULL, update]) if text != FULL[1][1]]
    # Five probes came back; the one message without (the newest) is asked the open question.
    # The bassoon, which made way, is never taught back.
    opened = [frozen.chat.tokenizer.decode(w.input_ids) for w in examples.windows[12 + 5 :]]
    assert len(opened) == 1 and "cello" in opened[0]
    assert not any(
        "bassoon" in frozen.chat.tokenizer.decode(w.input_ids) for w in examples.windows[12:]
    )


def test_the_reading_stops_at_the_routing_layer_with_the_full_forwards_states(tiny_backbone):
    model = tiny_backbone.model
    ids = torch.tensor([[5, 17, 42, 99, 7]])
    layer = 1  # of the tiny Qwen3's two
    with torch.no_grad():
        every = model(input_ids=ids, output_hidden_states=True).hidden_states
        full = every[layer]
        # The top layer's reading is the final norm's output, as ``hidden_states`` has it.
        top = route_layer(model)
        assert torch.allclose(_read_layer(model, ids, top), every[top], atol=1e-6)
    ran = []
    above = model.get_decoder().layers[layer]  # the first layer a reading must not run
    handle = above.register_forward_hook(lambda module, args, output: ran.append(True))
    try:
        with torch.no_grad():
            early = _read_layer(model, ids, layer)
        assert ran == []  # it stopped below
        assert torch.allclose(early, full, atol=1e-6)
        with torch.no_grad():  # a normal forward of the same model still runs to the end
            logits = model(input_ids=ids).logits
        assert ran == [True] and logits.shape[-1] == model.config.vocab_size
    finally:
        handle.remove()


def test_a_reading_in_one_thread_never_cuts_short_another_threads_forward(tiny_backbone):
    model = tiny_backbone.model
    ids = torch.tensor([[5, 17, 42, 99, 7]])
    with torch.no_grad():
        expected = model(input_ids=ids).logits
    failures: list[BaseException] = []

    def chat_forwards():
        try:
            for _ in range(20):
                with torch.no_grad():
                    assert torch.allclose(model(input_ids=ids).logits, expected, atol=1e-5)
        except BaseException as exc:  # reported below: a thread's assert is otherwise lost
            failures.append(exc)

    chat = threading.Thread(target=chat_forwards)
    chat.start()
    for _ in range(20):
        route_features(model, [[5, 17, 42, 99, 7]])
    chat.join()
    assert failures == []


def test_a_fit_moves_the_chosen_token_rows_and_never_a_key(tiny_backbone):
    frozen = load_frozen_memory(tiny_backbone, bank_config(tiny_backbone.hidden_size))
    slots = frozen.fresh_slots(HISTORY, seed=0)
    windows = make_windows(frozen.chat, HISTORY) + [
        qa_window(frozen.chat, "What is my cat called?", "", "Your cat is called Pixel.")
    ]
    assert all(w.route_ids for w in windows)  # history windows are filed under their message
    result = fit_slots(tiny_backbone.model, frozen.projector, slots, windows, steps=8, lr=0.05)
    keys = frozen.projector.key_rows()
    assert torch.equal(result.slots[keys], slots[keys])
    assert result.train_losses[-1] < result.train_losses[0]
    moved = (result.slots - slots).abs().sum(dim=-1) > 0
    assert moved.any() and not moved[keys].any()


def test_the_app_refits_and_answers_through_a_bank(tiny_backbone, store):
    config = bank_config(tiny_backbone.hidden_size)
    frozen = load_frozen_memory(tiny_backbone, config)
    profile = store.ensure_profile()
    for c in range(3):
        conv = store.create_conversation(profile.id, f"facts {c}")
        store.add_messages(conv.id, [NewMessage(role, text) for role, text in HISTORY])
    settings = RefitSettings(steps=6, eval_every=2, patience=3, probed_messages=0)

    def refit():
        return locked_refit(
            store, profile.id, lambda: run_refit(store, frozen, profile.id, settings=settings)
        )

    outcome = refit()
    assert outcome.committed, outcome
    slots, stored = slots_from_bytes(store.current_memory_version(profile.id).tensors)
    assert stored == config and tuple(slots.shape) == (config.n_slots, config.slot_dim)
    keys = frozen.projector.key_rows()
    assert (slots[keys].abs().sum(dim=-1) > 0).sum().item() == 3  # one group per message

    soft, attention = frozen.soft(slots, "What is my cat called?")
    assert soft.shape == (config.n_soft_tokens, config.hidden_size)
    assert attention.shape == (1, config.n_soft_tokens, config.n_slots)
    assert attention.sum().item() == config.n_soft_tokens  # one slot per soft token

    # A new message gets an empty group at the next refit; the filled ones keep their keys.
    conv = store.create_conversation(profile.id, "more")
    store.add_messages(
        conv.id,
        [NewMessage("user", "I grew up in Tampere, in Finland."), NewMessage("assistant", "Ok.")],
    )
    second = refit()
    if second.committed:
        grown, _ = slots_from_bytes(store.current_memory_version(profile.id).tensors)
        assert (grown[keys].abs().sum(dim=-1) > 0).sum().item() == 4
        assert torch.equal(grown[keys[:3]], slots[keys[:3]])


def test_a_banks_refits_learn_one_low_rank_change_and_go_on_fitting_it(tiny_backbone, store):
    config = bank_config(tiny_backbone.hidden_size)
    frozen = load_frozen_memory(tiny_backbone, config)
    profile = store.ensure_profile()
    conv = store.create_conversation(profile.id, "facts")
    store.add_messages(conv.id, [NewMessage(role, text) for role, text in HISTORY])
    settings = RefitSettings(steps=6, eval_every=2, patience=3, probed_messages=0, change_rank=3)

    def refit():
        outcome = locked_refit(
            store, profile.id, lambda: run_refit(store, frozen, profile.id, settings=settings)
        )
        blob = store.current_memory_version(profile.id).tensors
        return outcome, slots_from_bytes(blob)[0], memory_from_bytes(blob)[2]

    outcome, slots, (a, b) = refit()
    assert outcome.committed, outcome
    keys = frozen.projector.key_rows()
    assert a.shape == (config.n_slots, 3) and b.shape == (3, config.slot_dim)
    assert not a[keys].any()  # the change never touches a key
    written = slots - a @ b  # the bank the history wrote: keys and each message's words
    assert torch.linalg.matrix_rank(slots - written).item() <= 3
    assert torch.equal(written[keys], slots[keys])

    conv = store.create_conversation(profile.id, "more")
    store.add_messages(
        conv.id,
        [NewMessage("user", "I grew up in Tampere, in Finland."), NewMessage("assistant", "Ok.")],
    )
    second, slots2, change2 = refit()
    assert second.committed, second
    a2, b2 = change2
    assert a2.shape == a.shape  # the same change fitted on, not a second one on top
    written2 = slots2 - a2 @ b2
    old = [r for g in range(3) for r in [keys[g], *frozen.projector.token_rows(g)]]
    assert torch.allclose(written2[old], written[old], atol=1e-5)
    new = frozen.projector.token_rows(3)  # the new message's group, filled with its words
    assert written2[keys[3]].abs().sum() > 0 and not torch.allclose(written2[new], written[new])


def test_a_bank_fitted_whole_is_stored_without_a_change(tiny_backbone, store):
    frozen = load_frozen_memory(tiny_backbone, bank_config(tiny_backbone.hidden_size))
    profile = store.ensure_profile()
    conv = store.create_conversation(profile.id, "facts")
    store.add_messages(conv.id, [NewMessage(role, text) for role, text in HISTORY])
    settings = RefitSettings(steps=4, eval_every=2, patience=3, probed_messages=0, change_rank=None)
    outcome = locked_refit(
        store, profile.id, lambda: run_refit(store, frozen, profile.id, settings=settings)
    )
    assert outcome.committed, outcome
    assert memory_from_bytes(store.current_memory_version(profile.id).tensors)[2] is None


def test_the_inspector_shows_a_bank_by_group(tiny_backbone, store):
    from lpm_local.memory.inspection import by_group_attention, describe, heatmap

    frozen = load_frozen_memory(tiny_backbone, bank_config(tiny_backbone.hidden_size))
    profile = store.ensure_profile()
    slots = frozen.fresh_slots(HISTORY, seed=0)
    _, attention = frozen.soft(slots, "Which instrument do I play?")
    groups = describe(store, frozen, profile.id, slots, None, attention)
    assert [g.kind for g in groups] == ["group"] * 6 and [g.index for g in groups] == list(range(6))
    assert [g.label.startswith("(empty") for g in groups] == [False] * 3 + [True] * 3
    assert sum(g.reply_usage for g in groups) == pytest.approx(1.0)  # two groups share it
    assert sorted(g.reply_usage for g in groups)[-2:] == [pytest.approx(0.5)] * 2
    # A reply read by an older, flat memory of 32 slots has no per-group map.
    assert by_group_attention(torch.ones(1, 32, 32) / 32, groups) is None
    lines = heatmap(by_group_attention(attention, groups), "group").splitlines()
    assert lines[0].split()[0] == "group" and len(lines[0].split()) == 7
    assert sorted(int(x) for x in lines[-1].split()[1:])[-2:] == [50, 50]


def test_a_bank_keyed_by_another_projector_is_refused_and_rebuilt_by_the_next_refit(
    tiny_backbone, store
):
    from lpm_local.memory.frozen import current_slots
    from lpm_local.memory.slots import slots_to_bytes

    config = bank_config(tiny_backbone.hidden_size)
    frozen = load_frozen_memory(tiny_backbone, config)
    profile = store.ensure_profile()
    conv = store.create_conversation(profile.id, "facts")
    store.add_messages(conv.id, [NewMessage(role, text) for role, text in HISTORY])
    stale = frozen.fresh_slots(HISTORY, seed=0)
    keys = frozen.projector.key_rows()
    stale[keys[:3]] = -stale[keys[:3]]  # read at another depth: other keys, the same shape
    store.add_memory_version(
        profile.id,
        tensors=slots_to_bytes(stale, config),
        backbone=tiny_backbone.name,
        projector_sha256="0" * 64,
        config_json=None,
        heldout_loss=1.0,
    )
    loaded = current_slots(store, frozen, profile.id)
    assert loaded.slots is None and "another projector" in loaded.problem

    settings = RefitSettings(steps=6, eval_every=2, patience=3, probed_messages=0)
    outcome = locked_refit(
        store, profile.id, lambda: run_refit(store, frozen, profile.id, settings=settings)
    )
    assert outcome.committed, outcome
    rebuilt = current_slots(store, frozen, profile.id)
    assert rebuilt.problem is None and rebuilt.version_id != loaded.version_id
    messages = [frozen.chat.text_ids(text) for role, text in HISTORY if role == "user"]
    readings = route_features(tiny_backbone.model, messages)
    assert torch.allclose(rebuilt.slots[keys[:3]], readings, atol=1e-5)  # this projector's keys
