"""Depth for any image, like Monodepth2's test_simple: `<stem>_disp.npy` and `<stem>_disp.png`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from depthcore import store
from depthcore.config import DataConfig, ModelConfig
from depthcore.errors import DataError
from depthcore.geometry import disp_to_depth
from depthcore.networks import Models, predict_depth


def _load_image(path: Path) -> Image.Image:
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, UnidentifiedImageError) as exc:
        raise DataError(f"{path}: cannot read image ({exc})") from None


def _check_image(path: Path) -> None:
    """An image file Pillow can identify and whose data is intact, without decoding it."""
    try:
        with Image.open(path) as img:
            img.verify()
    except Exception as exc:  # Pillow's verify raises several kinds for damaged files
        raise DataError(f"{path}: cannot read image ({exc})") from None


def colorize(disp: np.ndarray) -> np.ndarray:
    """Magma colour map, vmax at the 95th percentile (as test_simple); (H, W, 3) uint8."""
    from matplotlib import colormaps

    vmax = np.percentile(disp, 95)
    norm = np.clip((disp - disp.min()) / max(vmax - disp.min(), 1e-12), 0, 1)
    return (colormaps["magma"](norm)[..., :3] * 255).astype(np.uint8)


@torch.no_grad()
def predict_image(
    models: Models,
    image: Image.Image,
    *,
    height: int,
    width: int,
    min_depth: float,
    max_depth: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Scaled disparity (1, 1, height, width) and the disparity resized to the image's size."""
    device = next(models.parameters()).device
    resized = image.resize((width, height), Image.Resampling.LANCZOS)
    x = torch.from_numpy(np.asarray(resized).copy()).permute(2, 0, 1)[None].float().div(255)
    disp = predict_depth(models, x.to(device))[0]
    scaled = disp_to_depth(disp, min_depth, max_depth)[0]
    full = F.interpolate(disp, size=image.size[::-1], mode="bilinear", align_corners=False)
    return scaled.cpu().numpy(), full[0, 0].cpu().numpy()


def predict_files(
    models: Models,
    images: Sequence[str | Path],
    out_dir: str | Path,
    *,
    cfg_model: ModelConfig,
    cfg_data: DataConfig,
) -> list[Path]:
    """Write `<stem>_disp.npy` and `<stem>_disp.png` into `out_dir` for each image."""
    missing = [str(p) for p in images if not Path(p).is_file()]
    if missing:
        raise DataError(f"no such image: {', '.join(missing)}")
    stems = [Path(p).stem for p in images]
    twice = sorted({s for s in stems if stems.count(s) > 1})
    if twice:
        raise DataError(
            f"images with the same name {', '.join(twice)} would write the same "
            "<stem>_disp files; predict them into separate --out folders"
        )
    for path in map(Path, images):  # all readable before any output is written
        _check_image(path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    models.eval()
    written = []
    for path in map(Path, images):
        scaled, full = predict_image(
            models,
            _load_image(path),
            height=cfg_data.height,
            width=cfg_data.width,
            min_depth=cfg_model.min_depth,
            max_depth=cfg_model.max_depth,
        )
        npy, png = out / f"{path.stem}_disp.npy", out / f"{path.stem}_disp.png"
        with store.atomic_path(npy) as tmp, open(tmp, "wb") as fh:
            np.save(fh, scaled.astype(np.float32))
        with store.atomic_path(png) as tmp:
            Image.fromarray(colorize(full)).save(tmp, format="PNG")
        written += [npy, png]
    return written
