"""USSD menus as data: load a YAML menu, check it whole at load time, and run it step by step.

A menu file::

    service_code: "111"
    start: main
    screens:
      main:
        text: "Мой МТС"                      # a fixed header, or
        text_from: balance_line              # a header a text source computes
        items:                               # numbered choices
          - {label: "Баланс", action: show_balance}
          - {label: "Тарифы", goto: tariffs}
      tariffs:
        text: "Тарифы"
        list: tariffs                        # choices a list source computes ...
        select: tariff                       # ... each opening this screen with param id=<its key>
      tariff:
        text_from: tariff_card
        items:
          - {label: "Перейти на этот тариф", action: switch_tariff}
      password:
        input: {prompt: "Введите номер", validate: msisdn, action: add_number}

Names (actions, list and text sources, validators) are bound to Python callables by the
`Bindings` the loader gets; a name that is not bound, a `goto` to no screen, a label too long
for a page, a screen with nothing to show: each is a `MenuError` naming the file and the screen.

Running: the state lives in the dialogue (`data`: screen, page, params, back stack); every
screen is cut into pages that fit one USSD message (160 GSM 7-bit septets, or 80 UCS2
characters for Cyrillic) with `98 Далее` / `0 Назад` / `00 Главное меню`. Choices keep their
numbers across pages. An action returns `End` (close with a text, and what to commit),
`Goto` (another screen) or `Notice` (a text with back/main, the dialogue stays open).
Extra parts of a dialled string run as answers: `*111*2#` opens the tariffs at once.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ussdgw.inputs import parse_whole_number
from ussdgw.smpp.ussd import fits_one_message

MORE, BACK, MAIN = "98", "0", "00"
NAV_LABELS = {MORE: "Далее", BACK: "Назад", MAIN: "Главное меню"}
MAX_LABEL = 40
MAX_ITEMS = 90
INVALID_CHOICE = "Нет такого пункта."
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class MenuError(ValueError):
    """A menu file that cannot be used; the message names the file and the screen."""


# ---- what actions and sources return -------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class End:
    """Close the dialogue with `text`; `commit` goes to the host's end() (change, audit, messages)."""

    text: str
    commit: Mapping[str, Any] = field(default_factory=dict)
    refused_text: str = "Сейчас это недоступно. Попробуйте позже."


@dataclass(frozen=True, slots=True)
class Goto:
    screen: str
    params: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Notice:
    """Show `text` with back/main-menu items; the dialogue stays open."""

    text: str


@dataclass(frozen=True, slots=True)
class Answered:
    """The action answered the subscriber itself (it called the host's end/show): nothing more to do."""


ANSWERED = Answered()

ActionResult = End | Goto | Notice | Answered

# The host is the request in a USSD dialogue (handlers.base.Context): it has `menu_state` (a dict
# saved with the dialogue), `await show(text)` and `await end(text, change=, audit=, messages=)`.
MenuHost = Any


Action = Callable[[Any, Mapping[str, str], str | None], Awaitable[ActionResult]]
ListSource = Callable[[Any, Mapping[str, str]], Awaitable[Sequence[tuple[str, str]]]]
TextSource = Callable[[Any, Mapping[str, str]], Awaitable[str]]
Validator = Callable[[str], str | None]  # an error text for the subscriber, or None when valid


@dataclass(frozen=True, slots=True)
class Bindings:
    actions: Mapping[str, Action] = field(default_factory=dict)
    lists: Mapping[str, ListSource] = field(default_factory=dict)
    texts: Mapping[str, TextSource] = field(default_factory=dict)
    validators: Mapping[str, Validator] = field(default_factory=dict)


# ---- the format ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Item:
    label: str
    goto: str | None = None
    action: str | None = None
    params: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Input:
    prompt: str
    action: str
    validate: str | None = None


@dataclass(frozen=True, slots=True)
class Screen:
    id: str
    text: str | None = None
    text_from: str | None = None
    items: tuple[Item, ...] = ()
    list: str | None = None
    select: str | None = None
    input: Input | None = None


@dataclass(frozen=True, slots=True)
class MenuSpec:
    source: str
    service_code: str
    start: str
    screens: Mapping[str, Screen]


def load_menu(path: str | Path, bindings: Bindings) -> Menu:
    """Read, check and bind a menu file; raises `MenuError` naming the file and the screen."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise MenuError(f"{path}: cannot read the menu: {exc}") from exc
    return Menu(parse_menu(data, str(path), bindings), bindings)


def parse_menu(data: Any, source: str, bindings: Bindings) -> MenuSpec:
    def fail(where: str, message: str) -> MenuError:
        return MenuError(f"{source}: {where}: {message}")

    if not isinstance(data, dict):
        raise fail("top level", "expected a mapping with service_code, start and screens")
    _only(data, {"service_code", "start", "screens"}, lambda m: fail("top level", m))
    code, start, raw_screens = data.get("service_code"), data.get("start"), data.get("screens")
    if not isinstance(code, str | int) or not re.fullmatch(r"\d{1,4}(\*\d+)*", str(code)):
        raise fail("top level", f"service_code must be digits like \"111\", not {code!r}")
    if not isinstance(raw_screens, dict) or not raw_screens:
        raise fail("top level", "screens must be a non-empty mapping of screen id -> screen")
    screens = {str(sid): _screen(str(sid), raw, lambda sid, m: fail(f"screen '{sid}'", m))
               for sid, raw in raw_screens.items()}
    if start not in screens:
        raise fail("top level", f"start names unknown screen {start!r}")
    for screen in screens.values():
        _check_refs(screen, screens, bindings, functools.partial(fail, f"screen '{screen.id}'"))
    return MenuSpec(source, str(code), str(start), screens)


def _only(raw: Mapping[str, Any], allowed: set[str], fail: Callable[[str], MenuError]) -> None:
    unknown = sorted(set(map(str, raw)) - allowed)
    if unknown:
        raise fail(f"unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")


def _text(raw: Any, what: str, fail: Callable[[str], MenuError], *, required: bool = True) -> str | None:
    if raw is None and not required:
        return None
    if not isinstance(raw, str) or not raw.strip():
        raise fail(f"{what} must be a non-empty string")
    return raw


def _screen(sid: str, raw: Any, fail_at: Callable[[str, str], MenuError]) -> Screen:
    def fail(message: str) -> MenuError:
        return fail_at(sid, message)

    if not _NAME.match(sid):
        raise fail("screen ids are lower-case latin letters, digits and _")
    if not isinstance(raw, dict):
        raise fail("expected a mapping")
    _only(raw, {"text", "text_from", "items", "list", "select", "input"}, fail)
    items: list[Item] = []
    raw_items = raw.get("items") or []
    if not isinstance(raw_items, list):
        raise fail("items must be a list")
    for n, entry in enumerate(raw_items, start=1):
        def item_fail(message: str, n: int = n) -> MenuError:
            return fail(f"item {n}: {message}")

        if not isinstance(entry, dict):
            raise item_fail("expected a mapping with label and goto or action")
        _only(entry, {"label", "goto", "action", "params"}, item_fail)
        label = _text(entry.get("label"), "label", item_fail)
        assert label is not None
        if len(label) > MAX_LABEL:
            raise item_fail(f"label of {len(label)} characters, more than {MAX_LABEL} fit a page line")
        if (entry.get("goto") is None) == (entry.get("action") is None):
            raise item_fail("needs exactly one of goto or action")
        params = entry.get("params") or {}
        if not isinstance(params, dict):
            raise item_fail("params must be a mapping")
        items.append(Item(label, entry.get("goto"), entry.get("action"), {str(k): str(v) for k, v in params.items()}))
    input_spec: Input | None = None
    if raw.get("input") is not None:
        raw_input = raw["input"]
        if not isinstance(raw_input, dict):
            raise fail("input must be a mapping with prompt, action and optionally validate")
        _only(raw_input, {"prompt", "action", "validate"}, lambda m: fail(f"input: {m}"))
        prompt = _text(raw_input.get("prompt"), "input prompt", fail)
        action = _text(raw_input.get("action"), "input action", fail)
        assert prompt is not None and action is not None
        input_spec = Input(prompt, action, raw_input.get("validate"))
        if items or raw.get("list"):
            raise fail("an input screen has no items or list")
    screen = Screen(sid, _text(raw.get("text"), "text", fail, required=False),
                    _text(raw.get("text_from"), "text_from", fail, required=False), tuple(items),
                    raw.get("list"), raw.get("select"), input_spec)
    if screen.text and screen.text_from:
        raise fail("text and text_from exclude each other")
    if not (screen.text or screen.text_from or screen.items or screen.list or screen.input):
        raise fail("shows nothing: give it text, text_from, items, list or input")
    if (screen.list is None) != (screen.select is None):
        raise fail("list and select go together (select: the screen a chosen entry opens)")
    if len(items) > MAX_ITEMS:
        raise fail(f"{len(items)} items, more than {MAX_ITEMS}")
    return screen


def _check_refs(screen: Screen, screens: Mapping[str, Screen], bindings: Bindings,
                fail: Callable[[str], MenuError]) -> None:
    def need(name: str | None, table: Mapping[str, Any], what: str) -> None:
        if name is not None and name not in table:
            known = ", ".join(sorted(table)) or "none"
            raise fail(f"{what} {name!r} is not bound (known: {known})")

    for n, item in enumerate(screen.items, start=1):
        if item.goto is not None and item.goto not in screens:
            raise fail(f"item {n}: goto names unknown screen {item.goto!r}")
        need(item.action, bindings.actions, f"item {n}: action")
    if screen.select is not None and screen.select not in screens:
        raise fail(f"select names unknown screen {screen.select!r}")
    need(screen.list, bindings.lists, "list source")
    need(screen.text_from, bindings.texts, "text source")
    if screen.input is not None:
        need(screen.input.action, bindings.actions, "input action")
        need(screen.input.validate, bindings.validators, "validator")


# ---- pages ----------------------------------------------------------------------------------------
_NUMBER = re.compile(r"^[-+]?\d[\d,.:]*$")


@dataclass(frozen=True, slots=True)
class Page:
    """One USSD message of a screen, and the choice numbers whose lines it shows: only those are
    accepted as an answer to it (a choice the subscriber never saw is never taken)."""

    text: str
    choices: range


def _header_units(header: str) -> list[tuple[str, str]]:
    """The header as (word, joiner before it): words flow across pages, lines start with a newline.

    A number stays with the word after it ("500 минут", "100 ₽"), so a page never ends on a bare
    number whose unit is on the next one; a non-breaking space already joins what it joins."""
    units: list[tuple[str, str]] = []
    for n, line in enumerate(header.splitlines() if header else []):
        words = [w for w in line.split(" ") if w]
        k, line_start = 0, True
        while k < len(words):
            word, last = words[k], words[k]
            while _NUMBER.match(last) and k + 1 < len(words):
                k += 1
                last = words[k]
                word = f"{word} {last}"
            units.append((word, ("\n" if n else "") if line_start else " "))
            k, line_start = k + 1, False
    return units


def paginate(header: str, lines: Sequence[str], *, back: bool, main: bool, page_back: bool = True) -> list[str]:
    """Cut a screen (a header, then one line per choice) into the texts of its pages (see `pages`)."""
    return [page.text for page in _paginate(header, tuple(lines), back, main, page_back)]


def pages(header: str, lines: Sequence[str], *, back: bool, main: bool) -> tuple[Page, ...]:
    """Cut a screen into pages, each knowing which choices it shows (cached: menus repeat)."""
    return _paginate(header, tuple(lines), back, main, True)


@functools.lru_cache(maxsize=4096)
def _paginate(header: str, lines: tuple[str, ...], back: bool, main: bool, page_back: bool) -> tuple[Page, ...]:
    """Cut a screen (a header, then one line per choice) into pages that each fit one USSD message.

    Every page but the last ends with `98 Далее`. A page of choices also shows `0 Назад` when there
    is somewhere to go back to (an earlier page counts, unless not `page_back`) and `00 Главное меню`
    when `main`; a page of text alone (a long card) shows `98 Далее` only, so the text uses the
    screen (`0` and `00` still work there, and the last page names them). A long header flows on
    over pages, cut between words, never between a number and its unit.
    """
    units = _header_units(header)
    first_choice = len(units)
    units += [(line, "\n") for line in lines]

    def join(chosen: Sequence[tuple[str, str]], nav_lines: Sequence[str]) -> str:
        text = "".join((joiner if i else "") + piece for i, (piece, joiner) in enumerate(chosen))
        return "\n".join([text, *nav_lines]) if text else "\n".join(nav_lines)

    def nav(more: bool, first: bool, text_only: bool = False) -> list[str]:
        out = []
        if more:
            out.append(f"{MORE} {NAV_LABELS[MORE]}")
            if text_only:
                return out
        if back or (page_back and not first):
            out.append(f"{BACK} {NAV_LABELS[BACK]}")
        if main:
            out.append(f"{MAIN} {NAV_LABELS[MAIN]}")
        return out

    def shown(start: int, end: int) -> range:
        return range(max(start, first_choice) - first_choice + 1, max(end, first_choice) - first_choice + 1)

    def fill(start: int, tail: Sequence[str], *, stop_at_choices: bool) -> int:
        end = start
        while end < len(units) and not (stop_at_choices and end >= first_choice) \
                and fits_one_message(join(units[start:end + 1], tail)):
            end += 1
        return end

    out: list[Page] = []
    i = 0
    while True:
        first = not out
        final = nav(False, first)
        if fits_one_message(join(units[i:], final)):
            out.append(Page(join(units[i:], final), shown(i, len(units))))
            return tuple(out)
        tail = nav(True, first)
        end = fill(i, tail, stop_at_choices=False)
        if end < first_choice:  # a text longer than a page (a card): let its pages use the screen
            compact = nav(True, first, text_only=True)
            end, tail = fill(i, compact, stop_at_choices=True), compact
        if end == i:  # one unit is too long for any page: cut it to what fits
            piece, joiner = units[i]
            cut = len(piece)
            while cut > 1 and not fits_one_message(join([(piece[:cut], "")], tail)):
                cut -= 1
            out.append(Page(join([(piece[:cut], "")], tail), range(0)))
            units[i] = (piece[cut:], joiner)
            continue
        out.append(Page(join(units[i:end], tail), shown(i, end)))
        i = end


# ---- running ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Rendered:
    pages: tuple[Page, ...]
    choices: tuple[tuple[str, Item | None, str | None], ...]  # (label, static item, or list key)
    lines: tuple[str, ...]  # one line per choice, as shown


MAX_LAYOUTS = 4096  # screens laid out and kept (per menu); past it the cache starts afresh


class Menu:
    """A checked menu bound to its callables; `start` and `answer` drive one dialogue step each."""

    def __init__(self, spec: MenuSpec, bindings: Bindings) -> None:
        self.spec = spec
        self.bindings = bindings
        # A screen's layout is the same for every subscriber who sees the same header and entries:
        # laid out once (lines, pages), then looked up at each step.
        self._layouts: dict[tuple[str, str, tuple[tuple[str, str], ...], bool], _Rendered] = {}

    @property
    def service_code(self) -> str:
        return self.spec.service_code

    async def start(self, host: MenuHost, args: Sequence[str] = ()) -> None:
        """A dial: show the start screen, or run the dialled extras (`*111*2#`) as answers first."""
        state = host.menu_state
        state.clear()
        state.update(screen=self.spec.start, page=0, params={}, back=[])
        notice: str | None = None
        for arg in args:
            outcome = await self._apply(host, arg, dialled=True)
            if isinstance(outcome, Answered):
                return
            if isinstance(outcome, End):
                await self._finish(host, outcome)
                return
            if outcome is not None:
                notice = outcome
                break
        await self._render(host, notice)

    async def answer(self, host: MenuHost, text: str) -> None:
        outcome = await self._apply(host, text)
        if isinstance(outcome, Answered):
            return
        if isinstance(outcome, End):
            await self._finish(host, outcome)
        else:
            await self._render(host, outcome)

    async def _finish(self, host: MenuHost, end: End) -> None:
        result = await host.end(end.text, **end.commit)
        if getattr(result, "refused", False):
            await host.end(end.refused_text)

    async def _apply(self, host: MenuHost, text: str, *, dialled: bool = False) -> End | Answered | str | None:
        """Apply one answer to the state; returns End, a notice to show with the screen, or None.

        An answer to a page takes only a choice that page showed. A `dialled` extra (`*111*2*3*1#`)
        is a shortcut typed from the operator's published list, not an answer to a page: it may
        take any choice of its screen."""
        state = host.menu_state
        answer = text.strip()
        if answer == MAIN:
            state.update(screen=self.spec.start, page=0, params={}, back=[])
            return None
        if answer == BACK:
            if state["page"] > 0:
                state["page"] -= 1
            elif state["back"]:
                previous: list[Any] = state["back"].pop()
                state.update(screen=previous[0], params=previous[1], page=0)
            return None
        if state["screen"] == "":  # a notice offers only back and main menu
            return INVALID_CHOICE
        screen = self.spec.screens[state["screen"]]
        if screen.input is not None:
            validator = self.bindings.validators.get(screen.input.validate or "")
            error = validator(answer) if validator is not None else None
            if error is not None:
                return error
            return await self._act(host, screen.input.action, {}, answer)
        rendered = await self._build(host, screen)
        if answer == MORE and state["page"] + 1 < len(rendered.pages):
            state["page"] += 1
            return None
        choice = parse_whole_number(answer, minimum=1, maximum=len(rendered.choices))
        page = rendered.pages[min(state["page"], len(rendered.pages) - 1)]
        if choice is None or not (dialled or choice in page.choices):
            return INVALID_CHOICE
        _, item, key = rendered.choices[choice - 1]
        if item is None:
            assert screen.select is not None and key is not None
            return self._go(state, screen.select, {"id": key})
        if item.goto is not None:
            return self._go(state, item.goto, dict(item.params))
        assert item.action is not None
        return await self._act(host, item.action, item.params, None)

    @staticmethod
    def _go(state: dict[str, Any], screen: str, params: Mapping[str, str]) -> None:
        state["back"].append([state["screen"], state["params"]])
        state.update(screen=screen, page=0, params=dict(params))

    async def _act(self, host: MenuHost, name: str, extra: Mapping[str, str],
                   value: str | None) -> End | Answered | str | None:
        state = host.menu_state
        params = {**state["params"], **extra}
        result = await self.bindings.actions[name](host, params, value)
        if isinstance(result, End | Answered):
            return result
        if isinstance(result, Goto):
            return self._go(state, result.screen, result.params)
        state["back"].append([state["screen"], state["params"]])
        state.update(screen="", page=0, params={"notice": result.text})
        return None

    async def _build(self, host: MenuHost, screen: Screen) -> _Rendered:
        state = host.menu_state
        params = state["params"]
        header = screen.text or ""
        if screen.text_from is not None:
            header = await self.bindings.texts[screen.text_from](host, params)
        entries: tuple[tuple[str, str], ...] = ()
        if screen.list is not None:
            entries = tuple(tuple(entry) for entry in await self.bindings.lists[screen.list](host, params))  # type: ignore[misc]
        key = (screen.id, header, entries, bool(state["back"]))
        rendered = self._layouts.get(key)
        if rendered is None:
            if len(self._layouts) >= MAX_LAYOUTS:
                self._layouts.clear()
            rendered = self._layouts[key] = self._layout(screen, header, entries, key[3])
        return rendered

    def _layout(self, screen: Screen, header: str, entries: Sequence[tuple[str, str]], back: bool) -> _Rendered:
        """The screen's choices, lines and pages for this header and these list entries."""
        if screen.input is not None:
            header = f"{header}\n{screen.input.prompt}" if header else screen.input.prompt
        choices: list[tuple[str, Item | None, str | None]] = [(i.label, i, None) for i in screen.items]
        if screen.list is not None:
            choices += [(label[:MAX_LABEL], None, key) for key, label in entries[:MAX_ITEMS - len(choices)]]
        lines = tuple(f"{n} {label}" for n, (label, _, _) in enumerate(choices, start=1))
        at_start = screen.id == self.spec.start
        return _Rendered(pages(header, lines, back=back, main=not at_start), tuple(choices), lines)

    async def _render(self, host: MenuHost, notice: str | None) -> None:
        state = host.menu_state
        if state["screen"] == "":  # a Notice from an action: its text with back / main menu
            page = paginate(state["params"]["notice"], [], back=True, main=True)[0]
            await host.show(page)
            return
        rendered = await self._build(host, self.spec.screens[state["screen"]])
        page = min(state["page"], len(rendered.pages) - 1)
        state["page"] = page
        if notice is None:
            await host.show(rendered.pages[page].text)
            return
        await host.show(_with_notice(notice, rendered.pages[page], rendered.lines))


def _with_notice(notice: str, page: Page, lines: Sequence[str]) -> str:
    """The page where an answer failed, again, with the notice in place of its text: the same
    choices under the same numbers and the same navigation, so the subscriber stays where she was
    (the notice is shortened if the page has no room for all of it)."""
    shown = [lines[n - 1] for n in page.choices]
    nav = [line for line in page.text.split("\n") if line.split(" ", 1)[0] in NAV_LABELS]
    body = [*shown, *nav]
    text = notice
    while text and not fits_one_message("\n".join([text, *body])):
        text = text[:-1]
    return "\n".join([text, *body]) if text else "\n".join(body)
