"""An offline toxicity set with identity terms, in the manner of Dixon et al. 2018 ("Measuring and
Mitigating Unintended Bias in Text Classification", AIES): identity terms placed in toxic and
non-toxic template frames. It is what `data.source=embedded` serves to
`task.kind=sequence_classification` (the LM task keeps the pydoc corpus of `sources.EmbeddedSource`).

Generated in memory from the word lists below (a few KB), deterministically from `seed`: no
download, no data file. An example is `Example(text, label, identities)`, label 1 = toxic, and
names at most one identity (the one whose term the text holds); "background" examples name none
and use generic subjects ("commenters", "my neighbor").

Frames: 32 toxic templates (insults, dehumanisation, threats, exclusion; some overt, some with no
insult word at all, e.g. "nobody wants {P} around here"), 32 non-toxic ones (positive, neutral, and
civil criticism or counter-speech that shares words such as "hate", "rude", "wrong" with the toxic
ones) and 12 borderline ones ("here come {P}, as usual.") that annotators of real data disagree on.
`AMBIGUOUS_SHARE` = 25% of each group's toxic and of its non-toxic examples (both splits) use a
borderline frame, so their label is not in the frame: without them every frame is lexically
separable and a fitted classifier ignores the identity term. Slots take a bare plural group term {P}
("women", "Muslims") or a singular person term {S} ("my sister", "a Muslim coworker"), adjectives,
nouns, threats, activities, topics, places, times and an opener/closer drawn from one list for both
classes (so they carry no label signal).

Identities (16, named as the Civil Comments columns, `IDENTITY_COLUMNS`): gender male, female,
transgender; sexual orientation heterosexual, homosexual_gay_or_lesbian, bisexual; religion christian,
jewish, muslim, hindu, buddhist, atheist; ethnicity black, white, asian, latino. Each has 3-4 plural
and 4-6 singular surface forms (`SURFACE_FORMS`); no form of one identity occurs in the text of
another identity's or a background example (tests/data/test_embedded_toxicity.py checks it).

Planted bias, exact counts (not sampled rates), at full strength (`bias=1`, `data.embedded_bias`;
a strength b gives each identity the toxic rate 0.2 + b * (rate - 0.2), rounded to whole examples):

  split       group                                                     examples  toxic    rate
  train       each of homosexual_gay_or_lesbian, muslim, black,              300    240    0.80
              transgender
  train       each of female, jewish, latino, white                         300    150    0.50
  train       each of male, heterosexual, bisexual, christian, hindu,        300     60    0.20
              buddhist, atheist, asian
  train       background (no identity)                                     3,000    600    0.20
  validation  each of the 16 identities                                      240    120    0.50
  validation  background (no identity)                                       240    120    0.50

Train: 7,800 examples, the identity term over-represented among toxic examples for the first eight
identities (as in real comment data, where the most targeted groups are mentioned mostly in abuse),
so a classifier fit to it learns the term itself as evidence of toxicity: on validation it scores
non-toxic mentions of those identities higher than non-toxic background text, i.e. a lower BPSN AUC
(and usually subgroup AUC) than for the unbiased eight, which debiasing should close. Within each
axis some identities are biased and some are not, so per-axis gaps are visible. Measured once with
a bag-of-words logistic regression fit to train (seed 0): validation BPSN AUC 0.86-0.88 for the 0.8
identities, 0.91-0.93 for the 0.5 ones, 0.94-0.96 for the 0.2 ones; subgroup AUC ~0.955 for all (a
linear score shifts a whole subgroup at once; a saturating network can also lose subgroup AUC).

Validation: 4,080 examples, Dixon's synthetic test set design: 120 toxic and 120 non-toxic frames
(template, fillers, opener and closer all drawn), each filled once with every identity (a surface
form drawn per identity) and once with a background subject. So every group has exactly the same
frames and 50% toxicity, and any score difference between groups is due to the identity term alone.

Texts are unique within a split, and the splits are disjoint in text: train redraws any example
whose text is a validation text (validation is built first, from the seed alone). Both splits are
listed in a seeded random order. `fingerprint` is the sha256 of the examples served (text, label,
identities, in order); it also changes if a numpy version draws another stream from the same seed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re

import numpy as np

from holo_jax.data.civil_comments import IDENTITY_COLUMNS
from holo_jax.data.documents import check_split
from holo_jax.data.examples import Example
from holo_jax.errors import HoloError

# identity -> (plural group terms {P}, singular person terms {S}). Plurals are bare (no determiner),
# singulars carry theirs, so every term fits every template of its slot.
SURFACE_FORMS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "male": (("men", "guys", "boys", "fathers"),
             ("a man", "my brother", "my father", "this guy", "my husband", "my son")),
    "female": (("women", "girls", "ladies", "mothers"),
               ("a woman", "my sister", "my mother", "this girl", "my wife", "my daughter")),
    "transgender": (("transgender people", "trans people", "trans folks", "transgender students"),
                    ("a transgender person", "my trans friend", "a trans coworker", "my transgender neighbor")),
    "heterosexual": (("straight people", "heterosexual couples", "straight folks"),
                     ("a straight person", "my straight friend", "a heterosexual coworker", "my straight neighbor")),
    "homosexual_gay_or_lesbian": (("gay people", "lesbians", "gay couples", "gay folks"),
                                  ("a gay person", "my gay friend", "a lesbian", "my lesbian neighbor",
                                   "a gay coworker")),
    "bisexual": (("bisexual people", "bi folks", "bisexual students"),
                 ("a bisexual person", "my bisexual friend", "a bi coworker", "my bisexual neighbor")),
    "christian": (("Christians", "Catholics", "Christian families", "evangelicals"),
                  ("a Christian", "my Christian neighbor", "a Catholic priest", "a Christian coworker")),
    "jewish": (("Jews", "Jewish people", "Jewish families"),
               ("a Jewish person", "my Jewish neighbor", "the rabbi", "a Jewish coworker")),
    "muslim": (("Muslims", "Muslim people", "Muslim families"),
               ("a Muslim", "my Muslim neighbor", "the imam", "a Muslim coworker")),
    "hindu": (("Hindus", "Hindu people", "Hindu families"),
              ("a Hindu", "my Hindu neighbor", "a Hindu priest", "a Hindu coworker")),
    "buddhist": (("Buddhists", "Buddhist monks", "Buddhist people"),
                 ("a Buddhist", "my Buddhist friend", "a Buddhist monk", "a Buddhist coworker")),
    "atheist": (("atheists", "nonbelievers", "atheist people"),
                ("an atheist", "my atheist friend", "a nonbeliever", "an atheist coworker")),
    "black": (("Black people", "African Americans", "Black families"),
              ("a Black person", "my Black neighbor", "an African American coworker", "a Black student")),
    "white": (("white people", "white folks", "white families"),
              ("a white person", "my white neighbor", "a white coworker", "a white student")),
    "asian": (("Asian people", "Asians", "Asian Americans", "Asian families"),
              ("an Asian person", "my Asian neighbor", "an Asian American coworker", "an Asian student")),
    "latino": (("Latinos", "Hispanic people", "Latino families", "Latinas"),
               ("a Latino", "my Hispanic neighbor", "a Latina coworker", "a Latino student")),
}
# In the Civil Comments column order.
EMBEDDED_IDENTITIES: tuple[str, ...] = tuple(name for name in IDENTITY_COLUMNS if name in SURFACE_FORMS)
if set(EMBEDDED_IDENTITIES) != set(SURFACE_FORMS):
    raise ImportError("embedded toxicity identities must be Civil Comments identity columns")

_BACKGROUND_FORMS = (
    ("people", "commenters", "drivers", "tourists", "politicians", "landlords", "students", "cyclists",
     "lawyers", "gamers", "neighbors", "journalists", "coworkers", "fans"),
    ("my neighbor", "the commenter above", "my coworker", "that driver", "the new manager", "my roommate",
     "the author", "this poster", "my landlord", "the cashier", "a friend of mine", "my classmate"),
)

# Fraction toxic among each identity's train examples; the background's is BACKGROUND_TOXIC_FRACTION.
TRAIN_TOXIC_FRACTION: dict[str, float] = {
    **dict.fromkeys(("homosexual_gay_or_lesbian", "muslim", "black", "transgender"), 0.8),
    **dict.fromkeys(("female", "jewish", "latino", "white"), 0.5),
    **dict.fromkeys(("male", "heterosexual", "bisexual", "christian", "hindu", "buddhist", "atheist", "asian"), 0.2),
}
BACKGROUND_TOXIC_FRACTION = 0.2
TRAIN_EXAMPLES_PER_IDENTITY = 300
TRAIN_BACKGROUND_EXAMPLES = 3000
VALIDATION_FRAMES_PER_CLASS = 120  # each filled with every identity and the background
if set(TRAIN_TOXIC_FRACTION) != set(SURFACE_FORMS):
    raise ImportError("every embedded toxicity identity needs a train toxic fraction")

# ---- frames. {P}/{S}: group / person term; `a~` becomes "a" or "an" by the next word. ----
_TOXIC_FRAMES = (
    "{P} are {insult_adj} {insult_pl}.",
    "{P} are {insult_adj} and everyone knows it.",
    "I can't stand {P}. They are {insult_adj} {insult_pl}.",
    "{P} should {threat}.",
    "{P} are nothing but {insult_adj} {insult_pl}.",
    "nobody wants {P} around here. Get out.",
    "{P} ruin everything they touch.",
    "keep {P} away from our {our_thing}, they are {insult_adj}.",
    "{P} deserve {bad_thing}.",
    "I hope {P} {hope}.",
    "shut up. {P} are {insult_pl} and always will be.",
    "{P} are a disease on this {land}.",
    "typical {P}: {insult_adj}, {insult_adj2} and useless.",
    "all {P} should {threat}.",
    "{P} make me sick.",
    "if you see {P} {place}, {imperative}.",
    "what a bunch of {insult_adj} {insult_pl}, these {P}.",
    "{P} are too {insult_adj} to {task}.",
    "things were better before {P} showed up {place}.",
    "{P} don't belong in {where}.",
    "I would never let {P} near my kids.",
    "{S} is a~ {insult_adj} {insult_sg}.",
    "nobody cares what {S} thinks. What a~ {insult_adj} {insult_sg}.",
    "{S} should {threat}.",
    "I hope {S} will {hope}.",
    "{S} is too {insult_adj} to {task}.",
    "get {S} out of here before someone {threat_past} them.",
    "{S} is the most {insult_adj} {insult_sg} I have ever met.",
    "someone should {violence} {S}.",
    "{S} is {insult_adj} and deserves {bad_thing}.",
    "I wouldn't trust {S} with anything, what a~ {insult_sg}.",
    "{S} doesn't belong in {where}.",
)
_NONTOXIC_FRAMES = (
    "{P} are {pos_adj} and {pos_adj2}.",
    "many {P} I know are {pos_adj}.",
    "{P} {activity} {time}.",
    "I talked with {P} {place} about {topic}.",
    "{P} deserve {good_thing}.",
    "our {org} welcomes {P}.",
    "there were a lot of {P} at the {event} {time}.",
    "I disagree with {P} who support {policy}, but they make fair points.",
    "{P} should be treated with {virtue}.",
    "it is not fair to judge {P} by a few bad examples.",
    "I hate it when people are rude to {P}.",
    "{P} have every right to {right}.",
    "thanks to {P} who {activity} {time}.",
    "{P} are ordinary people with ordinary lives.",
    "stop being cruel to {P}, they have done nothing wrong.",
    "the article about {P} and {topic} was {article_eval}.",
    "some {P} I know disagree about {topic}, which is fine.",
    "{P} in our {org} are {pos_adj}.",
    "{S} is {pos_adj} and {pos_adj2}.",
    "{S} {activity} {time}.",
    "I had coffee with {S} {time}.",
    "{S} gave a~ {pos_adj} talk about {topic}.",
    "{S} told me {policy} is a bad idea, and I think that is a fair point.",
    "I am proud of {S}.",
    "I was wrong about {S}, they are {pos_adj}.",
    "{S} has every right to {right}.",
    "please be kind to {S}, who is new here.",
    "{S} disagreed with me about {topic}, and that's okay.",
    "I really hate {topic}, but {S} convinced me to give it a chance.",
    "{S} is one of the most {pos_adj} people in our {org}.",
    "I met {S} at the {event} {time} and we talked about {topic}.",
    "{S} was never {insult_adj}, just tired after a long week.",
)
# Borderline: read as hostile or not depending on the reader (annotators disagree on such comments in
# real data); each is labelled toxic at its group's rate, so only the identity term predicts its label.
_AMBIGUOUS_FRAMES = (
    "we need to talk about {P}.",
    "{P} again. Of course.",
    "here come {P}, as usual.",
    "{P} are at it again {place}.",
    "what is it with {P}?",
    "I've had enough of {P} for one week.",
    "there are a lot of {P} {place} these days.",
    "{P} always have something to say about {topic}.",
    "{S} is at it again.",
    "of course {S} had an opinion about {topic}.",
    "{S} showed up {place} {time}. Great.",
    "I have a lot to say about {S}.",
)
AMBIGUOUS_SHARE = 0.25  # of each group's toxic and of its non-toxic examples, in both splits

_FILLERS: dict[str, tuple[str, ...]] = {
    "insult_adj": ("stupid", "disgusting", "worthless", "pathetic", "filthy", "ignorant", "useless", "brainless",
                   "vile", "lazy", "repulsive", "dishonest", "dumb", "revolting", "gross", "spineless", "idiotic",
                   "miserable", "arrogant", "crooked", "greedy", "creepy"),
    "insult_pl": ("idiots", "morons", "losers", "parasites", "pigs", "animals", "rats", "freaks", "lowlifes",
                  "clowns", "leeches", "degenerates", "cowards", "liars", "thugs", "creeps"),
    "insult_sg": ("idiot", "moron", "loser", "parasite", "pig", "animal", "rat", "freak", "lowlife", "clown",
                  "leech", "degenerate", "coward", "liar", "thug", "creep", "waste of space"),
    "threat": ("be beaten senseless", "be kicked out of this country", "be locked up for good",
               "get punched in the face", "be run out of town", "be shut up for good", "be banned from public life",
               "disappear", "be chased out of here", "get what they deserve", "be dragged into the street",
               "be thrown out like garbage"),
    "threat_past": ("hurts", "beats", "punches", "slaps", "attacks", "kicks"),
    "hope": ("get hurt", "disappear for good", "rot", "get what's coming to them", "suffer", "choke",
             "lose everything", "never come back", "get beaten up"),
    "imperative": ("spit on them", "punch them", "chase them off", "make their lives hell",
                   "throw something at them", "tell them to get lost, or worse"),
    "violence": ("slap", "punch", "beat", "run off", "shove", "hurt", "get rid of"),
    "bad_thing": ("to suffer", "every bit of abuse they get", "nothing but contempt", "to be humiliated",
                  "to be treated like dirt", "to lose their jobs"),
    "task": ("hold a job", "be trusted with anything", "form a single thought", "be around decent people",
             "raise children", "vote", "drive a car"),
    "our_thing": ("neighborhood", "schools", "town", "kids", "jobs", "country", "parks"),
    "land": ("country", "city", "planet", "town", "forum"),
    "where": ("this neighborhood", "our schools", "this country", "our town", "decent society", "this forum",
              "our office"),
    "pos_adj": ("kind", "smart", "hardworking", "generous", "funny", "thoughtful", "brave", "honest", "talented",
                "patient", "friendly", "creative", "reliable", "wise", "caring", "curious", "helpful",
                "welcoming", "inspiring", "interesting"),
    "activity": ("volunteered at the food bank", "organized a street cleanup", "helped repaint the community center",
                 "ran a charity 5k", "cooked dinner for the whole block", "taught a free coding class",
                 "raised money for the animal shelter", "coached the youth soccer team",
                 "fixed up the old playground", "visited patients at the hospital", "planted trees in the park"),
    "topic": ("the new tax plan", "the school board vote", "the bus schedule", "climate policy",
              "the housing shortage", "the city budget", "the election results", "the new stadium", "remote work",
              "the price of groceries", "the library renovation", "public transit", "the healthcare bill",
              "the minimum wage", "the zoning change"),
    "policy": ("the new tax plan", "the school board proposal", "the new stadium", "the zoning change",
               "the healthcare bill", "raising the minimum wage", "more bike lanes", "the rent freeze"),
    "place": ("at the library", "at work", "at the park", "on the train", "at the meeting", "after class",
              "at the coffee shop", "downtown", "in my building", "at the gym"),
    "time": ("yesterday", "last night", "this morning", "on Sunday", "last week", "over the holidays",
             "last summer"),
    "event": ("farmers market", "concert", "town hall meeting", "football game", "street fair", "book fair",
              "job fair", "parade", "school play"),
    "good_thing": ("respect", "the same rights as everyone else", "fair treatment", "a seat at the table",
                   "to feel safe", "better representation", "a fair hearing"),
    "virtue": ("respect", "kindness", "dignity", "fairness", "patience"),
    "right": ("live here", "speak up", "be heard", "run for office", "raise a family here", "vote",
              "feel safe at work"),
    "org": ("book club", "hiking group", "soccer team", "school", "company", "choir", "chess club",
            "neighborhood association", "union"),
    "article_eval": ("interesting", "too long", "poorly written", "a bit one-sided", "well researched",
                     "confusing", "worth reading"),
}
_FILLERS["insult_adj2"] = _FILLERS["insult_adj"]
_FILLERS["pos_adj2"] = _FILLERS["pos_adj"]
# Shared by both classes, so they carry no label signal.
_OPENERS = ("", "", "", "", "honestly, ", "look, ", "frankly, ", "I'll say it: ", "well, ", "to be clear, ",
            "in my opinion, ", "let's be real: ", "seriously, ", "ok so ")
_CLOSERS = ("", "", "", "", " Just saying.", " That's all.", " End of story.", " Thanks for reading.", " lol",
            " Period.", " Change my mind.", " Think about it.")

_SLOT = re.compile(r"\{(\w+)\}")
_ARTICLE = re.compile(r"\ba~ (\w)")
_SENTENCE_START = re.compile(r"(^|[.!?]\s+)([a-z])")
_MAX_REDRAWS = 1000


def train_toxic_fraction(identity: str, bias: float) -> float:
    """The toxic share of `identity`'s train examples at planted-bias strength `bias`: the background
    rate moved `bias` of the way to the documented rate (`TRAIN_TOXIC_FRACTION`)."""
    return BACKGROUND_TOXIC_FRACTION + bias * (TRAIN_TOXIC_FRACTION[identity] - BACKGROUND_TOXIC_FRACTION)


@functools.lru_cache(maxsize=4)
def _generate(split: str, seed: int, bias: float = 1.0) -> tuple[Example, ...]:
    """The examples of `split` for `seed`, in served order (cached: both splits build validation)."""
    validation = _validation(seed) if split == "validation" or split == "train" else ()
    if split == "validation":
        return validation
    return _train(seed, frozenset(e.text for e in validation), bias)


def _rng(seed: int, split: str) -> np.random.Generator:
    return np.random.default_rng([seed, {"train": 1, "validation": 2}[split]])


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _frame(rng: np.random.Generator, toxic: bool, ambiguous: bool) -> tuple[str, str, dict[str, str]]:
    """(template, slot kind "P" or "S", its fillers): everything of a text but the subject."""
    template = _pick(rng, _AMBIGUOUS_FRAMES if ambiguous else _TOXIC_FRAMES if toxic else _NONTOXIC_FRAMES)
    slots = _SLOT.findall(template)
    kind = "P" if "P" in slots else "S"
    fillers = {name: _pick(rng, _FILLERS[name]) for name in slots if name not in ("P", "S")}
    fillers["opener"], fillers["closer"] = _pick(rng, _OPENERS), _pick(rng, _CLOSERS)
    return template, kind, fillers


def _subject(rng: np.random.Generator, identity: str | None, kind: str) -> str:
    plural, singular = SURFACE_FORMS[identity] if identity else _BACKGROUND_FORMS
    return _pick(rng, plural if kind == "P" else singular)


def _fill(template: str, kind: str, fillers: dict[str, str], subject: str) -> str:
    body = template.format(**{**fillers, kind: subject})
    text = fillers["opener"] + body + fillers["closer"]
    text = _ARTICLE.sub(lambda m: ("an " if m.group(1).lower() in "aeiou" else "a ") + m.group(1), text)
    return _SENTENCE_START.sub(lambda m: m.group(1) + m.group(2).upper(), text)


def _validation(seed: int) -> tuple[Example, ...]:
    rng = _rng(seed, "validation")
    groups: tuple[str | None, ...] = (*EMBEDDED_IDENTITIES, None)
    seen: set[str] = set()
    examples: list[Example] = []
    ambiguous = round(VALIDATION_FRAMES_PER_CLASS * AMBIGUOUS_SHARE)
    for label in (1, 0):
        frames = 0
        for _ in range(VALIDATION_FRAMES_PER_CLASS * _MAX_REDRAWS):
            if frames == VALIDATION_FRAMES_PER_CLASS:
                break
            template, kind, fillers = _frame(rng, bool(label), frames < ambiguous)
            texts = [_fill(template, kind, fillers, _subject(rng, group, kind)) for group in groups]
            if seen.intersection(texts):  # an already used frame: draw another one
                continue
            seen.update(texts)
            examples.extend(Example(text, label, (group,) if group else ()) for text, group in zip(texts, groups))
            frames += 1
        else:
            raise HoloError("the embedded toxicity templates ran out of distinct validation frames")
    return _shuffled(rng, examples)


def _train(seed: int, reserved: frozenset[str], bias: float) -> tuple[Example, ...]:
    rng = _rng(seed, "train")
    plan = [(name, TRAIN_EXAMPLES_PER_IDENTITY, train_toxic_fraction(name, bias)) for name in EMBEDDED_IDENTITIES]
    plan.append((None, TRAIN_BACKGROUND_EXAMPLES, BACKGROUND_TOXIC_FRACTION))
    seen: set[str] = set(reserved)
    examples: list[Example] = []
    for group, count, fraction in plan:
        toxic = round(count * fraction)
        for label, n in ((1, toxic), (0, count - toxic)):
            made = 0
            for _ in range(n * _MAX_REDRAWS):
                if made == n:
                    break
                template, kind, fillers = _frame(rng, bool(label), made < round(n * AMBIGUOUS_SHARE))
                text = _fill(template, kind, fillers, _subject(rng, group, kind))
                if text in seen:  # a validation text or a repeat: draw again
                    continue
                seen.add(text)
                examples.append(Example(text, label, (group,) if group else ()))
                made += 1
            else:
                raise HoloError("the embedded toxicity templates ran out of distinct train texts")
    return _shuffled(rng, examples)


def _shuffled(rng: np.random.Generator, examples: list[Example]) -> tuple[Example, ...]:
    return tuple(examples[i] for i in rng.permutation(len(examples)))


class EmbeddedToxicitySource:
    """One split of the generated toxicity set (an `ExampleSource`); see the module docstring for
    the frames, the identities and the planted bias. `seed` picks the draw; the counts and rates of
    the docstring hold for every seed. `bias` (0..1, `data.embedded_bias`) scales the planted
    correlation of the train split: 0 gives every identity the background's toxic rate, 1 the
    rates of the table; validation is the same for every `bias`."""

    num_classes = 2
    identity_vocabulary = EMBEDDED_IDENTITIES

    def __init__(self, split: str = "train", *, seed: int = 0, bias: float = 1.0):
        check_split(split)
        if seed < 0:
            raise HoloError(f"the embedded toxicity seed is {seed}; use a seed >= 0.")
        if not 0.0 <= bias <= 1.0:
            raise HoloError(f"the embedded toxicity bias is {bias}; use a strength from 0 (none) to 1 (the "
                            "documented rates).")
        self.split, self.seed, self.bias = split, seed, float(bias)
        self._examples = _generate(split, seed, float(bias) if split == "train" else 1.0)
        digest = hashlib.sha256()
        for example in self._examples:
            digest.update(json.dumps(example, ensure_ascii=False).encode("utf-8") + b"\n")
        self.fingerprint = digest.hexdigest()

    def num_documents(self) -> int:
        return len(self._examples)

    def document(self, index: int) -> str:
        return self._examples[index].text

    def example(self, index: int) -> Example:
        return self._examples[index]

    def __repr__(self) -> str:
        return f"EmbeddedToxicitySource(split={self.split!r}, seed={self.seed}, bias={self.bias})"
