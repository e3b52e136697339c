"""The instruction data engine (GeoSeg-1M pipeline) and the dataset shard format."""
