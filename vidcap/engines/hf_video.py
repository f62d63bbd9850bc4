"""Video processors that need no torchvision, for checkpoints whose own video processor does.

transformers' video processors (LLaVA-NeXT-Video, Qwen2-VL, Qwen2.5-VL) are torchvision classes, and PyPI's
torchvision does not import beside a CPU torch build. Rather than refuse those models there, these stand-ins
turn K frames into the same tensors through the checkpoint's PIL image processor: the resize and
normalisation are transformers' own code, only the stacking (LLaVA-NeXT-Video) or the temporal patch
layout (Qwen2-VL) is done here. They are used only when the real video processor cannot be built, so a
machine with torchvision runs the checkpoint's own processor.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from transformers.image_processing_utils import BatchFeature
from transformers.video_processing_utils import VideoProcessorMixin
from transformers.video_utils import VideoMetadata

#: image-processor settings a video config shares with the image processor that stands in for it
_IMAGE_SETTINGS = ("do_resize", "size", "resample", "do_rescale", "rescale_factor", "do_normalize",
                   "image_mean", "image_std", "do_convert_rgb")


def _settings(config: dict[str, Any], extra: Sequence[str]) -> dict[str, Any]:
    return {k: config[k] for k in (*_IMAGE_SETTINGS, *extra) if config.get(k) is not None}


class _StandIn(VideoProcessorMixin):
    """A video processor made from an image processor; saves as the video config it was built from."""

    def __init__(self, image_processor: Any, video_config: dict[str, Any]) -> None:
        super().__init__()
        self.frame_processor = image_processor
        self.video_config = dict(video_config)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.video_config)


class ClipFramesVideoProcessor(_StandIn):
    """LLaVA-NeXT-Video: every frame resized, centre-cropped and normalised like a CLIP image, stacked."""

    model_input_names = ["pixel_values_videos"]

    @classmethod
    def from_video_config(cls, config: dict[str, Any]) -> "ClipFramesVideoProcessor":
        from transformers import CLIPImageProcessorPil

        return cls(CLIPImageProcessorPil(**_settings(config, ("do_center_crop", "crop_size"))), config)

    def __call__(self, videos: Sequence[np.ndarray], return_tensors: str | None = None, **_: Any) -> BatchFeature:
        clips = [self.frame_processor(list(video), return_tensors="np")["pixel_values"] for video in videos]
        return BatchFeature({"pixel_values_videos": np.stack(clips)}, tensor_type=return_tensors)


class QwenFramesVideoProcessor(_StandIn):
    """Qwen2-VL / Qwen2.5-VL: frames resized and patchified by the PIL image processor, then paired in time.

    The image processor fills the temporal axis of each patch with copies of one frame; a video patch holds
    `temporal_patch_size` consecutive frames instead, in the same spatial order, so the video tensor is the
    frames' image patches regrouped along that axis (the last frame repeated to fill the final group, as
    the real video processor does).
    """

    model_input_names = ["pixel_values_videos", "video_grid_thw"]

    def __init__(self, image_processor: Any, video_config: dict[str, Any]) -> None:
        super().__init__(image_processor, video_config)
        self.patch_size = image_processor.patch_size
        self.merge_size = image_processor.merge_size
        self.temporal_patch_size = image_processor.temporal_patch_size

    @classmethod
    def from_video_config(cls, config: dict[str, Any]) -> "QwenFramesVideoProcessor":
        from transformers import Qwen2VLImageProcessorPil

        settings = _settings(config, ("patch_size", "merge_size", "temporal_patch_size"))
        size = dict(settings.get("size") or {})
        # older checkpoints give the pixel bounds as min_pixels / max_pixels
        for old, new in (("min_pixels", "shortest_edge"), ("max_pixels", "longest_edge")):
            if config.get(old) is not None:
                size[new] = config[old]
        if size:
            settings["size"] = size
        return cls(Qwen2VLImageProcessorPil(**settings), config)

    def __call__(self, videos: Sequence[np.ndarray], return_tensors: str | None = None, **_: Any) -> BatchFeature:
        patches, grids = [], []
        for video in videos:
            video_patches, grid = self._patchify(list(video))
            patches.append(video_patches)
            grids.append(grid)
        data = {
            "pixel_values_videos": np.concatenate(patches),
            "video_grid_thw": np.array(grids, dtype=np.int64),
            # no timestamps reach the engine: the processor's default frame rate stands, as for frames
            # handed to the real video processor without metadata
            "video_metadata": [VideoMetadata(total_num_frames=len(video)) for video in videos],
        }
        return BatchFeature(data, tensor_type=return_tensors, skip_tensor_conversion=["video_metadata"])

    def _patchify(self, frames: list[np.ndarray]) -> tuple[np.ndarray, list[int]]:
        out = self.frame_processor(frames, return_tensors="np")
        _, grid_h, grid_w = (int(v) for v in out["image_grid_thw"][0])
        t, p = self.temporal_patch_size, self.patch_size
        per_frame = out["pixel_values"].reshape(len(frames), grid_h * grid_w, 3, t, p, p)[:, :, :, 0]
        if pad := -len(frames) % t:
            per_frame = np.concatenate([per_frame, np.repeat(per_frame[-1:], pad, axis=0)])
        groups = per_frame.shape[0] // t
        grouped = per_frame.reshape(groups, t, grid_h * grid_w, 3, p, p).transpose(0, 2, 3, 1, 4, 5)
        return grouped.reshape(groups * grid_h * grid_w, 3 * t * p * p), [groups, grid_h, grid_w]


def accepting_stand_in(processor_class: type) -> type:
    """`processor_class`, made to accept a stand-in video processor.

    A processor checks each part's class against a name that transformers resolves only when torchvision
    imports; this subclass lets a stand-in through. It keeps the real class's name, so a processor built
    from it saves as the real class.
    """

    def check_argument_for_proper_class(self: Any, name: str, argument: Any) -> Any:
        if name == "video_processor" and isinstance(argument, VideoProcessorMixin):
            return type(argument)
        return processor_class.check_argument_for_proper_class(self, name, argument)

    return type(processor_class.__name__, (processor_class,), {
        "check_argument_for_proper_class": check_argument_for_proper_class,
        "__module__": processor_class.__module__,
    })


#: processor class name -> stand-in for its video processor
STAND_INS: dict[str, type[VideoProcessorMixin]] = {
    "LlavaNextVideoProcessor": ClipFramesVideoProcessor,
    "Qwen2VLProcessor": QwenFramesVideoProcessor,
    "Qwen2_5_VLProcessor": QwenFramesVideoProcessor,
}
