"""Backbones, weight resolution and the image classifier edgetl fine-tunes."""

from edgetl.models.backbones import (
    BACKBONES,
    BackboneDef,
    BackboneParts,
    PackagedWeights,
    backbone_key_map,
    count_backbone_params,
    get_backbone_def,
)
from edgetl.models.classifier import (
    Backbone,
    ClassifierHead,
    ImageClassifier,
    build_backbone,
    build_classifier,
    default_spec,
)
from edgetl.models.text import (
    TEXT_BACKBONES,
    TextBackbone,
    TextBackboneDef,
    TextClassifier,
    build_text_classifier,
    describe_text_backbones,
    resolve_text_model,
)
from edgetl.models.weights import (
    WeightsInfo,
    available_weights,
    describe_backbones,
    load_reference_model,
    read_state_dict,
    resolve_weights,
)
from edgetl.runtime.text import load_tokenizer, tokenize

__all__ = [
    "BACKBONES",
    "TEXT_BACKBONES",
    "Backbone",
    "BackboneDef",
    "BackboneParts",
    "ClassifierHead",
    "ImageClassifier",
    "PackagedWeights",
    "TextBackbone",
    "TextBackboneDef",
    "TextClassifier",
    "WeightsInfo",
    "available_weights",
    "backbone_key_map",
    "build_backbone",
    "build_classifier",
    "build_text_classifier",
    "count_backbone_params",
    "default_spec",
    "describe_backbones",
    "describe_text_backbones",
    "get_backbone_def",
    "load_reference_model",
    "load_tokenizer",
    "read_state_dict",
    "resolve_text_model",
    "resolve_weights",
    "tokenize",
]
