"""A model's answer -> a normalised list of tags, or an error with the reason; prompts per key."""

from __future__ import annotations

import pytest

from vidcap.errors import UserError
from vidcap.tags.parse import TagParseError, normalise, parse_tags
from vidcap.tags.prompts import BUILT_IN, fill, instruction


@pytest.mark.parametrize("answer, tags", [
    ('["Dog", "red car", "dog"]', ["dog", "red car"]),
    ('  ["  Red   Car ", "LAMP"]\n', ["red car", "lamp"]),
    ('```json\n{"objects": ["woman", "dog"]}\n```', ["woman", "dog"]),
    ('{"tags": ["woman", "dog"]}', ["woman", "dog"]),
    ('Here are the objects: ["car", "road"]. Hope this helps!', ["car", "road"]),
    ("[car, road, Lamp]", ["car", "road", "lamp"]),
    ("['car', 'road', 'car']", ["car", "road"]),
    ("[\u201ccar\u201d, \u201croad\u201d]", ["car", "road"]),
    ("1. Car\n2. **Road**: a wet road\n3) lamp", ["car", "road", "lamp"]),
    ("Objects:\n- car\n- road\n* street lamp\n\nLet me know if you need more.", ["car", "road", "street lamp"]),
    ("\u2022 walking\n\u2022 riding a bicycle", ["walking", "riding a bicycle"]),
    ("car, road, and a lamp", ["car", "road", "a lamp"]),
    ("The objects are: car, road and lamp", ["car", "road", "lamp"]),
    ("car\nroad\nlamp", ["car", "road", "lamp"]),
    ("car", ["car"]),
    ("[]", []),
    ("NONE_FOUND", []),
    ("None.", []),
    ('["none"]', []),
    ('["dog", "NONE_FOUND", "cat"]', ["dog", "cat"]),
])
def test_answers_that_yield_a_list(answer, tags):
    assert parse_tags(answer, "objects") == tags


@pytest.mark.parametrize("answer, reason", [
    ("", "empty answer"),
    ("   \n ", "empty answer"),
    (None, "empty answer"),
    ("The video shows a car driving on a road.", "no list of tags"),
    ("The video shows a red car, which drives along a wet road at night, under orange lamps.", "no list of tags"),
    ("I think the main objects here would be a car and some lamps.", "no list of tags"),
    ('{"count": 3}', "JSON object without a 'objects' list"),
    ('{"a": ["x"], "b": ["y"]}', "JSON object without a 'objects' list"),
    ("[1, 2, 3]", "JSON list holding int values"),
    ("42", "JSON int where a list of tags was expected"),
    ('["a man who is walking slowly along the beach with his two dogs at sunset"]', "reads like a sentence"),
])
def test_answers_without_a_list_are_errors_with_a_reason(answer, reason):
    with pytest.raises(TagParseError, match=reason) as caught:
        parse_tags(answer, "objects")
    assert caught.value.reason


def test_none_found_is_never_a_tag():
    for answer in ("NONE_FOUND", "[NONE_FOUND]", '["NONE_FOUND"]', "- NONE_FOUND", "none_found, car"):
        assert "none_found" not in parse_tags(answer), answer


def test_normalise_keeps_first_seen_order_and_splits_commas():
    assert normalise([" B ", "a", "b", "A", "c, d", "", "  "]) == ["b", "a", "c", "d"]


def test_json_object_picks_the_key_asked_for():
    answer = '{"objects": ["dog"], "actions": ["running"]}'
    assert parse_tags(answer, "objects") == ["dog"]
    assert parse_tags(answer, "actions") == ["running"]


def test_built_in_instructions_and_prompt_file(tmp_path):
    for key in ("objects", "actions"):
        text = instruction(key)
        assert text == BUILT_IN[key] and "{text}" in text
        message = fill(text, "A dog runs.")
        assert message.endswith("Description: A dog runs.") and "{text}" not in message
    own = tmp_path / "p.txt"
    own.write_text("List the colours as JSON.\n")
    assert fill(instruction("objects", own), "A red car.") == "List the colours as JSON.\n\nA red car."
    own.write_text('Colours of {text} as ["x"]')
    assert fill(instruction("objects", own), "a car") == 'Colours of a car as ["x"]'
    with pytest.raises(UserError, match="no such file"):
        instruction("objects", tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(UserError, match="empty"):
        instruction("objects", tmp_path / "empty.txt")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(UserError, match="not UTF-8"):
        instruction("objects", tmp_path / "bin.txt")
    with pytest.raises(UserError, match="unknown tag key"):
        instruction("colours")


def test_two_keys_need_one_json_object_with_both():
    from vidcap.tags.parse import parse_answer

    both = ("objects", "actions")
    answer = 'Sure!\n```json\n{"objects": ["Dog", "dog"], "actions": ["running"]}\n```'
    assert parse_answer(answer, both) == {"objects": ["dog"], "actions": ["running"]}
    assert parse_answer('{"actions": [], "objects": ["cat"]}', both) == {"objects": ["cat"], "actions": []}
    assert parse_answer("[dog, cat]", ("objects",)) == {"objects": ["dog", "cat"]}
    with pytest.raises(TagParseError, match="no JSON object"):
        parse_answer('["dog"]', both)
    with pytest.raises(TagParseError, match="no 'actions' list"):
        parse_answer('{"objects": ["dog"]}', both)
    with pytest.raises(TagParseError, match="empty answer"):
        parse_answer(" ", both)
    assert "{text}" in instruction(both) and '"actions"' in instruction(both)
    with pytest.raises(UserError, match="given twice"):
        instruction(("objects", "objects"))
