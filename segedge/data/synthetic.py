"""A built-in synthetic street-scene segmentation dataset, rendered on the fly from a seed.

Why it exists: export, INT8 calibration and benchmarking need labelled images, and the project must
run without downloading a dataset. Flat-coloured shapes would make every model look perfect and
every calibration trivial, so the scenes are built to need what real street scenes need: the base
colours of road, building, car, sky... overlap, and a pixel is told apart by its texture (window
grids, fine grain, blotches, gradients) and by its context (sky above, road below, cars on the
road, poles on the sidewalk).

How a scene is made:

1. :func:`_sample_scene` draws everything random that does not depend on the image size: a horizon
   and a vanishing point, lateral bands of the street (road, sidewalks, grass verges, in metres),
   a skyline of buildings and tree rows, objects standing at a depth on the ground, surface colours
   and textures, and the photometric nuisance. All geometry is in fractions of H and W, so a seed
   gives the same street at every size, as if the image had been resized.
2. The street is painted into a map of *surfaces* (class + base colour + texture amplitudes). Below
   the horizon every pixel gets a lateral ground coordinate, so the road narrows towards the
   vanishing point; objects scale with their depth (far = a few pixels, near = half the image) and
   are painted far to near, so near ones occlude.
3. Labels and colours are both looked up from the surface map, so they cannot disagree; gain,
   white balance, gamma, a shadow band, blur and sensor noise then touch the image only.

Numpy only, no torch: data loading stays cheap to import and the same code feeds ONNX Runtime and
TensorRT runners. About 90-100 images/s at 256x512 on one core (``benchmarks/bench_synthetic.py``).
"""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass

import numpy as np

from segedge.core.errors import InputSizeError

CLASS_NAMES: tuple[str, ...] = (
    "road",
    "sidewalk",
    "building",
    "sky",
    "vegetation",
    "car",
    "person",
    "pole",
    "traffic_sign",
    "terrain",
)
NUM_CLASSES: int = len(CLASS_NAMES)
IGNORE_INDEX: int = 255
SPLITS: tuple[str, ...] = ("train", "calib", "val")
MIN_SIZE: int = 32

(_ROAD, _SIDEWALK, _BUILDING, _SKY, _VEGETATION, _CAR, _PERSON, _POLE, _SIGN, _TERRAIN) = range(
    NUM_CLASSES
)

# Projection: at ground depth t (0 at the horizon, 1 at the bottom row) one metre spans
# t*W*_PX_PER_M_X pixels across and t*H*_PX_PER_M_Y pixels up; the ratio keeps a 2:1 image
# undistorted, other aspect ratios look resized.
_PX_PER_M_X = 0.12
_PX_PER_M_Y = 0.24
# Value-noise lattices (rows, columns) for the blotch textures; fixed counts, so textures scale with
# the image like the geometry does.
_COARSE_GRID = (5, 9)
_MID_GRID = (20, 40)

_RGB = tuple[float, float, float]


# --------------------------------------------------------------------------------------------------
# Seeds and the dataset
# --------------------------------------------------------------------------------------------------

_MASK64 = (1 << 64) - 1
# index * len(SPLITS) + split must fit in 64 bits for the seed mix to be a bijection
_MAX_INDEX = (1 << 62) - 1


def _split_number(split: str) -> int:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits are {', '.join(SPLITS)}")
    return SPLITS.index(split)


def _check_seed(seed: int, what: str = "seed") -> int:
    try:
        seed = operator.index(seed)
    except TypeError:
        raise TypeError(f"{what} must be an integer, got {type(seed).__name__}") from None
    if seed < 0:
        raise ValueError(f"{what} must be >= 0, got {seed}")
    return seed


def _check_size(height: int, width: int) -> tuple[int, int]:
    height, width = operator.index(height), operator.index(width)
    if height < MIN_SIZE or width < MIN_SIZE:
        raise InputSizeError(
            f"synthetic scenes need height and width >= {MIN_SIZE}, got {height}x{width}"
        )
    return height, width


@functools.lru_cache(maxsize=64)
def _split_keys(seed: int) -> tuple[int, int]:
    state = np.random.SeedSequence([seed, 0x5E6ED6E]).generate_state(2, dtype=np.uint64)
    return int(state[0]), int(state[1])


def scene_seed(split: str, index: int, seed: int = 0) -> int:
    """The seed of image ``index`` of ``split``.

    Packs (index, split) into one integer and scrambles it with a keyed 64-bit bijection (xor,
    odd multiplications, xor-shifts, add; keys from ``SeedSequence([seed, ...])``). Because every
    step is invertible, different (split, index) pairs give different seeds for every base seed:
    train, calib and val can never share an image, which a hash would only make unlikely.
    """
    number = _split_number(split)
    index = _check_seed(index, "index")
    seed = _check_seed(seed)
    if index > _MAX_INDEX:
        raise ValueError(f"index must be <= {_MAX_INDEX}, got {index}")
    key_xor, key_add = _split_keys(seed)
    x = (index * len(SPLITS) + number) ^ key_xor
    x = (x * 0xBF58476D1CE4E5B9) & _MASK64
    x ^= x >> 31
    x = (x * 0x94D049BB133111EB) & _MASK64
    x ^= x >> 29
    return (x + key_add) & _MASK64


class SyntheticScenes:
    """``length`` street scenes of one split: ``ds[i]`` is (image uint8 HxWx3 RGB, mask uint8 HxW).

    Nothing is stored; each item is rendered from :func:`scene_seed` when asked for, so any length
    costs no memory and two instances with the same arguments yield identical data.
    """

    def __init__(
        self, split: str, length: int, size: tuple[int, int] = (256, 512), seed: int = 0
    ) -> None:
        _split_number(split)
        length = operator.index(length)
        if length < 0:
            raise ValueError(f"length must be >= 0, got {length}")
        if len(size) != 2:
            raise ValueError(f"size must be (height, width), got {size!r}")
        self.split = split
        self.length = length
        self.size = _check_size(*size)
        self.seed = _check_seed(seed)

    class_names: tuple[str, ...] = CLASS_NAMES  # the item protocol every dataset shares
    num_classes: int = len(CLASS_NAMES)

    def __len__(self) -> int:
        return self.length

    def __repr__(self) -> str:
        return (
            f"SyntheticScenes(split={self.split!r}, length={self.length}, "
            f"size={self.size}, seed={self.seed})"
        )

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        position = operator.index(index)
        if position < 0:
            position += self.length
        if not 0 <= position < self.length:
            raise IndexError(f"index {index} out of range for {self.length} scenes")
        return render_scene(scene_seed(self.split, position, self.seed), *self.size)

    def batch(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Images (N, H, W, 3) and masks (N, H, W), uint8, of scenes ``start .. start+count-1``."""
        start, count = operator.index(start), operator.index(count)
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        if start < 0 or start + count > self.length:
            raise IndexError(
                f"batch {start}..{start + count - 1} out of range for {self.length} scenes"
            )
        height, width = self.size
        images = np.empty((count, height, width, 3), dtype=np.uint8)
        masks = np.empty((count, height, width), dtype=np.uint8)
        for offset in range(count):
            images[offset], masks[offset] = self[start + offset]
        return images, masks


# --------------------------------------------------------------------------------------------------
# Scene description (size-independent)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Surface:
    """What a painted region is: its class, its base colour, and how strongly each texture field
    modulates its brightness (fields in :class:`_TextureFields`)."""

    label: int
    colour: _RGB
    fine: float = 0.0
    mid: float = 0.0
    coarse: float = 0.0
    gradient: float = 0.0
    windows: float = 0.0


@dataclass(frozen=True)
class _Layout:
    """The street in ground coordinates: ``lat`` metres sideways from the vanishing line, depth
    ``t`` in (0, 1] from the horizon to the bottom row (objects may stand at t > 1, partly
    below the image)."""

    horizon: float  # fraction of H
    vanish_x: float  # fraction of W
    bounds: tuple[float, ...]  # six increasing lat bounds: verge|sidewalk|road|sidewalk|verge
    open_roadside: tuple[bool, bool]  # left, right: open terrain rather than buildings to the edge
    lane_centres: tuple[float, ...]  # dashed lane lines
    lane_half_width: float
    dash_per_metre: float  # dashes along depth, in 1/t units
    edge_lines: bool
    crossing: tuple[float, float] | None  # 1/t interval of a zebra crossing
    slab_metres: float  # sidewalk slab size
    grass_threshold: float | None  # sidewalk pixels with mid noise above it are terrain

    @property
    def road(self) -> tuple[float, float]:
        return self.bounds[2], self.bounds[3]

    def sidewalk(self, side: int) -> tuple[float, float]:
        return (self.bounds[1], self.bounds[2]) if side == 0 else (self.bounds[3], self.bounds[4])

    def ground_row(self, t: float, height: int) -> float:
        return (self.horizon + t * (1.0 - self.horizon)) * height

    def column(self, t: float, lat: float, width: int) -> float:
        return (self.vanish_x + lat * _PX_PER_M_X * t) * width

    def upright_box(
        self, t: float, lat: float, size_m: tuple[float, float], image_size: tuple[int, int]
    ) -> tuple[float, float, float, float]:
        """(top, left, height, width) in pixels of something ``size_m`` (width, height) metres
        standing centred at ground point (t, lat)."""
        height, width = image_size
        box_width = size_m[0] * _PX_PER_M_X * t * width
        box_height = size_m[1] * _PX_PER_M_Y * t * height
        left = self.column(t, lat, width) - box_width / 2
        return self.ground_row(t, height) - box_height, left, box_height, box_width


@dataclass(frozen=True)
class _SkylineSegment:
    """Columns [x0, x1) (fractions of W) of one building, tree row or gap above the horizon."""

    x0: float
    x1: float
    surface: _Surface | None  # None: a gap, sky down to the horizon and terrain below it
    rise: float  # top above the horizon, fraction of H
    ragged: tuple[float, ...]  # top-edge offsets (fractions of H) across the segment, for tree rows
    window_period: tuple[float, float]  # (rows, columns) as fractions of H and W; 0 = no windows
    window_duty: tuple[float, float]


@dataclass(frozen=True)
class _Photometric:
    """Camera nuisance, applied to the image only: labels must not change with lighting."""

    gain: float
    white_balance: _RGB
    gamma: float
    # angle, offset, half width, softness, depth; None = no shadow
    shadow: tuple[float, float, float, float, float] | None
    blur: bool
    noise_sigma: float


class _Canvas:
    """The surface map being painted, plus a per-pixel shade for object-local shading (glass,
    wheels, slab seams) that the global texture fields cannot express."""

    def __init__(self, height: int, width: int) -> None:
        self.height, self.width = height, width
        self.size = (height, width)
        self.surfaces: list[_Surface] = []
        self.surface_id = np.zeros((height, width), dtype=np.uint8)
        self.shade = np.ones((height, width), dtype=np.float32)

    def add(self, surface: _Surface) -> int:
        if len(self.surfaces) == 256:
            raise RuntimeError("more than 256 surfaces in one scene")  # sampling caps prevent it
        self.surfaces.append(surface)
        return len(self.surfaces) - 1

    def box(
        self, top: float, left: float, height: float, width: float
    ) -> tuple[slice, slice, np.ndarray, np.ndarray] | None:
        """Pixel slices of a box (float pixels) clipped to the image, and the box-relative
        coordinates v (rows, 1) and u (1, cols) of their pixel centres, 0..1 inside the box."""
        y0, y1 = max(int(np.floor(top)), 0), min(int(np.ceil(top + height)), self.height)
        x0, x1 = max(int(np.floor(left)), 0), min(int(np.ceil(left + width)), self.width)
        if y0 >= y1 or x0 >= x1 or height <= 0 or width <= 0:
            return None
        v = (np.arange(y0, y1, dtype=np.float32) + (0.5 - top)) / np.float32(height)
        u = (np.arange(x0, x1, dtype=np.float32) + (0.5 - left)) / np.float32(width)
        return slice(y0, y1), slice(x0, x1), v[:, None], u[None, :]

    def paint(
        self,
        rows: slice,
        cols: slice,
        mask: np.ndarray,
        surface_id: int,
        shade: np.ndarray | float = 1.0,
    ) -> None:
        region_shape = self.surface_id[rows, cols].shape
        mask = np.broadcast_to(mask, region_shape)
        self.surface_id[rows, cols][mask] = surface_id
        self.shade[rows, cols][mask] = np.broadcast_to(shade, region_shape)[mask]


@dataclass(frozen=True)
class _Car:
    """A car from behind or in front, or parked and seen obliquely: body and cabin as one surface
    (glass and wheels are shade, and the ground shows between the wheels), lights as another."""

    t: float
    lat: float
    size_m: tuple[float, float]  # width, height as seen
    body: _Surface
    lights: _Surface

    def draw(self, canvas: _Canvas, layout: _Layout, fields: _TextureFields) -> None:
        box = canvas.box(*layout.upright_box(self.t, self.lat, self.size_m, canvas.size))
        if box is None:
            return
        rows, cols, v, u = box
        inside = (u >= 0) & (u < 1) & (v >= 0) & (v < 1)
        cabin_inset = 0.12 + 0.12 * (0.42 - v) / 0.37
        cabin = (v >= 0.05) & (np.abs(u - 0.5) < 0.5 - cabin_inset)
        wheels = (v >= 0.84) & ((np.abs(u - 0.17) < 0.1) | (np.abs(u - 0.83) < 0.1))
        body = (v >= 0.42) & ((v < 0.88) | wheels)
        mask = inside & np.where(v < 0.42, cabin, body)
        glass = (v >= 0.1) & (v < 0.39) & (np.abs(u - 0.5) < 0.46 - cabin_inset)
        shade = np.where(glass, 0.45, 1.05 - 0.3 * v).astype(np.float32)
        shade = np.where(wheels, np.float32(0.25), shade)
        canvas.paint(rows, cols, mask, canvas.add(self.body), shade)
        lights = inside & (v >= 0.48) & (v < 0.58) & (np.abs(np.abs(u - 0.5) - 0.4) < 0.06)
        canvas.paint(rows, cols, lights, canvas.add(self.lights))


@dataclass(frozen=True)
class _Person:
    """Head, shirt and trousers as three surfaces of the one class, so a person is not one colour."""

    t: float
    lat: float
    size_m: tuple[float, float]  # width, height
    stride: float  # how far the legs spread, 0..0.4
    skin: _Surface
    shirt: _Surface
    trousers: _Surface

    def draw(self, canvas: _Canvas, layout: _Layout, fields: _TextureFields) -> None:
        box = canvas.box(*layout.upright_box(self.t, self.lat, self.size_m, canvas.size))
        if box is None:
            return
        rows, cols, v, u = box
        head = ((u - 0.5) / 0.2) ** 2 + ((v - 0.065) / 0.065) ** 2 < 1
        torso = (v >= 0.12) & (v < 0.56) & (np.abs(u - 0.5) < 0.42 - 0.12 * (v - 0.12))
        spread = 0.13 + self.stride * np.maximum(v - 0.52, 0)
        legs = (v >= 0.52) & (v < 1) & (np.abs(np.abs(u - 0.5) - spread) < 0.11)
        shade = (1.1 - 0.2 * v).astype(np.float32)
        canvas.paint(rows, cols, legs, canvas.add(self.trousers), shade)
        canvas.paint(rows, cols, torso, canvas.add(self.shirt), shade)
        canvas.paint(rows, cols, head, canvas.add(self.skin))


@dataclass(frozen=True)
class _Pole:
    """A post (pole), optionally with a lamp arm (pole) and a sign plate (traffic_sign) on it."""

    t: float
    lat: float
    width_m: float
    height_m: float
    post: _Surface
    lamp_arm_m: float  # signed length towards the road; 0 = no lamp
    sign: _Surface | None
    sign_shape: str  # rect, circle, triangle, diamond
    sign_size_m: float
    sign_height_m: float  # centre above ground

    def draw(self, canvas: _Canvas, layout: _Layout, fields: _TextureFields) -> None:
        h, w = canvas.height, canvas.width
        kx, ky = _PX_PER_M_X * self.t * w, _PX_PER_M_Y * self.t * h
        centre = layout.column(self.t, self.lat, w)
        bottom = layout.ground_row(self.t, h)
        # Whole pixels, at least one: far poles stay visible as 1-px lines instead of vanishing.
        post_px = max(1, round(self.width_m * kx))
        left = round(centre - post_px / 2)
        post_id = canvas.add(self.post)
        box = canvas.box(bottom - self.height_m * ky, left, self.height_m * ky, post_px)
        if box is not None:
            rows, cols, _, u = box
            canvas.paint(rows, cols, True, post_id, (1.15 - 0.4 * u).astype(np.float32))
        if self.lamp_arm_m:
            arm_px = max(1.0, 0.6 * self.width_m * ky)
            top = bottom - self.height_m * ky
            length = abs(self.lamp_arm_m) * kx
            start = left + post_px / 2 if self.lamp_arm_m > 0 else left + post_px / 2 - length
            box = canvas.box(round(top), start, arm_px, length)
            if box is not None:
                canvas.paint(box[0], box[1], True, post_id, 0.9)
        if self.sign is not None:
            size_x, size_y = self.sign_size_m * kx, self.sign_size_m * ky
            box = canvas.box(
                bottom - self.sign_height_m * ky - size_y / 2, centre - size_x / 2, size_y, size_x
            )
            if box is None:
                return
            rows, cols, v, u = box
            if self.sign_shape == "circle":
                mask = (u - 0.5) ** 2 + (v - 0.5) ** 2 < 0.25
            elif self.sign_shape == "triangle":
                mask = (v < 0.9) & (np.abs(u - 0.5) < 0.55 * v)
            elif self.sign_shape == "diamond":
                mask = np.abs(u - 0.5) + np.abs(v - 0.5) < 0.5
            else:
                mask = (u >= 0) & (u < 1) & (v >= 0) & (v < 1)
            rim = (np.abs(u - 0.5) > 0.38) | (np.abs(v - 0.5) > 0.38)
            canvas.paint(rows, cols, mask, canvas.add(self.sign), np.where(rim, 1.2, 1.0))


@dataclass(frozen=True)
class _Tree:
    t: float
    lat: float
    trunk_m: tuple[float, float]  # width, height
    crown_m: tuple[float, float]  # width, height
    trunk: _Surface
    crown: _Surface

    def draw(self, canvas: _Canvas, layout: _Layout, fields: _TextureFields) -> None:
        h, w = canvas.height, canvas.width
        kx, ky = _PX_PER_M_X * self.t * w, _PX_PER_M_Y * self.t * h
        centre = layout.column(self.t, self.lat, w)
        bottom = layout.ground_row(self.t, h)
        trunk_px = max(1, round(self.trunk_m[0] * kx))
        trunk_top = bottom - self.trunk_m[1] * ky
        box = canvas.box(trunk_top, round(centre - trunk_px / 2), self.trunk_m[1] * ky, trunk_px)
        if box is not None:
            canvas.paint(box[0], box[1], True, canvas.add(self.trunk))
        crown_w, crown_h = self.crown_m[0] * kx, self.crown_m[1] * ky
        box = canvas.box(trunk_top - 0.85 * crown_h, centre - crown_w / 2, crown_h, crown_w)
        if box is None:
            return
        rows, cols, v, u = box
        # A ragged outline: the radius threshold follows the blotch field, so no two crowns match.
        mask = (2 * u - 1) ** 2 + (2 * v - 1) ** 2 < 0.8 + 0.35 * fields.mid[rows, cols]
        canvas.paint(rows, cols, mask, canvas.add(self.crown))


@dataclass(frozen=True)
class _Clutter:
    """An unlabeled blob (IGNORE_INDEX): bins, bollards, things no class covers."""

    t: float
    lat: float
    size_m: tuple[float, float]
    surface: _Surface

    def draw(self, canvas: _Canvas, layout: _Layout, fields: _TextureFields) -> None:
        box = canvas.box(*layout.upright_box(self.t, self.lat, self.size_m, canvas.size))
        if box is None:
            return
        rows, cols, v, u = box
        mask = (2 * u - 1) ** 2 + (2 * v - 1) ** 2 < 1
        canvas.paint(rows, cols, mask, canvas.add(self.surface), (1.1 - 0.3 * v).astype(np.float32))


_SceneObject = _Car | _Person | _Pole | _Tree | _Clutter


@dataclass(frozen=True)
class _Scene:
    """Everything random about one scene; rendering it at a size draws only noise."""

    layout: _Layout
    sky: _Surface
    road: _Surface
    lane_paint: _Surface
    sidewalks: tuple[_Surface, _Surface]
    terrain: _Surface
    skyline: tuple[_SkylineSegment, ...]
    objects: tuple[_SceneObject, ...]
    photometric: _Photometric
    coarse_lattice: np.ndarray
    mid_lattice: np.ndarray


# --- colours: the distributions overlap on purpose (grey road, grey building, grey car, white sky,
# white sign...), so colour alone does not identify the class.


def _grey(rng: np.random.Generator, low: float, high: float, tint: float) -> _RGB:
    level = rng.uniform(low, high)
    r, g, b = np.clip(level + rng.normal(0, tint, 3), 0, 255)
    return float(r), float(g), float(b)


def _any_colour(rng: np.random.Generator) -> _RGB:
    r, g, b = rng.uniform(20, 235, 3)
    return float(r), float(g), float(b)


def _painted_colour(rng: np.random.Generator) -> _RGB:
    """Car paint or clothing: half neutral (black..white), half any hue."""
    return _grey(rng, 15, 235, 8) if rng.random() < 0.5 else _any_colour(rng)


def _green(rng: np.random.Generator) -> _RGB:
    g = rng.uniform(50, 170)
    r, b = g * rng.uniform(0.45, 1.0), g * rng.uniform(0.3, 0.8)
    return float(r), float(g), float(b)


def _sky_colour(rng: np.random.Generator) -> _RGB:
    if rng.random() < 0.5:  # overcast: as grey-white as a facade or a sign
        return _grey(rng, 140, 240, 5)
    b = rng.uniform(170, 250)
    return float(b * rng.uniform(0.45, 0.75)), float(b * rng.uniform(0.7, 0.9)), float(b)


def _building_colour(rng: np.random.Generator) -> _RGB:
    if rng.random() < 0.6:
        return _grey(rng, 55, 215, 10)
    base = rng.uniform(90, 210)  # brick, sandstone, plaster
    return float(base), float(base * rng.uniform(0.6, 0.95)), float(base * rng.uniform(0.45, 0.85))


def _terrain_colour(rng: np.random.Generator) -> _RGB:
    if rng.random() < 0.6:
        return _green(rng)
    base = rng.uniform(90, 170)  # dry grass, soil, gravel
    return float(base), float(base * rng.uniform(0.8, 0.95)), float(base * rng.uniform(0.55, 0.8))


def _sign_colour(rng: np.random.Generator) -> _RGB:
    choice = rng.random()
    if choice < 0.35:  # back of a sign, or a grey plate
        return _grey(rng, 90, 210, 6)
    palette = ((200, 35, 35), (35, 75, 185), (225, 190, 40), (235, 235, 235), (30, 140, 70))
    r, g, b = np.clip(np.array(palette[rng.integers(len(palette))]) + rng.normal(0, 12, 3), 0, 255)
    return float(r), float(g), float(b)


def _skin_colour(rng: np.random.Generator) -> _RGB:
    base = rng.uniform(60, 230)
    return float(base), float(base * rng.uniform(0.7, 0.85)), float(base * rng.uniform(0.55, 0.75))


# --- sampling


def _depth(rng: np.random.Generator, near: float = 1.45) -> float:
    """Ground depth of an object, biased to the far field: many small objects, a few huge ones."""
    return 0.03 + (near - 0.03) * rng.random() ** 1.7


def _sample_layout(rng: np.random.Generator) -> _Layout:
    road_half = rng.uniform(3.0, 6.5)
    road_centre = rng.uniform(-1.5, 1.5)
    sidewalk = rng.uniform(1.5, 4.5, 2)
    verge = np.where(rng.random(2) < 0.5, rng.uniform(0.5, 3.0, 2), 0.0)
    left_road, right_road = road_centre - road_half, road_centre + road_half
    bounds = (
        left_road - sidewalk[0] - verge[0],
        left_road - sidewalk[0],
        left_road,
        right_road,
        right_road + sidewalk[1],
        right_road + sidewalk[1] + verge[1],
    )
    lanes = int(rng.integers(1, 4))
    lane_centres = tuple(left_road + 2 * road_half * (i + 1) / (lanes + 1) for i in range(lanes))
    crossing_start = rng.uniform(1.2, 4.0)
    return _Layout(
        horizon=rng.uniform(0.36, 0.5),
        vanish_x=rng.uniform(0.35, 0.65),
        bounds=tuple(float(b) for b in bounds),
        open_roadside=(bool(rng.random() < 0.3), bool(rng.random() < 0.3)),
        lane_centres=lane_centres if rng.random() < 0.85 else (),
        lane_half_width=rng.uniform(0.06, 0.12),
        dash_per_metre=rng.uniform(0.4, 1.0),
        edge_lines=bool(rng.random() < 0.4),
        crossing=(
            (crossing_start, crossing_start + rng.uniform(0.3, 0.8)) if rng.random() < 0.2 else None
        ),
        slab_metres=rng.uniform(0.5, 1.5),
        grass_threshold=rng.uniform(0.5, 1.2) if rng.random() < 0.4 else None,
    )


def _sample_skyline(rng: np.random.Generator, vanish_x: float) -> tuple[_SkylineSegment, ...]:
    segments = []
    x0 = 0.0
    while x0 < 1.0:
        x1 = min(1.0, x0 + rng.uniform(0.04, 0.2))
        # Facades near the image edges are nearer the camera, hence taller.
        nearness = 1.0 + 2.0 * abs((x0 + x1) / 2 - vanish_x)
        kind = rng.random()
        ragged = tuple(rng.normal(0, 0.03, 6).tolist())
        if kind < 0.68:
            surface = _Surface(
                _BUILDING,
                _building_colour(rng),
                fine=rng.uniform(0.02, 0.08),
                mid=rng.uniform(0.0, 0.08),
                coarse=rng.uniform(0.0, 0.15),
                gradient=rng.uniform(-0.2, 0.2),
                windows=rng.choice([-1, 1]) * rng.uniform(0.15, 0.5),
            )
            period = (rng.uniform(0.03, 0.07) * nearness, rng.uniform(0.012, 0.03) * nearness)
            duty = (rng.uniform(0.35, 0.7), rng.uniform(0.3, 0.7))
            segments.append(
                _SkylineSegment(
                    x0, x1, surface, rng.uniform(0.04, 0.22) * nearness, (), period, duty
                )
            )
        elif kind < 0.9:
            surface = _Surface(
                _VEGETATION, _green(rng), fine=rng.uniform(0.05, 0.15), mid=rng.uniform(0.2, 0.4),
                coarse=rng.uniform(0.0, 0.2),
            )
            segments.append(
                _SkylineSegment(
                    x0, x1, surface, rng.uniform(0.03, 0.15) * nearness, ragged, (0, 0), (0, 0)
                )
            )
        else:
            segments.append(_SkylineSegment(x0, x1, None, 0.0, (), (0, 0), (0, 0)))
        x0 = x1
    return tuple(segments)


def _sample_objects(rng: np.random.Generator, layout: _Layout) -> list[_SceneObject]:
    objects: list[_SceneObject] = []
    road_left, road_right = layout.road
    for _ in range(min(int(rng.poisson(2.5)), 10)):
        parked = rng.random() < 0.3
        if parked:  # seen obliquely along a kerb: a foreshortened side, wider than a back view
            size = (rng.uniform(2.6, 3.4), rng.uniform(1.3, 1.6))
            lat = (road_left + 1.3) if rng.random() < 0.5 else (road_right - 1.3)
        else:  # seen from behind or in front, in a lane
            width = rng.uniform(1.6, 2.1)
            tall = rng.random() >= 0.8  # vans and trucks
            size = (width, rng.uniform(2.0, 2.8) if tall else rng.uniform(1.3, 1.7))
            lat = rng.uniform(road_left + 1.0, road_right - 1.0)
        body = _Surface(
            _CAR, _painted_colour(rng), fine=0.03, mid=0.03, gradient=rng.uniform(-0.2, 0.2)
        )
        red, green, blue = rng.uniform(150, 240), rng.uniform(10, 60), rng.uniform(10, 60)
        lights = _Surface(_CAR, (float(red), float(green), float(blue)))
        objects.append(_Car(_depth(rng), lat, size, body, lights))

    for _ in range(min(int(rng.poisson(1.3)), 5)):  # groups of pedestrians
        on_road = rng.random() < 0.25
        side = int(rng.integers(2))
        low, high = layout.road if on_road else layout.sidewalk(side)
        t = _depth(rng)
        lat = rng.uniform(low, high)
        for _ in range(int(rng.integers(1, 4))):
            objects.append(
                _Person(
                    t * rng.uniform(0.95, 1.05),
                    lat + rng.normal(0, 0.6),
                    (rng.uniform(0.45, 0.65), rng.uniform(1.5, 1.95)),
                    rng.uniform(0.0, 0.4),
                    _Surface(_PERSON, _skin_colour(rng), fine=0.03),
                    _Surface(_PERSON, _painted_colour(rng), fine=0.05, mid=rng.uniform(0, 0.2)),
                    _Surface(_PERSON, _painted_colour(rng), fine=0.05, mid=rng.uniform(0, 0.1)),
                )
            )

    for _ in range(int(rng.integers(1, 7))):
        side = int(rng.integers(2))
        low, high = layout.sidewalk(side)
        # The outer part of the sidewalk, away from the kerb.
        outer = rng.uniform(0.05, 0.35) if side == 0 else rng.uniform(0.65, 0.95)
        lat = low + (high - low) * outer
        height = rng.uniform(3.0, 7.5)
        toward_road = 1.0 if side == 0 else -1.0
        has_sign = rng.random() < 0.65
        objects.append(
            _Pole(
                _depth(rng),
                lat,
                rng.uniform(0.1, 0.3),
                height,
                _Surface(_POLE, _grey(rng, 40, 180, 8), fine=0.04),
                toward_road * rng.uniform(0.8, 2.0) if rng.random() < 0.35 else 0.0,
                _Surface(_SIGN, _sign_colour(rng), fine=0.03) if has_sign else None,
                ("rect", "circle", "triangle", "diamond")[int(rng.integers(4))],
                rng.uniform(0.6, 1.3),
                height - rng.uniform(0.6, 1.0) if rng.random() < 0.6 else rng.uniform(2.0, 2.8),
            )
        )

    for _ in range(min(int(rng.poisson(0.8)), 3)):
        side = int(rng.integers(2))
        low, high = layout.sidewalk(side)
        crown = rng.uniform(2.0, 5.0)
        objects.append(
            _Tree(
                _depth(rng),
                rng.uniform(low, high),
                (rng.uniform(0.2, 0.45), rng.uniform(1.5, 3.0)),
                (crown, crown * rng.uniform(0.8, 1.3)),
                _Surface(_VEGETATION, _grey(rng, 40, 110, 10), fine=0.08, mid=0.1),
                _Surface(_VEGETATION, _green(rng), fine=0.12, mid=rng.uniform(0.25, 0.45)),
            )
        )

    for _ in range(min(int(rng.poisson(1.0)), 4)):
        low, high = layout.bounds[1], layout.bounds[4]
        objects.append(
            _Clutter(
                _depth(rng),
                rng.uniform(low, high),
                (rng.uniform(0.3, 1.5), rng.uniform(0.3, 1.3)),
                _Surface(IGNORE_INDEX, _any_colour(rng), fine=0.06, mid=0.1),
            )
        )
    return objects


def _sample_scene(rng: np.random.Generator) -> _Scene:
    """Every random choice of a scene, none of which depends on the image size."""
    layout = _sample_layout(rng)
    road_grey = _grey(rng, 55, 150, 5)
    sidewalk_grey = _grey(rng, 80, 195, 10)
    sidewalk = _Surface(_SIDEWALK, sidewalk_grey, fine=rng.uniform(0.04, 0.1), coarse=0.08)
    other_sidewalk = (
        sidewalk
        if rng.random() < 0.8
        else _Surface(_SIDEWALK, _grey(rng, 80, 195, 10), fine=0.06, coarse=0.08)
    )
    lane_paint = (
        _grey(rng, 170, 245, 4)
        if rng.random() < 0.8
        else (float(rng.uniform(200, 240)), float(rng.uniform(160, 200)), 40.0)
    )
    shadow = None
    if rng.random() < 0.5:
        shadow = (
            rng.uniform(0, np.pi), rng.uniform(-0.3, 0.3), rng.uniform(0.05, 0.3),
            rng.uniform(0.01, 0.08), rng.uniform(0.25, 0.6),
        )
    return _Scene(
        layout=layout,
        sky=_Surface(
            _SKY, _sky_colour(rng), fine=0.01, coarse=rng.uniform(0.0, 0.12),
            gradient=rng.uniform(0.2, 0.6),
        ),
        road=_Surface(
            _ROAD, road_grey, fine=rng.uniform(0.06, 0.14), mid=rng.uniform(0.0, 0.05),
            coarse=rng.uniform(0.03, 0.15),
        ),
        lane_paint=_Surface(_ROAD, lane_paint, fine=0.05, coarse=0.1),
        sidewalks=(sidewalk, other_sidewalk),
        terrain=_Surface(
            _TERRAIN, _terrain_colour(rng), fine=0.12, mid=rng.uniform(0.1, 0.3), coarse=0.1
        ),
        skyline=_sample_skyline(rng, layout.vanish_x),
        objects=tuple(_sample_objects(rng, layout)),
        photometric=_Photometric(
            gain=rng.uniform(0.6, 1.35),
            white_balance=tuple(float(c) for c in rng.uniform(0.9, 1.1, 3)),
            gamma=rng.uniform(0.75, 1.35),
            shadow=shadow,
            blur=bool(rng.random() < 0.3),
            noise_sigma=rng.uniform(1.0, 8.0),
        ),
        coarse_lattice=rng.standard_normal(_COARSE_GRID, dtype=np.float32),
        mid_lattice=rng.standard_normal(_MID_GRID, dtype=np.float32),
    )


# --------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=32)
def _upsampling_matrix(size: int, lattice: int) -> np.ndarray:
    """(size, lattice) weights that interpolate a lattice spanning the axis with smoothstep, so
    ``rows @ grid @ cols.T`` is smooth value noise for the price of two small matrix products."""
    position = (np.arange(size) + 0.5) / size * (lattice - 1)
    below = np.minimum(position.astype(np.int64), lattice - 2)
    frac = position - below
    frac = frac * frac * (3 - 2 * frac)
    weights = np.zeros((size, lattice), dtype=np.float32)
    weights[np.arange(size), below] = 1 - frac
    weights[np.arange(size), below + 1] = frac
    weights.flags.writeable = False
    return weights


def _value_noise(lattice: np.ndarray, height: int, width: int) -> np.ndarray:
    rows = _upsampling_matrix(height, lattice.shape[0])
    cols = _upsampling_matrix(width, lattice.shape[1])
    return (rows @ lattice) @ cols.T


@dataclass(frozen=True)
class _TextureFields:
    """Full-image fields that every surface mixes by its own amplitudes (grain, blotches at two
    scales, a vertical gradient), so texture costs a few whole-image operations rather than a loop
    over surfaces. The window grid is the fifth field, made by :func:`_draw_street`."""

    fine: np.ndarray
    mid: np.ndarray
    coarse: np.ndarray
    gradient: np.ndarray  # (H, 1)


def _draw_street(canvas: _Canvas, scene: _Scene, fields: _TextureFields) -> np.ndarray:
    """Sky, skyline, and the ground bands; returns the window grid (H, W) of the buildings."""
    h, w = canvas.height, canvas.width
    layout = scene.layout
    horizon = layout.horizon * h
    columns = np.arange(w)
    top = np.full(w, horizon, dtype=np.float32)  # first non-sky row of each column
    skyline_id = np.zeros(w, dtype=np.uint8)
    ground_id = np.zeros(w, dtype=np.uint8)  # what a column shows beside the street
    window_index = np.zeros(w, dtype=np.intp)
    column_windows = np.zeros(w, dtype=bool)
    row_windows = [np.zeros(h, dtype=bool)]
    rows = np.arange(h)

    sky_id = canvas.add(scene.sky)
    terrain_id = canvas.add(scene.terrain)
    for segment in scene.skyline:
        x0, x1 = round(segment.x0 * w), round(segment.x1 * w)
        if x0 >= x1:
            continue
        span = slice(x0, x1)
        if segment.surface is None:
            skyline_id[span] = sky_id
            ground_id[span] = terrain_id
            continue
        surface_id = canvas.add(segment.surface)
        skyline_id[span] = ground_id[span] = surface_id
        rise = np.full(x1 - x0, segment.rise, dtype=np.float32)
        if segment.ragged:
            anchors = np.linspace(0, x1 - x0, len(segment.ragged))
            rise += np.interp(np.arange(x1 - x0), anchors, segment.ragged).astype(np.float32)
        top[span] = horizon - np.maximum(rise, 0.0) * h
        period_y, period_x = segment.window_period
        if period_y:
            duty_y, duty_x = segment.window_duty
            building_top = horizon - segment.rise * h
            phase_y = (rows - building_top) / (period_y * h)
            row_windows.append((phase_y > 0.5) & (phase_y % 1 < duty_y))
            window_index[span] = len(row_windows) - 1
            phase_x = (columns[span] - x0) / (period_x * w) + 0.25
            column_windows[span] = phase_x % 1 < duty_x

    above_skyline = rows[:, None] < top[None, :]
    canvas.surface_id[...] = np.where(above_skyline, np.uint8(sky_id), skyline_id[None, :])
    windows = np.stack(row_windows, axis=1)[:, window_index]
    windows &= column_windows[None, :]

    first_ground = min(int(np.ceil(horizon)), h - 1)
    ground_rows = np.arange(first_ground, h, dtype=np.float32) + 0.5
    t = np.maximum((ground_rows / h - layout.horizon) / (1 - layout.horizon), 1e-3)[:, None]
    lat = (((columns + np.float32(0.5)) / w - layout.vanish_x) / _PX_PER_M_X)[None, :] / t
    band = np.zeros(lat.shape, dtype=np.uint8)
    for bound in layout.bounds:
        band += lat > bound
    road_id = canvas.add(scene.road)
    sidewalk_ids = (canvas.add(scene.sidewalks[0]), canvas.add(scene.sidewalks[1]))
    keep = 255  # the column's own ground surface (facade, tree row) or open terrain
    band_ids = np.array(
        [
            terrain_id if layout.open_roadside[0] else keep,
            terrain_id,
            sidewalk_ids[0],
            road_id,
            sidewalk_ids[1],
            terrain_id,
            terrain_id if layout.open_roadside[1] else keep,
        ],
        dtype=np.uint8,
    )
    ground = band_ids[band]
    np.copyto(ground, np.broadcast_to(ground_id, ground.shape), where=ground == keep)

    sidewalk = (band == 2) | (band == 4)
    if layout.grass_threshold is not None:
        ground[sidewalk & (fields.mid[first_ground:] > layout.grass_threshold)] = terrain_id
    # Slab seams, in ground coordinates so they converge with the street.
    depth = 1.0 / t
    across = lat * np.float32(1 / layout.slab_metres)
    seams = across - np.floor(across) < 0.08  # x - floor(x): float % is several times slower
    seams |= (depth * (1.0 / (_PX_PER_M_X * layout.slab_metres))) % 1 < 0.08
    canvas.shade[first_ground:][sidewalk & seams & (ground != terrain_id)] = 0.8

    paint = np.zeros(lat.shape, dtype=bool)
    road = band == 3
    dashes = (depth * layout.dash_per_metre) % 1 < 0.5
    for centre in layout.lane_centres:
        paint |= (np.abs(lat - centre) < layout.lane_half_width) & dashes
    if layout.edge_lines:
        road_left, road_right = layout.road
        paint |= np.abs(lat - road_left - 0.3) < layout.lane_half_width
        paint |= np.abs(lat - road_right + 0.3) < layout.lane_half_width
    if layout.crossing is not None:
        near, far = layout.crossing
        rows_in = ((depth >= near) & (depth < far))[:, 0]
        stripes = (lat[rows_in] / 0.5) % 2 < 1
        paint[rows_in] |= stripes
    ground[paint & road] = canvas.add(scene.lane_paint)
    canvas.surface_id[first_ground:] = ground
    return windows


def _box_blur3(image: np.ndarray) -> np.ndarray:
    """3-tap box blur along H and W by shifted adds (borders repeat): a cheap defocus."""
    for axis in (0, 1):
        padded = np.pad(image, [(1, 1) if a == axis else (0, 0) for a in range(3)], mode="edge")
        n = image.shape[axis]
        image = (
            padded.take(range(0, n), axis=axis)
            + padded.take(range(1, n + 1), axis=axis)
            + padded.take(range(2, n + 2), axis=axis)
        ) * np.float32(1 / 3)
    return image


def _compose(
    canvas: _Canvas,
    fields: _TextureFields,
    windows: np.ndarray,
    photometric: _Photometric,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    h, w = canvas.height, canvas.width
    surfaces = canvas.surfaces
    ids = canvas.surface_id
    amplitude = np.array(
        [(s.fine, s.mid, s.coarse, s.gradient, s.windows) for s in surfaces], dtype=np.float32
    )
    brightness = canvas.shade
    texture = np.take(amplitude[:, 0], ids) * fields.fine
    texture += np.take(amplitude[:, 1], ids) * fields.mid
    texture += np.take(amplitude[:, 2], ids) * fields.coarse
    texture += np.take(amplitude[:, 3], ids) * fields.gradient
    texture += np.take(amplitude[:, 4], ids) * windows
    texture += 1.0
    brightness *= texture
    if photometric.shadow is not None:
        angle, offset, half_width, softness, depth = photometric.shadow
        y = (np.arange(h, dtype=np.float32)[:, None] + 0.5) / h - 0.5
        x = (np.arange(w, dtype=np.float32)[None, :] + 0.5) / w - 0.5
        distance = np.abs(x * np.float32(np.cos(angle)) + y * np.float32(np.sin(angle)) - offset)
        inside = np.clip((half_width - distance) / softness, 0, 1)
        brightness *= 1 - np.float32(depth) * inside

    colours = np.array([s.colour for s in surfaces], dtype=np.float32)
    colours *= np.float32(photometric.gain) * np.array(photometric.white_balance, dtype=np.float32)
    image = np.take(colours, ids, axis=0)
    image *= brightness[:, :, None]
    if photometric.blur:
        image = _box_blur3(image)
    # Gaussian sensor noise on luminance (one offset for R, G and B): a third of the cost of
    # independent channels, which matters at ~3 ms of a ~10 ms frame. The +0.5 rounds on truncation.
    noise = rng.standard_normal((h, w), dtype=np.float32)
    noise *= np.float32(photometric.noise_sigma)
    noise += 0.5
    image += noise[:, :, None]
    np.clip(image, 0, 255, out=image)
    gamma_curve = np.round(255 * (np.arange(256) / 255) ** photometric.gamma).astype(np.uint8)
    image_u8 = gamma_curve[image.astype(np.uint8)]

    labels = np.array([s.label for s in surfaces], dtype=np.uint8)
    return image_u8, np.take(labels, ids)


def render_scene(seed: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Render one street scene: image uint8 (H, W, 3) RGB and mask uint8 (H, W) holding class ids
    0..NUM_CLASSES-1 or IGNORE_INDEX. Same seed and size, same bytes."""
    seed = _check_seed(seed)
    height, width = _check_size(height, width)
    rng = np.random.default_rng(seed)
    scene = _sample_scene(rng)
    # Size-dependent draws only from here on, so the scene itself does not depend on the size.
    row_centres = (np.arange(height, dtype=np.float32) + 0.5) / height
    gradient = (row_centres - scene.layout.horizon)[:, None]
    fields = _TextureFields(
        fine=rng.standard_normal((height, width), dtype=np.float32),
        mid=_value_noise(scene.mid_lattice, height, width),
        coarse=_value_noise(scene.coarse_lattice, height, width),
        gradient=gradient,
    )
    canvas = _Canvas(height, width)
    windows = _draw_street(canvas, scene, fields)
    for scene_object in sorted(scene.objects, key=lambda o: o.t):
        scene_object.draw(canvas, scene.layout, fields)
    return _compose(canvas, fields, windows, scene.photometric, rng)
