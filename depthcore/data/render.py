"""Vectorised numpy ray casting of a `Scene`: camera images, exact depth, velodyne scans.

Rays are organised as a 2-D grid (image rows x columns, or lidar beams x azimuths). The ground
(road, kerbs, raised sidewalk and verge) is intersected analytically for every ray. Of each box,
only the (at most 3) faces that face the ray origin are tested, each against the sub-grid its
projection can cover (a bound from its corners, near-plane clipped): large faces one by one,
front to back, skipping those hidden behind what is already drawn; small ones all at once in one
vectorised batch. A frame costs about two plane tests per ray instead of one per ray and box.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from depthcore.data.scene import (
    GROUND_KERB,
    GROUND_ROAD,
    GROUND_SIDEWALK,
    GROUND_VERGE,
    KERB_HEIGHT,
    T_SKY,
    Scene,
    TextureBank,
)

FAR_CLIP = 250.0  # camera z beyond which the world is sky (16-bit depth PNGs hold < 256 m)
LIDAR_RANGE = 120.0
LIDAR_ELEVATION_DEG = (2.0, -24.9)
LIDAR_BEAMS = 64
# Camera (rectified cam 0 = cam 2) from Velodyne: x_fwd -> z, y_left -> -x, z_up -> -y.
VELO_TO_CAM_R = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
VELO_TO_CAM_T = np.array([0.0, -0.08, -0.27])  # the Velodyne sits 0.27 m behind, 0.08 m above

_CORNERS = np.array([[i & 1, (i >> 1) & 1, (i >> 2) & 1] for i in range(8)])
_OTHER_AXES = ((1, 2), (0, 2), (0, 1))
_CYCLE = ((0, 0), (1, 0), (1, 1), (0, 1))
# Corner indices of the face on axis a, side s (0: lo, 1: hi), in cyclic order around the face.
_FACE_CORNERS = np.array(
    [
        [
            [s << a | p << _OTHER_AXES[a][0] | q << _OTHER_AXES[a][1] for p, q in _CYCLE]
            for s in (0, 1)
        ]
        for a in range(3)
    ]
)
_LEVEL_SCALE = np.ldexp(np.float32(1.0), -np.arange(32)).astype(np.float32)  # 2 ** -level
# Constant shading per face axis and side (1: the ray travels towards -axis), so a surface keeps
# its brightness from every viewpoint, as the photometric loss assumes.
_FACE_SHADE = np.array([[0.8, 0.7], [1.0, 0.55], [0.9, 0.65]], dtype=np.float32)


@dataclass(frozen=True)
class Hits:
    """Nearest hit per ray: t (inf = none), surface row (box, or N + GROUND_*), face axis."""

    t: np.ndarray
    box: np.ndarray
    axis: np.ndarray


# ----------------------------------------------------------------------------------------------
# Casting: ground plane analytically, then every box face that faces the ray origin


def _first(t: np.ndarray, ok: np.ndarray, best: Hits, box: int, axis: int) -> None:
    """Keep (t, box, axis) where `ok` and nearer than `best`."""
    closer = ok & (t > 0) & (t < best.t)
    np.copyto(best.t, t, where=closer)
    np.copyto(best.box, box, where=closer)
    np.copyto(best.axis, axis, where=closer)


def _ground(scene: Scene, origin: np.ndarray, dirs: np.ndarray, t_max: float) -> Hits:
    """Analytic road, kerbs and raised sidewalk/verge; the origin must be above the road."""
    n, hw = scene.n_boxes, np.float32(scene.half_width)
    o = origin.astype(np.float32)
    dx, dy = dirs[0], dirs[1]
    best = Hits(
        np.full(dy.shape, np.inf, np.float32),
        np.zeros(dy.shape, np.int32),
        np.ones(dy.shape, np.int8),
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        t = -o[1] / dy
        _first(t, np.abs(o[0] + t * dx) < hw, best, n + GROUND_ROAD, 1)
        t = (np.float32(-KERB_HEIGHT) - o[1]) / dy
        x = np.abs(o[0] + t * dx)
        walk = np.where(o[0] + t * dx < 0, np.float32(scene.walk[0]), np.float32(scene.walk[1]))
        _first(t, (x >= hw) & (x < hw + walk), best, n + GROUND_SIDEWALK, 1)
        _first(t, x >= hw + walk, best, n + GROUND_VERGE, 1)
        t = (np.copysign(hw, dx) - o[0]) / dx
        y = o[1] + t * dy
        _first(t, (y >= -KERB_HEIGHT) & (y <= 0), best, n + GROUND_KERB, 0)
    best.t[best.t > t_max] = np.inf
    return best


def facing_faces(boxes: np.ndarray, origin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which faces of each box face `origin`: (N, 3) bool per axis, (N, 3) side 0 (lo) / 1 (hi)."""
    lo, hi = boxes[:, 0::2], boxes[:, 1::2]
    below, above = origin < lo, origin > hi
    return below | above, above.astype(np.int64)


def face_points(boxes: np.ndarray, side: np.ndarray) -> np.ndarray:
    """(N, 3, 4, 3) corners of the face on each axis (on `side`), in cyclic order."""
    corners = _box_points(boxes)
    index = _FACE_CORNERS[np.arange(3)[None, :], side]  # (N, 3, 4)
    return np.take_along_axis(corners[:, None], index[..., None], axis=2)


def cast(
    scene: Scene,
    origin: np.ndarray,
    dirs: np.ndarray,
    rects: np.ndarray,
    side: np.ndarray,
    t_max: float,
    t_near: np.ndarray | None = None,
) -> Hits:
    """Nearest surface along each ray of a grid.

    Args:
        origin: (3,) ray origin (world).
        dirs: (3, R, C) float32 ray directions; t is measured in units of |dir|.
        rects: (N, 3, 4) row0, row1, col0, col1 per box face (empty when it cannot be hit).
        side: (N, 3) which face per axis faces the origin (0: lo, 1: hi), from `facing_faces`.
        t_near: (N, 3) a lower bound of t on each face: large faces are drawn front to back
            and one hidden behind everything already drawn in its rectangle is skipped.
    """
    hits = _ground(scene, origin, dirs, t_max)
    inv = 1.0 / np.where(np.abs(dirs) < 1e-12, np.float32(1e-12), dirs)
    area = (rects[..., 1] - rects[..., 0]).clip(0) * (rects[..., 3] - rects[..., 2]).clip(0)
    small = np.argwhere((area > 0) & (area <= _SMALL_FACE))
    large = np.argwhere(area > _SMALL_FACE)
    if t_near is not None:
        large = large[np.argsort(t_near[large[:, 0], large[:, 1]], kind="stable")]
    faces = _Faces(scene.boxes, side, origin.astype(np.float32))
    for b, a in large:
        _cast_face(faces, b, a, rects[b, a], dirs, inv, hits, t_near)
    _cast_small_faces(faces, small, rects, dirs, inv, hits)
    return hits


_SMALL_FACE = 1024  # faces covering at most this many rays are tested in one vectorised batch


@dataclass(frozen=True)
class _Faces:
    boxes: np.ndarray
    side: np.ndarray
    origin: np.ndarray  # float32

    def plane(self, b: int | np.ndarray, a: int | np.ndarray) -> np.ndarray | np.float32:
        # Scalar indices (one large face) give a scalar; index arrays (small faces) an array.
        return self.boxes[b, 2 * a + self.side[b, a]].astype(np.float32)


def _cast_face(
    faces: _Faces,
    b: int,
    a: int,
    rect: np.ndarray,
    dirs: np.ndarray,
    inv: np.ndarray,
    hits: Hits,
    t_near: np.ndarray | None,
) -> None:
    r0, r1, c0, c1 = rect
    zbuf = hits.t[r0:r1, c0:c1]
    if t_near is not None and zbuf.max() < t_near[b, a]:
        return  # hidden behind what is already drawn
    o = faces.origin
    t = (faces.plane(b, a) - o[a]) * inv[a, r0:r1, c0:c1]
    ok = (t > 0) & (t < zbuf)
    for other in _OTHER_AXES[a]:
        p = o[other] + t * dirs[other, r0:r1, c0:c1]
        ok &= (p >= faces.boxes[b, 2 * other]) & (p <= faces.boxes[b, 2 * other + 1])
    np.copyto(zbuf, t, where=ok)
    np.copyto(hits.box[r0:r1, c0:c1], b, where=ok)
    np.copyto(hits.axis[r0:r1, c0:c1], a, where=ok)


def _cast_small_faces(
    faces: _Faces,
    todo: np.ndarray,
    rects: np.ndarray,
    dirs: np.ndarray,
    inv: np.ndarray,
    hits: Hits,
) -> None:
    """Test many small faces at once: one flat list of (face, ray) pairs, then a per-ray min."""
    if not len(todo):
        return
    fb, fa = todo[:, 0], todo[:, 1]
    r0, r1, c0, c1 = rects[fb, fa].T
    width = c1 - c0
    sizes = (r1 - r0) * width
    f = np.repeat(np.arange(len(todo)), sizes)
    k = np.arange(f.size) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    w = np.take(width, f)
    ray = (np.take(r0, f) + k // w) * dirs.shape[2] + np.take(c0, f) + k % w
    n_rays = dirs.shape[1] * dirs.shape[2]
    flat_d, flat_inv, o = dirs.reshape(-1), inv.reshape(-1), faces.origin
    t = np.take(faces.plane(fb, fa) - o[fa], f) * np.take(flat_inv, np.take(fa, f) * n_rays + ray)
    ok = (t > 0) & (t < np.take(hits.t.reshape(-1), ray))
    for shift in (1, 2):
        other = (fa + shift) % 3
        p = np.take(o[other], f) + t * np.take(flat_d, np.take(other, f) * n_rays + ray)
        lo = faces.boxes[fb, 2 * other].astype(np.float32)
        hi = faces.boxes[fb, 2 * other + 1].astype(np.float32)
        ok &= (p >= np.take(lo, f)) & (p <= np.take(hi, f))
    sel = np.flatnonzero(ok)
    sel = sel[np.lexsort((t[sel], ray[sel]))]
    sel = sel[np.r_[True, ray[sel][1:] != ray[sel][:-1]]]  # the nearest hit per ray
    hits.t.reshape(-1)[ray[sel]] = t[sel]
    hits.box.reshape(-1)[ray[sel]] = fb[f[sel]]
    hits.axis.reshape(-1)[ray[sel]] = fa[f[sel]]


def _box_points(boxes: np.ndarray) -> np.ndarray:
    """(N, 8, 3) corners of (N, 6) boxes; corner i takes hi on axis k when bit k of i is set."""
    lo, hi = boxes[:, 0::2], boxes[:, 1::2]
    return lo[:, None, :] + _CORNERS[None] * (hi - lo)[:, None, :]


def camera_rects(
    boxes: np.ndarray, rot: np.ndarray, centre: np.ndarray, k: np.ndarray, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel rectangles (N, 3, 4) covering each facing face's projection, near-plane clipped.

    Args:
        rot: (3, 3) camera-to-world rotation; centre: (3,) camera centre; k: (3, 3) intrinsics.
        size: (width, height).
    Returns the rectangles, the facing side per axis (N, 3) and each face's nearest z (N, 3).
    """
    near = 0.05
    faces, side = facing_faces(boxes, centre)
    cam = (face_points(boxes, side) - centre) @ rot  # (N, 3, 4, 3) camera coordinates
    a, b = cam, np.roll(cam, -1, axis=2)  # the 4 edges of each face
    za, zb = a[..., 2:], b[..., 2:]
    with np.errstate(divide="ignore", invalid="ignore"):
        cut = a + (near - za) / (zb - za) * (b - a)
    crossing = ((za - near) * (zb - near) < 0)[..., 0]
    pts = np.concatenate([cam, cut], axis=2)
    valid = np.concatenate([cam[..., 2] >= near, crossing], axis=2) & faces[..., None]
    z = np.where(valid, np.maximum(pts[..., 2], near), 1.0)
    u = k[0, 0] * pts[..., 0] / z + k[0, 2]
    v = k[1, 1] * pts[..., 1] / z + k[1, 2]
    t_near = np.where(valid, pts[..., 2], np.inf).min(axis=-1)  # the z-depth is t for camera rays
    return _bounds(u, v, valid, size), side, t_near


def _bounds(u: np.ndarray, v: np.ndarray, valid: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    width, height = size
    big = 1e9
    c0 = np.floor(np.where(valid, u, big).min(axis=-1)) - 1
    c1 = np.ceil(np.where(valid, u, -big).max(axis=-1)) + 2
    r0 = np.floor(np.where(valid, v, big).min(axis=-1)) - 1
    r1 = np.ceil(np.where(valid, v, -big).max(axis=-1)) + 2
    parts = (r0.clip(0, height), r1.clip(0, height), c0.clip(0, width), c1.clip(0, width))
    return np.stack(parts, axis=-1).astype(np.int64)


# ----------------------------------------------------------------------------------------------
# Camera images


def camera_rays(rot: np.ndarray, k: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(3, H, W) float32 world ray directions with unit camera z, so t is the z-depth.

    Pixel (row i, column j) looks through (j, i) in the 0-based pixel-centre convention of
    Monodepth2's back-projection (an integer pixel grid with K scaled by W and H).
    """
    width, height = size
    u = ((np.arange(width) - k[0, 2]) / k[0, 0]).astype(np.float32)
    v = ((np.arange(height) - k[1, 2]) / k[1, 1]).astype(np.float32)
    r = rot.astype(np.float32)[:, :, None, None]
    return r[:, 0] * u[None, None, :] + r[:, 1] * v[None, :, None] + r[:, 2]


def _bilinear(
    bank: TextureBank, tid: np.ndarray, u: np.ndarray, v: np.ndarray, level: np.ndarray
) -> np.ndarray:
    """Wrap-around bilinear lookups at per-pixel integer mip `level`; u, v in level-0 texels."""
    n = np.take(bank.sizes, level)
    scale = np.take(_LEVEL_SCALE, level)
    x, y = u * scale - 0.5, v * scale - 0.5
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = x - x0, y - y0
    mask = n - 1  # sizes are powers of two
    row = np.take(bank.starts, level) + tid * n * n + (y0.astype(np.int32) & mask) * n
    q = np.take(bank.quads, row + (x0.astype(np.int32) & mask), axis=0)
    top = q[:, 0] + (q[:, 1] - q[:, 0]) * fx
    bottom = q[:, 2] + (q[:, 3] - q[:, 2]) * fx
    return top + (bottom - top) * fy


def sample_texture(
    bank: TextureBank, tid: np.ndarray, u_m: np.ndarray, v_m: np.ndarray, footprint: np.ndarray
) -> np.ndarray:
    """Trilinear (mip-mapped) luminance at world texture coordinates (metres), float32, 1-D.

    Args:
        footprint: the size of one pixel on the surface (metres); it picks the mip level.
    """
    dens = np.take(bank.density, tid)
    level = np.log2(np.maximum(footprint * dens, np.float32(1e-6)))
    level = np.clip(level, 0, bank.n_levels - 1.001).astype(np.float32)
    l0 = level.astype(np.int32)
    frac = level - l0.astype(np.float32)
    u, v = (u_m * dens).astype(np.float32), (v_m * dens).astype(np.float32)
    a = _bilinear(bank, tid, u, v, l0)
    b = _bilinear(bank, tid, u, v, l0 + 1)
    return a + (b - a) * frac


def _markings(
    x: np.ndarray, z: np.ndarray, fp_x: np.ndarray, fp_z: np.ndarray, hw: float
) -> np.ndarray:
    """Anti-aliased coverage of lane markings on the road: solid edge lines, dashed centre."""

    def line(center: float, width: float) -> np.ndarray:
        return np.clip(
            (np.float32(width / 2) - np.abs(x - np.float32(center))) / fp_x + np.float32(0.5), 0, 1
        )

    dash = np.clip(
        (np.float32(1.5) - np.abs(np.mod(z, np.float32(9.0)) - np.float32(1.5))) / fp_z
        + np.float32(0.5),
        0,
        1,
    )
    edges = np.maximum(line(hw - 0.3, 0.15), line(-hw + 0.3, 0.15))
    return np.maximum(edges, line(0.0, 0.12) * dash)


def _sky(bank: TextureBank, dirs: np.ndarray) -> np.ndarray:
    """Sky colour from the direction alone (it is at infinity: no parallax), (N, 3)."""
    unit = dirs / np.linalg.norm(dirs, axis=-1, keepdims=True)
    elev = np.arcsin(np.clip(-unit[:, 1], -1, 1))
    azim = np.arctan2(unit[:, 0], unit[:, 2])
    tid = np.full(len(dirs), T_SKY, dtype=np.int32)
    clouds = sample_texture(bank, tid, azim * 600.0, elev * 1200.0, np.full(len(dirs), 0.5))
    mix = np.clip(elev / 0.35, 0, 1)[:, None]
    base = np.array([0.75, 0.83, 0.92]) * (1 - mix) + np.array([0.35, 0.55, 0.88]) * mix
    return (base * (1 - 0.6 * clouds[:, None]) + 0.6 * clouds[:, None]).astype(np.float32)


def _surface(scene: Scene, points: np.ndarray, box: np.ndarray, axis: np.ndarray) -> tuple:
    """Texture coordinates in metres on the surface hit (world-anchored, plus a per-box offset)."""
    px, py, pz = points
    u = np.where(axis == 0, pz, px) + np.take(scene.offset[:, 0], box)
    v = np.where(axis == 1, pz, py) + np.take(scene.offset[:, 1], box)
    return u, v


def shade(
    scene: Scene, bank: TextureBank, origin: np.ndarray, dirs: np.ndarray, hits: Hits, focal: float
) -> np.ndarray:
    """Linear RGB in [0, 1], (H, W, 3) float32, for camera rays (3, H, W) with unit camera z."""
    found = np.isfinite(hits.t)
    t = np.where(found, hits.t, np.float32(1))  # sky: any finite value, overwritten
    points = origin.astype(np.float32)[:, None, None] + t * dirs  # (3, H, W)
    axis = hits.axis.astype(np.int64)
    box = hits.box
    u, v = _surface(scene, points, box, axis)
    d_axis = np.take_along_axis(dirs, axis[None], axis=0)[0]
    norm = np.sqrt((dirs * dirs).sum(axis=0))
    fp_min = t * norm / np.float32(focal)
    fp_max = fp_min * norm / np.maximum(np.abs(d_axis), np.float32(0.05) * norm)
    # Mip footprint between the across- and along-view pixel sizes (at most 1.5 levels sharper
    # than the isotropic choice): grazing surfaces keep texture, with little aliasing.
    fp = np.maximum(np.sqrt(fp_min * fp_max), fp_max * np.float32(0.35))
    tid = np.take(scene.tex, box.ravel()).astype(np.int32)
    lum = sample_texture(bank, tid, u.ravel(), v.ravel(), fp.ravel())
    lum = lum.reshape(t.shape)
    marks = _markings(points[0], points[2], fp_min, fp_max, scene.half_width)
    road = box == scene.n_boxes + GROUND_ROAD
    lum += (np.float32(0.92) - lum) * np.where(road, marks, np.float32(0))
    lum *= np.take(_FACE_SHADE.ravel(), 2 * axis + (d_axis < 0))
    haze = np.clip((t * norm - np.float32(120.0)) / np.float32(130.0), 0, 1)
    out = np.empty((*t.shape, 3), dtype=np.float32)
    for c, fog in enumerate((0.75, 0.8, 0.86)):
        colour = np.take(scene.albedo[:, c], box) * lum
        out[..., c] = colour + (np.float32(fog) - colour) * haze
    out[~found] = _sky(bank, dirs[:, ~found].T)
    return out


def render_camera(
    scene: Scene,
    bank: TextureBank,
    rot: np.ndarray,
    centre: np.ndarray,
    k: np.ndarray,
    size: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Linear RGB (H, W, 3) float32 and z-depth (H, W) float32 (0 = sky) of one camera."""
    dirs = camera_rays(rot, k, size)
    rects, side, t_near = camera_rects(scene.boxes, rot, centre, k, size)
    hits = cast(scene, centre, dirs, rects, side, FAR_CLIP, t_near)
    depth = np.where(np.isfinite(hits.t), hits.t, 0).astype(np.float32)
    return shade(scene, bank, centre, dirs, hits, float(k[0, 0])), depth


# ----------------------------------------------------------------------------------------------
# Velodyne


def lidar_dirs(azimuth_step_deg: float, half_fov_deg: float = 50.0) -> np.ndarray:
    """(3, 64, A) unit ray directions in the Velodyne frame (x forward, y left, z up)."""
    elev = np.deg2rad(np.linspace(*LIDAR_ELEVATION_DEG, LIDAR_BEAMS))
    n_az = round(2 * half_fov_deg / azimuth_step_deg) + 1
    azim = np.deg2rad(np.linspace(-half_fov_deg, half_fov_deg, n_az))
    ce, se = np.cos(elev)[:, None], np.sin(elev)[:, None]
    return np.stack(np.broadcast_arrays(ce * np.cos(azim), ce * np.sin(azim), se))


def lidar_rects(
    boxes: np.ndarray, rot_wl: np.ndarray, origin: np.ndarray, dirs_l: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Beam x azimuth rectangles (N, 3, 4) per facing face (azimuth extremes are at corners),
    the facing side (N, 3) and a lower bound of the range to each face (N, 3)."""
    faces, side = facing_faces(boxes, origin)
    local = (face_points(boxes, side) - origin) @ rot_wl  # (N, 3, 4, 3) Velodyne frame
    azim = np.arctan2(local[..., 1], local[..., 0])
    grid = np.arctan2(dirs_l[1, 0], dirs_l[0, 0])
    step = grid[1] - grid[0]
    lo, hi = azim.min(axis=-1), azim.max(axis=-1)
    wraps = hi - lo > np.pi  # straddles the seam behind the sensor: test every azimuth
    c0 = np.where(wraps, 0, np.floor((lo - grid[0]) / step) - 1).clip(0, len(grid))
    c1 = np.where(wraps, len(grid), np.ceil((hi - grid[0]) / step) + 2).clip(0, len(grid))
    usable = faces & (local[..., 0] > 0).any(axis=-1)  # rays with x >= 0 never reach x < 0
    r0, r1 = _beam_rows(boxes, origin, dirs_l.shape[1])
    r1 = np.where(usable, r1[:, None], 0)
    r0 = np.broadcast_to(r0[:, None], r1.shape)
    rects = np.stack([r0, r1, c0, c1], axis=-1).astype(np.int64)
    return rects, side, _face_distance(boxes, side, origin)


def _beam_rows(boxes: np.ndarray, origin: np.ndarray, beams: int) -> tuple[np.ndarray, np.ndarray]:
    """Beam index range (N,) that can see each box, from world-frame elevation bounds.

    The Velodyne is tilted from the world's vertical by the camera's pitch/roll jitter (< 1 deg);
    the bounds are widened by 2 degrees to cover it.
    """
    lo, hi = boxes[:, 0::2], boxes[:, 1::2]
    gap = np.maximum(np.maximum(lo - origin, origin - hi), 0)
    d_min = np.hypot(gap[:, 0], gap[:, 2])  # horizontal distance to the footprint
    corners = _box_points(boxes)
    d_max = np.hypot(corners[..., 0] - origin[0], corners[..., 2] - origin[2]).max(axis=1)
    up_max, up_min = origin[1] - lo[:, 1], origin[1] - hi[:, 1]  # heights above the sensor
    with np.errstate(divide="ignore", invalid="ignore"):
        e_max = np.arctan2(up_max, np.where(up_max > 0, d_min, d_max))
        e_min = np.arctan2(up_min, np.where(up_min < 0, d_min, d_max))
    top, bottom = np.deg2rad(LIDAR_ELEVATION_DEG)
    step = (top - bottom) / (beams - 1)
    margin = np.deg2rad(2.0)
    r0 = np.floor((top - e_max - margin) / step).clip(0, beams)
    r1 = (np.ceil((top - e_min + margin) / step) + 1).clip(0, beams)
    return r0.astype(np.int64), r1.astype(np.int64)


def _face_distance(boxes: np.ndarray, side: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """(N, 3) Euclidean distance from `origin` to each box's facing face (a lower bound of t)."""
    lo, hi = boxes[:, 0::2], boxes[:, 1::2]
    gap = np.maximum(np.maximum(lo - origin, origin - hi), 0)  # (N, 3) per-axis distance to box
    return np.sqrt((gap**2).sum(axis=1))[:, None].repeat(3, axis=1)


def scan(scene: Scene, rot_wc: np.ndarray, centre: np.ndarray, dirs_l: np.ndarray) -> np.ndarray:
    """Simulated Velodyne returns (N, 4) float32 x, y, z, reflectance in the Velodyne frame."""
    rot_wl = rot_wc @ VELO_TO_CAM_R
    origin = centre + rot_wc @ VELO_TO_CAM_T
    dirs = np.einsum("ij,jba->iba", rot_wl, dirs_l).astype(np.float32)
    rects, side, t_near = lidar_rects(scene.boxes, rot_wl, origin, dirs_l)
    hits = cast(scene, origin, dirs, rects, side, LIDAR_RANGE, t_near)
    found = np.isfinite(hits.t)
    points = dirs_l[:, found].T * hits.t[found, None]
    refl = np.where(hits.box[found] >= scene.n_boxes, 0.2, 0.4) + 0.1 * hits.axis[found]
    return np.concatenate([points, refl[:, None]], axis=1).astype(np.float32)
