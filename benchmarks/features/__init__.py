"""SimSID in feature space (issue 34): research code on cached frozen EfficientNet-Lite0 features.

Modules: ``cache`` (the feature cache, computed once per image), ``data`` (load a cached split as a
grid of position features), ``floors`` (training-free baselines: per-position Gaussian, ridge
in-painting from 8 neighbours), ``model`` (SimSID's space-aware memory and in-painting block on the
feature grid, reusing the product modules), ``evaluate`` (plain and sharpness-matched AUROC with the
audit's one matching), ``explore`` (variants on validation, 2 seeds) and ``confirm`` (test, 3 seeds).
Results: ``benchmarks/results/features/``.
"""
