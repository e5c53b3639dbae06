"""The paper's training input pipeline in plain tf.data / tf.image: a yardstick.

Decode the JPEG, scale jitter (shorter side S uniform in [256, 512], the
paper's multi-scale training), random 224x224 crop, horizontal flip, AlexNet's
PCA colour shift, mean RGB subtracted. It is here so the benchmark can say
what a straightforward implementation of these steps costs per core; the
package's own pipeline is `recipes/data.py`, measured beside it when present.
"""

import tensorflow as tf

# AlexNet's ImageNet RGB eigenvalues / eigenvectors (pixel values in [0, 255]).
EIGVAL = tf.constant([55.46, 4.794, 1.148])
EIGVEC = tf.constant([[-0.5675, 0.7192, 0.4009],
                      [-0.5808, -0.0045, -0.8140],
                      [-0.5836, -0.6948, 0.4203]])
MEAN_RGB = tf.constant([123.68, 116.779, 103.939])


def augment(encoded, crop_size=224, s_min=256, s_max=512, pca_std=0.1):
    image = tf.io.decode_jpeg(encoded, channels=3)
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    s = tf.random.uniform([], s_min, s_max + 1, dtype=tf.int32)
    scale = tf.cast(s, tf.float32) / tf.reduce_min(shape)
    size = tf.cast(tf.math.ceil(shape * scale), tf.int32)
    image = tf.image.resize(image, size)  # float32, bilinear
    image = tf.image.random_crop(image, [crop_size, crop_size, 3])
    image = tf.image.random_flip_left_right(image)
    alpha = tf.random.normal([3], stddev=pca_std)
    image = image + tf.linalg.matvec(EIGVEC, alpha * EIGVAL)
    return image - MEAN_RGB  # the paper's only normalisation


def train_dataset(examples, batch_size=32, crop_size=224):
    """Batches of augmented crops from a dataset of (encoded bytes, label)."""
    ds = examples.shuffle(1024)
    ds = ds.map(lambda e, y: (augment(e, crop_size), y),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
