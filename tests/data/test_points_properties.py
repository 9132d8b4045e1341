"""Property tests (hypothesis) for nanomolmo2/data/points.py: every answer the writers produce parses back to its
0-1000 coordinates, image ids, timestamps and indices; the parser never raises, returns only well-formed
points, and reads a cut-off answer as a prefix of the whole one."""

import math

from hypothesis import example, given, settings
from hypothesis import strategies as st

from nanomolmo2.data.points import (
    format_points,
    format_tracks,
    format_video_points,
    parse_count,
    parse_points,
    to_coords,
)

SETTINGS = settings(max_examples=150, deadline=None)

sizes = st.tuples(st.integers(1, 4000), st.integers(1, 4000))
labels = st.text(alphabet="abcdefghijklmnopqrstuvwxyz ", min_size=1, max_size=12)
times = st.floats(0, 600, allow_nan=False)


@st.composite
def image_points(draw, size=None, max_points=12):
    """(points, width, height): pixel points inside the image (borders included)."""
    width, height = size or draw(sizes)
    xs = st.floats(0, width, allow_nan=False)
    ys = st.floats(0, height, allow_nan=False)
    return draw(st.lists(st.tuples(xs, ys), max_size=max_points)), width, height


def expected(groups):
    """(group id, coords) per group -> the (t, index, x, y) list the parser should return."""
    out = []
    for t, coords in groups:
        out += [(float(t), len(out) + k + 1, float(x), float(y)) for k, (x, y) in enumerate(coords)]
    return out


def well_formed(point):
    t, index, x, y = point
    numbers_ok = all(isinstance(v, float) and math.isfinite(v) and v >= 0 for v in (t, x, y))
    return numbers_ok and type(index) is int and index >= 0


# -----------------------------------------------------------------------------
# coordinates


@SETTINGS
@given(image_points())
def test_to_coords_rounds_into_0_1000_and_sorts(case):
    points, width, height = case
    coords = to_coords(points, width, height)
    assert coords == sorted(coords) and len(coords) == len(points)
    assert sorted(coords) == sorted(to_coords(list(reversed(points)), width, height))  # order does not matter
    for (x, y), (cx, cy) in zip(sorted(points, key=lambda p: to_coords([p], width, height)), coords, strict=True):
        assert 0 <= cx <= 1000 and 0 <= cy <= 1000
        assert abs(cx - 1000 * x / width) <= 0.5 + 1e-9 and abs(cy - 1000 * y / height) <= 0.5 + 1e-9


# -----------------------------------------------------------------------------
# format -> parse round trips


@SETTINGS
@given(image_points(), labels, st.sampled_from(["pointing", "point_count", "count_point"]), st.integers(1, 5))
@example(([(0.0, 0.0), (1.0, 1.0)], 1, 1), "x", "pointing", 1)  # both corners of a 1x1 image
def test_single_image_round_trip(case, label, style, image_id):
    points, width, height = case
    text = format_points(points, label, width, height, style, image_id)
    assert parse_points(text) == expected([(image_id, to_coords(points, width, height))])
    assert parse_count(text) == (len(points) if style != "pointing" or not points else None)


@SETTINGS
@given(image_points(), labels)
def test_bare_count_states_the_number_and_no_points(case, label):
    points, width, height = case
    text = format_points(points, label, width, height, "count")
    assert parse_count(text) == len(points) and parse_points(text) == []


@SETTINGS
@given(sizes.flatmap(lambda s: st.tuples(st.just(s), st.lists(st.tuples(times, image_points(s, 4)), max_size=6))))
def test_video_round_trip(case):
    (width, height), frames = case
    text = format_video_points([(t, p) for t, (p, _, _) in frames], "ball", width, height)
    ordered = sorted(frames, key=lambda f: f[0])  # written in time order, each time printed with one decimal
    assert parse_points(text) == expected([(f"{t:.1f}", to_coords(p, width, height)) for t, (p, _, _) in ordered])


@SETTINGS
@given(
    sizes.flatmap(
        lambda s: st.tuples(
            st.just(s),
            st.dictionaries(
                times,
                st.dictionaries(st.integers(1, 50), st.tuples(st.floats(0, s[0]), st.floats(0, s[1])), max_size=4),
                max_size=5,
            ),
        )
    )
)
def test_tracks_round_trip(case):
    (width, height), frames = case
    text = format_tracks(list(frames.items()), "car", width, height)
    want = []
    for t in sorted(frames):
        for object_id in sorted(frames[t]):  # an object keeps its id as the index
            (x, y), *_ = to_coords([frames[t][object_id]], width, height)
            want.append((float(f"{t:.1f}"), object_id, float(x), float(y)))
    assert parse_points(text) == want


# -----------------------------------------------------------------------------
# the parser on anything

FRAGMENTS = ["<points", "<point", "<tracks", " coords=", '"', ">", "</points>", " ", ";", "1", "0.5", "900",
             "-3", "x", 'x="52.9"', 'y="4"', 'x1="1"', "\n", "<", "1e5", "."]  # fmt: skip


@SETTINGS
@given(st.one_of(st.text(max_size=200), st.lists(st.sampled_from(FRAGMENTS), max_size=40).map("".join)))
def test_parser_never_raises_and_returns_well_formed_points(text):
    points = parse_points(text)
    assert isinstance(points, list) and all(well_formed(p) for p in points)
    count = parse_count(text)
    assert count is None or (type(count) is int and count >= 0)


@SETTINGS
@given(image_points(max_points=6), st.sampled_from(["pointing", "point_count", "count_point"]), st.data())
def test_cut_off_answer_parses_to_a_prefix(case, style, data):
    """Generation stopped at max tokens: whatever is read is a prefix of the whole answer's points."""
    points, width, height = case
    text = format_points(points, "dots", width, height, style)
    full = parse_points(text)
    cut = data.draw(st.integers(0, len(text)))
    partial = parse_points(text[:cut])
    assert partial == full[: len(partial)]
