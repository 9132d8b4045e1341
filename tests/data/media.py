"""Real and odd test images: photos shipped inside scikit-learn / scikit-image wheels, and generated oddities."""

import importlib.util
import io
from pathlib import Path

import numpy as np
import PIL.Image


def package_dir(name: str) -> Path:
    """The folder of an installed package, found without importing it (its code is never needed)."""
    spec = importlib.util.find_spec(name)
    if spec is None:
        raise RuntimeError(f"package {name} is not installed: run `make test` (requirements-nodeps.lock)")
    return Path(spec.submodule_search_locations[0])


def real_photos() -> dict[str, Path]:
    sklearn_images = package_dir("sklearn") / "datasets" / "images"
    skimage_data = package_dir("skimage") / "data"
    return {
        "china": sklearn_images / "china.jpg",
        "flower": sklearn_images / "flower.jpg",
        "astronaut": skimage_data / "astronaut.png",
        "chelsea": skimage_data / "chelsea.png",
        "coffee": skimage_data / "coffee.png",
        "rocket": skimage_data / "rocket.jpg",
        "camera_gray": skimage_data / "camera.png",
    }


def odd_images(folder: Path) -> dict[str, Path]:
    """Write images with awkward sizes and modes; returns name -> path."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}

    def save(name, image, **kwargs):
        paths[name] = folder / name
        image.save(paths[name], **kwargs)

    save("one_pixel.png", PIL.Image.fromarray(np.array([[[200, 10, 30]]], dtype=np.uint8)))
    save("wide_5000x40.png", PIL.Image.fromarray(rng.integers(0, 256, (40, 5000, 3), dtype=np.uint8)))
    save("tall_30x3000.png", PIL.Image.fromarray(rng.integers(0, 256, (3000, 30, 3), dtype=np.uint8)))
    save("gray.png", PIL.Image.fromarray(rng.integers(0, 256, (97, 131), dtype=np.uint8), mode="L"))
    rgba = rng.integers(0, 256, (120, 90, 4), dtype=np.uint8)
    save("rgba.png", PIL.Image.fromarray(rgba, mode="RGBA"))
    palette = PIL.Image.fromarray(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)).quantize(16)
    save("palette_transparent.png", palette, transparency=3)
    deep = rng.integers(0, 65536, (70, 110)).astype(np.uint16)
    save("gray16.png", PIL.Image.fromarray(deep))
    # A JPEG whose pixels are stored sideways with EXIF orientation 6 ("rotate 90° clockwise to view").
    photo = PIL.Image.fromarray(rng.integers(0, 256, (60, 100, 3), dtype=np.uint8))
    exif = PIL.Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", exif=exif.tobytes())
    paths["exif_rotated.jpg"] = folder / "exif_rotated.jpg"
    paths["exif_rotated.jpg"].write_bytes(buffer.getvalue())
    return paths
