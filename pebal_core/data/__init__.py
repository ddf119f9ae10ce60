"""Datasets in their real on-disk layouts, AnomalyMix, and joint image/label transforms.

Every dataset is a ``torch.utils.data.Dataset`` whose items follow :mod:`pebal_core.data.base`.
"""
