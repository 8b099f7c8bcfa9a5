"""The multi-label confusion matrix counts every checkup, those with none of the classes in a "none" row."""

import numpy as np

from dentvlm.evaluation.report import confusion_counts

CLASSES = ["caries", "gingivitis"]


def row(true, parsed):
    return {"true_labels": true, "parsed_labels": parsed}


def test_checkups_with_none_of_the_classes_get_their_own_row():
    matrix = confusion_counts([row([], []), row([], ["caries"]), row(["caries"], ["caries"]),
                               row(["gingivitis"], None), row([], None)], CLASSES, multi_label=True)
    assert matrix.shape == (3, 3)
    np.testing.assert_array_equal(matrix, [[1, 0, 0], [0, 0, 1], [1, 0, 2]])  # last row: truth "none"
    assert matrix.sum() == 5  # every checkup counted once here (one true and one predicted label at most)


def test_single_label_has_no_none_row():
    matrix = confusion_counts([row(["caries"], ["caries", "gingivitis"]), row(["gingivitis"], ["gingivitis"])],
                              CLASSES, multi_label=False)
    np.testing.assert_array_equal(matrix, [[0, 0, 1], [0, 1, 0]])
