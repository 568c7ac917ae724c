"""The data.toml a new project starts from (also shipped as flux_data/data.toml)."""

from __future__ import annotations

# Why these defaults (FLUX.1-dev LoRA from 5-20 photos per concept):
# - caption_extension ".txt": the caption convention every tagging tool writes; sd-scripts' own
#   default ".caption" silently ignores .txt files. Without a caption file, class_tokens is used.
# - resolution 1024: FLUX.1-dev's native resolution, what the reference runs train at.
# - enable_bucket: photos keep their aspect ratio instead of being centre-cropped to a square.
# - no batch_size: it belongs to the training config (--train_batch_size); a batch_size here
#   would silently win over it.
TEMPLATE = """\
# sd-scripts dataset config (kohya-ss sd-scripts --dataset_config) for FLUX.1-dev LoRA training.
#
# One [[datasets.subsets]] per concept folder in flux_data/. `python -m orchestrator dataset sync`
# adds subsets for new folders and keeps everything you edit here: values, comments, order.
# `python -m orchestrator dataset check` checks this file and every image before training.
# sd-scripts rejects unknown keys and wrong types (num_repeats = "2", network_multiplier = 1).

[general]
# For photo.jpg the trainer reads the first line of photo.txt as its caption; images without
# one use their subset's class_tokens. (sd-scripts' own default is ".caption".)
caption_extension = ".txt"

[[datasets]]
# Images are resized to about 1024x1024 pixels of area: FLUX.1-dev's native resolution.
resolution = 1024
# Aspect-ratio buckets: photos keep their shape instead of being centre-cropped to a square.
enable_bucket = true
min_bucket_reso = 256
max_bucket_reso = 1024
# The batch size comes from the training config (--train_batch_size); a batch_size here wins over it.

  # One subset per concept (`dataset sync` / `dataset add` write these):
  # [[datasets.subsets]]
  # image_dir = "flux_data/tjtoy"   # relative to the project folder
  # class_tokens = "tjtoy toy"      # trigger word + class: the caption of images without a .txt
  # num_repeats = 1                 # times each image is seen per epoch (`dataset sync --balance`)
"""
