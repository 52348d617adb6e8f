"""Russian that reads right: agreement with numbers, names in the case a sentence needs, money,
times with their zone, and every reply template that counts something, at 1, 2, 5, 11, 21, 104."""

from __future__ import annotations

import ast
from datetime import datetime
from pathlib import Path

import pytest

from handlers.money import gift_sms
from sms_codes.limits import format_retry_reply
from ussdgw import russian
from ussdgw.russian import NBSP, OPERATOR_TZ

NUMBERS = (1, 2, 5, 11, 21, 104)
ROOT = Path(__file__).resolve().parents[2]

# The forms a Russian reader expects after 1, 2, 5, 11, 21 and 104 (and, for «не более N»,
# in the genitive), for every noun a reply template counts with.
FORMS = {
    ("балл", "nomn"): ["балл", "балла", "баллов", "баллов", "балл", "балла"],
    ("запись", "nomn"): ["запись", "записи", "записей", "записей", "запись", "записи"],
    ("номер", "nomn"): ["номер", "номера", "номеров", "номеров", "номер", "номера"],
    ("запрос", "gent"): ["запроса", "запросов", "запросов", "запросов", "запроса", "запросов"],
    ("подарок", "gent"): ["подарка", "подарков", "подарков", "подарков", "подарка", "подарков"],
    ("бонусный балл", "nomn"): ["бонусный балл", "бонусных балла", "бонусных баллов", "бонусных баллов",
                                "бонусный балл", "бонусных балла"],
}


@pytest.mark.parametrize(("noun", "case"), sorted(FORMS))
def test_a_counted_noun_agrees_with_1_2_5_11_21_and_104(noun: str, case: str) -> None:
    assert [russian.count(n, noun, case) for n in NUMBERS] == [
        f"{n}{NBSP}{form}" for n, form in zip(NUMBERS, FORMS[(noun, case)], strict=True)]


def _counted_nouns() -> set[tuple[str, str]]:
    """Every (noun, case) a reply template passes to russian.count/plural, read from the sources."""
    found: set[tuple[str, str]] = set()
    for folder in ("handlers", "sms_codes", "ussd_menus", "gateway"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and node.func.attr in {"count", "plural"}
                        and isinstance(node.func.value, ast.Name) and node.func.value.id == "russian"):
                    args = [a.value for a in node.args[1:] if isinstance(a, ast.Constant)]
                    found.add((str(args[0]), str(args[1]) if len(args) > 1 else "nomn"))
    return found


def test_every_noun_the_templates_count_has_its_forms_checked_here() -> None:
    used = _counted_nouns()
    assert used, "no template counts with russian.count: the scan is broken"
    assert used <= set(FORMS), f"add the expected forms of {sorted(used - set(FORMS))} to FORMS"


def test_thousands_are_grouped_and_a_number_never_leaves_its_unit() -> None:
    assert russian.count(1021, "балл") == f"1{NBSP}021{NBSP}балл"
    assert russian.money(3_400_000) == f"34{NBSP}000{NBSP}₽"
    assert russian.money(12345) == f"123,45{NBSP}₽"
    assert russian.money(-1050) == f"-10,50{NBSP}₽"


@pytest.mark.parametrize(("name", "accusative", "dative"), [
    ("Мария Смирнова", "Марию Смирнову", "Марии Смирновой"),
    ("Иван Петров", "Ивана Петрова", "Ивану Петрову"),
    ("Смирнова Мария Ивановна", "Смирнову Марию Ивановну", "Смирновой Марии Ивановне"),
    ("Пётр Ильич Чайковский", "Петра Ильича Чайковского", "Петру Ильичу Чайковскому"),
    ("Алёна Фёдорова", "Алёну Фёдорову", "Алёне Фёдоровой"),
    ("ООО Ромашка", "ООО Ромашка", "ООО Ромашка"),  # not a person's name: left as written
    ("John Smith", "John Smith", "John Smith"),
])
def test_a_persons_name_takes_the_case_the_sentence_needs(name: str, accusative: str, dative: str) -> None:
    assert russian.inflect_name(name, "accs") == accusative
    assert russian.inflect_name(name, "datv") == dative
    with pytest.raises(ValueError, match="unknown case"):
        russian.inflect_name(name, "vocative")


def test_times_say_their_zone() -> None:
    ts = datetime(2026, 6, 1, 14, 5, tzinfo=OPERATOR_TZ).timestamp()
    assert russian.clock_time(ts) == f"14:05{NBSP}МСК"
    assert russian.date_time(ts) == f"01.06.2026 14:05{NBSP}МСК"


@pytest.mark.parametrize("n", NUMBERS)
def test_the_gift_sms_agrees_and_fits_one_ucs2_segment(n: int) -> None:
    text = gift_sms("79161234567", n, "123456", 600)
    assert f"дарит {russian.count(n, 'балл')}." in text
    assert len(text) <= 70, text


@pytest.mark.parametrize("n", NUMBERS)
def test_the_hourly_cap_reply_agrees_and_fits_one_ucs2_segment(n: int) -> None:
    now = datetime(2026, 6, 1, 14, 0, tzinfo=OPERATOR_TZ).timestamp()
    text = format_retry_reply("hourly_cap", now + 300, n, now)
    assert f"не более {russian.count(n, 'запрос', 'gent')} в час" in text and text.endswith(f"14:05{NBSP}МСК.")
    assert len(text) <= 70, text
