"""A dataset given by `--data` loaded as `ns-train tinysplat` loads it, for its cameras and held-out
photos: Nerfstudio's dataparser that fits its layout, TinySplat's datamanager and its test split."""

import copy
import sys
from pathlib import Path
from typing import Optional, Tuple


def layout_of(data: Path) -> Tuple[str, Optional[Path]]:
    """The dataparser `ns-train` would be told to use for this folder (nerfstudio-data, blender-data or
    colmap, as its files say) and, for COLMAP, its model's folder; a one-line error for any other."""
    if not data.is_dir():
        sys.exit(f"error: --data {data}: no such folder; pass the dataset folder the splat was trained on")
    if (data / "transforms.json").is_file():
        return "nerfstudio-data", None
    if (data / "transforms_train.json").is_file():
        return "blender-data", None
    for model in ("sparse/0", "colmap/sparse/0"):
        if (data / model).is_dir():
            return "colmap", Path(model)
    sys.exit(
        f"error: --data {data}: no transforms.json, transforms_train.json or COLMAP model (sparse/0) there; "
        "pass the dataset folder the splat was trained on"
    )


def _dataparser_for(data: Path):
    """That dataparser with TinySplat's defaults."""
    from nerfstudio.data.dataparsers.blender_dataparser import BlenderDataParserConfig
    from nerfstudio.data.dataparsers.colmap_dataparser import ColmapDataParserConfig
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

    layout, model = layout_of(data)
    if layout == "nerfstudio-data":
        return NerfstudioDataParserConfig(data=data, load_3D_points=True)
    if layout == "blender-data":
        return BlenderDataParserConfig(data=data)
    return ColmapDataParserConfig(data=data, colmap_path=model)


def datamanager_for(data: Path):
    from nerfstudio.configs.method_configs import all_methods

    data = Path(data)
    config = copy.deepcopy(all_methods["tinysplat"].pipeline.datamanager)
    config.dataparser = _dataparser_for(data)
    config.data = data
    return config.setup(device="cpu", test_mode="test", world_size=1, local_rank=0)
