"""The Civil Comments identity vocabulary, its axes, and the thresholds that turn its fractional
annotations into 0/1 labels.

Sources:
- The 24 identity columns, in this order, are `IDENTITY_LABELS` of the TFDS builder
  `tensorflow_datasets/text/civil_comments.py` (config `CivilCommentsIdentities`, tensorflow-datasets
  4.9.10; catalog page https://www.tensorflow.org/datasets/catalog/civil_comments), which are the
  columns of the Jigsaw Unintended Bias in Toxicity Classification data (Kaggle, 2019; Borkan et al.
  2019, "Nuanced Metrics for Measuring Unintended Bias with Real Data for Text Classification").
  `tests/fairness/test_identities.py` reads that builder's source, when TFDS is installed, and checks
  this tuple against it.
- The axes are the five questions the annotators answered ("What genders are mentioned in the
  comment?", ...), which the Kaggle data page lists as the categories `gender`, `sexual_orientation`,
  `religion`, `race_or_ethnicity` and `disability` of `identity_individual_annotations.csv`; each
  column's `other_*` member belongs to its own question. The axis `race_or_ethnicity` is named
  `ethnicity` here, as docs/DESIGN.md section 5 and issue 12 name it.
- Both thresholds: every Civil Comments label is the fraction of raters who said it applies. The Kaggle
  data page: "test set examples with target >= 0.5 will be considered to be in the positive class
  (toxic)"; the competition's benchmark kernel turns identity columns into membership the same way
  (`convert_to_bool`: `df[col] >= 0.5`), and so do the TFDS Fairness Indicators tutorials.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable

# The columns and thresholds (toxic / mentions an identity when at least half of the raters said so)
# are the data's: defined once with the Civil Comments source, which applies them; re-exported here.
from holo_jax.data.civil_comments import IDENTITY_COLUMNS, MEMBERSHIP_THRESHOLD, TOXIC_THRESHOLD  # noqa: F401
from holo_jax.errors import HoloError

# Axis -> its identities, in the column order of the TFDS builder (which groups them by question).
AXES: dict[str, tuple[str, ...]] = {
    "gender": ("male", "female", "transgender", "other_gender"),
    "sexual_orientation": ("heterosexual", "homosexual_gay_or_lesbian", "bisexual", "other_sexual_orientation"),
    "religion": ("christian", "jewish", "muslim", "hindu", "buddhist", "atheist", "other_religion"),
    "ethnicity": ("black", "white", "asian", "latino", "other_race_or_ethnicity"),
    "disability": (
        "physical_disability", "intellectual_or_learning_disability", "psychiatric_or_mental_illness",
        "other_disability",
    ),
}

# All 24 identity columns, in the TFDS builder's order (the axes group them by question).
IDENTITIES: tuple[str, ...] = IDENTITY_COLUMNS
if tuple(name for members in AXES.values() for name in members) != IDENTITIES:
    raise ImportError("the identity axes do not list the Civil Comments identity columns in order")

# Identity -> its axis.
AXIS_OF: dict[str, str] = {name: axis for axis, members in AXES.items() for name in members}


def axes_of(identities: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """The axes that `identities` touch, each with its members among `identities` (in the order given).

    Axes come in the order of `AXES`, and an axis none of `identities` belongs to is left out, so an
    empty result means no identities were given. Raises `HoloError` for a name outside the Civil
    Comments vocabulary (suggesting the closest one) or a name given twice: either would make a
    membership column mean something other than what its name says."""
    if isinstance(identities, str):  # a bare string would otherwise be read as its letters
        raise HoloError(f"identities must be a sequence of names, not the single string {identities!r}; "
                        f"write ({identities!r},).")
    names = tuple(identities)
    seen: set[str] = set()
    for name in names:
        if not isinstance(name, str):
            raise HoloError(f"identity {name!r} is not a string; name identities as in the Civil Comments "
                            f"columns, e.g. {IDENTITIES[0]!r}.")
        if name not in AXIS_OF:
            raise HoloError(_unknown_sentence(name))
        if name in seen:
            raise HoloError(f"identity {name!r} is named more than once; list each identity once.")
        seen.add(name)
    return {axis: tuple(n for n in names if n in members)
            for axis, members in AXES.items() if any(n in members for n in names)}


def _unknown_sentence(name: str) -> str:
    key = name.strip().lower()
    # An axis name where an identity was expected (also Kaggle's spelling of the ethnicity axis).
    axis = "ethnicity" if key == "race_or_ethnicity" else key
    if axis in AXES:
        return (f"{name!r} is an axis, not an identity; name its identities instead: "
                f"{', '.join(AXES[axis])}.")
    # A word of exactly one column ("gay", "lesbian", "mental") names that column; difflib alone
    # misses these, since it scores similarity of whole strings. Whole words only, so that "men"
    # does not suggest "psychiatric_or_mental_illness". difflib then catches misspellings and
    # plurals ("muslims", "Christian ").
    containing = [n for n in IDENTITIES if key in n.split("_")]
    close = containing if len(containing) == 1 else difflib.get_close_matches(key, IDENTITIES, n=1, cutoff=0.6)
    if close:
        return f"unknown identity {name!r}; did you mean {close[0]!r}?"
    return (f"unknown identity {name!r}; use a Civil Comments identity: "
            + "; ".join(f"{axis}: {', '.join(members)}" for axis, members in AXES.items()) + ".")
