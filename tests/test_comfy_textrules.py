"""The browser's client-side value rewriting: dynamic prompts, %date% and %Node.widget%."""

from __future__ import annotations

import random
from datetime import datetime

import pytest

from orchestrator.comfy.textrules import (
    NodeRef, apply_text_replacements, format_date, js_number, js_string, process_dynamic_prompt,
    strip_comments, widget_lookup,
)


class FirstRng(random.Random):
    """Always picks the first option."""

    def random(self) -> float:
        return 0.0


class LastRng(random.Random):
    def random(self) -> float:
        return 0.999999


@pytest.mark.parametrize("text, expected", [
    ("a cat // comment", "a cat "),
    ("see http://example.com/x", "see http:"),                       # even inside URLs
    ("a /* x */b", "a b"),
    ("a /* multi\nline */ b", "a  b"),
    ("line1 // c\nline2", "line1 \nline2"),
    ("no comments", "no comments"),
])
def test_comments_are_stripped(text, expected):
    assert strip_comments(text) == expected


@pytest.mark.parametrize("text, first, last", [
    ("{a|b|c}", "a", "c"),
    ("x {a|b} y", "x a y", "x b y"),
    ("{a|{b|c}}", "a", "c"),                                          # nested
    ("{|x}", "", "x"),                                                 # empty option
    ("\\{a\\|b\\}", "{a|b}", "{a|b}"),                                 # escapes
    ("{a\\|b|c}", "a|b", "c"),                                         # escaped pipe inside a group
    ("a|b", "a|b", "a|b"),                                             # a bare pipe stays
    ("{a|b", "a", "b"),                                                # unterminated group
])
def test_choices(text, first, last):
    assert process_dynamic_prompt(text, FirstRng()) == first
    assert process_dynamic_prompt(text, LastRng()) == last


def test_choices_inside_a_chosen_option_are_resolved_and_comments_stripped():
    assert process_dynamic_prompt("{x // c\n|y}", FirstRng()) == "x \n"


def test_seeded_rng_is_reproducible_and_covers_all_options():
    picks = [process_dynamic_prompt("{a|b|c}", random.Random(i)) for i in range(60)]
    assert picks == [process_dynamic_prompt("{a|b|c}", random.Random(i)) for i in range(60)]
    assert set(picks) == {"a", "b", "c"}


def test_recorded_quirk_text():
    text = ("photo of {sks|sks} dog, see http://example.com/x // trailing comment\n"
            "/* block comment */ literal \\{braces\\} and a|pipe")
    assert process_dynamic_prompt(text) == "photo of sks dog, see http:\n literal {braces} and a|pipe"


@pytest.mark.parametrize("fmt, expected", [
    ("yyyy-MM-dd", "2026-03-04"),
    ("yy/M/d", "26/3/4"),
    ("hh:mm:ss", "07:05:09"),
    ("h-m-s", "7-5-9"),
    ("yyy", "yyy"),
    ("plain", "plain"),       # no tokens
])
def test_format_date(fmt, expected):
    assert format_date(fmt, datetime(2026, 3, 4, 7, 5, 9)) == expected


def test_node_widget_replacement_prefers_s_and_r_name_then_title():
    nodes = [NodeRef("EmptyImage", "Img", widget_lookup({"width": 64, "name": "a/b\\c"})),
             NodeRef(None, "EmptyImage", widget_lookup({"width": 1})),
             NodeRef("Other", "Other", widget_lookup({"f": 0.5, "t": True}))]
    now = datetime(2026, 11, 26)
    assert apply_text_replacements("%EmptyImage.width%", nodes, now) == "64"
    assert apply_text_replacements("%Img.width%_%Img.name%", nodes, now) == "64_a_b_c"
    assert apply_text_replacements("%Other.f%-%Other.t%", nodes, now) == "0.5-true"
    assert apply_text_replacements("%Nope.x%/%Img.nope%/%width%", nodes, now) == "%Nope.x%/%Img.nope%/%width%"
    assert apply_text_replacements("%date:yyyy%/x", nodes, now) == "2026/x"


def test_js_numbers():
    assert js_number(1.0) == 1 and isinstance(js_number(1.0), int)
    assert js_number(0.5) == 0.5 and js_number(True) is True and js_number("1.0") == "1.0"
    assert js_string(1.0) == "1" and js_string(None) == "" and js_string(False) == "false"
