"""Tests for nanomolmo2/data/points.py: the exact Molmo2 point strings, rounding, round trips, forgiving parsing."""

import pytest

from nanomolmo2.data.points import (
    COUNT_PROMPT,
    NO_MATCH,
    POINT_PROMPT,
    VIDEO_POINT_PROMPT,
    format_points,
    format_tracks,
    format_video_points,
    parse_count,
    parse_points,
    to_coords,
)

CATS = [(911, 800), (900, 400)]  # pixels == coords on a 1000x1000 image; written in the wrong order on purpose
CATS_TAG = '<points coords="1 1 900 400 2 911 800">cats</points>'


# -----------------------------------------------------------------------------
# exact reference strings


def test_single_image_reference_strings():
    assert format_points([(990, 800)], "label", 1000, 1000) == '<points coords="1 1 990 800">label</points>'
    assert format_points(CATS, "cats", 1000, 1000) == CATS_TAG
    assert format_points(CATS, "cats", 1000, 1000, "point_count") == f"Counting the {CATS_TAG} shows a total of 2."
    assert format_points(CATS, "cats", 1000, 1000, "count_point") == f"There are 2 {CATS_TAG}."
    assert format_points(CATS, "cats", 1000, 1000, "count") == "2"


@pytest.mark.parametrize("style", ["pointing", "point_count", "count_point"])
def test_no_match_says_there_are_none(style):
    assert format_points([], "cats", 640, 480, style) == "There are none."
    assert format_video_points([(0.5, [])], "cats", 640, 480, style) == "There are none."


def test_zero_bare_count_is_0():
    assert format_points([], "cats", 640, 480, "count") == "0"
    assert format_video_points([], "cats", 640, 480, "count") == "0"


def test_unknown_style_raises():
    with pytest.raises(ValueError, match="unknown style 'pointy', expected one of"):
        format_points(CATS, "cats", 1000, 1000, "pointy")


def test_video_reference_string():
    frames = [(1.0, [(900, 400)]), (0.5, [(911, 800)]), (0.7, [])]  # out of order, one empty frame
    assert format_video_points(frames, "dog", 1000, 1000) == '<points coords="0.5 1 911 800;1.0 2 900 400">dog</points>'
    assert format_video_points(frames, "dog", 1000, 1000, "count") == "2"
    assert format_video_points(frames, "dog", 1000, 1000, "count_point").startswith('There are 2 <points coords="0.5')


def test_tracks_reference_string():
    frames = [(1.0, {1: (138, 427)}), (0.0, {1: (259, 340)})]
    assert format_tracks(frames, "car", 1000, 1000) == '<tracks coords="0.0 1 259 340;1.0 1 138 427">car</tracks>'


def test_tracks_without_objects_and_a_stated_video_count():
    assert format_tracks([(0.0, {}), (0.5, {})], "car", 10, 10) == NO_MATCH
    assert format_tracks([], "car", 10, 10) == NO_MATCH
    frames = [(0.0, [(5, 5)]), (0.5, [(6, 5)])]  # one ball seen in two frames: two points, one ball
    assert format_video_points(frames, "ball", 10, 10, style="count", count=1) == "1"
    assert format_video_points(frames, "ball", 10, 10, style="count_point", count=1).startswith("There are 1 ")


def test_tracks_sorted_by_object_id_not_position():
    frames = [(2.0, {7: (100, 100), 3: (900, 900)}), (2.5, {})]
    assert format_tracks(frames, "car", 1000, 1000) == '<tracks coords="2.0 3 900 900 7 100 100">car</tracks>'


def test_image_id_argument():
    assert format_points([(5, 5)], "x", 10, 10, image_id=2) == '<points coords="2 1 500 500">x</points>'


def test_prompts():
    assert POINT_PROMPT.format(label="cats") == "Point to cats\nPlease say 'There are none.' if it is not in the image."
    assert VIDEO_POINT_PROMPT.format(label="dogs") == (
        "Point to dogs\nPlease say 'There are none.' if it is not in the video."
    )
    assert COUNT_PROMPT.format(label="cats") == "How many cats are there?"


# -----------------------------------------------------------------------------
# rounding, clipping, padding, sorting


def test_rounding_and_clipping():
    assert to_coords([(640, 480)], 640, 480) == [(1000, 1000)]
    assert to_coords([(-5, 700)], 640, 480) == [(0, 1000)]  # clipped on both sides
    assert to_coords([(0.4999, 0.5001)], 1000, 1000) == [(0, 1)]
    assert to_coords([(320, 120)], 640, 480) == [(500, 250)]


def test_zero_padding():
    assert format_points([(5, 50)], "x", 1000, 1000) == '<points coords="1 1 005 050">x</points>'
    assert format_points([(0, 1000)], "x", 1000, 1000) == '<points coords="1 1 000 1000">x</points>'


def test_sorting_happens_after_rounding():
    # before rounding (10.2, 60) < (10.4, 40); after rounding both have x = 10 and y decides
    assert to_coords([(10.2, 60), (10.4, 40)], 1000, 1000) == [(10, 40), (10, 60)]
    assert (
        format_points([(10.2, 60), (10.4, 40)], "x", 1000, 1000) == '<points coords="1 1 010 040 2 010 060">x</points>'
    )


def test_bad_size_raises():
    for width, height in ((0, 100), (100, 0), (-1, 100)):
        with pytest.raises(ValueError, match=f"image size must be positive, got {width}x{height}"):
            to_coords([(1, 1)], width, height)


# -----------------------------------------------------------------------------
# round trips


@pytest.mark.parametrize("style", ["pointing", "point_count", "count_point"])
def test_round_trip_single_image(style):
    text = format_points([(320, 120), (10, 470), (639, 0)], "cats", 640, 480, style)
    assert parse_points(text) == [(1.0, 1, 16.0, 979.0), (1.0, 2, 500.0, 250.0), (1.0, 3, 998.0, 0.0)]
    assert parse_count(text) == (None if style == "pointing" else 3)  # bare pointing states no count


def test_round_trip_multi_image():
    text = '<points coords="1 1 100 200;2 2 050 060 3 300 400">dogs</points>'  # Molmo2's multi-image layout
    assert parse_points(text) == [(1.0, 1, 100.0, 200.0), (2.0, 2, 50.0, 60.0), (2.0, 3, 300.0, 400.0)]


def test_round_trip_video():
    frames = [(2.25, [(64, 48)]), (0.0, [(320, 240), (0, 0)]), (1.5, [])]
    text = format_video_points(frames, "balls", 640, 480, "count_point")
    assert parse_points(text) == [(0.0, 1, 0.0, 0.0), (0.0, 2, 500.0, 500.0), (2.2, 3, 100.0, 100.0)]
    assert parse_count(text) == 3


def test_round_trip_tracks():
    frames = [(0.0, {1: (259, 340), 2: (10, 10)}), (1.0, {2: (20, 30)})]
    assert parse_points(format_tracks(frames, "car", 1000, 1000)) == [
        (0.0, 1, 259.0, 340.0),
        (0.0, 2, 10.0, 10.0),
        (1.0, 2, 20.0, 30.0),
    ]


@pytest.mark.parametrize(
    "text, count",
    [
        ("2", 2),
        (" 17.\n", 17),
        (f"Counting the {CATS_TAG} shows a total of 2.", 2),
        (f"There are 2 {CATS_TAG}.", 2),
        ("There are none.", 0),
        ("0", 0),
        (CATS_TAG, None),  # pointing alone states no count
        ("I am not sure", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_count(text, count):
    assert parse_count(text) == count


@pytest.mark.parametrize("style", ["pointing", "point_count", "count_point", "count"])
def test_parse_count_of_formatted_zero(style):
    assert parse_count(format_points([], "cats", 10, 10, style)) == 0


# -----------------------------------------------------------------------------
# Molmo v1 tags


def test_molmo_v1_tags():
    text = (
        'A <point x="52.9" y="43.9" alt="cat">cat</point> and '
        '<points x1="10.0" y1="20.0" x2="30.5" y2="40.0" alt="cats">cats</points>'
    )
    assert parse_points(text) == [(1.0, 1, 529.0, 439.0), (1.0, 2, 100.0, 200.0), (1.0, 3, 305.0, 400.0)]


def test_v1_and_v2_in_text_order():
    text = f'{CATS_TAG} then <point x="1" y="2">a</point>'
    assert parse_points(text) == [(1.0, 1, 900.0, 400.0), (1.0, 2, 911.0, 800.0), (1.0, 1, 10.0, 20.0)]


# -----------------------------------------------------------------------------
# malformed input: never raises, keeps what is well formed

GOOD = (1.0, 1, 900.0, 400.0)
MALFORMED = [
    ("", []),
    ("<points", []),
    ('<points coords="1 1 900 400 2 91', [GOOD]),  # cut off: "91" may be incomplete, and "2 91" is no triple
    ('<points coords="1 1 900 400 2 911 8', [GOOD]),  # cut off mid-number: the last "8" is not trusted
    ('<points coords="1 1 900 400 2 911 800>cats</points>', [GOOD, (1.0, 2, 911.0, 800.0)]),  # closing quote lost
    ("<points coords=1 1 900 400>cats</points>", [GOOD]),  # no quotes at all
    ('<points coords="1 1 9a0 400 2 911 800">cats</points>', []),  # letters: rest of the group is unreadable
    ('<points coords="1 1 900 400 2 x 800;3 1 5 6">cats</points>', [GOOD, (3.0, 1, 5.0, 6.0)]),
    ('<points coords="1 1 900;2 2 100 200">cats</points>', [(2.0, 2, 100.0, 200.0)]),  # group with 2 numbers
    ('<points coords="1 1">cats</points>', []),
    ('<points coords="t 1 900 400">cats</points>', []),  # bad image id
    ('<points coords="1 1.5 900 400">cats</points>', []),  # index must be an integer
    ('<points coords="1 1 -900 400">cats</points>', []),  # coordinates are never negative
    ('<points coords="1 1 900 400"><points coords="2 1 5 6">in</points></points>', [GOOD, (2.0, 1, 5.0, 6.0)]),
    ('<points coords="1 1 99999999999999999999 400">x</points>', [(1.0, 1, 1e20, 400.0)]),  # kept as written
    ('<points coords="1 1 ' + "9" * 400 + ' 400">x</points>', []),  # overflows to inf
    ('<points coords=";;; ;">x</points>', []),
    ('<point x="52.9 y="43.9">cat</point>', []),  # v1 with a lost quote
    ('<point x="52.9">cat</point>', []),  # v1 without y
    ('<points x1="1" y1="2" x2="3">cats</points>', [(1.0, 1, 10.0, 20.0)]),  # v1 missing its last y
    ('<tracks coords="0.0 1 5 6 2 7">car</tracks>', [(0.0, 1, 5.0, 6.0)]),
    ("</points></point><<<>>>", []),
    ("There are none.", []),
    ('<pointsy coords="1 1 2 3">', []),  # a different tag name
    ('<points coords="t 1 900 400;2 1 5 6">x</points>', [(2.0, 1, 5.0, 6.0)]),  # a bad id skips its group only
    ("<points coords=1 1 900 400>", [GOOD]),  # unquoted, the text ends after ">": the tag is closed
    ('<points x1="1" y1="2">a</points>', [(1.0, 1, 10.0, 20.0)]),  # v1, one numbered point, no other attribute
]


@pytest.mark.parametrize("text, expected", MALFORMED)
def test_malformed_never_raises(text, expected):
    assert parse_points(text) == expected


@pytest.mark.parametrize("junk", [None, 3, b'<points coords="1 1 2 3">'])
def test_non_strings(junk):
    assert parse_points(junk) == []
    assert parse_count(junk) is None
