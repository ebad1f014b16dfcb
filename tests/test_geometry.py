"""data/geometry.py: the polygon geometry, against values worked out by hand (areas, perimeters, the shrink and
unclip distances of simple shapes, known corner orders, known offsets), and that it stays at the bottom of the
layer order."""
import ast
import math
import os

import cv2
import numpy as np
import pytest
import shapely
from shapely.geometry import GeometryCollection, LineString, MultiPolygon, Point, Polygon

from data import geometry
from data.geometry import (FIXED_SCALE, area_and_perimeter, drop_repeated_points, fill_fixed_point,
                           integer_unclip_distances, offset_fixed_point, order_corners, packed_points,
                           polygon_parts, repair_polygon, repeated_points, shrink_distance, signed_area,
                           split_rows, to_image_polygons, unclip_distances, unclip_paths, valid_packed, valid_rings)

# 4 x 3 rectangle, clockwise on screen (y down): right along the top, down, left along the bottom
RECT = np.array([[0, 0], [4, 0], [4, 3], [0, 3]], dtype=np.float64)
TRIANGLE = np.array([[0, 0], [3, 0], [0, 4]], dtype=np.float64)  # the 3-4-5 right triangle
SQUARE = np.array([[0, 0], [10, 0], [10, 10], [0, 10]])


def fixed_path_area(path: np.ndarray) -> float:
    return abs(signed_area(path)) / FIXED_SCALE ** 2


# ---------------------------------------------------------------------- measures
def test_signed_area_and_perimeter_of_simple_shapes():
    # rectangle: 4 * 3 = 12, perimeter 2 * (4 + 3) = 14; the sign flips with the direction
    assert area_and_perimeter(RECT) == (12.0, 14.0)
    assert area_and_perimeter(RECT[::-1]) == (-12.0, 14.0)
    assert signed_area(RECT) == 12.0
    # right triangle 3-4-5: area 3 * 4 / 2 = 6, perimeter 3 + 4 + 5 = 12 (right, then down-left: clockwise)
    assert area_and_perimeter(TRIANGLE) == (6.0, 12.0)
    # the two lobes of a bow tie cancel: 25 - 25
    assert signed_area(np.array([[0, 0], [10, 10], [10, 0], [0, 10]])) == 0.0
    # integer input, any dtype
    assert signed_area(SQUARE.astype(np.int32)) == 100.0


def test_shrink_distance_is_a_times_one_minus_r_squared_over_l():
    # D = A (1 - r^2) / L: 12 * (1 - 0.16) / 14 = 0.72; square 10: 100 * 0.84 / 40 = 2.1; triangle: 6 * 0.75 / 12
    assert shrink_distance(RECT, 0.4) == pytest.approx(0.72, rel=1e-12)
    assert shrink_distance(SQUARE, 0.4) == pytest.approx(2.1, rel=1e-12)
    assert shrink_distance(TRIANGLE, 0.5) == pytest.approx(0.375, rel=1e-12)
    assert shrink_distance(RECT[::-1], 0.4) == pytest.approx(0.72, rel=1e-12)  # orientation does not matter
    assert shrink_distance(np.array([[2.0, 3.0]] * 4), 0.4) == 0.0  # zero perimeter


def test_unclip_distances_are_a_times_r_over_l():
    # D' = A r' / L: square 10, r' = 1.5: 100 * 1.5 / 40 = 3.75; rectangle 4 x 3, r' = 2: 24 / 14
    boxes = np.stack([SQUARE, RECT]).astype(np.float32)
    assert unclip_distances(boxes[:1], 1.5).tolist() == [3.75]
    assert unclip_distances(boxes[1:], 2.0) == pytest.approx([24 / 14], rel=1e-12)
    # packed integer rings: the square and the triangle (6 * 2 / 12 = 1)
    points = np.concatenate([SQUARE, TRIANGLE]).astype(np.int32)
    assert integer_unclip_distances(points, [4, 3], 2.0).tolist() == [5.0, 1.0]
    # the NumPy version gives shapely's bits on integer boxes
    rng = np.random.default_rng(0)
    boxes = np.round(np.stack([cv2.boxPoints(((float(rng.uniform(0, 100)), float(rng.uniform(0, 100))),
                                               (float(rng.uniform(2, 50)), float(rng.uniform(2, 20))),
                                               float(rng.uniform(-90, 90)))) for _ in range(50)]))
    found = integer_unclip_distances(boxes.reshape(-1, 2).astype(np.int32), [4] * 50, 1.5)
    assert found.tolist() == unclip_distances(boxes, 1.5).tolist()


# ---------------------------------------------------------------------- offsetting
def test_offset_fixed_point_shrinks_a_square_to_the_inner_square():
    # a convex polygon shrinks with sharp corners: the square [0, 10]^2 by 2 is [2, 8]^2, in 1/16 px
    (path,) = offset_fixed_point(SQUARE, -2.0)
    assert path.dtype == np.int64
    assert sorted(map(tuple, path.tolist())) == sorted([(32, 32), (128, 32), (128, 128), (32, 128)])
    assert offset_fixed_point(np.array([[0, 0], [4, 0], [4, 4], [0, 4]]), -3.0) == []  # nothing left


def test_offset_fixed_point_dilates_with_round_corners():
    # dilating by d adds the sides times d and a disc of radius d at the corners: 100 + 40 * 2 + 4 pi;
    # the round joins are chords at most ARC_TOLERANCE (0.25 px) inside the arcs
    (path,) = offset_fixed_point(SQUARE, 2.0)
    area = fixed_path_area(path)
    assert 180.0 + 4 * math.pi - 2 * math.pi * 2 * 0.25 <= area <= 180.0 + 4 * math.pi
    assert path.min(axis=0).tolist() == [-32, -32] and path.max(axis=0).tolist() == [192, 192]


def test_offset_fixed_point_keeps_every_piece_of_a_split_shrink():
    # two 10 x 10 squares joined by a 2 px neck: shrinking by 2 leaves, apart, each inner 6 x 6 square plus a
    # bump toward the neck where the points are 2 px from both neck corners (10, 4) and (10, 6):
    # 2 * integral_0^1 (2 - sqrt(4 - t^2)) dt = 4 - sqrt(3) - 2 pi / 3 px^2; pyclipper's chords of the two
    # 30-degree arcs (length pi / 3 each) lie at most 0.25 px outside them
    dumbbell = np.array([[0, 0], [10, 0], [10, 4], [20, 4], [20, 0], [30, 0], [30, 10], [20, 10], [20, 6],
                         [10, 6], [10, 10], [0, 10]], dtype=np.float64)
    pieces = offset_fixed_point(dumbbell, -2.0)
    assert len(pieces) == 2
    assert sorted(piece[:, 0].max() / FIXED_SCALE < 15 for piece in pieces) == [False, True]
    bump = 4 - math.sqrt(3) - 2 * math.pi / 3
    for piece in pieces:
        assert 36 + bump <= fixed_path_area(piece) <= 36 + bump + 2 * 0.25 * math.pi / 3


def test_fill_fixed_point_fills_paths_and_leaves_holes():
    canvas = np.zeros((12, 12), dtype=np.float32)
    fill_fixed_point(canvas, offset_fixed_point(SQUARE, -2.0), 1.0)
    # [2, 8]^2 with integer vertices: fillPoly takes the boundary pixels, 7 x 7
    assert canvas.sum() == 49 and canvas[2:9, 2:9].all()
    ring = [SQUARE.astype(np.int64) * FIXED_SCALE, (np.array([[3, 3], [3, 7], [7, 7], [7, 3]]) * FIXED_SCALE)]
    canvas[:] = 0
    fill_fixed_point(canvas, ring, 1.0)
    assert canvas[1, 1] == 1 and canvas[5, 5] == 0 and not canvas[4:7, 4:7].any()
    fill_fixed_point(canvas, [], 1.0)  # nothing to fill


def test_unclip_paths_grows_by_the_distance():
    (paths,) = unclip_paths([SQUARE.tolist()], np.array([1.0]))
    (path,) = paths
    grown = np.array(path)
    assert grown.min(axis=0).tolist() == [-1, -1] and grown.max(axis=0).tolist() == [11, 11]
    # 100 + 40 + pi, rounded to integer vertices
    assert abs(signed_area(grown)) == pytest.approx(140 + math.pi, abs=1.5)
    assert unclip_paths([], np.zeros(0)) == []


def test_unclip_then_shrink_back_is_about_the_rectangle():
    # growing a rectangle by D' (round corners) and shrinking the result by D' gives back the rectangle
    # (the inward offset of the rounded rectangle has sharp corners again), to the rounding of the integer path
    rectangle = np.array([[10, 10], [50, 10], [50, 20], [10, 20]])
    distance = unclip_distances(rectangle[None].astype(np.float64), 1.5)
    assert distance.tolist() == [6.0]  # 400 * 1.5 / 100
    (grown,) = packed_points(unclip_paths([rectangle.tolist()], distance))
    (back,) = offset_fixed_point(grown, -6.0)
    back = back / FIXED_SCALE
    assert np.abs(back.min(axis=0) - [10, 10]).max() <= 0.5 and np.abs(back.max(axis=0) - [50, 20]).max() <= 0.5
    assert abs(signed_area(back)) == pytest.approx(400, rel=0.02)
    assert shapely.Polygon(back).symmetric_difference(shapely.Polygon(rectangle)).area < 0.02 * 400


# ---------------------------------------------------------------------- packing and corners
def test_split_rows_and_packed_points():
    rows = split_rows(np.arange(10).reshape(5, 2), [2, 3])
    assert [row.tolist() for row in rows] == [[[0, 1], [2, 3]], [[4, 5], [6, 7], [8, 9]]]
    packed = packed_points([[[[0, 0], [1, 0], [1, 1]]], [[[5, 5], [6, 5]], [[7, 7]]], []])
    assert all(points.dtype == np.int32 for points in packed)
    assert [points.tolist() for points in packed] == [[[0, 0], [1, 0], [1, 1]], [[5, 5], [6, 5], [7, 7]], []]
    assert packed_points([]) == []


def test_order_corners_of_a_rotated_rectangle():
    # a rectangle tilted by atan(1/2): A = (10, 0), B = (30, 10), C = (25, 20), D = (5, 10)
    # (AB = (20, 10) and BC = (-5, 10) are perpendicular); on screen A is top-left, B top-right,
    # C bottom-right, D bottom-left, whatever order the corners come in
    a, b, c, d = [10, 0], [30, 10], [25, 20], [5, 10]
    shuffled = np.array([[c, a, d, b], [b, c, d, a]], dtype=np.float32)
    ordered = order_corners(shuffled)
    assert ordered.dtype == np.float32
    assert ordered.tolist() == [[a, b, c, d]] * 2
    assert signed_area(ordered[0]) > 0  # clockwise on screen
    # axis-aligned: the left and right pairs share x; stable sort, the smaller y on top
    square = np.array([[[10, 10], [0, 0], [0, 10], [10, 0]]])
    assert order_corners(square).tolist() == [[[0, 0], [10, 0], [10, 10], [0, 10]]]


# ---------------------------------------------------------------------- validity and repair
def test_polygon_parts_keeps_the_areal_parts_in_order():
    collection = GeometryCollection([Polygon([(0, 0), (2, 0), (2, 2)]), LineString([(0, 0), (5, 5)]), Point(1, 1),
                                     MultiPolygon([Polygon([(0, 0), (3, 0), (3, 3), (0, 3)]),
                                                   Polygon([(10, 10), (11, 10), (11, 11), (10, 11)])]),
                                     Polygon([(0, 0), (1, 1), (2, 2)])])
    assert [part.area for part in polygon_parts(collection)] == [2.0, 9.0, 1.0]
    # a bow tie's valid form: the two triangles of 25 each around the crossing at (5, 5)
    bowtie = shapely.make_valid(Polygon([(0, 0), (10, 10), (10, 0), (0, 10)]))
    assert sorted(part.area for part in polygon_parts(bowtie)) == [25.0, 25.0]
    assert polygon_parts(Polygon()) == [] and polygon_parts(LineString([(0, 0), (1, 1)])) == []


def test_drop_and_find_repeated_points():
    ring = np.array([[0, 0], [0, 0], [1, 0], [1, 1], [0, 0]])
    assert drop_repeated_points(ring).tolist() == [[0, 0], [1, 0], [1, 1]]  # cyclic: the last equals the first
    assert drop_repeated_points(np.array([[3, 3]] * 4)).tolist() == [[3, 3]]
    assert len(drop_repeated_points(np.zeros((0, 2)))) == 0
    points = np.array([[0, 0], [0, 0], [1, 0], [1, 1], [2, 2], [3, 3], [2, 2]], dtype=np.int32)
    assert repeated_points(points, np.array([4, 3])).tolist() == [True, False, False, False, False, False, True]


def test_valid_rings_and_valid_packed():
    rings = [([[0, 0], [10, 0], [10, 10], [0, 10]], True),  # clockwise on screen
             ([[0, 0], [0, 10], [10, 10], [10, 0]], True),  # counterclockwise
             ([[0, 0], [10, 0], [10, 5], [5, 5], [5, 10], [0, 10]], True),  # concave L
             ([[0, 0], [10, 10], [10, 0], [0, 10]], False),  # bow tie
             ([[0, 0], [10, 0], [10, 0], [0, 10]], False),  # repeated point
             ([[0, 0], [5, 5], [10, 10]], False),  # zero area
             ([[0, 0], [5, 5]], False),  # too few points
             ([[0, 0], [4, 0], [4, 4], [2, 0], [0, 4]], False)]  # touches itself
    arrays = [np.array(ring, dtype=np.int32) for ring, _ in rings]
    expected = [ok for _, ok in rings]
    assert valid_rings(arrays).tolist() == expected
    assert valid_packed(np.concatenate(arrays), np.array([len(ring) for ring in arrays])).tolist() == expected
    assert valid_rings([]).tolist() == [] and valid_packed(np.zeros((0, 2)), np.zeros(0)).tolist() == []


def test_to_image_polygons_scales_rounds_and_clips():
    # map 10 x 10 -> image H 20, W 40: x * 4, y * 2, rounded half to even, clipped to [0, W] x [0, H]
    boxes = np.array([[[1, 1], [3, 1], [3, 2], [1, 2]], [[8.2, 8], [11, 8], [11, 12], [8.2, 12]]], dtype=np.float32)
    outputs, kept = to_image_polygons(boxes, (10, 10), (20, 40), quadrilaterals=True)
    assert kept == [0, 1] and all(output.dtype == np.int32 for output in outputs)
    assert outputs[0].tolist() == [[4, 2], [12, 2], [12, 4], [4, 4]]
    assert outputs[1].tolist() == [[33, 16], [40, 16], [40, 20], [33, 20]]  # 32.8 -> 33, 44 -> 40, 24 -> 20


def test_repair_polygon_of_a_collapsed_box():
    # a 4 x 0.2 px box rounds to a line; the only strictly convex integer box around it (and its bounding box)
    # is [0, 4] x [0, 1], clockwise from the top-left
    scaled = np.array([[0, 0.2], [4, 0.2], [4, 0.4], [0, 0.4]])
    rounded = np.array([[0, 0], [4, 0], [4, 0], [0, 0]], dtype=np.int32)
    repaired = repair_polygon(rounded, scaled, 10, 10, quadrilateral=True)
    assert repaired.tolist() == [[0, 0], [4, 0], [4, 1], [0, 1]]
    # polygon mode: a bow tie is replaced by a valid clockwise ring inside the image
    bowtie = np.array([[0, 0], [4, 4], [4, 0], [0, 4]], dtype=np.int32)
    repaired = repair_polygon(bowtie, bowtie.astype(np.float64), 10, 10)
    assert valid_rings([repaired]).tolist() == [True] and signed_area(repaired) > 0
    assert repaired.min() >= 0 and repaired.max() <= 10
    # nothing of the detection inside the image: no polygon
    assert repair_polygon(rounded, scaled + 20, 10, 10, quadrilateral=True) is None


def test_imports_nothing_from_the_project():
    # data/geometry.py sits below data.processes and structure: only third-party modules (and concern/)
    tree = ast.parse(open(geometry.__file__).read())
    project = {name for name in os.listdir(os.path.dirname(os.path.dirname(geometry.__file__)))
               if not name.startswith('.')}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, f'relative import from {node.module!r}'
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            top = name.split('.')[0]
            assert top == 'concern' or (top not in project and f'{top}.py' not in project), name
