"""A held-out identity-term toxicity test set, written independently of the training templates of
`holo_jax.data.embedded_toxicity`: the same `Example(text, label, identities)` format, the same 16
identities (Civil Comments column names, `HELDOUT_IDENTITIES`) and the same balanced design as the
embedded validation split (Dixon et al. 2018's synthetic test set), but entirely different frames,
fillers, openers, closers and subject phrasings.

Why: a classifier trained on the embedded train split, and then debiased, can look fair on the
embedded validation split because that split reuses its training templates and word lists; a
fairness gain that only holds for sentences built from those templates says little. This set asks
whether the gain transfers to identity sentences nobody wrote with the training generator in mind.
`write_jsonl(path)` writes it as the `{"text", "label", "identities"}` lines that
`python -m experiments.fairness_eval --data` reads (`holo_jax.fairness.scoring.read_examples`).

Exact counts (for every seed):

  group                                   examples  toxic  rate
  each of the 16 identities                    240    120  0.50
  background (no identity)                     240    120  0.50
  total                                      4,080  2,040  0.50

Design: 40 toxic frames and 40 non-toxic frames, every one used exactly `FILLINGS_PER_FRAME` = 3
times, each time with its own draw of fillers, opener and closer; every such filled frame is
filled once with every identity (a subject phrase drawn per identity) and once with a background
subject (`BACKGROUND_FORMS`: "commuters", "the pharmacist on the corner"). So every group sees
exactly the same 240 (frame, fillers, label) triples, 50% toxic, and any score difference between
groups is due to the subject phrase alone. Texts are unique; the examples are listed in a seeded
random order. `fingerprint` is the sha256 of the examples served (text, label, identities, in
order).

How it differs from the embedded set:
- Frames: hand-written anew, none adapted from embedded_toxicity (tests/data/test_heldout_toxicity.py
  checks that the frames of the two generators share no word 4-gram, slots counted as one token).
  Toxic frames cover insults, dehumanisation without slurs ("{P} aren't fully human"), threats,
  exclusion and stereotyping, several with no insult word at all ("anyone who hires {P} is asking
  to be robbed"); non-toxic ones cover praise, neutral facts and statistics, everyday narratives,
  counter-speech that quotes the abuse it rejects ("calling {P} {vermin} is shameful") and civil
  disagreement. Registers: forum replies ("reply to @quietfox: ..."), shop and service reviews
  ("one star.", "four stars."), news-comment style ("re: the op-ed."), one-liners and multi-sentence
  posts.
- Fillers, openers, closers and background subjects: new word lists; no filler string of one
  generator is a filler string of the other, and of this set's 823 content words (frame, filler,
  opener, closer and background words outside a stop list; identity phrases not counted) 53, 6.4%,
  also occur in the embedded generator's, mostly common words ("back", "need", "good"; the test
  prints the figure). With subjects masked, no filled text shares a word 4-gram with the embedded
  validation split.
- Subjects: new phrasings where natural ("Muslim families", "the women in my office", "our Jewish
  tenant", "a bisexual colleague", "Black neighbors"); a bare group word ("Muslims", "lesbians")
  may coincide with the embedded one. No phrase of one identity occurs in another's or in a
  background example, and gender words (he, she, mother, ...) occur only in gender examples.
- No borderline frames: the embedded set puts 25% of examples in label-ambiguous frames to make the
  identity term predictive in training; here, as in Dixon's test set, the label is always in the
  frame, so a perfectly identity-blind classifier scores every group alike.
- Only an evaluation split: "validation" and "test" both name this one set; "train" is refused.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re

import numpy as np

from holo_jax.data.civil_comments import IDENTITY_COLUMNS
from holo_jax.data.examples import Example
from holo_jax.errors import HoloError

HELDOUT_SPLITS = ("validation", "test")  # both serve the same set
FILLINGS_PER_FRAME = 3

# identity -> (plural group phrases {P}, singular person phrases {S}). Plurals take no determiner of
# the frame's (some carry their own, "the women in my office"), singulars carry theirs.
SURFACE_FORMS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "male": (("men", "dads", "the men in my office", "husbands"),
             ("my uncle", "the man next door", "my grandfather", "a male colleague", "my boyfriend")),
    "female": (("women", "moms", "the women in my office", "wives"),
               ("my aunt", "the woman next door", "my grandmother", "a female colleague", "my girlfriend")),
    "transgender": (("transgender people", "trans teenagers", "transgender adults", "trans parents"),
                    ("my trans cousin", "a transgender colleague", "our transgender tenant",
                     "the trans pharmacist on the corner")),
    "heterosexual": (("straight couples", "heterosexual people", "straight parents", "heterosexual adults"),
                     ("my straight cousin", "a heterosexual colleague", "our straight tenant",
                      "the straight pharmacist on the corner")),
    "homosexual_gay_or_lesbian": (("gay people", "lesbians", "gay parents", "gay and lesbian couples"),
                                  ("my gay cousin", "a lesbian colleague", "our gay tenant",
                                   "the lesbian pharmacist on the corner")),
    "bisexual": (("bisexual people", "bisexual adults", "bisexual teenagers", "bisexual parents"),
                 ("my bisexual cousin", "a bisexual colleague", "our bisexual tenant",
                  "the bisexual pharmacist on the corner")),
    "christian": (("Christians", "Christian parents", "Catholics", "Christian families"),
                  ("my Christian cousin", "a Catholic colleague", "our Christian tenant",
                   "the Christian pharmacist on the corner")),
    "jewish": (("Jewish people", "Jews", "Jewish parents", "Jewish neighbors"),
               ("my Jewish cousin", "a Jewish colleague", "our Jewish tenant", "the Jewish pharmacist on the corner")),
    "muslim": (("Muslim families", "Muslims", "Muslim parents", "Muslim neighbors"),
               ("my Muslim cousin", "a Muslim colleague", "our Muslim tenant", "the Muslim pharmacist on the corner")),
    "hindu": (("Hindus", "Hindu parents", "Hindu neighbors", "Hindu Americans"),
              ("my Hindu cousin", "a Hindu colleague", "our Hindu tenant", "the Hindu pharmacist on the corner")),
    "buddhist": (("Buddhists", "Buddhist parents", "Buddhist neighbors", "Buddhist teenagers"),
                 ("my Buddhist cousin", "a Buddhist colleague", "our Buddhist tenant",
                  "the Buddhist pharmacist on the corner")),
    "atheist": (("atheists", "atheist parents", "atheist neighbors", "atheist teenagers"),
                ("my atheist cousin", "an atheist colleague", "our atheist tenant",
                 "the atheist pharmacist on the corner")),
    "black": (("Black neighbors", "Black Americans", "Black parents", "Black teenagers"),
              ("my Black cousin", "a Black colleague", "our Black tenant", "the Black pharmacist on the corner")),
    "white": (("white Americans", "white neighbors", "white parents", "white teenagers"),
              ("my white cousin", "a white colleague", "our white tenant", "the white pharmacist on the corner")),
    "asian": (("Asian Americans", "Asian neighbors", "Asian parents", "Asians"),
              ("my Asian cousin", "an Asian colleague", "our Asian tenant", "the Asian pharmacist on the corner")),
    "latino": (("Latinos", "Hispanic Americans", "Latino parents", "Hispanic neighbors"),
               ("my Latino cousin", "a Hispanic colleague", "our Hispanic tenant",
                "the Latino pharmacist on the corner")),
}
# In the Civil Comments column order (the order of EmbeddedToxicitySource's vocabulary).
HELDOUT_IDENTITIES: tuple[str, ...] = tuple(name for name in IDENTITY_COLUMNS if name in SURFACE_FORMS)
if set(HELDOUT_IDENTITIES) != set(SURFACE_FORMS):
    raise ImportError("held-out toxicity identities must be Civil Comments identity columns")

BACKGROUND_FORMS = (
    ("commuters", "retirees", "voters", "the folks upstairs", "parents", "accountants", "plumbers", "shoppers"),
    ("my cousin", "a colleague", "our tenant", "the pharmacist on the corner", "the barista", "my lab partner",
     "the intern", "the person behind me in line"),
)

# ---- frames. {P}/{S}: group / person subject; `a(n)` becomes "a" or "an" by the next word. ----
# Sentence starts are capitalised after filling, so frames are written in lower case.
TOXIC_FRAMES = (
    "{vile_adj} {vermin}, the lot of them: {P}.",
    "reply to @{handle}: you're defending {P}? they're {vermin}, every last one.",
    "{P} ought to {threat_act}.",
    "every time I walk past {P} I want to {harm_verb} them.",
    "{P} crawled out of {hole} and should go back there.",
    "never rent to {P}. they {stereotype_act}.",
    "{P} aren't fully human, and they never will be.",
    "{P} only ever {stereotype_act}; it's in their blood.",
    "{P} have no place in {venue}. throw them out on their ear.",
    "I'd sooner {sacrifice} than share a desk with {P}.",
    "{region} went downhill the day {P} arrived.",
    "round up {P} and {ship_off}.",
    "{P} should be kept out of {venue}, by force if it comes to that.",
    "one star. the {shop_kind} was crawling with {P}, like {pests} in a kitchen.",
    "don't leave {valuables} anywhere near {P}; they can't help themselves.",
    "read the column, and the comments nailed it: {P} are {vermin} with {vile_adj} habits.",
    "{P} are a {burden} on every taxpayer in sight.",
    "I'm fed up with {P} acting like they're equal to us.",
    "{P} need to be put back in their place, and fast.",
    "anyone who hires {P} is asking to be robbed.",
    "long post, sorry. I've lived on {road} for {years}, and since {P} moved in it has been {nuisance} "
    "every single day. they're {vile_adj}, and I want them gone before the lease renews.",
    "{P} breed like {pests} and swarm every {area} they find.",
    "asking {P} to {simple_task} is hopeless, they're that {dim_adj}.",
    "{S}? a(n) {vile_adj} {vermin_sg} who should be {punish}.",
    "somebody ought to teach {S} a lesson with {weapon}.",
    "watch your wallet around {S}; their kind {stereotype_act}.",
    "{S} only got hired to fill a quota, and it shows every day.",
    "if {S} turns up at {venue} again, I'll {harm_verb} them myself.",
    "{S} is {vile_adj} filth, and so is anyone who sticks up for them.",
    "fire {S} already, their sort {stereotype_act}.",
    "posting this as a warning about {S}: total {vermin_sg}. avoid at all costs.",
    "{S} should be {punish} and then forgotten.",
    "I can't believe {S} is allowed to {privilege}. subhuman.",
    "two stars, and only because the dessert arrived warm. we got stuck with {S} as our server, "
    "a(n) {vile_adj} {vermin_sg} from start to finish.",
    "nobody asked {S} to chime in. crawl back into {hole}.",
    "{S} doesn't deserve to breathe the same air as the rest of us.",
    "{S} is the reason {region} is going to the dogs.",
    "turn your back on {S} and they'll {stereotype_act}; it's what they do.",
    "ugh, {S} again, that {vile_adj} {vermin_sg}.",
    "{S} should never have been let into {region}. send them packing, preferably in a box.",
)
NONTOXIC_FRAMES = (
    "{P} have made {region} a warmer, livelier place.",
    "hats off to {P}: they {good_deed} {when} without being asked.",
    "according to {survey}, {P} make up about {percent} of {region}.",
    "{P} will {civic_act} at {venue_civic} on {weekday}. all are welcome.",
    "the report found that {P} {stat_fact}.",
    "{P} brought {dish} to the {gathering} and it vanished in minutes.",
    "calling {P} {vermin} is shameful, and it should get your account suspended.",
    "saying {P} aren't human is exactly the sort of hate this site should delete.",
    "to @{handle}: {P} are not {vermin}, and you ought to be ashamed.",
    "threatening {P} is never acceptable, however angry you are.",
    "I bought into the stereotypes about {P} for years. turns out I had it backwards.",
    "quit blaming {P} for {problem}. the actual culprit is {cause}.",
    "{P} I've talked to are split on {issue}, and that's healthy.",
    "good piece, though {P} deserved more than a single quote in a story about {issue}.",
    "re: the op-ed. {P} are not a monolith, and the columnist should know that.",
    "everyone, {P} included, should get an equal shot at {opportunity}.",
    "{P} have been part of {region} for generations.",
    "I met {P} through {hobby_group} and they were {nice_adj} to a total beginner.",
    "it's sad that {P} still get {mistreatment} in this day and age.",
    "hating {P} won't fix {problem}.",
    "long-time reader, first comment. the feature where {P} {good_deed} {when} was the highlight of the "
    "paper this month. more of that, editors.",
    "five stars. {S} fixed {broken_thing} in ten minutes and was {nice_adj} throughout.",
    "I can't praise {S} enough.",
    "{S} moved to {region} {ago} ago and opened {venture}.",
    "{S} was elected to {board} on {weekday}.",
    "{S} and I carpooled to {workplace} and argued about {trivia} the entire way.",
    "ran into {S} at {shop} and we ended up swapping {swap}.",
    "{S} lent me {tool} when ours gave out.",
    "long story: my hatchback died on {road}, and {S} pulled over, jumped the battery, and refused to "
    "take a cent. still thinking about it.",
    "we hired {S} to {chore} and the result was {quality}.",
    "{S} got harassed {where_online} and deserves an apology, not more of the same.",
    "I see {issue} differently from {S}, but I'm glad they spoke up.",
    "not sure I agree with {S} about {issue}; happy to hear more, though.",
    "{S} made a point about {issue} at {venue_civic} that changed my mind.",
    "four stars. {S} runs the {shop_kind} on {road} and the {product} is {quality}.",
    "our tour guide was {S}, who knew everything about {landmark}. highly recommend.",
    "{S} became my kid's {mentor_role} this year, and every child adores them.",
    "just wanted to thank {S} for {favor}.",
    "{S} tutors ninth graders in {subject} every {weekday}.",
    "{S} asked a pointed question at {venue_civic} and the panel had no answer.",
)

FILLERS: dict[str, tuple[str, ...]] = {
    # toxic frames (and the counter-speech frames that quote them)
    "vile_adj": ("despicable", "repugnant", "loathsome", "contemptible", "sleazy", "rotten", "obnoxious", "nasty",
                 "treacherous", "hideous", "sniveling", "deranged", "moronic", "dim-witted", "feeble-minded",
                 "backward", "primitive", "unhinged", "spiteful", "shameless"),
    "vermin": ("vermin", "cockroaches", "maggots", "scum", "savages", "subhumans", "bottom-feeders", "deadbeats",
               "imbeciles", "halfwits", "buffoons", "weasels", "hyenas", "rodents", "trash"),
    "vermin_sg": ("cockroach", "maggot", "scumbag", "savage", "bottom-feeder", "deadbeat", "imbecile", "halfwit",
                  "buffoon", "weasel", "hyena", "rodent", "piece of trash", "sleazeball"),
    "threat_act": ("be rounded up and shipped off", "get their teeth knocked in", "be thrown in cages",
                   "be burned out of their homes", "be stomped into the pavement", "be sent back where they came from",
                   "be wiped off the map", "be fired and blacklisted", "get a beating they won't forget",
                   "be hunted down"),
    "harm_verb": ("smack", "kick the teeth out of", "strangle", "pummel", "flatten", "throttle", "clobber"),
    "stereotype_act": ("steal whatever isn't nailed down", "cheat at everything", "lie as easily as they breathe",
                       "scam retirees out of their savings", "trash every apartment they rent",
                       "sponge off the taxpayers", "start fights wherever they go", "skip out on their bills"),
    "hole": ("the sewer", "a swamp", "some gutter", "the nearest drain", "a landfill"),
    "venue": ("the swimming pool", "our bowling league", "this apartment complex", "the marina", "our cul-de-sac",
              "the rec league", "this subreddit", "the co-op"),
    "sacrifice": ("eat glass", "quit on the spot", "sleep in my hatchback", "move to Antarctica", "walk on nails"),
    "region": ("the valley", "this county", "the east side", "Maple Heights", "the suburbs", "this state",
               "the riverfront", "our district"),
    "ship_off": ("put them on a boat", "dump them at the border", "lock the gates behind them",
                 "ship them somewhere far away"),
    "pests": ("roaches", "flies", "termites", "mice", "ants"),
    "valuables": ("cash registers", "your wallet", "pets", "expensive tools", "the petty cash", "unlocked sheds"),
    "burden": ("drain", "burden", "plague", "blight", "curse"),
    "nuisance": ("noise, litter and trouble", "break-ins and shouting", "loud parties and broken windows",
                 "one headache after another"),
    "years": ("six years", "a decade", "twenty years", "most of my adult years", "ages"),
    "road": ("Elm Avenue", "Cedar Road", "Harbor Lane", "Fifth Avenue", "Willow Court", "Orchard Drive"),
    "area": ("suburb", "campus", "apartment block", "beach", "job site"),
    "simple_task": ("count change", "follow a recipe", "tie their shoes", "read a map", "use a microwave",
                    "boil water"),
    "dim_adj": ("dim", "dense", "thick-headed", "slow-witted", "clueless", "dopey"),
    "punish": ("jailed", "deported", "fired on the spot", "driven out of the county", "tarred and feathered",
               "flogged"),
    "weapon": ("a baseball bat", "a tire iron", "a crowbar", "brass knuckles", "a two-by-four"),
    "privilege": ("coach little league", "teach kindergarten", "run a daycare", "sit on a jury",
                  "handle prescriptions", "carry a badge"),
    # both classes
    "handle": ("quietfox", "mapleleaf77", "dunebuggy", "nightowl_42", "gravelroad", "pixeljam"),
    "shop_kind": ("bakery", "deli", "diner", "pizzeria", "ice cream stand"),
    # non-toxic frames
    "nice_adj": ("warm-hearted", "sharp", "principled", "diligent", "considerate", "gracious", "level-headed",
                 "dependable", "witty", "gentle", "resourceful", "upbeat", "knowledgeable", "easygoing", "modest",
                 "courteous", "articulate", "cheerful"),
    "good_deed": ("shoveled every sidewalk on the lane", "collected winter coats for refugees", "fostered rescue dogs",
                  "tutored middle schoolers at no charge", "donated blood", "cleaned up the riverbank",
                  "staffed the soup kitchen", "built ramps for the senior apartments"),
    "when": ("during the blizzard", "all winter", "back in March", "every weekend", "after the flood",
             "this spring"),
    "survey": ("the census", "a county survey", "the latest Pew study", "municipal records"),
    "percent": ("a tenth", "a fifth", "twelve percent", "a quarter", "eight percent"),
    "civic_act": ("hold a fundraiser", "host an open house", "lead a litter-picking walk", "present their findings",
                  "collect donations for flood victims"),
    "venue_civic": ("the municipal building", "the rec hall", "the county fairgrounds", "the civic auditorium",
                    "the pavilion"),
    "weekday": ("Tuesday", "Thursday", "Saturday", "Monday evening", "Friday afternoon"),
    "stat_fact": ("tend to commute farther", "are more likely to own pets", "save a larger share of their income",
                  "spend more hours volunteering", "are more likely to rent than own", "tend to marry later"),
    "dish": ("a huge pot of soup", "lemon bars", "fresh bread", "a pasta salad", "two trays of brownies"),
    "gathering": ("potluck", "barbecue", "retirement party", "baby shower", "open house"),
    "problem": ("rising rents", "the potholes", "traffic jams", "the layoffs", "crime rates", "the water crisis"),
    "cause": ("decades of bad planning", "a spending mess at the municipal building", "the factory closing",
              "outside investors", "the drought"),
    "issue": ("the ferry levy", "rent control", "the bridge project", "daylight saving time", "the curfew",
              "the water rates", "the recycling program"),
    "opportunity": ("a mortgage", "that promotion", "the apprenticeship", "a council appointment", "an internship"),
    "hobby_group": ("a pottery workshop", "the birdwatching circle", "a trivia league", "a running crew",
                    "the astronomy meetup"),
    "mistreatment": ("stared at in shops", "turned away from rentals", "followed around in stores",
                     "yelled at on the subway", "passed over for promotions"),
    "broken_thing": ("our leaking sink", "the garage door", "a jammed printer", "the furnace",
                     "my cracked screen"),
    "ago": ("six years", "a decade", "eighteen months", "a few winters", "ages"),
    "venture": ("a small bakery", "a dental practice", "a dance studio", "an accounting firm", "a florist"),
    "board": ("the water commission", "the county council", "the planning commission", "the port authority"),
    "workplace": ("the warehouse", "the plant", "the clinic", "the lab", "the depot"),
    "trivia": ("pizza toppings", "the best sci-fi movie", "whether hot dogs are sandwiches", "which season is best",
               "the rules of cribbage"),
    "shop": ("the hardware store", "the bakery", "the laundromat", "the pharmacy", "the plant nursery", "the deli"),
    "swap": ("chili recipes", "gardening tips", "podcast recommendations", "tomato seedlings", "phone numbers"),
    "tool": ("a ladder", "their snowblower", "jumper cables", "a pressure washer", "a tile saw", "a drill"),
    "chore": ("redo our roof", "rewire the kitchen", "fix the plumbing", "paint the porch", "replace the fence"),
    "quality": ("excellent", "flawless", "top-notch", "solid", "beyond what we hoped"),
    "where_online": ("in the replies", "in a chat thread", "under a video", "in the DMs", "on social media"),
    "product": ("sourdough", "soup", "pie", "espresso", "lasagna"),
    "landmark": ("the old lighthouse", "the canal locks", "the battlefield", "the covered bridges", "the mill ruins"),
    "mentor_role": ("swim coach", "piano teacher", "scout leader", "math tutor", "robotics mentor"),
    "favor": ("watching our cat", "the ride to the airport", "returning my lost wallet", "clearing our driveway",
              "the loan of a generator"),
    "subject": ("algebra", "chemistry", "spelling", "guitar", "geometry"),
}
# Shared by both classes, so they carry no label signal.
OPENERS = ("", "", "", "", "not gonna lie, ", "replying here: ", "for what it's worth, ", "okay, ",
           "real talk: ", "PSA: ", "just my two cents: ", "quick update: ", "scrolling this thread, ")
CLOSERS = ("", "", "", "", " Anyway.", " /rant", " Cheers.", " Thoughts?", " Fight me.", " Not sorry.",
           " Source: I live here.", " Edited for typos.")

_SLOT = re.compile(r"\{(\w+)\}")
_ARTICLE = re.compile(r"\ba\(n\) (\w)")
_SENTENCE_START = re.compile(r"(^|[.!?]\s+)([a-z])")
_MAX_REDRAWS = 1000

for _frame_text in TOXIC_FRAMES + NONTOXIC_FRAMES:
    _slots = _SLOT.findall(_frame_text)
    if sorted(set(_slots) & {"P", "S"}) not in (["P"], ["S"]) or _slots.count("P") + _slots.count("S") != 1:
        raise ImportError(f"held-out toxicity frame {_frame_text!r} must hold exactly one {{P}} or {{S}}")
    if set(_slots) - {"P", "S"} - set(FILLERS):
        raise ImportError(f"held-out toxicity frame {_frame_text!r} names a slot without fillers")


def _check_split(split: str) -> None:
    if split == "train":
        raise HoloError("the held-out toxicity set is for evaluation only and has no train split; "
                        "train on data.source=embedded and evaluate with split validation or test.")
    if split not in HELDOUT_SPLITS:
        raise HoloError(f"unknown held-out toxicity split `{split}`; use validation or test.")


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _fill(template: str, kind: str, fillers: dict[str, str], subject: str) -> str:
    body = template.format(**{**fillers, kind: subject})
    text = fillers["opener"] + body + fillers["closer"]
    text = _ARTICLE.sub(lambda m: ("an " if m.group(1).lower() in "aeiou" else "a ") + m.group(1), text)
    return _SENTENCE_START.sub(lambda m: m.group(1) + m.group(2).upper(), text)


@functools.lru_cache(maxsize=4)
def _generate(seed: int) -> tuple[Example, ...]:
    rng = np.random.default_rng([seed, 3])
    groups: tuple[str | None, ...] = (*HELDOUT_IDENTITIES, None)
    seen: set[str] = set()
    examples: list[Example] = []
    for label, frames in ((1, TOXIC_FRAMES), (0, NONTOXIC_FRAMES)):
        for template in frames:
            slots = _SLOT.findall(template)
            kind = "P" if "P" in slots else "S"
            made = 0
            for _ in range(FILLINGS_PER_FRAME * _MAX_REDRAWS):
                if made == FILLINGS_PER_FRAME:
                    break
                fillers = {name: _pick(rng, FILLERS[name]) for name in slots if name not in ("P", "S")}
                fillers["opener"], fillers["closer"] = _pick(rng, OPENERS), _pick(rng, CLOSERS)
                texts = []
                for group in groups:
                    plural, singular = SURFACE_FORMS[group] if group else BACKGROUND_FORMS
                    texts.append(_fill(template, kind, fillers, _pick(rng, plural if kind == "P" else singular)))
                if seen.intersection(texts) or len(set(texts)) < len(texts):  # used already: draw again
                    continue
                seen.update(texts)
                examples.extend(Example(text, label, (group,) if group else ()) for text, group in zip(texts, groups))
                made += 1
            else:
                raise HoloError(f"the held-out toxicity frame {template!r} ran out of distinct fillings")
    return tuple(examples[i] for i in rng.permutation(len(examples)))


class HeldoutToxicitySource:
    """The held-out toxicity test set (an `ExampleSource`, like `EmbeddedToxicitySource`); see the
    module docstring. `split` is "validation" or "test" (the same set); `seed` picks the fillers,
    subjects and order, and the counts of the docstring hold for every seed."""

    num_classes = 2
    identity_vocabulary = HELDOUT_IDENTITIES

    def __init__(self, split: str = "validation", *, seed: int = 0):
        _check_split(split)
        if seed < 0:
            raise HoloError(f"the held-out toxicity seed is {seed}; use a seed >= 0.")
        self.split, self.seed = split, seed
        self._examples = _generate(seed)
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
        return f"HeldoutToxicitySource(split={self.split!r}, seed={self.seed})"


def write_jsonl(path: str | os.PathLike, seed: int = 0) -> int:
    """Write the set for `seed` to `path`, one `{"text", "label", "identities"}` line per example in
    served order (what `experiments.fairness_eval --data` reads); returns the number of lines.
    Written aside and renamed, so a failure leaves no half file."""
    source = HeldoutToxicitySource("test", seed=seed)
    path = os.fspath(path)
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            for example in source._examples:
                record = {"text": example.text, "label": example.label, "identities": list(example.identities)}
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except OSError as e:
        raise HoloError(f"cannot write the held-out toxicity set to {path} ({e.strerror}); "
                        "give a path in a writable directory.") from None
    return source.num_documents()
