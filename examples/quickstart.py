"""A tour of the keras_vgg API on data that ships with installed packages.

    python examples/quickstart.py

No downloads: the ImageNet-sized model has random weights here (pass
`weights="imagenet"` for the real ones, which keras.utils.get_file fetches
once and caches), and the small model trains on scikit-learn's digits.
"""

import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))  # for `recipes`

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_sample_images  # noqa: E402

import keras_vgg  # noqa: E402
from keras_vgg.recipes.sources import digits  # noqa: E402


def main():
    keras.utils.set_random_seed(0)

    print("1. Every column of the paper's Table 1, parameter counts as in Table 2:")
    for config in keras_vgg.CONFIGS:
        model = keras_vgg.VGG(config)
        print(f"   {config:6s} {model.name:10s} {model.count_params():>13,d} parameters")
        keras.backend.clear_session()

    print("2. Dense evaluation (section 3.2) of a whole 427x640 photo:")
    vgg16 = keras_vgg.VGG16()  # weights="imagenet" for the pretrained model
    dense = keras_vgg.fully_convolutional(vgg16)
    photos = np.stack(load_sample_images().images).astype("float32")  # china, flower
    start = time.perf_counter()
    probs = dense.predict(keras_vgg.preprocess_input(photos), verbose=0)
    print(f"   {photos.shape} -> {probs.shape} in {time.perf_counter() - start:.1f} s; "
          f"top class of the first (random weights): "
          f"{keras_vgg.decode_predictions(probs, top=1)[0][0][:2]}")

    print("3. Features for a perceptual/style loss:")
    extract = keras_vgg.feature_extractor(vgg16, ["block1_conv2", "block3_conv3",
                                                  "block5_conv3"])
    for name, f in zip(["block1_conv2", "block3_conv3", "block5_conv3"],
                       extract(keras_vgg.preprocess_input(photos[:1]))):
        print(f"   {name}: {tuple(f.shape)}")

    print("4. A small VGG-11 with BatchNorm learns handwritten digits:")
    x, y = digits(upscale=4)  # 32x32 RGB, the smallest size VGG accepts
    x = keras_vgg.preprocess_input(x.astype("float32"))
    model = keras_vgg.VGG("A", batch_norm=True, classes=10, input_shape=(32, 32, 3),
                          widths=(8, 16, 32, 32, 32), fc_units=64, dropout=0.2)
    model.compile(keras.optimizers.SGD(0.02, momentum=0.9),
                  "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x[:1500], y[:1500], batch_size=32, epochs=5, verbose=2,
              validation_data=(x[1500:], y[1500:]))
    print(f"   held-out accuracy: {model.evaluate(x[1500:], y[1500:], verbose=0)[1]:.3f}")


if __name__ == "__main__":
    main()
