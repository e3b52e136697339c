"""Instruction generation: interactive, referring, reasoning and no-target samples for one tile."""

from geoseg.data.instructions.generate import InstructionConfig, Sample, generate

__all__ = ["InstructionConfig", "Sample", "generate"]
