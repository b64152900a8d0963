"""The Civil Comments identity vocabulary: the 24 columns, their axes, the thresholds, and the
sentence an unknown or repeated name gets."""
import ast
import importlib.util
from pathlib import Path

import pytest

from holo_jax.errors import HoloError
from holo_jax.fairness.identities import (
    AXES, AXIS_OF, IDENTITIES, MEMBERSHIP_THRESHOLD, TOXIC_THRESHOLD, axes_of,
)


def _tfds_identity_labels() -> list[str] | None:
    """`IDENTITY_LABELS` of the installed TFDS civil_comments builder, read from its source with `ast`
    (importing tensorflow_datasets would pull in TensorFlow), or None when TFDS is not installed."""
    spec = importlib.util.find_spec("tensorflow_datasets")
    if spec is None or not spec.submodule_search_locations:
        return None
    source = Path(next(iter(spec.submodule_search_locations))) / "text" / "civil_comments.py"
    if not source.exists():
        return None
    for node in ast.parse(source.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "IDENTITY_LABELS" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{source} no longer defines IDENTITY_LABELS; re-check the vocabulary against it.")


def test_vocabulary_is_the_tfds_civil_comments_identities_columns():
    expected = _tfds_identity_labels()
    if expected is None:
        pytest.skip("tensorflow_datasets is not installed")
    assert list(IDENTITIES) == expected


def test_vocabulary_literal():
    # Pinned as well, so the check stands where TFDS is not installed.
    assert IDENTITIES == (
        "male", "female", "transgender", "other_gender",
        "heterosexual", "homosexual_gay_or_lesbian", "bisexual", "other_sexual_orientation",
        "christian", "jewish", "muslim", "hindu", "buddhist", "atheist", "other_religion",
        "black", "white", "asian", "latino", "other_race_or_ethnicity",
        "physical_disability", "intellectual_or_learning_disability", "psychiatric_or_mental_illness",
        "other_disability",
    )


def test_axes_partition_the_vocabulary():
    assert tuple(AXES) == ("gender", "sexual_orientation", "religion", "ethnicity", "disability")
    members = [name for names in AXES.values() for name in names]
    assert sorted(members) == sorted(IDENTITIES) and len(members) == len(set(members)) == 24
    for axis, names in AXES.items():
        assert all(AXIS_OF[n] == axis for n in names)
    # Each `other_*` column sits with its own annotation question.
    assert AXIS_OF["other_gender"] == "gender"
    assert AXIS_OF["other_sexual_orientation"] == "sexual_orientation"
    assert AXIS_OF["other_religion"] == "religion"
    assert AXIS_OF["other_race_or_ethnicity"] == "ethnicity"
    assert AXIS_OF["other_disability"] == "disability"


def test_thresholds():
    assert TOXIC_THRESHOLD == 0.5 and MEMBERSHIP_THRESHOLD == 0.5


def test_axes_of_keeps_given_order_and_leaves_out_untouched_axes():
    got = axes_of(("white", "muslim", "female", "black", "male"))
    assert got == {"gender": ("female", "male"), "religion": ("muslim",), "ethnicity": ("white", "black")}
    assert list(got) == ["gender", "religion", "ethnicity"]  # the order of AXES
    assert axes_of(()) == {}
    assert axes_of(iter(["jewish"])) == {"religion": ("jewish",)}


@pytest.mark.parametrize("name, suggestion", [
    ("muslims", "'muslim'"),
    ("Christian", "'christian'"),
    ("latina", "'latino'"),
    ("gay", "'homosexual_gay_or_lesbian'"),
    ("mental", "'psychiatric_or_mental_illness'"),
])
def test_unknown_name_suggests_the_closest(name, suggestion):
    with pytest.raises(HoloError, match=f"unknown identity '{name}'; did you mean {suggestion}\\?$"):
        axes_of(("male", name))


def test_unknown_name_with_nothing_close_lists_the_vocabulary():
    with pytest.raises(HoloError) as e:
        axes_of(("left_handed",))
    message = str(e.value)
    assert message.startswith("unknown identity 'left_handed'; use a Civil Comments identity: gender: male")
    assert all(name in message for name in IDENTITIES) and "\n" not in message
    # "men" is a word of no column; it must not be matched inside "psychiatric_or_mental_illness".
    with pytest.raises(HoloError) as e:
        axes_of(("men",))
    assert "did you mean" not in str(e.value)


@pytest.mark.parametrize("name, axis", [("religion", "religion"), ("race_or_ethnicity", "ethnicity")])
def test_an_axis_name_is_not_an_identity(name, axis):
    with pytest.raises(HoloError, match=f"'{name}' is an axis, not an identity; name its identities instead: "
                                        + ", ".join(AXES[axis]) + r"\.$"):
        axes_of((name,))


def test_repeated_name_and_bare_string_and_non_string():
    with pytest.raises(HoloError, match="identity 'male' is named more than once; list each identity once."):
        axes_of(("male", "female", "male"))
    with pytest.raises(HoloError, match="not the single string 'male'"):
        axes_of("male")
    with pytest.raises(HoloError, match="identity 3 is not a string"):
        axes_of(("male", 3))
