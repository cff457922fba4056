"""Generate a text-only instruction mix as JSONL: chat records of several languages and sizes.

Every record is a conversation built from permissively licensed text already on the machine:

- code: functions and classes of CPython's standard library (PSF-2.0), asked for by signature
  and docstring, answered with their source (hundreds of bytes to ~16 KB);
- docs: the reference topics Python ships for ``help()`` (``pydoc_data.topics``, PSF-2.0),
  the long answers;
- translation: the message catalogs of PostgreSQL 15 (PostgreSQL License), Debian package
  ``postgresql-15``: its English messages and their human translations into Chinese, Japanese,
  Korean, Russian, Ukrainian, German, French, Spanish, Italian and Swedish, one to four
  translation turns per conversation, the short records;
- math: GSM8K train problems and worked answers (MIT).

Records are ``{"id", "source", "language", "messages": [{"role", "content"}, ...]}``, written
as UTF-8 (``ensure_ascii=False``), sources interleaved at random (seeded), until the target
size is reached. The same seed, Python version and catalogs give the same file:

    python benchmarks/gen_text_mix.py --output text_mix.jsonl --target-mb 16 --seed 0
"""

from __future__ import annotations

import argparse
import ast
import gettext
import json
import random
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

SHARED_GSM8K = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k_train.jsonl"
SAMPLE_GSM8K = Path(__file__).resolve().parents[1] / "data" / "gsm8k_sample.jsonl"
LOCALE_DIR = Path("/usr/share/locale")

# (catalog language folder, language tag, instruction to translate into that language)
LANGUAGES = [
    ("zh_CN", "zh", "把下面的文字翻译成中文："),
    ("ja", "ja", "次の文章を日本語に翻訳してください："),
    ("ko", "ko", "다음 문장을 한국어로 번역하세요:"),
    ("ru", "ru", "Переведите следующий текст на русский язык:"),
    ("uk", "uk", "Перекладіть наступний текст українською:"),
    ("de", "de", "Übersetze den folgenden Text ins Deutsche:"),
    ("fr", "fr", "Traduisez le texte suivant en français :"),
    ("es", "es", "Traduce el siguiente texto al español:"),
    ("it", "it", "Traduci il seguente testo in italiano:"),
    ("sv", "sv", "Översätt följande text till svenska:"),
]
# share of conversations per source, so that 16 MB uses each code and docs item about once
# (each source is drawn as a shuffled deck: nothing repeats before the deck is used up);
# translation conversations are short, so they are many
WEIGHTS = {"translation": 0.67, "math": 0.25, "code": 0.075, "docs": 0.004}
MAX_CODE_CHARS = 16_000


def code_pairs() -> list[tuple[str, str]]:
    """(request, source) for the documented functions and classes of the standard library."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    pairs = []
    for path in sorted(stdlib.glob("*.py")):
        source = path.read_text(encoding="utf-8", errors="replace")
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in tree.body:
            if not isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                continue
            doc = ast.get_docstring(node)
            segment = ast.get_source_segment(source, node)
            if not doc or not segment or len(segment) > MAX_CODE_CHARS:
                continue
            kind = "class" if isinstance(node, ast.ClassDef) else "function"
            request = (
                f"Write the Python {kind} `{node.name}` of the `{path.stem}` module.\n\n"
                f"It should do this:\n{doc}"
            )
            pairs.append((request, segment))
    return pairs


def doc_pairs() -> list[tuple[str, str]]:
    from pydoc_data.topics import topics

    return [
        (f"Explain the Python language topic '{name}', as the reference manual does.", text)
        for name, text in sorted(topics.items())
    ]


def translation_pairs(locale_dir: Path) -> dict[str, list[tuple[str, str]]]:
    """Per language tag: (English, translation) messages of PostgreSQL 15's catalogs."""
    found: dict[str, list[tuple[str, str]]] = {}
    for folder, tag, _ in LANGUAGES:
        pairs = []
        for mo in sorted((locale_dir / folder / "LC_MESSAGES").glob("*-15.mo")):
            with mo.open("rb") as stream:
                catalog = gettext.GNUTranslations(stream)._catalog  # type: ignore[attr-defined]
            for english, translated in catalog.items():
                if isinstance(english, str) and english.strip() and translated.strip():
                    pairs.append((english, translated))
        if pairs:
            found[tag] = sorted(set(pairs))
    return found


def math_pairs(gsm8k: Path) -> list[tuple[str, str]]:
    with gsm8k.open("rb") as stream:
        return [
            (record["question"], record["answer"])
            for record in map(json.loads, stream)
            if isinstance(record, dict)
        ]


def conversations(rng: random.Random, locale_dir: Path, gsm8k: Path) -> Iterator[dict]:
    code, docs, math = code_pairs(), doc_pairs(), math_pairs(gsm8k)
    translations = translation_pairs(locale_dir)
    if not translations:
        raise SystemExit(
            f"no PostgreSQL 15 message catalogs under {locale_dir} (Debian: postgresql-15)"
        )
    prompts = {tag: prompt for _, tag, prompt in LANGUAGES}
    pools = {"code": code, "docs": docs, "math": math, **translations}
    decks = {name: Deck(pool, rng) for name, pool in pools.items()}
    tags = sorted(translations)
    sources = list(WEIGHTS)
    weights = list(WEIGHTS.values())
    for number in range(sys.maxsize):
        source = rng.choices(sources, weights)[0]
        if source == "translation":
            # Chinese is half of the translations, the other languages share the rest
            tag = "zh" if "zh" in translations and rng.random() < 1 / 2 else rng.choice(tags)
            messages = []
            for _ in range(rng.randint(1, 4)):
                english, translated = decks[tag].draw()
                messages.append({"role": "user", "content": f"{prompts[tag]}\n{english}"})
                messages.append({"role": "assistant", "content": translated})
            yield _record(number, "postgresql-15-po", tag, messages)
            continue
        question, answer = decks[source].draw()
        name = {"code": "cpython-stdlib", "docs": "pydoc-topics", "math": "gsm8k"}[source]
        messages = [
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ]
        yield _record(number, name, "en", messages)


class Deck:
    """Draws a pool's items in a shuffled order, reshuffling when all were drawn."""

    def __init__(self, items: list[tuple[str, str]], rng: random.Random) -> None:
        self.items = items
        self.rng = rng
        self.order: list[int] = []

    def draw(self) -> tuple[str, str]:
        if not self.order:
            self.order = list(range(len(self.items)))
            self.rng.shuffle(self.order)
        return self.items[self.order.pop()]


def _record(number: int, source: str, language: str, messages: list[dict]) -> dict:
    return {"id": number, "source": source, "language": language, "messages": messages}


def generate(
    output: Path,
    target_bytes: int,
    *,
    seed: int = 0,
    locale_dir: Path = LOCALE_DIR,
    gsm8k: Path | None = None,
) -> int:
    """Write records until ``target_bytes``; returns the record count."""
    if gsm8k is None:
        gsm8k = SHARED_GSM8K if SHARED_GSM8K.exists() else SAMPLE_GSM8K
    rng = random.Random(seed)
    written = count = 0
    with output.open("w", encoding="utf-8") as stream:
        for record in conversations(rng, locale_dir, gsm8k):
            line = json.dumps(record, ensure_ascii=False) + "\n"
            stream.write(line)
            written += len(line.encode("utf-8"))
            count += 1
            if written >= target_bytes:
                break
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--target-mb", type=float, default=16.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--locale-dir", type=Path, default=LOCALE_DIR)
    parser.add_argument("--gsm8k", type=Path, help="GSM8K train JSONL (default: shared/ or data/)")
    args = parser.parse_args(argv)
    count = generate(
        args.output,
        int(args.target_mb * 1e6),
        seed=args.seed,
        locale_dir=args.locale_dir,
        gsm8k=args.gsm8k,
    )
    print(f"{args.output}: {count} records, {args.output.stat().st_size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
