"""The packaged corpora: chatterbot-en, the default OE corpus, the test and validation anomaly sets, the specs."""

from __future__ import annotations

import datetime as dt
import gzip
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.rserialize import record, serialized
from training.data.base import DataError, MissingPackageError
from training.data.wheels import wheel_file
from training.text import anomalies, corpora
from training.text.anomalies import (
    TEXT_ANOMALY_SET_NAMES,
    TEXT_VALIDATION_SETS,
    healthtweets_texts,
    load_text_anomalies,
    load_text_validation_anomalies,
    text_anomaly_set_size,
)
from training.text.corpora import (
    CATEGORY_CAP,
    NEAR_OOD_CATEGORIES,
    load_text_in_distribution,
    load_text_oe_corpus,
    strip_wikitext,
)
from training.text.data import TextInDistribution, TextSet

needs_fortunes = pytest.mark.skipif(
    not anomalies.FORTUNES_DIR.is_dir(), reason="needs the Debian package fortunes (`make apt-data` as root)"
)


@pytest.fixture(scope="module")
def chatterbot() -> TextInDistribution:
    return load_text_in_distribution("chatterbot-en", seed=0)


def test_chatterbot_labels_are_file_stems_and_near_ood_is_held_out(chatterbot: TextInDistribution) -> None:
    english = wheel_file("chatterbot_corpus", "data/english", "chatterbot-corpus")
    stems = {path.stem for path in english.glob("*.yml")}
    assert set(chatterbot.class_names) <= stems
    assert "tech_support" in chatterbot.class_names and "coding" in chatterbot.class_names
    assert not set(NEAR_OOD_CATEGORIES) & set(chatterbot.class_names)
    near = set(corpora.near_ood_texts())
    assert len(near) > 100
    splits = (chatterbot.train, chatterbot.val, chatterbot.test)
    for split in splits:
        assert split.labels is not None
        assert np.unique(split.labels).tolist() == list(range(chatterbot.num_classes))  # every class in every split
        assert not near & set(split.texts)
        assert all(len(text.split()) >= corpora.MIN_UTTERANCE_WORDS for text in split.texts)
    texts = [text.casefold() for split in splits for text in split.texts]
    assert len(texts) == len(set(texts))  # no duplicates, so no overlap between splits


def test_chatterbot_categories_are_capped(chatterbot: TextInDistribution) -> None:
    labels = np.concatenate(
        [s.labels for s in (chatterbot.train, chatterbot.val, chatterbot.test) if s.labels is not None]
    )
    counts = dict(zip(chatterbot.class_names, np.bincount(labels).tolist(), strict=True))
    assert max(counts.values()) == CATEGORY_CAP  # trivia is trimmed to the cap
    assert counts["tech_support"] <= CATEGORY_CAP and counts["coding"] <= CATEGORY_CAP
    assert min(counts.values()) >= corpora.MIN_CATEGORY_SIZE


def test_chatterbot_is_deterministic_under_a_seed(chatterbot: TextInDistribution) -> None:
    again, other = (
        load_text_in_distribution("chatterbot-en", seed=0),
        load_text_in_distribution("chatterbot-en", seed=1),
    )
    assert again.train.texts == chatterbot.train.texts and again.test.texts == chatterbot.test.texts
    assert other.val.texts != chatterbot.val.texts


def test_strip_wikitext() -> None:
    wikitext = (
        "{{Infobox|name={{nested|x}}}}\n== Heading ==\n'''Alpha''' is a [[Greek alphabet|letter]] of the "
        "[[alphabet]].<ref name=a>{{cite|b}}</ref> It has [http://example.org a site] &amp; more.<ref name=b/>\n"
        "{| class=wikitable\n|-\n| cell || cell\n|}\n* a list item\n[[File:A.png|thumb|A [[caption]] here]]\n"
        "<!-- hidden -->Final <small>prose</small> line.[[Category:Letters]]"
    )
    assert strip_wikitext(wikitext) == ("Alpha is a letter of the alphabet. It has a site & more.\nFinal prose line.")


def test_default_oe_corpus_is_clean_and_leaves_test_sets_out() -> None:
    sources = corpora.default_oe_sources()
    assert tuple(sources) == corpora.OE_GROUPS
    sizes = {group: len(sentences) for group, sentences in sources.items()}
    assert min(sizes[g] for g in corpora.OE_GROUPS if g != "wikipedia-bg") > 5_000 and sizes["wikipedia-bg"] > 20
    assert max(sizes.values()) <= corpora.OE_GROUP_CAP == sizes["news-en"]  # news is capped
    corpus = load_text_oe_corpus("default")
    heldout = corpora.oe_heldout_sentences()
    assert len(corpus) + len(heldout) == sum(sizes.values())
    assert not set(corpus) & set(heldout)
    generated = set(sources["faker-lorem"]) | set(sources["faker-records"])
    for sentence in corpus:
        if sentence in generated:
            continue  # generated groups: no markup to strip, lengths not in words (scripts without spaces)
        assert "{{" not in sentence and "[[" not in sentence and "<ref" not in sentence and "|" not in sentence
        assert 4 <= len(sentence.split()) <= 60
    assert len({s.casefold() for s in corpus}) == len(corpus)
    assert not set(corpus) & set(healthtweets_texts())
    tweet_sentences = {s for t in healthtweets_texts() for s in corpora.split_sentences(t)}
    assert len(set(corpus) & tweet_sentences) < 10  # stock phrases only; no tweet was read
    assert not set(corpus) & set(anomalies.debates_texts())
    assert not set(corpus) & {t for texts in anomalies.non_english_texts().values() for t in texts}
    subset = load_text_oe_corpus("default", seed=1, limit=50)
    assert len(subset) == 50 and set(subset) <= set(corpus)
    assert subset == load_text_oe_corpus("default", seed=1, limit=50)


def test_parliament_punctuation_is_rejoined_and_scripts_are_many() -> None:
    sources = corpora.default_oe_sources()
    assert not any(" ." in s or " ," in s for s in sources["parliament-de"])
    lorem = sources["faker-lorem"]
    assert any("\u4e00" <= c <= "\u9fff" for c in "".join(lorem[:20000]))  # Chinese
    assert any("\u0600" <= c <= "\u06ff" for c in "".join(lorem))  # Arabic script
    assert any("\u0400" <= c <= "\u04ff" for c in "".join(lorem))  # Cyrillic
    assert any("@" in r for r in sources["faker-records"]) and any("://" in r for r in sources["faker-records"])
    assert corpora.faker_records() == corpora.faker_records()  # fixed seeds: the same strings every time


def test_recipes_and_excluded_groups() -> None:
    sources = corpora.default_oe_sources()
    english = load_text_oe_corpus("english")
    expected = [s for g in ("wikipedia-en", "news-en") for s in sources[g] if not corpora.is_oe_heldout(s)]
    assert list(english) == expected
    without = load_text_oe_corpus("default", exclude=["parliament-de", "faker-lorem"])
    assert not set(without) & (set(sources["parliament-de"]) | set(sources["faker-lorem"]))
    assert len(without) == len(load_text_oe_corpus("default")) - sum(
        1 for g in ("parliament-de", "faker-lorem") for s in sources[g] if not corpora.is_oe_heldout(s)
    )
    with pytest.raises(DataError, match="unknown OE corpus groups \\['klingon'\\]"):
        load_text_oe_corpus("default", exclude=["klingon"])


def test_held_out_group_sets_draw_only_that_groups_held_out_slice() -> None:
    data = corpora.load_chatterbot(seed=0)
    sources = corpora.default_oe_sources()
    slice_de = {s for s in sources["parliament-de"] if corpora.is_oe_heldout(s)}
    drawn = anomalies.load_text_validation_anomalies("val-oe-heldout-parliament-de", data, size=100, seed=0)
    assert len(drawn) == 100 and set(drawn) <= slice_de
    everything = anomalies.load_text_validation_anomalies("val-oe-heldout-wikipedia-bg", data, size=10_000, seed=0)
    assert set(everything) == {s for s in sources["wikipedia-bg"] if corpora.is_oe_heldout(s)}  # up to the size


@pytest.mark.parametrize("name", [n for n in TEXT_ANOMALY_SET_NAMES if n != "fortunes"])
def test_test_anomaly_sets(name: str) -> None:
    size = text_anomaly_set_size(name)
    assert size > 100
    drawn = load_text_anomalies(name, size=50, seed=4)
    assert len(drawn) == len(set(drawn)) == 50 and all(text.strip() == text and text for text in drawn)
    assert drawn == load_text_anomalies(name, size=50, seed=4)
    with pytest.raises(DataError, match="only"):
        load_text_anomalies(name, size=size + 1, seed=0)


@needs_fortunes
def test_fortunes() -> None:
    fortunes = anomalies.fortunes_texts()
    assert len(fortunes) > 10_000
    assert all(len(text) <= anomalies.FORTUNE_MAX_CHARS and "\n" not in text and text != "%" for text in fortunes)


def test_non_english_is_sampled_evenly() -> None:
    by_language = anomalies.non_english_texts()
    assert "english" not in by_language and len(by_language) > 20
    drawn = load_text_anomalies("non-english", size=len(by_language) * 5, seed=0)
    language_of = {text: lang for lang, texts in by_language.items() for text in texts}
    counts = np.unique([language_of[text] for text in drawn], return_counts=True)[1]
    assert counts.min() == counts.max() == 5


def test_near_ood_is_the_held_out_categories() -> None:
    categories = corpora.chatterbot_categories()
    assert set(corpora.near_ood_texts()) == {t for name in NEAR_OOD_CATEGORIES for t in categories[name]}


def test_validation_sets(chatterbot: TextInDistribution) -> None:
    vocabulary = {word.lower() for text in chatterbot.train.texts for word in text.split()}
    val_words = {word for text in chatterbot.val.texts for word in text.split()}
    skipped = {"val-oe-heldout-wikipedia-bg", "val-heldout-classes"}  # 3 held-out sentences; needs held-out classes
    if not (corpora.WORDNET_DIR / "data.noun").exists():
        skipped.add("val-oe-heldout-wordnet-en")  # without Debian's wordnet-base (test_wordnet_group says so)
    if not corpora.AUSTEN_DATABASE.exists():
        skipped.add("val-oe-heldout-austen-dialogue")  # without Debian's r-cran-janeaustenr (test_austen_group)
    if not corpora.MOBY_DICK_DATABASE.exists():
        skipped.add("val-oe-heldout-mobydick-en")  # without Debian's r-cran-tokenizers (test_register_groups...)
    if not corpora.GCIDE_DICT.exists():
        skipped.add("val-oe-heldout-gcide-en")  # without Debian's dict-gcide (test_register_groups...)
    for name in [n for n in TEXT_VALIDATION_SETS if n not in skipped]:
        texts = load_text_validation_anomalies(name, chatterbot.sealed(), size=40, seed=2)
        assert len(texts) == 40 and all(texts)
        assert texts == load_text_validation_anomalies(name, chatterbot, size=40, seed=2)
        assert texts != load_text_validation_anomalies(name, chatterbot, size=40, seed=3)
        if name == "val-random-words":
            assert {w for t in texts for w in t.split()} <= vocabulary
        if name == "val-shuffled":
            assert {w for t in texts for w in t.split()} <= val_words
        if name == "val-chars":
            assert set("".join(texts)) <= set(anomalies.RANDOM_CHARACTERS + " ")
        if name == "val-oe-heldout":
            assert set(texts) <= set(corpora.oe_heldout_sentences())
    with pytest.raises(DataError, match="unknown text validation set"):
        load_text_validation_anomalies("val-nothing", chatterbot, size=1, seed=0)


def test_spec_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown text in-distribution spec 'mnist'"):
        load_text_in_distribution("mnist")
    with pytest.raises(DataError, match="nothing after 'csv:'"):
        load_text_in_distribution("csv:")
    with pytest.raises(DataError, match="own test split"):
        load_text_in_distribution("chatterbot-en", test_path=tmp_path / "t.csv")
    with pytest.raises(DataError, match="unknown text OE corpus 'npy:x'"):
        load_text_oe_corpus("npy:x")
    with pytest.raises(DataError, match="unknown text anomaly set"):
        load_text_anomalies("gaussian", size=1, seed=0)
    corpus = tmp_path / "c.txt"
    corpus.write_text("One user sentence of words. Another user sentence of words.\n")
    assert load_text_oe_corpus(f"text:{corpus}") == ("One user sentence of words.", "Another user sentence of words.")


def test_held_out_classes_become_the_val_heldout_classes_set(chatterbot: TextInDistribution) -> None:
    categories = corpora.chatterbot_categories()
    held = corpora.load_chatterbot(seed=0, val_fraction=0.15, test_fraction=0.2, held_out_classes=["humor", "gossip"])
    assert held.class_names == tuple(n for n in chatterbot.class_names if n not in ("humor", "gossip"))
    assert sorted(held.held_out) == sorted(categories["humor"] + categories["gossip"])
    splits = set(held.train.texts) | set(held.val.texts) | set(held.test.texts)
    assert not splits & set(held.held_out)
    assert splits == set(chatterbot.train.texts + chatterbot.val.texts + chatterbot.test.texts) - set(held.held_out)
    drawn = load_text_validation_anomalies("val-heldout-classes", held.sealed(), size=20, seed=1)
    assert len(drawn) == len(set(drawn)) == 20 and set(drawn) <= set(held.held_out)
    assert drawn == load_text_validation_anomalies("val-heldout-classes", held, size=20, seed=1)
    everything = load_text_validation_anomalies("val-heldout-classes", held, size=10_000, seed=1)
    assert sorted(everything) == sorted(held.held_out)  # up to the size
    with pytest.raises(DataError, match=r"set data\.held_out_classes"):
        load_text_validation_anomalies("val-heldout-classes", chatterbot, size=5, seed=0)
    for bad in (["klingon"], [NEAR_OOD_CATEGORIES[0]]):  # not a category; a near-OOD test category
        with pytest.raises(DataError, match="are not categories"):
            corpora.load_chatterbot(seed=0, held_out_classes=bad)
    same = load_text_in_distribution("chatterbot-en", seed=0, val_fraction=0.15, held_out_classes=("humor", "gossip"))
    assert same.held_out == held.held_out and same.val.texts == held.val.texts


def test_wordnet_examples_are_the_quoted_parts_of_glosses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wordnet = tmp_path / "wordnet"
    wordnet.mkdir()
    header = "  1 This software and database is being provided to you, the LICENSEE, by  \n"
    (wordnet / "data.noun").write_text(
        header + '00001740 03 n 01 entity 0 000 | that which exists; "the entity   was seen"; "a second one"  \n'
    )
    (wordnet / "data.verb").write_text(header + "00001740 29 v 01 breathe 0 000 | draw air into the lungs  \n")
    (wordnet / "data.adj").write_text('00001740 00 a 01 able 0 000 | having power; "he was able to help"  \n')
    (wordnet / "data.adv").write_text("")
    monkeypatch.setattr(corpora, "WORDNET_DIR", wordnet)
    assert corpora.wordnet_examples() == ["the entity was seen", "a second one", "he was able to help"]
    monkeypatch.setattr(corpora, "WORDNET_DIR", tmp_path / "absent")
    with pytest.raises(MissingPackageError, match="wordnet-base"):
        corpora.wordnet_examples()


@pytest.mark.needs_apt("wordnet-base")
def test_wordnet_group_and_the_default_wordnet_recipe() -> None:
    sources = corpora.default_oe_sources()
    wordnet = corpora.oe_group_sentences("wordnet-en")
    assert 5_000 < len(wordnet) <= corpora.OE_GROUP_CAP
    assert all(4 <= len(s.split()) <= 60 for s in wordnet)
    assert not {s.casefold() for s in wordnet} & {s.casefold() for group in sources.values() for s in group}
    recipe = load_text_oe_corpus("default-wordnet")
    assert recipe == load_text_oe_corpus("default") + tuple(s for s in wordnet if not corpora.is_oe_heldout(s))
    assert load_text_oe_corpus("default-wordnet", exclude=["wordnet-en"]) == load_text_oe_corpus("default")
    data = corpora.load_chatterbot(seed=0)
    drawn = load_text_validation_anomalies("val-oe-heldout-wordnet-en", data, size=50, seed=0)
    assert len(drawn) == 50 and all(corpora.is_oe_heldout(s) and s in wordnet for s in drawn)
    with pytest.raises(DataError, match="unknown OE corpus group 'klingon'"):
        corpora.oe_group_sentences("klingon")


def test_generated_groups_do_not_depend_on_the_hash_seed() -> None:
    """Faker's Italian city list is made from a set; unsorted, the records changed with PYTHONHASHSEED."""
    script = (
        "import hashlib; from training.text import corpora as c; "
        "print(hashlib.sha256(repr((c.faker_records(), c.faker_lorem_sentences())).encode()).hexdigest())"
    )
    env = dict(os.environ)
    digests = set()
    for seed in ("1", "2"):
        env["PYTHONHASHSEED"] = seed
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
        digests.add(done.stdout)
    assert len(digests) == 1


def test_generated_records_do_not_depend_on_the_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Faker draws payment-card expiry dates from "now" on; the records must be the same on any day."""
    from faker.providers import date_time

    today = corpora.faker_records()

    class Later(dt.datetime):
        @classmethod
        def now(cls, tz: dt.tzinfo | None = None) -> Later:
            return cls(2031, 6, 15, 12, 0, tzinfo=tz)

    monkeypatch.setattr(date_time, "datetime", Later)
    later = corpora.faker_records()
    assert later == today
    assert sum(bool(re.search(r" \d\d/\d\d ", r)) for r in later) > 100  # payment-card lines with an expiry


def test_generated_validation_texts_take_training_lengths_and_shuffle_the_words() -> None:
    # Every training utterance has exactly three words and every validation one six distinct words: random-words
    # and random-character texts take their word counts from the training utterances, and a shuffled text mixes
    # the words of several validation texts in a new order (never one of them verbatim).
    train = TextSet(tuple(f"alpha{i} beta{i} gamma{i}" for i in range(30)), np.arange(30) % 2)
    val_texts = tuple(" ".join(f"w{i}x{j}" for j in range(6)) for i in range(20))
    data = TextInDistribution("toy", ("a", "b"), train, TextSet(val_texts, np.arange(20) % 2), train, "toy texts")
    for name in ("val-random-words", "val-chars"):
        texts = load_text_validation_anomalies(name, data, size=50, seed=0)
        assert {len(text.split()) for text in texts} == {3}, name
    shuffled = load_text_validation_anomalies("val-shuffled", data, size=50, seed=0)
    assert all(len(text.split()) == 6 for text in shuffled)
    assert not set(shuffled) & set(val_texts)


def test_austen_dialogue_is_the_quoted_speech_of_each_paragraph(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    novel = [
        "EMMA", "",
        '"I am _quite_ sure," said she, "that he will come to-morrow. We shall see', 'him at noon."', "",
        "Narration with no speech at all, however long it runs on.", "",
        '"A speech over two paragraphs is opened again', "",
        '"at the next one, and closed at its last."', "",
        '"No--I mean of late; but indeed," cried Emma.',
    ]  # fmt: skip
    database = tmp_path / "Rdata.rdb"
    database.write_bytes(record(serialized(novel)) + record(serialized(['"Is it you?" "It is."'], version=2)))
    monkeypatch.setattr(corpora, "AUSTEN_DATABASE", database)
    assert corpora.austen_dialogue() == [
        "I am quite sure.",  # italics marks dropped; cut short by the narrator: closed with a full stop
        "that he will come to-morrow.",  # a speech resumed after "said she" is its own span
        "We shall see him at noon.",  # lines of one paragraph are joined
        "at the next one, and closed at its last.",  # of a speech over paragraphs, only the closing one matches
        "No - I mean of late; but indeed.",  # a dash pair spaced; only the span's last ',' becomes '.'
        "Is it you?",
        "It is.",
    ]
    monkeypatch.setattr(corpora, "AUSTEN_DATABASE", tmp_path / "absent.rdb")
    with pytest.raises(MissingPackageError, match="r-cran-janeaustenr"):
        corpora.austen_dialogue()


@pytest.mark.needs_apt("r-cran-janeaustenr")
def test_austen_group_and_its_recipe() -> None:
    sources = corpora.default_oe_sources()
    austen = corpora.oe_group_sentences("austen-dialogue")
    assert 15_000 < len(austen) <= corpora.OE_GROUP_CAP
    assert all(4 <= len(s.split()) <= 60 and '"' not in s and "_" not in s for s in austen)
    assert not {s.casefold() for s in austen} & {s.casefold() for group in sources.values() for s in group}
    recipe = load_text_oe_corpus("default-wordnet-austen", exclude=["wordnet-en"])
    assert recipe == load_text_oe_corpus("default") + tuple(s for s in austen if not corpora.is_oe_heldout(s))
    data = corpora.load_chatterbot(seed=0)
    drawn = load_text_validation_anomalies("val-oe-heldout-austen-dialogue", data, size=50, seed=0)
    assert len(drawn) == 50 and all(corpora.is_oe_heldout(s) and s in austen for s in drawn)


def test_moby_dick_is_the_novel_between_its_first_chapter_and_gutenbergs_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = "\r\n".join([
        "The Project Gutenberg EBook of Moby Dick; or The Whale", "", "MOBY DICK; OR THE WHALE", "",
        "ETYMOLOGY.", "", "Front matter is not read. Nor is this.", "",
        "CHAPTER 1. Loomings.", "", "Call me Ishmael. Some years ago--never mind how long precisely--having",
        "little or no money in my purse, I thought I would sail.", "", "CHAPTER 2. The Carpet-Bag.", "",
        "EPILOGUE", "", '"And I only am escaped _alone_ to tell thee" Job.', "",
        "End of Project Gutenberg's Moby Dick. Licence text is not read.",
    ])  # fmt: skip
    database = tmp_path / "Rdata.rdb"
    database.write_bytes(record(serialized([text])))
    monkeypatch.setattr(corpora, "MOBY_DICK_DATABASE", database)
    assert corpora.moby_dick_sentences() == [
        "Call me Ishmael.",  # chapter headings and all-capital headings dropped
        "Some years ago - never mind how long precisely - having little or no money in my purse, I thought I would "
        "sail.",  # lines of a paragraph joined, a dash pair spaced
        '"And I only am escaped alone to tell thee" Job.',  # underscores (italics) dropped
    ]
    database.write_bytes(record(serialized(["Another book altogether."])))
    with pytest.raises(DataError, match="no Moby Dick text"):
        corpora.moby_dick_sentences()
    monkeypatch.setattr(corpora, "MOBY_DICK_DATABASE", tmp_path / "absent.rdb")
    with pytest.raises(MissingPackageError, match="r-cran-tokenizers"):
        corpora.moby_dick_sentences()


def test_gcide_definitions_are_the_numbered_senses_up_to_their_source_tag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = """Abandon \\A*ban"don\\, v. t. [imp. & p. p. {Abandoned}; OF.
   abandoner.]
   1. to cast or drive out; to banish; to expel; to reject.
      [Obs.]
      [1913 Webster]

            That he might . . . abandon them from him. --Udall.
      [1913 Webster]

   2. (Mar. Law) To relinquish all claim to; -- used when an
      insured person gives up to {underwriters} all claim.
      [1913 Webster]
   3. A sense with a \\pronunciation\\ mark is dropped.
      [1913 Webster]

   Syn: To give up; yield; forego.
   4. The last sense, closed by the end of the file."""
    dictionary = tmp_path / "gcide.dict.dz"
    dictionary.write_bytes(gzip.compress(entry.encode("utf-8")))
    monkeypatch.setattr(corpora, "GCIDE_DICT", dictionary)
    assert corpora.gcide_definitions() == [
        "To cast or drive out; to banish; to expel; to reject.",  # capitalized; "[Obs.]" dropped
        "To relinquish all claim to; -- used when an insured person gives up to underwriters all claim.",
        "The last sense, closed by the end of the file.",
    ]  # quotations, etymology, synonyms and the header are not read
    monkeypatch.setattr(corpora, "GCIDE_DICT", tmp_path / "absent.dz")
    with pytest.raises(MissingPackageError, match="dict-gcide"):
        corpora.gcide_definitions()


@pytest.mark.needs_apt("r-cran-janeaustenr", "r-cran-tokenizers", "dict-gcide")
def test_register_groups_and_their_recipe() -> None:
    sources = corpora.default_oe_sources()
    default_sentences = {s.casefold() for group in sources.values() for s in group}
    for group, low in (("mobydick-en", 7_000), ("gcide-en", corpora.OE_GROUP_CAP)):
        sentences = corpora.oe_group_sentences(group)
        assert low <= len(sentences) <= corpora.OE_GROUP_CAP, group
        assert not {s.casefold() for s in sentences} & default_sentences, group
    moby_dick = corpora.oe_group_sentences("mobydick-en")
    assert not any("Gutenberg" in s or s.startswith("CHAPTER 1") for s in moby_dick)
    assert any(s.startswith("Some years ago - never mind how long precisely") for s in moby_dick)
    recipe = load_text_oe_corpus("default-wordnet-registers", exclude=["parliament-en", "wordnet-en"])
    assert recipe == load_text_oe_corpus("default", exclude=["parliament-en"]) + tuple(
        s for g in corpora.REGISTER_GROUPS for s in corpora.oe_group_sentences(g) if not corpora.is_oe_heldout(s)
    )


@needs_fortunes
@pytest.mark.needs_apt("wordnet-base", "r-cran-janeaustenr", "r-cran-tokenizers", "dict-gcide")
def test_no_oe_sentence_of_any_group_is_a_test_anomaly_text() -> None:
    # The OE corpus never holds a text of a test anomaly set, whichever packaged groups a recipe names (case-folded
    # exact matches: a test text trained on as an outlier would make its own test score a training score).
    oe = {s.casefold() for group in corpora.ALL_OE_GROUPS for s in corpora.oe_group_sentences(group)}
    test_sets = {name: texts() for name, texts in anomalies.TEXT_TEST_SETS.items()}
    test_sets["non-english"] = tuple(t for texts in anomalies.non_english_texts().values() for t in texts)
    for name, texts in test_sets.items():
        assert texts and not {t.casefold() for t in texts} & oe, name
