"""Polygon geometry: the one module for the label makers, the ground-truth sanitizers and the post-processing.

Pure functions of point arrays (x then y, in pixels; image coordinates, y pointing down) and shapely
geometries, used by `data.processes` (MakeSegDetectionData, MakeBorderMap: shrunk and dilated text regions),
`data.ground_truth` (degenerate ground-truth polygons) and `structure.representers` (unclip, validity check
and repair of the detections). Nothing here reads a probability map or a data sample.

Conventions:
- A ring is an (N, 2) array of vertices, closed implicitly (the last point joins the first). Its signed area
  is positive when it runs clockwise on screen, like pyclipper's outer rings and `order_corners`' boxes.
- Packed rings: N rings stored one after the other in one (M, 2) array ``points``, with their sizes in
  ``counts`` (N,), sum(counts) = M (`split_rows` gives them back as views).
- The two offsets of DBNet (paper: Liao et al., "Real-time Scene Text Detection with Differentiable
  Binarization", AAAI 2020, section "Label generation" and "Inference") have distinct names: the label
  makers shrink and dilate a ground-truth polygon by D = A (1 - r^2) / L, r the shrink ratio
  (`shrink_distance`, `offset_fixed_point`, `fill_fixed_point`); the post-processing grows a detection back
  by D' = A' r' / L', r' the unclip ratio (`unclip_distances`, `integer_unclip_distances`, `unclip_paths`).
  Both use pyclipper's round joins, as the original code base (MhLiao/DB) did.

This module imports nothing from the project: it sits below `data.processes` and `structure`.
"""
from __future__ import annotations

from itertools import accumulate, chain
from typing import Any, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import pyclipper
import shapely

# Fixed-point scale of the label makers for pyclipper (integer coordinates) and cv2.fillPoly (shift bits): 1/16 px.
SHIFT_BITS = 4
FIXED_SCALE = 1 << SHIFT_BITS
# Largest gap (px) between a round join and its polygonal approximation: the Clipper default at 1 px units.
ARC_TOLERANCE = 0.25
# Pixels the exact region grows by before snapping to the grid (`repair_polygon`, polygon mode).
SNAP_GROWTHS = (0.0, 0.25, 0.5)


# ---------------------------------------------------------------------- measures
def signed_area(polygon: np.ndarray) -> float:
    """Signed area (px^2) of a ring (N, 2) by the shoelace formula, 0.5 (sum x_i y_(i+1) - sum x_(i+1) y_i)
    in float64; positive when the ring runs clockwise on screen (y pointing down). Exact for integer
    vertices whose products and sums stay below 2**53."""
    return _shoelace_area(*_with_following(polygon))


def area_and_perimeter(polygon: np.ndarray) -> Tuple[float, float]:
    """`signed_area` (px^2) and the perimeter (px: the sum of the edge lengths, closing edge included) of a
    ring (N, 2), in float64."""
    points, following = _with_following(polygon)
    steps = following - points
    perimeter = float(np.sqrt(np.einsum('ij,ij->i', steps, steps)).sum())
    return _shoelace_area(points, following), perimeter


def _with_following(polygon: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    points = np.asarray(polygon, dtype=np.float64)
    return points, np.concatenate((points[1:], points[:1]))


def _shoelace_area(points: np.ndarray, following: np.ndarray) -> float:
    return 0.5 * float(np.dot(points[:, 0], following[:, 1]) - np.dot(following[:, 0], points[:, 1]))


def shrink_distance(polygon: np.ndarray, shrink_ratio: float) -> float:
    """D = A (1 - r^2) / L (px): the offset of DBNet's shrunk / dilated text regions (paper, "Label
    generation"), with A the ring's (N, 2) |area|, L its perimeter (`area_and_perimeter`) and r the shrink
    ratio; 0 for a zero perimeter."""
    area, perimeter = area_and_perimeter(polygon)
    if perimeter <= 0:
        return 0.0
    return abs(area) * (1.0 - shrink_ratio ** 2) / perimeter


def unclip_distances(polygons: np.ndarray, unclip_ratio: float) -> np.ndarray:
    """D' = A' r' / L' (px) of each of N rings of K points, (N, K, 2) -> (N,) float64: how far a detection
    grows back (paper, "Inference"; r' the unclip ratio), area and perimeter by shapely (GEOS) as the
    original's unclip computed them one polygon at a time; here in one vectorised call each."""
    shapes = shapely.polygons(polygons.astype(np.float64))
    return shapely.area(shapes) * unclip_ratio / shapely.length(shapes)


def integer_unclip_distances(points: np.ndarray, counts: Sequence[int], unclip_ratio: float) -> np.ndarray:
    """`unclip_distances` of packed rings with integer vertices (``points`` (M, 2), sizes ``counts`` (N,)),
    (N,) float64, in NumPy and bit for bit what GEOS gives. The area is exact both ways: GEOS sums
    (x_i - x_0) * (y_(i-1) - y_(i+1)) in doubles, all integers below 2**53 here, as the int64 shoelace sum
    is. The perimeter is GEOS's sum, in ring order starting from 0.0, of sqrt(dx * dx + dy * dy) per edge (the
    closing one last): the same correctly rounded square roots of exact integers, added in the same order
    (np.bincount adds each ring's weights one after the other)."""
    points = points.astype(np.int64)
    sizes = np.asarray(counts)
    ring = np.repeat(np.arange(len(sizes)), sizes)
    ends = np.cumsum(sizes)
    following = np.arange(1, len(points) + 1)
    following[ends - 1] = ends - sizes
    x, y = points[:, 0], points[:, 1]
    cross = x * y[following] - x[following] * y
    twice_area = np.add.reduceat(cross, ends - sizes)
    dx, dy = (x[following] - x).astype(np.float64), (y[following] - y).astype(np.float64)
    perimeter = np.bincount(ring, weights=np.sqrt(dx * dx + dy * dy), minlength=len(sizes))
    return np.abs(twice_area) / 2.0 * unclip_ratio / perimeter


# ---------------------------------------------------------------------- offsetting (pyclipper)
def offset_fixed_point(polygon: np.ndarray, distance: float) -> List[np.ndarray]:
    """A ring (N, 2), px, offset by ``distance`` px with round joins (negative = shrink, positive = dilate),
    computed in fixed point at 1/FIXED_SCALE px (arc tolerance ARC_TOLERANCE px): the label makers' shrink
    and dilation by `shrink_distance`.

    Returns every path pyclipper gives, each int64 (M, 2) in fixed point at FIXED_SCALE (draw with
    `fill_fixed_point`, i.e. ``cv2.fillPoly(..., shift=SHIFT_BITS)``); an empty list when nothing is left.
    A shrink can split a polygon into several pieces (letters joined by necks thinner than 2 |distance|);
    a dilation of a polygon is one piece but can enclose holes (paths of opposite orientation). Fill all
    the paths in one call so that holes stay empty. The original (MhLiao/DB) kept only the first path.
    """
    fixed = np.round(np.asarray(polygon, dtype=np.float64) * FIXED_SCALE).astype(np.int64)
    offset = pyclipper.PyclipperOffset()
    offset.ArcTolerance = ARC_TOLERANCE * FIXED_SCALE
    offset.AddPath(fixed.tolist(), pyclipper.JT_ROUND, pyclipper.ET_CLOSEDPOLYGON)
    return [np.asarray(path, dtype=np.int64).reshape(-1, 2) for path in offset.Execute(distance * FIXED_SCALE)]


def fill_fixed_point(canvas: np.ndarray, paths: List[np.ndarray], value: float) -> None:
    """Fill the fixed-point paths of `offset_fixed_point` into ``canvas`` (H, W) with ``value``, in one
    cv2.fillPoly call: holes (paths inside another) stay unfilled."""
    if paths:
        cv2.fillPoly(canvas, [path.astype(np.int32).reshape(-1, 1, 2) for path in paths], value, shift=SHIFT_BITS)


def unclip_paths(polygons: Sequence[list], distances: np.ndarray) -> List[list]:
    """Each polygon (a list of [x, y] pairs, map pixels: pyclipper reads lists ten times faster than array
    rows) grown by its distance (`unclip_distances`, ``distances`` (N,)) with pyclipper's round joins and
    default arc tolerance, as the original's unclip did: a list of paths (lists of [x, y] ints) per polygon.
    One offset object, cleared between polygons."""
    offset = pyclipper.PyclipperOffset()
    clear, add_path, execute = offset.Clear, offset.AddPath, offset.Execute
    results = []
    for polygon, distance in zip(polygons, distances.tolist()):
        clear()
        add_path(polygon, pyclipper.JT_ROUND, pyclipper.ET_CLOSEDPOLYGON)
        results.append(execute(distance))
    return results


# ---------------------------------------------------------------------- packing and corners
def split_rows(array: np.ndarray, counts: Sequence[int]) -> List[np.ndarray]:
    """Consecutive row blocks of ``array`` with the given sizes, as views (np.split does the same at a
    tenth of the speed for many small pieces): packed rings -> a list of (Ni, 2) rings."""
    ends = list(accumulate(counts))
    return [array[end - count:end] for count, end in zip(counts, ends)]


def packed_points(paths_per_polygon: Sequence[list]) -> List[np.ndarray]:
    """pyclipper's output (per polygon, a list of paths of [x, y] ints, as `unclip_paths` returns it) as one
    (Ni, 2) int32 array per polygon holding all its paths' vertices in order (views of one array). One
    np.fromiter over the flattened numbers costs about half of converting each nested list with np.array."""
    counts = [sum(map(len, paths)) for paths in paths_per_polygon]
    if not counts:
        return []
    numbers = chain.from_iterable(chain.from_iterable(chain.from_iterable(paths_per_polygon)))
    flat = np.fromiter(numbers, dtype=np.int32, count=2 * sum(counts)).reshape(-1, 2)
    return split_rows(flat, counts)


def order_corners(corners: np.ndarray) -> np.ndarray:
    """(N, 4, 2) rectangle corners -> top-left, top-right, bottom-right, bottom-left, same dtype.

    The rule of the original code (MhLiao/DB get_mini_boxes): sort the corners by x (stable), the left pair
    ordered by y gives top-left and bottom-left (ties: the later one is top-left), the right pair likewise.
    """
    order = np.argsort(corners[:, :, 0], axis=1, kind='stable')
    by_x = np.take_along_axis(corners, order[:, :, None], axis=1)
    left_swap = ~(by_x[:, 1, 1] > by_x[:, 0, 1])
    right_swap = ~(by_x[:, 3, 1] > by_x[:, 2, 1])
    rows = np.arange(len(corners))
    top_left = np.where(left_swap, 1, 0)
    top_right = np.where(right_swap, 3, 2)
    pick = np.stack([top_left, top_right, 5 - top_right, 1 - top_left], axis=1)
    return by_x[rows[:, None], pick]


# ---------------------------------------------------------------------- validity
def polygon_parts(geometry: Any) -> List[Any]:
    """The polygons with positive area in a shapely geometry (collections and multi-parts flattened, in
    order; points and lines, which have no area, dropped), e.g. the parts of a make_valid result."""
    parts = []
    for part in shapely.get_parts(geometry):
        if part.geom_type in ('MultiPolygon', 'GeometryCollection'):
            parts.extend(polygon_parts(part))
        elif part.geom_type == 'Polygon' and part.area > 0:
            parts.append(part)
    return parts


def drop_repeated_points(points: np.ndarray) -> np.ndarray:
    """The ring (N, 2) without the points equal to the next one (cyclically; one stays if all are equal)."""
    if len(points) == 0:
        return points
    keep = np.any(points != np.roll(points, -1, axis=0), axis=1)
    if not keep.any():
        return points[:1]
    return points[keep]


def repeated_points(points: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(M,) bool: whether each point of the packed integer rings ``points`` (M, 2), sizes ``counts`` (N,),
    equals the next point of its ring (the last one: the first)."""
    points = np.ascontiguousarray(points, dtype=np.int32)
    counts = np.asarray(counts, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    following = np.arange(1, len(points) + 1)
    following[starts + counts - 1] = starts
    as_one_number = points.view(np.int64).ravel()  # x and y together: one comparison per point
    return as_one_number == as_one_number[following]


def valid_rings(rings: Sequence[np.ndarray]) -> np.ndarray:
    """Whether each integer (Ni, 2) ring is a valid polygon by shapely's (GEOS, OGC) rules with a positive
    area and no point equal to the next one (cyclically); fewer than 3 points is not. (N,) bool. See
    `valid_packed`."""
    if not len(rings):
        return np.zeros(0, dtype=bool)
    return valid_packed(np.concatenate(rings), np.array([len(ring) for ring in rings]))


def valid_packed(points: np.ndarray, counts: np.ndarray, repeated: Optional[np.ndarray] = None) -> np.ndarray:
    """`valid_rings` for packed integer rings ``points`` (M, 2) with sizes ``counts`` (N,); ``repeated``:
    their `repeated_points`, when already known. (N,) bool.

    NumPy first, on all rings at once: a ring with a point equal to the next one fails; a quadrilateral
    that turns the same way at all 4 corners (cross products of consecutive edges all > 0 or all < 0) is
    convex, hence valid with positive area (4 such turns can only add up to one full turn). One
    vectorised shapely call (is_valid, area > 0) decides the other rings.
    """
    points = np.ascontiguousarray(points, dtype=np.int32)
    counts = np.asarray(counts, dtype=np.int64)
    if len(counts) == 0:
        return np.zeros(0, dtype=bool)
    if repeated is None:
        repeated = repeated_points(points, counts)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    good = (counts >= 3) & ~np.logical_or.reduceat(repeated, starts)
    undecided = good.copy()
    quads = counts == 4
    if quads.any():
        following = np.arange(1, len(points) + 1)
        following[starts + counts - 1] = starts
        edges = (points[following] - points).astype(np.float64)
        next_edges = edges[following]
        cross = edges[:, 0] * next_edges[:, 1] - edges[:, 1] * next_edges[:, 0]
        convex = np.logical_and.reduceat(cross > 0, starts) | np.logical_and.reduceat(cross < 0, starts)
        undecided &= ~(quads & convex)
    check = np.flatnonzero(undecided)
    if len(check):
        selected = points if len(check) == len(counts) else points[np.repeat(undecided, counts)]
        shapes = shapely.polygons(shapely.linearrings(selected.astype(np.float64),
                                                      indices=np.repeat(np.arange(len(check)), counts[check])))
        good[check] = shapely.is_valid(shapes) & (shapely.area(shapes) > 0)
    return good


# ---------------------------------------------------------------------- map -> image, repair
def to_image_polygons(polygons: Union[np.ndarray, Sequence[np.ndarray]], map_size: Tuple[int, int],
                      dest_size: Tuple[int, int], quadrilaterals: bool = False) -> Tuple[List[np.ndarray], List[int]]:
    """Detections in map coordinates -> valid int32 polygons in the original image, and which inputs they are.

    polygons: a sequence of (Ni, 2) arrays, or an (N, 4, 2) array of boxes, x then y in map pixels (float32
    boxes are scaled in float32, as the original code did; anything else in float64). map_size = (h, w) of
    the probability map, dest_size = (H, W) of the original image. Returns a list of int32 polygons (each
    (4, 2) with ``quadrilaterals``) and, for each, the index of its input. This is the last step of both
    `structure.representers.SegDetectorRepresenter` and the reference version
    (`structure.representers.reference`), so that both repair alike.

    Each point is scaled per axis (x * W / w, y * H / h), rounded, and clipped to [0, W] x [0, H], as in the
    original code (MhLiao/DB). That rounding and clipping can collapse a thin or heavily scaled-down
    detection to repeated points, zero area or a ring that crosses or touches itself, and a polygon crossing
    the border can fold back on itself along it (pyclipper's ring can also touch itself before any
    rounding); the official ICDAR 2015 script counts such outputs, shapely-based evaluators drop them. So
    every output is checked at once (`valid_packed`: no point equal to the next, shapely `is_valid`, area
    > 0); outputs that pass are exactly the original code's. In polygon mode a
    failing output first loses its repeated consecutive points (the region is unchanged), and is kept
    if that makes it valid; what still fails (and every failing box) is replaced by `repair_polygon`. An
    input is left out (its score too, in the callers) only when no valid polygon with positive area can
    be made of it, which does not happen for the representer's detections: their region in the image
    always has a positive area. Raises ValueError for points that are not (x, y) pairs.
    """
    if isinstance(polygons, np.ndarray):
        if polygons.ndim != 3 or polygons.shape[2] != 2:
            raise ValueError(f'polygons: expected an (N, K, 2) array of boxes, got shape {polygons.shape}')
        counts = [polygons.shape[1]] * len(polygons)
        points = polygons.reshape(-1, 2)
    else:
        counts = [len(polygon) for polygon in polygons]
        points = np.concatenate(polygons) if counts else np.zeros((0, 2))
    if not counts:
        return [], []
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f'polygons: expected (Ni, 2) arrays of x, y points, got {points.shape[1:]} per point')
    if quadrilaterals and any(count != 4 for count in counts):
        raise ValueError(f'polygons: expected 4 corners per box with quadrilaterals=True, got {sorted(set(counts))}')
    if not np.issubdtype(points.dtype, np.floating):
        points = points.astype(np.float64)
    (map_height, map_width), (dest_height, dest_width) = map_size, dest_size
    scaled = np.empty_like(points)
    scaled[:, 0] = points[:, 0] / map_width * dest_width
    scaled[:, 1] = points[:, 1] / map_height * dest_height
    rounded = np.empty_like(scaled)
    rounded[:, 0] = np.clip(np.round(scaled[:, 0]), 0, dest_width)
    rounded[:, 1] = np.clip(np.round(scaled[:, 1]), 0, dest_height)
    integer = rounded.astype(np.int32)
    outputs = split_rows(integer, counts)
    counts_array = np.asarray(counts)
    repeated = repeated_points(integer, counts_array)
    good = valid_packed(integer, counts_array, repeated)
    if good.all():
        return outputs, list(range(len(outputs)))
    failing = np.flatnonzero(~good)
    if not quadrilaterals:
        # drop the repeated points of all failing rings at once (a ring of one repeated point keeps one)
        starts = np.concatenate([[0], np.cumsum(counts_array)[:-1]])
        keep = ~repeated
        keep[starts[~np.logical_or.reduceat(keep, starts)]] = True
        keep &= np.repeat(~good, counts_array)
        distinct_counts = np.add.reduceat(keep, starts)[failing]
        distinct_points = integer[keep]
        fixed = valid_packed(distinct_points, distinct_counts)
        for index, polygon, ok in zip(failing.tolist(), split_rows(distinct_points, distinct_counts.tolist()),
                                      fixed.tolist()):
            if ok:
                outputs[index] = polygon
        failing = failing[~fixed]
    scaled_rows = split_rows(scaled, counts)
    results: List[Optional[np.ndarray]] = list(outputs)  # None where no valid polygon can be made
    for index in failing.tolist():
        results[index] = repair_polygon(outputs[index], scaled_rows[index], dest_height, dest_width, quadrilaterals)
    kept = [index for index, output in enumerate(results) if output is not None]
    return [output for output in results if output is not None], kept


def repair_polygon(rounded: np.ndarray, scaled: np.ndarray, dest_height: int, dest_width: int,
                   quadrilateral: bool = False) -> Optional[np.ndarray]:
    """A valid int32 polygon, clockwise on screen, without repeated points, with positive area, for one
    detection whose rounded and clipped points ``rounded`` (N, 2) do not make one; None when none exists.

    scaled: the same points before rounding and clipping, in image pixels. The target is the detection's
    exact region in the image, T = polygon(scaled) (its make_valid form when pyclipper's ring touches
    itself) intersected with [0, W] x [0, H]. Of the candidates below that are valid, the one with the
    highest IoU with T wins (the first on ties): IoU counts both the part of the detection that is lost
    and what is added around it, and it is what the IoU protocol thresholds.

    Box mode (`box_candidates`): a box fails only by collapsing (two corners on one point, or zero area;
    in 200 000 random rectangles rounded and clipped on a small grid, no box with positive area crossed
    itself), so the convex hull or the valid form of its points would have fewer than 4 corners. The
    candidates are the quadrilaterals whose corners are integer points around the exact corners (floor
    or ceil of each coordinate: 4^4 = 256 choices), kept when strictly convex, clockwise and in
    `order_corners` order, and the integer bounding box of T (floor / ceil of its bounds). For a box
    thinner than a pixel the winner can be a parallelogram slanted across the thin side: it overlaps T
    more than any axis-aligned integer box does.

    Polygon mode (`polygon_candidates`): the largest part of the valid form of the rounded polygon
    (shapely make_valid, without its repeated points), and T grown by 0, 1/4 and 1/2 pixel (mitre joins,
    clipped to the image again), each snapped to the integer grid (GEOS set_precision, which keeps it
    valid) and reduced to the exterior of its largest part (growing keeps a sub-pixel-thin curved band in
    one piece); the convex hull of the rounded points (best for a detection a few pixels across); the
    integer bounding box of T (which exists whenever T has an area).

    Cost: a few milliseconds per repaired output (2 to 5 ms on a 2-core CPU: the IoUs with T, 257 of them
    for a box), paid only by the outputs that fail the check.
    """
    target = shapely.Polygon(scaled.astype(np.float64))
    if not target.is_valid:
        target = shapely.make_valid(target)
    image = shapely.box(0, 0, dest_width, dest_height)
    target = shapely.intersection(target, image)
    if target.is_empty or target.area <= 0:
        return None
    xmin, ymin, xmax, ymax = target.bounds
    left, top, right, bottom = np.floor(xmin), np.floor(ymin), np.ceil(xmax), np.ceil(ymax)
    bounding_box = np.array([[left, top], [right, top], [right, bottom], [left, bottom]], dtype=np.int32)
    if quadrilateral:
        candidates = box_candidates(scaled, bounding_box, dest_height, dest_width)
        shapes = shapely.polygons(np.stack(candidates).astype(np.float64)) if candidates else []
    else:
        candidates = polygon_candidates(rounded, target, image, bounding_box)
        shapes = np.array([shapely.Polygon(candidate.astype(np.float64)) for candidate in candidates])
    if not len(candidates):
        return None
    intersection = shapely.area(shapely.intersection(shapes, target))
    iou = intersection / (shapely.area(shapes) + target.area - intersection)
    best = candidates[int(np.argmax(iou))]
    return best if signed_area(best) > 0 else best[::-1].copy()


def box_candidates(corners: np.ndarray, bounding_box: np.ndarray, dest_height: int, dest_width: int
                   ) -> List[np.ndarray]:
    """Integer (4, 2) boxes near the exact box ``corners`` (4, 2) (image pixels, `order_corners` order): each
    corner on one of the up to 4 integer points around it (floor or ceil of x and of y, clipped to the
    image), in the order of the 256 choices, then ``bounding_box``; only the strictly convex, clockwise
    ones (on screen) that `order_corners` leaves as they are."""
    corners = np.asarray(corners, dtype=np.float64)
    low = np.clip(np.floor(corners), 0, [dest_width, dest_height])
    high = np.clip(np.ceil(corners), 0, [dest_width, dest_height])
    choice = np.array(np.meshgrid(*[np.arange(4)] * 4, indexing='ij')).reshape(4, -1).T  # (256, 4)
    quads = np.stack([np.where(choice & 1, high[:, 0], low[:, 0]), np.where(choice & 2, high[:, 1], low[:, 1])],
                     axis=2).astype(np.int32)
    quads = np.concatenate([quads, bounding_box[None]])
    edges = (np.roll(quads, -1, axis=1) - quads).astype(np.int64)
    following = np.roll(edges, -1, axis=1)
    turns = edges[..., 0] * following[..., 1] - edges[..., 1] * following[..., 0]
    usable = np.all(turns > 0, axis=1) & np.all(order_corners(quads) == quads, axis=(1, 2))
    return list(quads[usable])


def polygon_candidates(rounded: np.ndarray, target: Any, image: Any, bounding_box: np.ndarray
                       ) -> List[np.ndarray]:
    """Valid integer polygons (Ni, 2) inside ``image`` (a shapely box) covering about the region ``target``
    (shapely, image pixels) of a detection whose rounded ring ``rounded`` is invalid: see `repair_polygon`
    for the list and its order."""
    distinct = drop_repeated_points(rounded).astype(np.float64)
    regions = [shapely.make_valid(shapely.Polygon(distinct))] if len(distinct) >= 3 else []
    regions += [shapely.intersection(shapely.buffer(target, growth, join_style='mitre'), image) if growth
                else target for growth in SNAP_GROWTHS]
    candidates = []
    for region in regions:
        parts = polygon_parts(region)
        snapped = polygon_parts(shapely.set_precision(shapely.MultiPolygon(parts), 1.0)) if parts else []
        if snapped:
            candidates.append(np.asarray(max(snapped, key=lambda part: part.area).exterior.coords)[:-1])
    hull = shapely.convex_hull(shapely.MultiPoint(distinct))
    if hull.geom_type == 'Polygon':
        candidates.append(np.asarray(hull.exterior.coords)[:-1])
    candidates.append(bounding_box)
    candidates = [drop_repeated_points(np.round(candidate).astype(np.int32)) for candidate in candidates]
    return [candidate for candidate, ok in zip(candidates, valid_rings(candidates).tolist()) if ok]
