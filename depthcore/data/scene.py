"""A procedural street for the synthetic drives: boxes, world-anchored textures, a trajectory.

World axes follow the camera convention: X right, Y down, Z forward along the road; the road
surface is Y = 0 and the camera rides 1.65 m above it (Y = -1.65). Everything is a pure function
of a seeded `numpy.random.Generator`, so a drive is reproducible from (seed, drive number).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CAMERA_HEIGHT = 1.65

# Texture ids (blocks of TextureBank.quads).
(
    T_ROAD,
    T_VERGE,
    T_SIDEWALK,
    T_KERB,
    T_WINDOWS,
    T_PANELS,
    T_BRICKS,
    T_CAR,
    T_GLASS,
    T_POLE,
    T_BARK,
    T_LEAVES,
    T_SKY,
) = range(13)

# Texels per metre at mip level 0 of a 256 texture (it repeats every 256 / density metres);
# a 512 texture doubles them (same pattern, finer detail).
_DENSITY = {
    T_ROAD: 24.0,
    T_VERGE: 16.0,
    T_SIDEWALK: 24.0,
    T_KERB: 32.0,
    T_WINDOWS: 20.0,
    T_PANELS: 20.0,
    T_BRICKS: 20.0,
    T_CAR: 32.0,
    T_GLASS: 32.0,
    T_POLE: 32.0,
    T_BARK: 32.0,
    T_LEAVES: 24.0,
    T_SKY: 0.5,  # sky "metres" are radians x 600 (render._sky): no parallax at infinity
}


@dataclass(frozen=True)
class TextureBank:
    """Luminance textures with mip pyramids, stored for one-gather bilinear lookups.

    Row starts[l] + t * S_l**2 + y * S_l + x of `quads` holds the 2x2 neighbourhood
    (y, x), (y, x+1), (y+1, x), (y+1, x+1) (wrapping around) of texel (y, x) of texture t at mip
    level l, where S_l = sizes[l]; values are float32 in [0, 1].
    """

    quads: np.ndarray  # (M, 4) float32
    sizes: np.ndarray  # (L,) S_l = S >> l
    starts: np.ndarray  # (L,) first row of level l
    density: np.ndarray  # (T,) texels per metre at level 0

    @property
    def n_levels(self) -> int:
        return len(self.sizes)


KERB_HEIGHT = 0.15
# Rows after the boxes in Scene.tex / albedo / offset: the analytic ground surfaces.
GROUND_ROAD, GROUND_SIDEWALK, GROUND_VERGE, GROUND_KERB = range(4)


@dataclass(frozen=True)
class Scene:
    """Axis-aligned boxes plus an analytic ground; per-surface texture, colour, texture offset.

    The ground is the road (Y = 0, |X| < half_width), kerbs (vertical, X = +-half_width) and a
    raised surface (Y = -KERB_HEIGHT) beyond them: a sidewalk `walk` metres wide, then verge.
    """

    boxes: np.ndarray  # (N, 6) x0, x1, y0, y1, z0, z1 (metres, world)
    tex: np.ndarray  # (N + 4,) texture id; rows N + GROUND_* are the ground surfaces
    albedo: np.ndarray  # (N + 4, 3) float32 colour
    offset: np.ndarray  # (N + 4, 2) float32 texture offset in metres
    half_width: float  # road half-width
    walk: tuple[float, float]  # sidewalk width on the left (X < 0) and right side

    @property
    def n_boxes(self) -> int:
        return len(self.boxes)


@dataclass(frozen=True)
class Trajectory:
    """Camera-to-world rotations (M, 3, 3) and camera centres (M, 3) of image_02."""

    rotation: np.ndarray
    centre: np.ndarray

    def pose(self, i: int) -> np.ndarray:
        """4x4 camera-to-world transform of frame i."""
        out = np.eye(4)
        out[:3, :3] = self.rotation[i]
        out[:3, 3] = self.centre[i]
        return out


# ----------------------------------------------------------------------------------------------
# Textures (periodic, so world-anchored lookups tile seamlessly)


def _noise(rng: np.random.Generator, size: int, beta: float) -> np.ndarray:
    """Periodic 1/f^beta noise with zero mean and unit std, (size, size) float64."""
    white = rng.standard_normal((size, size))
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    freq = np.hypot(fx, fy)
    freq[0, 0] = 1.0
    spectrum = np.fft.rfft2(white) / freq**beta
    spectrum[0, 0] = 0.0
    out = np.fft.irfft2(spectrum, s=(size, size))
    return (out - out.mean()) / out.std()


def _grid_lines(size: int, pitch: int, width: int, axis: int) -> np.ndarray:
    """1 on lines `width` texels wide every `pitch` texels across `axis`, else 0."""
    coord = np.arange(size) % pitch < width
    return np.broadcast_to(coord[:, None] if axis == 0 else coord[None, :], (size, size))


def _cells(rng: np.random.Generator, size: int, ph: int, pw: int, stagger: bool) -> np.ndarray:
    """A random value per (ph x pw) cell; odd rows shifted by half a cell when staggered."""
    rows = np.arange(size)[:, None] // ph
    shift = (rows % 2) * (pw // 2) if stagger else 0
    cols = (np.arange(size)[None, :] + shift) // pw % (size // pw)
    values = rng.uniform(-1, 1, (size // ph, size // pw))
    return values[rows % (size // ph), cols]


# Pattern sizes below are in texels of a 256 texture and scale with k = size // 256, so a
# pattern keeps its size in metres whatever the texture resolution.


def _facade_windows(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    wall = 0.55 + 0.12 * _noise(rng, n, 2.0) + 0.05 * _noise(rng, n, 0.3)
    wall -= 0.06 * _grid_lines(n, 4 * k, 1, 0)  # courses every 0.2 m
    y, x = np.mgrid[0:n, 0:n] % (64 * k)
    window = (x > 18 * k) & (x < 46 * k) & (y > 15 * k) & (y < 47 * k)
    frame = (x > 16 * k) & (x < 48 * k) & (y > 13 * k) & (y < 49 * k) & ~window
    lit = _cells(rng, n, 64 * k, 64 * k, False) > 0.6
    glass = 0.18 + 0.1 * _noise(rng, n, 1.5) + 0.25 * lit
    out = np.where(window, glass, wall)
    return np.where(frame, 0.85 + 0.03 * _noise(rng, n, 0.5), out)


def _facade_panels(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    panels = 0.5 + 0.15 * _cells(rng, n, 32 * k, 16 * k, False) + 0.07 * _noise(rng, n, 0.8)
    seams = _grid_lines(n, 16 * k, k, 1) | _grid_lines(n, 32 * k, k + 1, 0)
    return np.where(seams, 0.35, panels) + 0.1 * _noise(rng, n, 2.0)


def _facade_bricks(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    bricks = 0.5 + 0.12 * _cells(rng, n, 4 * k, 8 * k, True) + 0.06 * _noise(rng, n, 0.5)
    rows, cols = np.arange(n)[:, None], np.arange(n)[None, :]
    mortar = _grid_lines(n, 4 * k, 1, 0) | ((cols + (rows // (4 * k) % 2) * 4 * k) % (8 * k) == 0)
    return np.where(mortar, 0.65, bricks) + 0.1 * _noise(rng, n, 2.0)


def _paving(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    joints = _grid_lines(n, 16 * k, k, 0) | _grid_lines(n, 16 * k, k, 1)
    slabs = 0.62 + 0.1 * _cells(rng, n, 16 * k, 16 * k, False) + 0.05 * _noise(rng, n, 0.5)
    return np.where(joints, 0.45, slabs) + 0.1 * _noise(rng, n, 2.0)


def _car_body(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    # Panels with seams every 0.75 m, a dark trim band, and dirt: car sides fill much of the
    # image near the kerb, so they must not be flat colour.
    panels = 0.6 + 0.08 * _cells(rng, n, 64 * k, 24 * k, False) + 0.08 * _noise(rng, n, 1.0)
    trim = (np.arange(n) % (64 * k) < 6 * k)[:, None]
    seams = _grid_lines(n, 24 * k, k, 1)
    return np.where(seams, 0.25, np.where(trim, 0.3, panels)) + 0.05 * _noise(rng, n, 0.4)


def _texture_images(rng: np.random.Generator, n: int) -> dict[int, np.ndarray]:
    k = n // 256
    # Repair patches and stains at 0.5-3 m keep the road textured even where the mip-mapped
    # asphalt grain blurs away (grazing angles, tens of metres ahead).
    patches = np.where(_noise(rng, n, 2.0) > 0.9, -0.14, 0.0) + 0.1 * np.tanh(_noise(rng, n, 1.6))
    bark_streaks = 0.08 * np.cos(np.arange(n) / (1.5 * k))[None, :]
    return {
        T_ROAD: 0.45 + 0.08 * _noise(rng, n, 1.0) + 0.06 * _noise(rng, n, 0.3) + patches,
        T_VERGE: 0.45 + 0.1 * _noise(rng, n, 0.8) + 0.12 * _noise(rng, n, 2.0),
        T_SIDEWALK: _paving(rng, n, k),
        T_KERB: 0.7 + 0.1 * _noise(rng, n, 1.5) - 0.12 * _grid_lines(n, 32 * k, k + 1, 1),
        T_WINDOWS: _facade_windows(rng, n, k),
        T_PANELS: _facade_panels(rng, n, k),
        T_BRICKS: _facade_bricks(rng, n, k),
        T_CAR: _car_body(rng, n, k),
        T_GLASS: 0.2 + 0.1 * _noise(rng, n, 1.5) + 0.5 * _grid_lines(n, 40 * k, 3 * k, 1),
        T_POLE: 0.55 + 0.1 * _noise(rng, n, 0.8),
        T_BARK: 0.35 + 0.1 * _noise(rng, n, 0.5) + bark_streaks,
        T_LEAVES: 0.42 + 0.2 * _noise(rng, n, 0.4),
        T_SKY: 0.5 + 0.5 * np.tanh(_noise(rng, n, 1.6) - 0.6),
    }


def _mip_pyramid(base: np.ndarray, levels: int) -> tuple[np.ndarray, ...]:
    out = [base]
    for _ in range(levels - 1):
        prev = out[-1]
        out.append(
            0.25
            * (prev[:, ::2, ::2] + prev[:, 1::2, ::2] + prev[:, ::2, 1::2] + prev[:, 1::2, 1::2])
        )
    return tuple(np.ascontiguousarray(level, dtype=np.float32) for level in out)


def _quads(level: np.ndarray) -> np.ndarray:
    right = np.roll(level, -1, axis=2)
    quads = (level, right, np.roll(level, -1, axis=1), np.roll(right, -1, axis=1))
    return np.stack(quads, axis=-1).reshape(-1, 4)


def texture_size(image_width: int) -> int:
    """512 texels for KITTI-like resolutions, 256 for small test images (5x cheaper to make)."""
    return 512 if image_width >= 640 else 256


def make_textures(seed: int, size: int) -> TextureBank:
    """All textures of one synthetic dataset (shared by its drives); size: 256 or 512."""
    rng = np.random.default_rng([seed, 7])
    images = _texture_images(rng, size)
    base = np.stack([np.clip(images[i], 0.02, 1.0) for i in range(len(images))])
    levels = _mip_pyramid(base, int(np.log2(size)) + 1)
    return TextureBank(
        quads=np.concatenate([_quads(lv) for lv in levels]),
        sizes=np.array([lv.shape[1] for lv in levels], dtype=np.int32),
        starts=np.cumsum([0] + [lv.size for lv in levels[:-1]]).astype(np.int32),
        density=np.array([_DENSITY[i] * size / 256 for i in range(len(images))], dtype=np.float32),
    )


# ----------------------------------------------------------------------------------------------
# Geometry


def _row(x0: float, x1: float, y0: float, y1: float, z0: float, z1: float) -> list[float]:
    return [min(x0, x1), max(x0, x1), min(y0, y1), max(y0, y1), min(z0, z1), max(z0, z1)]


def _buildings(rng: np.random.Generator, side: int, hw: float, z0: float, z1: float) -> list:
    out = []
    z = z0
    while z < z1:
        length = rng.uniform(8.0, 26.0)
        setback = rng.uniform(max(6.0, hw + 3.5), 15.0)
        height = rng.uniform(4.0, 22.0)
        depth = rng.uniform(8.0, 16.0)
        tex = int(rng.choice([T_WINDOWS, T_PANELS, T_BRICKS]))
        box = _row(side * setback, side * (setback + depth), -height, 0.0, z, z + length)
        out.append((box, tex, rng.uniform(0.45, 1.0, 3)))
        z += length + (rng.uniform(2.0, 10.0) if rng.random() < 0.35 else 0.0)
    return out


def _cars(rng: np.random.Generator, side: int, hw: float, z0: float, z1: float) -> list:
    out = []
    z = z0 + rng.uniform(0, 8)
    while z < z1:
        if rng.random() < 0.6:
            length, width = rng.uniform(3.8, 4.8), rng.uniform(1.65, 1.9)
            height = rng.uniform(1.35, 1.6)
            xc = side * (hw - 0.3 - width / 2)
            colour = rng.uniform(0.1, 1.0, 3)
            body = _row(xc - width / 2, xc + width / 2, -1.0, -0.15, z, z + length)
            zc = z + length * rng.uniform(0.2, 0.3)
            cabin = _row(xc - 0.45 * width, xc + 0.45 * width, -height, -1.0, zc, zc + 0.5 * length)
            out += [(body, T_CAR, colour), (cabin, T_GLASS, 0.6 + 0.4 * colour)]
            z += length
        z += rng.uniform(1.0, 9.0)
    return out


def _street_furniture(rng: np.random.Generator, side: int, hw: float, z0: float, z1: float) -> list:
    out = []
    z = z0 + rng.uniform(0, 10)
    while z < z1:
        x = side * (hw + rng.uniform(0.5, 1.5))
        if rng.random() < 0.5:
            height = rng.uniform(4.0, 7.0)
            out.append(
                (
                    _row(x - 0.07, x + 0.07, -height, 0, z, z + 0.14),
                    T_POLE,
                    rng.uniform(0.5, 0.9, 3),
                )
            )
        else:
            trunk = rng.uniform(2.5, 3.5)
            out.append(
                (
                    _row(x - 0.15, x + 0.15, -trunk, 0, z, z + 0.3),
                    T_BARK,
                    np.array([0.6, 0.45, 0.3]),
                )
            )
            r = rng.uniform(1.0, 1.6)
            crown = _row(x - r, x + r, -trunk - 2 * r, -trunk, z + 0.15 - r, z + 0.15 + r)
            out.append((crown, T_LEAVES, np.array([0.35, 0.65, 0.25]) * rng.uniform(0.8, 1.2)))
        z += rng.uniform(8.0, 25.0)
    return out


def make_scene(rng: np.random.Generator, length: float) -> Scene:
    """A straight street from z = -40 m to `length` + 220 m (far past the 80 m evaluation cap)."""
    hw = float(rng.uniform(3.8, 5.0))
    walk = (float(rng.uniform(2.0, 3.5)), float(rng.uniform(2.0, 3.5)))
    z0, z1 = -40.0, length + 220.0
    items = []
    for side in (-1, 1):
        items += _buildings(rng, side, hw, z0, z1)
        items += _cars(rng, side, hw, z0, z1)
        items += _street_furniture(rng, side, hw, z0, z1)
    boxes = np.array([box for box, _, _ in items], dtype=np.float64)
    tex = np.array([t for _, t, _ in items] + [T_ROAD, T_SIDEWALK, T_VERGE, T_KERB])
    ground = [(0.9, 0.9, 0.92), (0.85, 0.83, 0.8), (0.55, 0.7, 0.35), (0.9, 0.88, 0.85)]
    albedo = [c for _, _, c in items] + [np.array(c) for c in ground]
    return Scene(
        boxes=boxes,
        tex=tex.astype(np.int64),
        albedo=np.array(albedo, dtype=np.float32),
        offset=rng.uniform(0, 50.0, (len(tex), 2)).astype(np.float32),
        half_width=hw,
        walk=walk,
    )


# ----------------------------------------------------------------------------------------------
# Trajectory


def rotation_ypr(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Camera-to-world rotation: yaw about Y (down), then pitch about X, then roll about Z."""
    cy, sy, cp, sp, cr, sr = (
        np.cos(yaw),
        np.sin(yaw),
        np.cos(pitch),
        np.sin(pitch),
        np.cos(roll),
        np.sin(roll),
    )
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return ry @ rx @ rz


def make_trajectory(rng: np.random.Generator, frames: int) -> Trajectory:
    """About 1 m per frame along the road, with a car's smooth yaw (a steered yaw rate that
    keeps it in its lane) and small pitch/roll jitter from the suspension."""
    deg = np.pi / 180
    pos = np.array([rng.uniform(-0.5, 0.5), -CAMERA_HEIGHT, 0.0])
    yaw, yaw_rate = rng.normal(0, 0.5) * deg, 0.0
    phase = rng.uniform(0, 2 * np.pi)
    rotations, centres = [], []
    for i in range(frames):
        pitch, roll = rng.normal(0, 0.1) * deg, rng.normal(0, 0.05) * deg
        centre = pos + np.array([0.0, rng.normal(0, 0.005), 0.0])
        rotations.append(rotation_ypr(yaw, pitch, roll))
        centres.append(centre)
        speed = 1.0 + 0.15 * np.sin(phase + 0.15 * i) + rng.normal(0, 0.02)
        pos = pos + speed * np.array([np.sin(yaw), 0.0, np.cos(yaw)])
        steer = -0.02 * deg * pos[0] - 0.1 * yaw  # back towards the lane centre, heading 0
        yaw_rate = 0.8 * yaw_rate + steer + rng.normal(0, 0.05) * deg
        yaw += yaw_rate
    return Trajectory(rotation=np.array(rotations), centre=np.array(centres))
