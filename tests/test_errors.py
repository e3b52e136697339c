"""The one-line reason put inside user-facing errors (``geoseg.errors.reason``)."""

from geoseg.errors import reason


def test_reason_is_the_first_line_cut_to_length():
    assert reason(RuntimeError("bad zip\nsecond line\nthird")) == "bad zip"
    long = reason(ValueError("x" * 500), limit=50)
    assert len(long) == 50 and long.endswith("…")


def test_reason_names_the_type_when_the_message_says_nothing():
    assert reason(KeyError("101")) == "KeyError: '101'"
    assert reason(OSError("")) == "OSError"
    assert reason(RuntimeError("  \n trailing")) == "RuntimeError"


def test_reason_gives_a_yaml_error_as_line_column_and_problem():
    import yaml

    try:
        yaml.safe_load("a: 1\n b: 2\n  - c")
    except yaml.YAMLError as exc:
        text = reason(exc)
    assert "\n" not in text and text.startswith("line ") and ", column " in text, text
