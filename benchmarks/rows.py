"""Reproducible benchmark rows: English-like text of realistic, short-skewed lengths.

No downloads: rows are assembled from word lists and templates with a seeded
:class:`random.Random`, so the same seed gives the same rows on every machine. The mix imitates
what an Exasol table of free text holds:

* ``title``  -- product names, subjects, short labels (2-10 words),
* ``review`` -- one to four sentences of product review,
* ``ticket`` -- a support ticket of two to eight sentences,
* ``news``   -- a news-like paragraph of five to twenty-five sentences (up to ~300 tokens).

The weights (35/35/20/10 %) skew the lengths short, with a long tail, like real tables.
"""

from __future__ import annotations

import random
from collections.abc import Callable

DEFAULT_SEED = 20240605
MIX: tuple[tuple[str, float], ...] = (
    ("title", 0.35),
    ("review", 0.35),
    ("ticket", 0.20),
    ("news", 0.10),
)

PRODUCTS = (
    "coffee grinder",
    "laptop sleeve",
    "wireless mouse",
    "standing desk",
    "rain jacket",
    "electric kettle",
    "phone case",
    "running shoes",
    "air purifier",
    "desk lamp",
    "bluetooth speaker",
    "backpack",
    "office chair",
    "water bottle",
    "blender",
    "vacuum cleaner",
    "monitor arm",
    "winter boots",
    "yoga mat",
    "toaster",
    "noise cancelling headphones",
    "smart watch",
    "camping tent",
    "kitchen scale",
)
BRANDS = ("Nordlys", "Acme", "Bergmann", "Solaris", "Kestrel", "Orbis", "Lumen", "Vantage", "Hygge")
POSITIVE = (
    "excellent",
    "sturdy",
    "reliable",
    "comfortable",
    "quiet",
    "well made",
    "great value",
    "easy to use",
    "beautiful",
    "fast",
    "lightweight",
    "durable",
)
NEGATIVE = (
    "flimsy",
    "noisy",
    "overpriced",
    "disappointing",
    "slow",
    "uncomfortable",
    "fragile",
    "confusing",
    "heavy",
    "unreliable",
    "cheaply made",
    "useless",
)
ASPECTS = (
    "the battery life",
    "the build quality",
    "the price",
    "the delivery",
    "the packaging",
    "the customer service",
    "the instructions",
    "the design",
    "the size",
    "the colour",
    "the sound",
    "the material",
    "the warranty",
    "the setup",
)
REVIEW_TEMPLATES = (
    "I bought this {product} last {period} and it is {pos}.",
    "Honestly {aspect} is {neg}, I expected more from {brand}.",
    "{aspect_cap} is {pos} but {aspect2} is {neg}.",
    "Works as described, {pos} and {pos2}.",
    "After {n} weeks the {product} stopped working, very {neg}.",
    "My {relative} loves it, {aspect} is {pos}.",
    "Would not recommend, {aspect} is {neg} and returns took {n} days.",
    "Five stars, the {product} from {brand} is {pos}.",
    "It does the job, nothing more, nothing less.",
    "Compared to my old {product}, this one is much more {pos}.",
)
ISSUES = (
    "I cannot log in to my account",
    "I was charged twice for order {order}",
    "I have not received the parcel for order {order}",
    "the invoice shows the wrong address",
    "the app crashes when I open the settings page",
    "my password reset email never arrives",
    "the {product} arrived damaged",
    "the export to CSV fails with an error",
    "the report for {month} is missing several rows",
    "the API returns a timeout after {n} seconds",
    "I need to change the delivery date",
    "the discount code {code} is not accepted",
)
TICKET_SENTENCES = (
    "Hello, {issue}.",
    "Since {weekday} {issue}.",
    "I already tried restarting the device and clearing the cache, but nothing changed.",
    "Our team of {n} people depends on this every day, so please treat it as urgent.",
    "The error message says: code {code}, please contact support.",
    "Could you please check what is going on and get back to me?",
    "I attached a screenshot of the problem and the log file from {weekday}.",
    "This is the {ordinal} time I am writing about this issue.",
    "We are on the {plan} plan and our contract number is {order}.",
    "Thanks in advance for your help, {name}.",
    "It worked fine until the update on {weekday}.",
    "Please refund the amount of {amount} euros to my card.",
)
SUBJECTS = (
    "The city council",
    "The central bank",
    "A regional airline",
    "The national weather service",
    "Researchers at the university",
    "The football club",
    "A local software company",
    "The ministry of transport",
    "Shareholders",
    "The museum",
    "Farmers in the north",
    "The hospital board",
    "Union representatives",
    "The energy regulator",
)
VERBS = (
    "announced",
    "rejected",
    "approved",
    "postponed",
    "criticised",
    "welcomed",
    "published",
    "confirmed",
    "reviewed",
    "proposed",
)
OBJECTS = (
    "a new budget for public transport",
    "plans to expand the harbour",
    "an increase in interest rates",
    "a study on air quality in schools",
    "the results of the quarterly survey",
    "a merger with a competitor",
    "new rules for electric scooters",
    "a programme to train nurses",
    "the opening of a research centre",
    "a proposal to lower energy prices",
    "the renovation of the old railway station",
    "a partnership with three universities",
)
NEWS_EXTRA = (
    "The decision follows months of debate and several public hearings.",
    "Critics say the measure comes too late and costs too much.",
    "According to officials, the first results are expected in {month}.",
    "The project is estimated to cost {amount} million euros over {n} years.",
    "Opposition leaders called for an independent review of the figures.",
    "Local businesses reacted with cautious optimism.",
    "A spokesperson declined to comment on the details.",
    "Similar programmes in neighbouring countries have shown mixed results.",
    "Experts warn that demand could rise sharply during the winter months.",
    "The agreement still needs the approval of the regional parliament.",
    "About {n} percent of respondents supported the plan in a recent poll.",
    "Work is scheduled to begin on {weekday} and last until {month}.",
)
TITLE_TEMPLATES = (
    "{brand} {product}",
    "{product} {pos}",
    "Re: order {order}",
    "Question about {aspect}",
    "{brand} {product} {model} {colour}",
    "Refund request",
    "{subject_short} {verb} {object_short}",
    "{pos_cap} {product} for {relative}",
)
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = ("January", "March", "April", "June", "September", "October", "November", "December")
NAMES = ("Anna", "Jonas", "Maria", "Lukas", "Sofia", "Peter", "Elena", "Tom")
RELATIVES = ("wife", "husband", "son", "daughter", "mother", "father", "colleague", "neighbour")
COLOURS = ("black", "white", "grey", "blue", "red", "green")
PLANS = ("basic", "business", "enterprise", "premium")
ORDINALS = ("second", "third", "fourth")


def _fill(rng: random.Random, template: str) -> str:
    """Replace every ``{slot}`` of ``template`` with a random choice for that slot."""
    pos, neg = rng.choice(POSITIVE), rng.choice(NEGATIVE)
    aspect = rng.choice(ASPECTS)
    values: dict[str, Callable[[], str]] = {
        "product": lambda: rng.choice(PRODUCTS),
        "brand": lambda: rng.choice(BRANDS),
        "pos": lambda: pos,
        "pos2": lambda: rng.choice(POSITIVE),
        "pos_cap": lambda: pos.capitalize(),
        "neg": lambda: neg,
        "aspect": lambda: aspect,
        "aspect_cap": lambda: aspect.capitalize(),
        "aspect2": lambda: rng.choice(ASPECTS),
        "period": lambda: rng.choice(("week", "month", "year", "summer", "winter")),
        "relative": lambda: rng.choice(RELATIVES),
        "n": lambda: str(rng.randint(2, 40)),
        "order": lambda: f"{rng.randint(100000, 999999)}",
        "code": lambda: f"{rng.choice('ABCDEFGH')}{rng.randint(100, 999)}",
        "month": lambda: rng.choice(MONTHS),
        "weekday": lambda: rng.choice(WEEKDAYS),
        "name": lambda: rng.choice(NAMES),
        "ordinal": lambda: rng.choice(ORDINALS),
        "plan": lambda: rng.choice(PLANS),
        "amount": lambda: f"{rng.randint(5, 900)}",
        "model": lambda: f"{rng.choice('XSM')}{rng.randint(1, 9)}00",
        "colour": lambda: rng.choice(COLOURS),
        "subject_short": lambda: rng.choice(SUBJECTS).replace("The ", ""),
        "verb": lambda: rng.choice(VERBS),
        "object_short": lambda: " ".join(rng.choice(OBJECTS).split()[:4]),
        "issue": lambda: _fill(rng, rng.choice(ISSUES)),
    }
    out: list[str] = []
    rest = template
    while "{" in rest:
        head, _, tail = rest.partition("{")
        slot, _, rest = tail.partition("}")
        out.append(head)
        out.append(values[slot]())
    out.append(rest)
    return "".join(out)


def _sentences(rng: random.Random, templates: tuple[str, ...], count: int) -> str:
    return " ".join(_fill(rng, rng.choice(templates)) for _ in range(count))


def _title(rng: random.Random) -> str:
    return _fill(rng, rng.choice(TITLE_TEMPLATES))


def _review(rng: random.Random) -> str:
    return _sentences(rng, REVIEW_TEMPLATES, rng.choice((1, 1, 2, 2, 3, 4)))


def _ticket(rng: random.Random) -> str:
    return _sentences(rng, TICKET_SENTENCES, rng.randint(2, 8))


def _news(rng: random.Random) -> str:
    lead = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} on {rng.choice(WEEKDAYS)}."
    return lead + " " + _sentences(rng, NEWS_EXTRA, rng.randint(4, 24))


GENERATORS: dict[str, Callable[[random.Random], str]] = {
    "title": _title,
    "review": _review,
    "ticket": _ticket,
    "news": _news,
}


def generate_rows(count: int, seed: int = DEFAULT_SEED) -> list[tuple[str, str]]:
    """``count`` rows as ``(category, text)``; the same seed always gives the same rows."""
    rng = random.Random(seed)
    names = [name for name, _ in MIX]
    weights = [weight for _, weight in MIX]
    rows = []
    for _ in range(count):
        kind = rng.choices(names, weights)[0]
        rows.append((kind, GENERATORS[kind](rng)))
    return rows


def texts(count: int, seed: int = DEFAULT_SEED) -> list[str]:
    return [text for _, text in generate_rows(count, seed)]


if __name__ == "__main__":  # a quick look: python -m exasol_mlflow_server.benchmarks.rows
    for kind, text in generate_rows(8):
        print(f"[{kind}] {text}\n")
