"""A dataset given by `--data` loaded as `ns-train tinysplat` loads it, for its cameras and held-out
photos: Nerfstudio's dataparser that fits its layout, TinySplat's datamanager and its test split."""

import copy
import sys
from pathlib import Path


def _dataparser_for(data: Path):
    """The dataparser `ns-train` would be told to use for this layout (nerfstudio-data, blender-data or
    colmap, as their files say), with TinySplat's defaults."""
    from nerfstudio.data.dataparsers.blender_dataparser import BlenderDataParserConfig
    from nerfstudio.data.dataparsers.colmap_dataparser import ColmapDataParserConfig
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

    if (data / "transforms.json").is_file():
        return NerfstudioDataParserConfig(data=data, load_3D_points=True)
    if (data / "transforms_train.json").is_file():
        return BlenderDataParserConfig(data=data)
    for model in ("sparse/0", "colmap/sparse/0"):
        if (data / model).is_dir():
            return ColmapDataParserConfig(data=data, colmap_path=Path(model))
    sys.exit(
        f"error: --data {data}: no transforms.json, transforms_train.json or COLMAP model (sparse/0) there; "
        "pass the dataset folder the splat was trained on"
    )


def datamanager_for(data: Path):
    from nerfstudio.configs.method_configs import all_methods

    data = Path(data)
    if not data.is_dir():
        sys.exit(f"error: --data {data}: no such folder; pass the dataset folder the splat was trained on")
    config = copy.deepcopy(all_methods["tinysplat"].pipeline.datamanager)
    config.dataparser = _dataparser_for(data)
    config.data = data
    return config.setup(device="cpu", test_mode="test", world_size=1, local_rank=0)
