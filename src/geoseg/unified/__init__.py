"""The unified model (UniGeoSeg): configs, builder registry, text encoder, checkpoints, segmenter, training."""
