"""The training-free route (GeoSeg): MLLM grounding, bias-aware refinement, dual-route prompting."""
