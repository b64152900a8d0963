"""The held-out toxicity test set: balanced like the embedded validation split, written apart from it."""

import collections
import re

import pytest

from holo_jax.data import ExampleSource
from holo_jax.data import embedded_toxicity as embedded
from holo_jax.data import heldout_toxicity as heldout
from holo_jax.data.heldout_toxicity import (
    FILLINGS_PER_FRAME, HELDOUT_IDENTITIES, NONTOXIC_FRAMES, SURFACE_FORMS, TOXIC_FRAMES, HeldoutToxicitySource,
    write_jsonl,
)
from holo_jax.errors import HoloError
from holo_jax.fairness.scoring import read_examples

GROUPS = (*HELDOUT_IDENTITIES, None)

# Words a checker of identity mentions would look for, written here apart from both generators' lists.
NATURAL_WORDS = {
    "male": "men man male males boy boys guy guys dad dads father fathers husband husbands uncle uncles brother "
            "brothers son sons grandfather boyfriend gentleman gentlemen he him his himself",
    "female": "women woman female females girl girls lady ladies mom moms mother mothers wife wives aunt aunts "
              "sister sisters daughter daughters grandmother girlfriend she her hers herself",
    "transgender": "trans transgender transgendered",
    "heterosexual": "straight heterosexual heterosexuals",
    "homosexual_gay_or_lesbian": "gay gays lesbian lesbians homosexual homosexuals",
    "bisexual": "bi bisexual bisexuals",
    "christian": "christian christians catholic catholics evangelical evangelicals church christianity",
    "jewish": "jew jews jewish rabbi synagogue judaism",
    "muslim": "muslim muslims islam islamic imam mosque",
    "hindu": "hindu hindus hinduism temple",
    "buddhist": "buddhist buddhists buddhism monk monks",
    "atheist": "atheist atheists atheism nonbeliever nonbelievers",
    "black": "black blacks african",
    "white": "white whites",
    "asian": "asian asians",
    "latino": "latino latinos latina latinas latinx hispanic hispanics",
}
# Function words, left out of the content vocabulary that the generators are compared on.
STOP_WORDS = frozenset("""
a an the and or but if so of to in on at by for from with about into over after before as than then this that
these those there here it its it's i i'm i'd i've i'll me my mine we us our you your you're they them their
they're they'll is are was were be been being am have has had do does did don't doesn't can can't could would
wouldn't should will won't just not no nobody any anyone every everyone all some more most what which who how
when where why one very too up out off again ever never only also get got
""".split())


@pytest.fixture(scope="module")
def source():
    return HeldoutToxicitySource()


def _forms_pattern(forms):
    return re.compile(r"\b(" + "|".join(map(re.escape, sorted(set(forms), key=len, reverse=True))) + r")\b", re.I)


def _mentions(name):
    """Every phrase naming identity `name`: both generators' surface forms and the natural words."""
    forms = [*NATURAL_WORDS[name].split(), *(f for kind in SURFACE_FORMS[name] for f in kind)]
    forms += [f for kind in embedded.SURFACE_FORMS[name] for f in kind]
    return forms


def _counts(src):
    counts = collections.defaultdict(lambda: [0, 0])  # group -> [examples, toxic]
    for i in range(src.num_documents()):
        example = src.example(i)
        assert len(example.identities) <= 1
        group = example.identities[0] if example.identities else None
        counts[group][0] += 1
        counts[group][1] += example.label
    return {group: tuple(c) for group, c in counts.items()}


def test_is_an_example_source_with_the_embedded_identities(source):
    assert isinstance(source, ExampleSource) and source.num_classes == 2
    assert source.identity_vocabulary == HELDOUT_IDENTITIES == embedded.EMBEDDED_IDENTITIES
    assert source.document(7) == source.example(7).text
    assert all(source.example(i).label in (0, 1) for i in range(source.num_documents()))


def test_counts_and_balance_per_group(source):
    assert len(TOXIC_FRAMES) == len(NONTOXIC_FRAMES) == 40 and FILLINGS_PER_FRAME == 3
    assert _counts(source) == {group: (240, 120) for group in GROUPS}
    assert source.num_documents() == 4080
    texts = [source.document(i) for i in range(source.num_documents())]
    assert len(set(texts)) == len(texts)


def test_every_group_has_the_same_filled_frames(source):
    subject = {name: _forms_pattern(f for kind in SURFACE_FORMS[name] for f in kind) for name in HELDOUT_IDENTITIES}
    subject[None] = _forms_pattern(f for kind in heldout.BACKGROUND_FORMS for f in kind)
    frames = collections.defaultdict(collections.Counter)
    for i in range(source.num_documents()):
        example = source.example(i)
        group = example.identities[0] if example.identities else None
        masked, n = subject[group].subn("<X>", example.text, count=1)
        assert n == 1, example
        frames[group][masked, example.label] += 1
    reference = frames[None]
    assert sum(reference.values()) == 240 and set(reference.values()) == {1}
    for group in HELDOUT_IDENTITIES:
        assert frames[group] == reference, group


def test_deterministic_per_seed(source):
    again = HeldoutToxicitySource("validation", seed=0)
    assert again.fingerprint == source.fingerprint
    assert [again.example(i) for i in range(50)] == [source.example(i) for i in range(50)]
    assert HeldoutToxicitySource("test").fingerprint == source.fingerprint  # one set, two names
    other = HeldoutToxicitySource(seed=1)
    assert other.fingerprint != source.fingerprint
    assert _counts(other) == _counts(source)


def test_serves_no_train_split():
    with pytest.raises(HoloError, match=r"^the held-out toxicity set is for evaluation only and has no train split"):
        HeldoutToxicitySource("train")
    with pytest.raises(HoloError, match=r"unknown held-out toxicity split `dev`"):
        HeldoutToxicitySource("dev")
    with pytest.raises(HoloError, match=r"seed is -1"):
        HeldoutToxicitySource(seed=-1)


def _tokens(text):
    text = re.sub(r"\{\w+\}", " <x> ", text).replace("a~", "a").replace("a(n)", "a").lower()
    return re.findall(r"<x>|[a-z0-9][a-z0-9'_-]*", text)


def _grams(texts, n=4):
    grams = set()
    for text in texts:
        tokens = _tokens(text)
        grams |= {tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)}
    return grams


EMBEDDED_FRAMES = embedded._TOXIC_FRAMES + embedded._NONTOXIC_FRAMES + embedded._AMBIGUOUS_FRAMES


def test_no_frame_text_of_the_embedded_set():
    # Word 4-grams, each slot one token `<x>`: so even "{P} are {adj} {noun}" vs "{P} are {x} {y}" counts.
    shared = _grams(TOXIC_FRAMES + NONTOXIC_FRAMES) & _grams(EMBEDDED_FRAMES)
    assert not shared, shared
    assert not {t.lower() for t in TOXIC_FRAMES + NONTOXIC_FRAMES} & {t.lower() for t in EMBEDDED_FRAMES}


def _fill_strings(fillers, openers, closers, background):
    strings = [x for options in fillers.values() for x in options]
    strings += [x for x in (*openers, *closers) if x.strip()]
    strings += [x for kind in background for x in kind]
    return strings


def _content_words(strings):
    words = set()
    for s in strings:
        words |= {w for w in _tokens(s) if w != "<x>" and w[0].isalpha()}
    return words - STOP_WORDS


def test_no_filler_list_reused_and_little_shared_vocabulary():
    ours = _fill_strings(heldout.FILLERS, heldout.OPENERS, heldout.CLOSERS, heldout.BACKGROUND_FORMS)
    theirs = _fill_strings(embedded._FILLERS, embedded._OPENERS, embedded._CLOSERS, embedded._BACKGROUND_FORMS)
    shared_strings = {s.strip().lower() for s in ours} & {s.strip().lower() for s in theirs}
    assert not shared_strings, shared_strings
    # Content vocabulary (non-identity words of frames, fillers, openers, closers, background subjects).
    our_words = _content_words([*ours, *TOXIC_FRAMES, *NONTOXIC_FRAMES])
    their_words = _content_words([*theirs, *EMBEDDED_FRAMES])
    shared = our_words & their_words
    share = len(shared) / len(our_words)
    print(f"\nheld-out content vocabulary: {len(our_words)} words, {len(shared)} ({share:.1%}) also in the embedded "
          f"generator's {len(their_words)}; Jaccard {len(shared) / len(our_words | their_words):.1%}: "
          f"{' '.join(sorted(shared))}")
    assert share < 0.08


def test_shares_no_filled_text_4gram_with_the_embedded_validation_split(source):
    # Subjects masked (either generator's), so only frame, filler, opener and closer words are compared.
    def masked_grams(texts, surface_forms, background):
        pattern = _forms_pattern([f for kinds in (*surface_forms.values(), background) for kind in kinds for f in kind])
        return _grams(pattern.sub(" {x} ", text) for text in texts)

    ours = masked_grams([source.document(i) for i in range(source.num_documents())], SURFACE_FORMS,
                        heldout.BACKGROUND_FORMS)
    theirs_src = embedded.EmbeddedToxicitySource("validation")
    theirs = masked_grams([theirs_src.document(i) for i in range(theirs_src.num_documents())],
                          embedded.SURFACE_FORMS, embedded._BACKGROUND_FORMS)
    assert not ours & theirs, ours & theirs


def test_each_identity_names_itself_and_no_other(source):
    own = {name: _forms_pattern(_mentions(name)) for name in HELDOUT_IDENTITIES}
    forms = {name: _forms_pattern(f for kind in SURFACE_FORMS[name] for f in kind) for name in HELDOUT_IDENTITIES}
    anyone = _forms_pattern(f for name in HELDOUT_IDENTITIES for f in _mentions(name))
    for i in range(source.num_documents()):
        example = source.example(i)
        found = [m.group(0) for m in anyone.finditer(example.text)]
        if example.identities:
            (name,) = example.identities
            assert forms[name].search(example.text), example
            assert found and all(own[name].fullmatch(f) for f in found), (example, found)
        else:
            assert not found, (example, found)


def test_write_jsonl_round_trips_through_read_examples(source, tmp_path):
    path = tmp_path / "heldout.jsonl"
    assert write_jsonl(path) == 4080
    assert sorted(p.name for p in tmp_path.iterdir()) == ["heldout.jsonl"]
    read = read_examples(path)
    assert [(e.text, e.label, e.identities) for e in read] == [tuple(source.example(i)) for i in range(4080)]
    write_jsonl(tmp_path / "seed1.jsonl", seed=1)
    assert [e.text for e in read_examples(tmp_path / "seed1.jsonl")] != [e.text for e in read]
