"""The paper's transfer to other datasets (Appendix B): ILSVRC features and a
linear SVM.

The descriptor of an image, for each source network (D, E, or both
stacked) and each scale Q: the network applied densely (its FC layers as
convolutions, `keras_vgg.fully_convolutional`) to the whole image rescaled
so its smallest side is Q; the 4096-channel `fc2` map (after its ReLU)
averaged over all locations, and averaged with that of the horizontally
flipped image. Scales are combined by stacking (concatenation) or
averaging; the result is L2-normalised (each network's first, when several
are stacked, then the whole). A one-vs-rest linear SVM is trained on the
descriptors, its C chosen by cross-validation on the training images only.

`descriptor_model` is that computation as one Keras model (image of any
size in, descriptor out), so the saved classifier (`svm_classifier`: the
SVM as a Dense layer on the descriptor) computes at serving time exactly
what the SVM was trained on.
"""

import numpy as np
import tensorflow as tf

import keras
import keras_vgg
from keras_vgg.layers import HorizontalFlip, IsotropicRescale, MinimumInputSize
from keras_vgg.recipes import data as data_lib
from keras_vgg.recipes import metrics

AGGREGATES = ("stack", "avg")
# C of the linear SVM, tried on held-out folds of the training images.
C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)


def trunk(classifier, name=None):
    """The dense network up to `fc2` (after its ReLU): image of any size
    (at least the classifier's input size) -> `fc2` map."""
    dense = keras_vgg.fully_convolutional(classifier)
    return keras.Model(dense.input, dense.get_layer("fc2").output,
                       name=name or f"{classifier.name}_fc2_map")


def descriptor_model(classifiers, scales, aggregate="stack"):
    """Appendix B's image descriptor as a model.

    Args:
        classifiers: source VGGs with their FC layers (e.g. D and E).
        scales: test scales Q, each at least every classifier's input size.
        aggregate: `"stack"` (concatenate the scales' descriptors; the
            paper's choice for Caltech) or `"avg"` (average them; as good on
            VOC, and smaller).

    Returns:
        A `keras.Model`: preprocessed images `(batch, H, W, 3)` of any size
        -> L2-normalised descriptors `(batch, D)`.
    """
    if aggregate not in AGGREGATES:
        raise ValueError(f"`aggregate` must be one of {AGGREGATES}. "
                         f"Received: aggregate={aggregate!r}")
    scales = [int(q) for q in scales]
    if not scales:
        raise ValueError("At least one scale Q is needed.")
    inputs = keras.Input((None, None, 3), name="images")
    x = MinimumInputSize((1, 1), name="min_input_size")(inputs)
    per_model = []
    for m, classifier in enumerate(classifiers):
        size = int(classifier.input.shape[1])
        small = [q for q in scales if q < size]
        if small:
            raise ValueError(f"Scales {small} are smaller than the input size "
                             f"{size} of {classifier.name!r}; every Q must be "
                             f"at least {size}.")
        net = trunk(classifier, name=f"net{m}_fc2_map")
        pool = keras.layers.GlobalAveragePooling2D(name=f"net{m}_locations")
        per_scale = []
        for q in scales:
            image = IsotropicRescale(q, name=f"net{m}_rescale_{q}")(x)
            flipped = HorizontalFlip(name=f"net{m}_flip_{q}")(image)
            per_scale.append(keras.layers.Average(name=f"net{m}_flips_{q}")(
                [pool(net(image)), pool(net(flipped))]))
        combine = keras.layers.Concatenate if aggregate == "stack" else keras.layers.Average
        d = per_scale[0] if len(per_scale) == 1 else \
            combine(name=f"net{m}_scales")(per_scale)
        if len(classifiers) > 1:
            d = keras.layers.UnitNormalization(name=f"net{m}_l2")(d)
        per_model.append(d)
    d = per_model[0] if len(per_model) == 1 else \
        keras.layers.Concatenate(name="networks")(per_model)
    d = keras.layers.UnitNormalization(name="descriptor")(d)
    return keras.Model(inputs, d, name="appendix_b_descriptor")


def descriptor_batches(model, split, *, mean_rgb, batch_size):
    """`batches` for `feature_cache.cached`: the descriptors of a split's
    whole images (decoded and mean-subtracted; the model rescales them).
    Images of the same size are batched together."""
    def batches():
        @tf.function(reduce_retracing=True)
        def describe(x):
            return model(x, training=False)

        ds = split.examples.map(
            lambda enc, y: (data_lib.normalize(data_lib.decode(enc), mean_rgb), y),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).enumerate()
        ds = ds.group_by_window(
            key_func=lambda i, xy: tf.cast(tf.shape(xy[0])[0], tf.int64) * 100_000
            + tf.cast(tf.shape(xy[0])[1], tf.int64),
            reduce_func=lambda key, window: window.batch(max(1, batch_size // 2)),
            window_size=max(1, batch_size // 2))
        for index, (x, y) in ds.prefetch(2):
            yield index.numpy(), describe(x).numpy(), y.numpy()
    return batches


def _folds(labels, multi_label, folds, seed):
    from sklearn.model_selection import KFold, StratifiedKFold

    if multi_label:
        k = min(folds, len(labels))
        return list(KFold(k, shuffle=True, random_state=seed).split(labels))
    counts = np.bincount(labels)
    smallest = counts[counts > 0].min()
    if smallest < 2:
        raise ValueError("Choosing C needs at least 2 training images per class "
                         f"(one class has {smallest}).")
    k = min(folds, smallest)
    return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(
        np.zeros(len(labels)), labels))


def _fit(x, labels, multi_label, c, seed):
    """`(coef (D, K), intercept (K,))` of one-vs-rest linear SVMs."""
    from sklearn.svm import LinearSVC

    def binary(targets):
        if targets.min() == targets.max():  # no positive (or no negative)
            return np.zeros(x.shape[1]), 1.0 if targets.max() else -1.0
        svm = LinearSVC(C=c, random_state=seed, max_iter=10_000).fit(x, targets)
        return svm.coef_[0], float(svm.intercept_[0])

    if multi_label:
        columns = [binary(labels[:, k] > 0.5) for k in range(labels.shape[1])]
        return (np.stack([w for w, _ in columns], axis=1),
                np.array([b for _, b in columns]))
    classes = int(labels.max()) + 1
    columns = [binary(labels == k) for k in range(classes)]
    return (np.stack([w for w, _ in columns], axis=1),
            np.array([b for _, b in columns]))


def fit_svm(x, labels, multi_label, cs=C_GRID, folds=3, seed=0, log=print):
    """One-vs-rest linear SVMs on descriptors `x`, C chosen on held-out folds
    of the training data (mean class recall, or mAP for multi-label).

    Returns:
        A dict: `coef` `(D, K)`, `intercept` `(K,)`, `C`, and `cv`, the
        held-out score of each C tried.
    """
    x = np.asarray(x, np.float64)
    labels = np.asarray(labels)
    splits = _folds(labels, multi_label, folds, seed)
    cv = {}
    for c in cs:
        scores = np.zeros((len(x), labels.shape[1] if multi_label else
                           int(labels.max()) + 1))
        for train, held in splits:
            coef, intercept = _fit(x[train], labels[train], multi_label, c, seed)
            scores[held] = x[held] @ coef + intercept
        measure = metrics.mean_average_precision(scores, labels) if multi_label \
            else metrics.mean_class_recall(scores, labels)
        cv[c] = measure
        log(f"  SVM C={c:g}: {'mAP' if multi_label else 'mean class recall'} "
            f"{measure:.4f} on {len(splits)} held-out folds of the training images")
    best = max(cs, key=lambda c: (cv[c], -c))  # ties: the stronger regularisation
    coef, intercept = _fit(x, labels, multi_label, best, seed)
    return {"coef": coef.astype(np.float32), "intercept": intercept.astype(np.float32),
            "C": best, "cv": cv}


def svm_classifier(descriptor, coef, intercept):
    """The complete classifier: `descriptor`'s model with the SVM as a Dense
    layer (`svm`, linear: its outputs are the SVMs' decision values)."""
    head = keras.layers.Dense(coef.shape[1], name="svm")
    outputs = head(descriptor.output)
    head.set_weights([coef, intercept])
    return keras.Model(descriptor.input, outputs, name="vgg_svm")
