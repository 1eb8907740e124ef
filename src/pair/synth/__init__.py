"""Synthetic multi-site chest imaging (CT and radiographs) with fake PHI and ground truth.

The data are synthetic: they exercise ingest, de-identification, indexing and AI plumbing, and
must not be used to judge how well a model works on real patients.
"""

from pair.synth.generator import Options, SynthSummary, generate

__all__ = ["Options", "SynthSummary", "generate"]
