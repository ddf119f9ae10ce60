"""Datasets in their real on-disk layouts, AnomalyMix, and joint image/label transforms.

Every dataset's items follow :mod:`pebal_core.data.base`. The training sets are
``torch.utils.data.Dataset`` subclasses; the evaluation sets (:mod:`pebal_core.data.anomaly_pairs`)
are plain map-style datasets that import without torch.
"""
