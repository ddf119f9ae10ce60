"""pebal_core.labels against the official Cityscapes table (cityscapesscripts)."""

import numpy as np
from cityscapesscripts.helpers import labels as cs

from pebal_core import labels


def test_table_matches_cityscapesscripts():
    ours = {(lab.name, lab.id, lab.train_id, lab.category, lab.color) for lab in labels.LABELS}
    theirs = {(lab.name, lab.id, lab.trainId, lab.category, lab.color) for lab in cs.labels}
    assert ours == theirs


def test_train_ids_names_and_palette():
    official = {lab.trainId: lab for lab in cs.labels if 0 <= lab.trainId < 19}
    assert labels.CLASS_NAMES == tuple(official[i].name for i in range(19))
    for i in range(19):
        assert tuple(labels.PALETTE[i]) == official[i].color
    assert labels.NUM_CLASSES == 19 and labels.ABSTENTION_CHANNEL == 19
    assert labels.ANOMALY_ID == 254 and labels.VOID_ID == 255


def test_label_ids_to_train_ids_every_id():
    ids = np.arange(34, dtype=np.uint8).reshape(2, 17)
    out = labels.label_ids_to_train_ids(ids)
    for lab in cs.labels:
        if lab.id >= 0:
            expected = lab.trainId if 0 <= lab.trainId < 19 else 255
            assert out.flat[lab.id] == expected, lab.name


def test_colorize_shapes_and_values():
    lab = np.array([[0, 13], [255, 254]], dtype=np.uint8)
    rgb = labels.colorize(lab)
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 0]) == (128, 64, 128) and tuple(rgb[0, 1]) == (0, 0, 142)
    assert tuple(rgb[1, 0]) == (0, 0, 0)
