"""The options model: one validation, clear messages, null means the default, stored form."""

from __future__ import annotations

from typing import Any

import pytest

from core.imaging.errors import ImagingError
from core.imaging.options import DEFAULT_TOLERANCE
from core.services.errors import InvalidRequest
from core.services.options import (
    OPTION_KEYS,
    ComparisonOptions,
    engine_options,
    parse_options,
    validate_options,
)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"colour": "red"},
            "unknown option(s) 'colour'; accepted: antialiasing, fail_under, ignore, mode, "
            "tolerance",
        ),
        ({"mode": "fuzzy"}, "mode: Input should be 'auto', 'pixel' or 'align', not 'fuzzy'"),
        ({"tolerance": 1.0}, "tolerance: Input should be less than 1, not 1.0"),
        ({"tolerance": "0.1"}, "tolerance: Input should be a valid number, not '0.1'"),
        ({"antialiasing": 0}, "antialiasing: Input should be a valid boolean, not 0"),
        ({"ignore": [[0, 0, 0, 5]]}, "ignore[0][2]: Input should be greater than or equal to 1"),
        ({"ignore": [[0, 0, 1]]}, "ignore[0]: a rectangle is four integers [x, y, width, height]"),
        ({"ignore": "0,0,1,1"}, "ignore: a list of [x, y, width, height] rectangles is expected"),
        ([], "options must be a JSON object"),
    ],
)
def test_a_bad_option_is_named_in_one_clear_sentence(options: Any, message: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_options(options)
    assert caught.value.message.startswith(message)
    assert caught.value.code == "invalid_request"


def test_null_means_the_default_and_the_stored_form_has_every_key() -> None:
    nulls = {"mode": None, "ignore": None, "tolerance": None, "antialiasing": None}
    assert parse_options(nulls) == ComparisonOptions() == parse_options(None)
    stored = validate_options({"ignore": [(1, 2, 3, 4)], "fail_under": 0.5})
    assert set(stored) == OPTION_KEYS
    assert stored["ignore"] == [[1, 2, 3, 4]] and stored["tolerance"] == DEFAULT_TOLERANCE
    assert ComparisonOptions.from_stored(stored).to_stored() == stored
    # Options stored before an option existed read back with its default.
    assert ComparisonOptions.from_stored({"mode": "pixel"}).antialiasing is True


def test_the_engine_mapping_takes_the_model_or_its_stored_form() -> None:
    model = parse_options({"mode": "pixel", "ignore": [[0, 0, 2, 2]], "tolerance": 0.25})
    assert engine_options(model) == engine_options(model.to_stored())
    assert engine_options(model).ignore == ((0, 0, 2, 2),)
    # A stored object that is not valid options fails the job with the engine's code.
    with pytest.raises(ImagingError) as caught:
        engine_options({"tolerance": 2})
    assert caught.value.code == "invalid_options"
