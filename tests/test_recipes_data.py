"""recipes/data.py: the paper's augmentation and the dataset sources."""

import numpy as np
import pytest
import tensorflow as tf

import keras_vgg
from test_recipes_helpers import encoded, random_images, split_of

from keras_vgg.recipes import data as data_lib
from keras_vgg.recipes import sources


def seeds(n):
    return [tf.constant([7, i], tf.int64) for i in range(n)]


def test_rescale_makes_the_smallest_side_s_and_keeps_the_aspect_ratio():
    for (h, w), s in [((30, 50), 40), ((50, 30), 40), ((375, 500), 256),
                      ((500, 375), 512), ((64, 64), 100)]:
        out = data_lib.rescale(tf.zeros((h, w, 3)), s).shape
        assert min(out[:2]) == s, (h, w, s, out)
        assert abs(out[0] / out[1] - h / w) < 2 / s, (h, w, s, out)


def test_scale_jittering_draws_s_from_the_whole_range():
    image = tf.zeros((75, 100, 3))
    sides = [min(data_lib.rescale(image, data_lib.sample_scale((256, 512), s))
                 .shape[:2]) for s in seeds(300)]
    assert all(256 <= s <= 512 for s in sides)
    assert min(sides) < 270 and max(sides) > 498     # both ends are reached
    assert 360 < np.mean(sides) < 408                 # uniform: mean 384
    assert len(set(sides)) > 100
    assert int(data_lib.sample_scale((256, 256), seeds(1)[0])) == 256


def test_augment_gives_a_flipped_or_unflipped_window_of_the_rescaled_image(rng):
    # S equal to the smallest side: the rescale is the identity, so each
    # output must be an exact window of the image, mirrored or not.
    image = rng.integers(0, 256, (40, 50, 3)).astype(np.float32)
    png = tf.constant(encoded(image))
    flips, positions = 0, set()
    for seed in seeds(200):
        out = data_lib.augment(png, seed, 32, (40, 40), (0, 0, 0),
                               color_shift=False).numpy()[..., ::-1]
        assert out.shape == (32, 32, 3)
        matches = [(i, j, flip) for i in range(9) for j in range(19)
                   for flip in (False, True)
                   if np.allclose(out, image[i:i + 32, j:j + 32][:, ::-1]
                                  if flip else image[i:i + 32, j:j + 32], atol=1e-3)]
        assert len(matches) == 1, seed
        flips += matches[0][2]
        positions.add(matches[0][:2])
    assert 70 < flips < 130                       # a fair coin
    assert len(positions) > 60                    # crops are spread out
    assert {i for i, _ in positions} >= {0, 8}    # both ends of the room
    assert {j for _, j in positions} >= {0, 18}


def test_augment_output_is_224_for_any_image_and_scale(rng):
    for (h, w), scale in [((300, 400), (256, 512)), ((500, 333), (256, 256)),
                          ((224, 224), (384, 384))]:
        image = tf.constant(encoded(rng.integers(0, 256, (h, w, 3))))
        for seed in seeds(3):
            assert data_lib.augment(image, seed, 224, scale).shape == (224, 224, 3)


def _jpeg(image, quality=90):
    import io
    from PIL import Image
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8)).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def _photo(h=375, w=500):
    from sklearn.datasets import load_sample_images
    return load_sample_images().images[0][:h, :w]   # a real photo, 427x640


def test_decode_gives_pil_pixels_for_jpeg_and_png():
    from PIL import Image
    import io
    jpeg = _jpeg(_photo())
    pil = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))
    np.testing.assert_array_equal(data_lib.decode(jpeg).numpy(), pil)
    np.testing.assert_array_equal(data_lib.decode(encoded(pil)).numpy(), pil)
    # A PNG's shape comes from its one decode: the centre crop at S = its
    # smallest side is the central window, exactly.
    centre = data_lib.crop(encoded(pil), 375, 224).numpy()
    np.testing.assert_array_equal(centre, pil[75:299, 138:362])
    small = data_lib.crop(encoded(pil[:7, :9]), 7, 5).numpy()
    np.testing.assert_array_equal(small, pil[1:6, 2:7])


def test_jpeg_crop_decodes_only_the_window_of_the_same_pixels():
    jpeg = _jpeg(_photo())
    full = data_lib.decode(jpeg).numpy()
    corners = np.lib.stride_tricks.sliding_window_view(full, (8, 8, 3))[:152, :277, 0]
    for seed in seeds(8):
        # S = smallest side: the crop is a window of the decoded image.
        out = data_lib.crop(jpeg, 375, 224, seed).numpy()
        # Where its top-left 8x8 patch is in the image, then the whole window:
        # decode_and_crop_jpeg differs from a full decode only at the
        # window's chroma edges.
        i, j = np.unravel_index(
            np.abs(corners - out[:8, :8]).sum(axis=(2, 3, 4)).argmin(), (152, 277))
        assert np.abs(out - full[i:i + 224, j:j + 224]).mean() < 0.05, (seed, i, j)


def test_crop_is_rescale_then_crop(rng):
    # The window is resized to the crop: where positions fall on whole
    # pixels it is the rescaled image's crop, up to the filter at its edges.
    image = rng.integers(0, 256, (64, 96, 3)).astype(np.float32)
    image = tf.nn.avg_pool2d(tf.constant(image[None]), 5, 1, "SAME")[0].numpy()
    png = encoded(np.round(image))
    rescaled = data_lib.rescale(data_lib.decode(png), 32).numpy()   # 32x48
    centre = data_lib.crop(png, 32, 32).numpy()                      # S = 32
    inner = (slice(2, -2), slice(2, -2))
    np.testing.assert_allclose(centre[inner], rescaled[:, 8:40][inner], atol=0.5)
    # S = 2 x the smallest side: a 16-pixel window upscaled 2x.
    up = data_lib.crop(png, 128, 32).numpy()
    rescaled = data_lib.rescale(data_lib.decode(png), 128).numpy()  # 128x192
    np.testing.assert_allclose(up[inner], rescaled[48:80, 80:112][inner], atol=1.0)


def test_colour_shift_has_alexnet_pca_statistics():
    shifts = np.stack([data_lib.pca_shift(s).numpy() for s in seeds(4000)])
    eigval = np.array(data_lib.PCA_EIGVAL) * 255
    eigvec = np.array(data_lib.PCA_EIGVEC)
    expected = eigvec @ np.diag((0.1 * eigval) ** 2) @ eigvec.T
    cov = np.cov(shifts.T)
    assert np.abs(shifts.mean(0)).max() < 4 * np.sqrt(expected.diagonal().max() / 4000)
    np.testing.assert_allclose(cov, expected, atol=0.08 * expected.max())
    # Along the principal components the shifts are independent, with
    # standard deviations 0.1 * eigenvalue.
    projected = shifts @ eigvec
    np.testing.assert_allclose(projected.std(0), 0.1 * eigval, rtol=0.08)


def test_colour_shift_adds_one_rgb_offset_to_every_pixel():
    image = tf.constant(encoded(np.full((40, 40, 3), 100)))
    seed = tf.constant([1, 2], tf.int64)
    shifted = data_lib.augment(image, seed, 32, (40, 40)).numpy()
    plain = data_lib.augment(image, seed, 32, (40, 40), color_shift=False).numpy()
    np.testing.assert_allclose(plain, data_lib.normalize(tf.fill((32, 32, 3), 100.0)))
    offset = shifted - plain
    assert np.abs(offset).max() > 0.5
    np.testing.assert_allclose(offset, np.broadcast_to(offset[0, 0], offset.shape),
                               atol=1e-4)


def test_normalize_with_the_imagenet_mean_is_preprocess_input(rng):
    x = rng.uniform(0, 255, (5, 7, 3)).astype(np.float32)
    np.testing.assert_allclose(data_lib.normalize(tf.constant(x)).numpy(),
                               keras_vgg.preprocess_input(x), atol=1e-4)


def _pipeline(split, **kwargs):
    args = dict(global_batch=4, image_size=32, scale=(32, 40),
                mean_rgb=data_lib.IMAGENET_MEAN_RGB, seed=3, initial_epoch=0,
                epochs=3, steps_per_epoch=2)
    args.update(kwargs)
    return [(x.numpy(), y.numpy())
            for x, y in data_lib.train_pipeline(split, **args)]


def test_training_pipeline_is_deterministic_and_resumes_mid_run(rng):
    images = random_images(rng, [(40 + i, 36 + 2 * i) for i in range(10)])
    split = split_of(images, list(range(10)), "train")
    run = _pipeline(split)
    assert len(run) == 6 and run[0][0].shape == (4, 32, 32, 3)
    for (x1, y1), (x2, y2) in zip(run, _pipeline(split)):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    # Each epoch draws a new shuffle and new augmentations...
    assert not np.array_equal(run[0][0], run[2][0])
    # ... and a run restarted at epoch 1 sees exactly the batches it would
    # have seen without the interruption.
    resumed = _pipeline(split, initial_epoch=1)
    assert len(resumed) == 4
    for (x1, y1), (x2, y2) in zip(run[2:], resumed):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    other = _pipeline(split, seed=4)
    assert not np.array_equal(run[0][0], other[0][0])


def test_eval_pipeline_is_rescale_to_q_and_centre_crop(rng):
    image = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    split = split_of([image], [1])
    (x, y), = list(data_lib.eval_pipeline(split, batch_size=8, image_size=32,
                                          smallest_side=40,
                                          mean_rgb=(0.0, 0.0, 0.0)))
    assert y.numpy().tolist() == [1]
    # Q = 40 is the image's smallest side: the centre crop of the image itself.
    np.testing.assert_allclose(x.numpy()[0], image[4:36, 14:46, ::-1], atol=1e-3)


def _write_png(path, rng):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encoded(rng.integers(0, 256, (8, 10, 3))))


def test_folder_dataset_with_train_and_val_subfolders(tmp_path, rng):
    for split, n in (("train", 3), ("val", 2)):
        for label in ("cat", "dog"):
            for i in range(n):
                _write_png(tmp_path / split / label / f"{i}.png", rng)
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    source = sources.load_source(f"folder:{tmp_path}")
    assert source.class_names == ["cat", "dog"]
    assert (source.train.size, source.val.size) == (6, 4)
    labels = [int(y) for _, y in source.train.examples]
    assert labels == [0, 0, 0, 1, 1, 1]
    image = data_lib.decode(next(iter(source.val.examples))[0])
    assert image.shape == (8, 10, 3) and image.dtype == tf.float32


def test_folder_dataset_of_class_subfolders_holds_out_every_tenth(tmp_path, rng):
    for label in ("a", "b", "c"):
        for i in range(10):
            _write_png(tmp_path / label / f"{i:02d}.png", rng)
    source = sources.load_source(f"folder:{tmp_path}")
    assert (source.train.size, source.val.size, source.num_classes) == (27, 3, 3)


def test_digits_folder_is_real_data_written_once(tmp_path):
    root = sources.write_digits(tmp_path / "digits")
    source = sources.load_source(f"folder:{root}")
    assert source.num_classes == 10
    assert source.train.size + source.val.size == 1797
    assert 280 < source.val.size < 320
    image = data_lib.decode(next(iter(source.train.examples))[0]).numpy()
    assert image.shape == (32, 32, 3) and image.max() > 200
    mean = data_lib.mean_rgb_of(source.train)
    assert 60 < mean[0] < 100 and mean[0] == mean[1] == mean[2]  # grey digits


def test_missing_imagenet_says_how_to_prepare_it(tmp_path):
    with pytest.raises(sources.DataError) as e:
        sources.load_source("imagenet2012", data_dir=str(tmp_path))
    message = str(e.value)
    for needed in ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar",
                   "--manual_dir", "image-net.org", str(tmp_path), "--smoke"):
        assert needed in message, needed
    # Tars that are not there: the same instructions, naming the folder.
    with pytest.raises(sources.DataError, match="did not contain"):
        sources.load_source("imagenet2012", data_dir=str(tmp_path),
                             manual_dir=str(tmp_path / "tars"))


def test_other_missing_datasets_give_clear_errors(tmp_path):
    with pytest.raises(sources.DataError, match="TFDS has no dataset 'no_such_set'"):
        sources.load_source("no_such_set", data_dir=str(tmp_path))
    with pytest.raises(sources.DataError, match="not prepared.*tfds build mnist"):
        sources.load_source("mnist", data_dir=str(tmp_path), download=False)
    with pytest.raises(sources.DataError, match="does not exist"):
        sources.load_source(f"folder:{tmp_path / 'nothing'}")
    (tmp_path / "one_class").mkdir()
    with pytest.raises(sources.DataError, match="one subfolder per class"):
        sources.load_source(f"folder:{tmp_path}")


def test_mean_rgb_flag_values():
    assert data_lib.parse_mean_rgb("imagenet") == data_lib.IMAGENET_MEAN_RGB
    assert data_lib.parse_mean_rgb("1,2.5,3") == (1.0, 2.5, 3.0)
    with pytest.raises(ValueError, match="Received: 'blue'"):
        data_lib.parse_mean_rgb("blue")
