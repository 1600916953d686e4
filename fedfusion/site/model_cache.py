"""The site's model kept on its device between rounds of a long-lived process, loaded in place every round.

A site worker (or a simulation actor) answers every round of a study in one process, so the model is built and
moved to the device once and each round's global weights are copied into it (``load_state_dict`` copies into the
device tensors in place). An entry is keyed by what makes a model valid: the study config's fingerprint
(``config_hash``: every knob, the schema with its input sizes, the encoder) and the device.

No state may pass from one round to the next, so a model is lent to one user at a time (``leased_model``) and
taken back only after that user finished without an error: an exception discards it, with whatever Opacus hooks,
per-patient gradients or half-taken step it held. Taken back, it is reset to what a freshly built model is:
training mode, every parameter trainable, no gradient, no attribute on a parameter (Opacus' ``grad_sample``,
``summed_grad``), no attribute on a module that building did not set (Opacus' ``activations``); a model that still
has a module hook is dropped instead. The optimizer is never kept (a new one every round). Building never draws
from torch's global random generator (fixed seed, forked), so a round's dropout is the same whether the model was
built for it or lent again: two rounds in one process equal two rounds in fresh processes
(tests/site/test_model_cache.py).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from fedfusion.errors import ConfigError
from fedfusion.models.fusion_model import StudyModel, build_model
from fedfusion.study.config import StudyConfig
from fedfusion.study.identity import config_hash

logger = logging.getLogger(__name__)

MAX_MODELS = 2
"""Models kept per process (the least recently returned one is dropped first): a worker serves one study."""
BUILD_SEED = 0
"""Seed of a built model's initial weights, which the first lease overwrites; fixed so building leaves torch's
global random generator untouched."""

ModelKey = tuple[str, str]
"""(study config hash, device)."""


@dataclass
class _Entry:
    model: StudyModel
    attributes: dict[int, frozenset[str]]
    """Each submodule's attribute names right after building (by ``id``), to remove what a round added."""


_KEPT: OrderedDict[ModelKey, _Entry] = OrderedDict()


def model_key(study: StudyConfig, device: torch.device) -> ModelKey:
    """The cache key of the study's model on ``device``."""
    return config_hash(study), str(device)


@contextmanager
def leased_model(study: StudyConfig, device: torch.device, weights: Mapping[str, torch.Tensor],
                 site: str) -> Iterator[StudyModel]:
    """The study's model on ``device`` holding ``weights``, in training mode with every parameter trainable.

    Kept for the next lease when the block ends without an error, discarded otherwise. ``ConfigError`` naming
    ``site`` when the weights do not fit the study's model.
    """
    key = model_key(study, device)
    entry = _KEPT.pop(key, None)
    if entry is None:
        model = build_model(study, seed=BUILD_SEED).to(device)
        entry = _Entry(model, {id(module): frozenset(vars(module)) for module in model.modules()})
    try:
        entry.model.load_state_dict(weights)
    except RuntimeError as exc:
        raise ConfigError(f"site '{site}': received weights do not fit the study's model: {exc}") from exc
    yield entry.model
    if _reset(entry):
        _KEPT[key] = entry
        while len(_KEPT) > MAX_MODELS:
            _KEPT.popitem(last=False)
    else:
        logger.warning("site %s: the model still had hooks after a round; it is rebuilt for the next one", site)


def kept_models() -> dict[ModelKey, StudyModel]:
    """The models kept now, by key (for tests and checks; do not train them)."""
    return {key: entry.model for key, entry in _KEPT.items()}


def clear() -> None:
    """Drop every kept model (as a fresh process would start)."""
    _KEPT.clear()


def _reset(entry: _Entry) -> bool:
    """Reset ``entry``'s model to a freshly built one's state but its weights; False when it still has hooks."""
    for module in entry.model.modules():
        if _has_hooks(module):
            return False
        for name in set(vars(module)) - entry.attributes.get(id(module), frozenset()):
            delattr(module, name)
    for parameter in entry.model.parameters():
        if parameter._backward_hooks:
            return False
        parameter.grad = None
        vars(parameter).clear()
        parameter.requires_grad_(True)
    entry.model.train()
    return True


def _has_hooks(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                or module._backward_pre_hooks)
