"""A tiny USSD app in the Africa's Talking convention, to route a code to (`ussd_http_apps`).

    python -m simulator.example_ussd_app --port 8090
    USSDGW_USSD_HTTP_APPS=500:http://127.0.0.1:8090/ussd ussdgw up     # then dial *500#

It is a two-question quiz: the form field `text` holds the answers so far joined by `*`.
"""

from __future__ import annotations

import argparse

from aiohttp import web

QUESTIONS = (
    ("Столица России?", ("Москва", "Санкт-Петербург"), 1),
    ("Сколько цифр в номере 79161234567?", ("10", "11"), 2),
)
SEEN: web.AppKey[list[dict[str, str]]] = web.AppKey("seen", list)


def screen(text: str) -> str:
    """What the quiz shows for the answers so far."""
    answers = [a for a in text.split("*") if a] if text else []
    if not answers:
        return "CON Викторина\n1 Начать\n2 Правила"
    if answers[0] == "2":
        return "END Два вопроса, ответ - номер варианта. Удачи!"
    if answers[0] != "1":
        return "END Неверный выбор."
    given = answers[1:]
    for (question, options, right), answer in zip(QUESTIONS, given, strict=False):
        if answer != str(right):
            return f"END Неверно: {question} {options[right - 1]}."
    if len(given) == len(QUESTIONS):
        return "END Верно! Все ответы правильные."
    question, options, _ = QUESTIONS[len(given)]
    return "CON " + question + "".join(f"\n{n} {o}" for n, o in enumerate(options, start=1))


async def ussd(request: web.Request) -> web.Response:
    form = await request.post()
    fields = {k: str(v) for k, v in form.items()}
    request.app[SEEN].append(fields)
    return web.Response(text=screen(fields.get("text", "")), content_type="text/plain")


def create_app() -> web.Application:
    app = web.Application()
    app[SEEN] = []
    app.router.add_post("/ussd", ussd)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args()
    web.run_app(create_app(), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
