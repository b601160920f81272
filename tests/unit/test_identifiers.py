"""The identifier policy: what names may reach Feast, Parquet, ONNX and URLs, and how headers map."""

import pytest

from skiff.errors import SpecError
from skiff.identifiers import (
    MAX_LENGTH,
    check_identifier,
    check_name,
    is_identifier,
    safe_identifier,
    safe_identifiers,
)

HOSTILE = [
    'a"b', "a'b", "line\nbreak", "__import__('os').system('touch /tmp/x')", '"); import os; #',
    "prénom", "日本語", "x" * 10_000, "", "   ", "1st", "__dummy", "a.b", "a-b", "\x00", "😀", None, 42,
]


@pytest.mark.parametrize("name", ["a", "_a", "customer_id", "TotalCharges", "x1", "a" * MAX_LENGTH])
def test_valid_identifiers_pass_and_keep_their_spelling(name):
    assert check_identifier(name) == name
    assert safe_identifier(name, ()) == name


@pytest.mark.parametrize("name", HOSTILE + ["a" * (MAX_LENGTH + 1)])
def test_bad_names_are_refused_naming_the_name_and_the_rule(name):
    with pytest.raises(SpecError) as e:
        check_identifier(name, "column")
    msg = e.value.message
    assert "column name" in msg and "ASCII letters" in msg
    assert "\n" not in msg  # one line, even for a header with a newline
    assert len(msg) < 400  # a 10k-character name is shown cut
    shown = str(name)[:10]
    assert repr(shown)[1:-1][:5] in msg


@pytest.mark.parametrize("header", HOSTILE)
def test_safe_identifier_maps_anything_to_a_valid_name(header):
    out = safe_identifier(header, ())
    assert is_identifier(out), out
    assert safe_identifier(header, ()) == out  # deterministic


def test_safe_identifier_readable_mappings():
    assert safe_identifier("Total Charges ($)") == "Total_Charges"
    assert safe_identifier("prénom") == "prenom"
    assert safe_identifier("1st") == "c_1st"
    assert safe_identifier("") == "column"
    assert safe_identifier("__dummy") == "dummy"


def test_clashes_get_suffixes_ignoring_case():
    assert safe_identifier("a b", ["a_b"]) == "a_b_2"
    assert safe_identifier("A_B", ["a_b", "a_b_2"]) == "A_B_3"
    assert safe_identifiers(["a b", "a_b", "a-b", "", ""]) == ["a_b_2", "a_b", "a_b_3", "column", "column_2"]


def test_long_headers_sharing_a_prefix_stay_distinct_and_fit():
    a, b = "x" * 10_000 + "a", "x" * 10_000 + "b"
    na, nb = safe_identifiers([a, b])
    assert na != nb and len(na) <= MAX_LENGTH and len(nb) <= MAX_LENGTH
    assert safe_identifiers([a, b]) == [na, nb]
    # a suffix on a full-length name still fits
    assert len(safe_identifier(a, [na])) <= MAX_LENGTH and safe_identifier(a, [na]) != na


def test_dataset_names():
    assert check_name("churn-2024") == "churn-2024"
    for bad in ["", "-x", "a b", "a/b", "x" * 64, "é"]:
        with pytest.raises(SpecError, match="dataset name"):
            check_name(bad)
