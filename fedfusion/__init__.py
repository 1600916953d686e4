"""fedfusion: federated multimodal survival learning across hospital sites.

Subpackages follow one round of training:
``server`` (coordinator ServerApp) -> ``strategies`` (aggregation) -> ``client`` (site ClientApp and the
Flower-independent ``SiteTrainer``) -> ``data`` (slides, omics, clinical tables into patient bags) ->
``models`` (the fusion network) -> ``privacy`` (Opacus DP-SGD and accounting) -> ``evaluation`` (metrics);
``simulation`` runs many sites on one machine; ``deployment`` runs the coordinator and site daemons for real.
"""

__version__ = "0.1.0"
