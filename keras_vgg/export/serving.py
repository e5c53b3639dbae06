"""The serving graph of an exported VGG and its TF Serving SavedModel.

Two signatures over one copy of the weights: `serving_default` (preprocessed
float images) and `serve_image_bytes` (encoded JPEG/PNG strings, decoded,
rescaled and preprocessed in the graph with the recipes' own functions).
`heads` (probabilities and top-k) is shared with the ONNX export.
"""

DEFAULT_TEST_SCALE = 256
DEFAULT_TOP_K = 5
# The largest image `serve_image_bytes` decodes, in pixels: 36 MP holds a
# 7360x4912 full-frame camera photo. Decoding costs about 16 bytes a pixel
# for a moment (uint8 pixels, their float32 copy, the rescale), so one such
# image takes about 0.6 GB; a 1.2 MB PNG of 20000x20000 would take 6.4 GB.
DEFAULT_MAX_PIXELS = 36_000_000
# Images per `serve_image_bytes` request; they are decoded one after another.
DEFAULT_MAX_IMAGES = 64
# Longest side over shortest. Rescaled to a smallest side Q, an image has
# Q^2 x this many pixels at most (655k at Q=256: VGG's first block then holds
# 0.17 GB of activations); a 1x65535 strip would have 14.7 million.
DEFAULT_MAX_ASPECT_RATIO = 10
_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def class_labels(classes):
    """The class names for `top_k_labels`, if the model has ImageNet's classes."""
    import keras_vgg

    if classes != 1000:
        return None
    return [name for _, name in keras_vgg.imagenet_classes()]


def heads(probabilities, top_k, labels):
    import tensorflow as tf

    scores, classes = tf.math.top_k(probabilities, k=top_k)
    outputs = {"probabilities": probabilities, "top_k_classes": classes,
               "top_k_scores": scores}
    if labels is not None:
        outputs["top_k_labels"] = tf.gather(tf.constant(labels), classes)
    return outputs


def check_size(images, min_size):
    """Fails with InvalidArgument when `images` are smaller than `min_size`."""
    import tensorflow as tf

    shape = tf.shape(images)
    ok = tf.logical_and(shape[1] >= min_size[0], shape[2] >= min_size[1])
    # Inside the graph the model's own MinimumInputSize check cannot see the
    # (dynamic) size; without this a small image fails deep in fc1's conv.
    return tf.debugging.Assert(ok, [
        f"Images must be at least {min_size[0]}x{min_size[1]} (height x width) "
        "for this model. Received height, width:", shape[1], shape[2]])


def _header_size(data, is_jpeg):
    """`(height, width)` as the file's header states them, read without
    decoding a pixel: JPEG's frame header (`extract_jpeg_shape`), PNG's IHDR
    chunk (bytes 16-23, big-endian, after the `IHDR` tag at 12-15)."""
    import tensorflow as tf

    def jpeg():
        return tf.cast(tf.image.extract_jpeg_shape(data)[:2], tf.int64)

    def png():
        # Padded, so that reading past the end of a short string is no error
        # (TF's would quote the raw bytes, which Python cannot decode).
        head = tf.strings.substr(tf.strings.join([data, b"\0" * 24]), 0, 24)
        ok = tf.logical_and(tf.strings.length(data) >= 24,
                            tf.equal(tf.strings.substr(head, 12, 4), b"IHDR"))
        check = tf.debugging.Assert(ok, [
            "serve_image_bytes: a PNG without its IHDR header chunk (truncated "
            "or not a PNG). Received a string of length:", tf.strings.length(data)])
        with tf.control_dependencies([check]):
            fields = tf.io.decode_raw(tf.strings.substr(head, 16, 8), tf.uint8)
        fields = tf.cast(fields, tf.int64)
        width = tf.reduce_sum(fields[:4] * [1 << 24, 1 << 16, 1 << 8, 1])
        height = tf.reduce_sum(fields[4:] * [1 << 24, 1 << 16, 1 << 8, 1])
        return tf.stack([height, width])

    return tf.cond(is_jpeg, jpeg, png)


def _decode(data, max_pixels=DEFAULT_MAX_PIXELS, max_aspect=DEFAULT_MAX_ASPECT_RATIO):
    """Decodes one JPEG or PNG string into float32 RGB pixels, checking it.

    Refuses, before decoding, files that are neither, and images whose header
    states more than `max_pixels` pixels (a decompression bomb: a small file
    that decodes to gigabytes) or a longest side more than `max_aspect` times
    the shortest (1x65535 pixels is small, but 224 x 14.7 million once
    rescaled), each with an InvalidArgument naming the size received and the
    limit. The pixels come from `keras_vgg.recipes.data.decode`, the decoder
    evaluation uses.
    """
    import tensorflow as tf

    from keras_vgg.recipes.data import decode

    is_jpeg = tf.equal(tf.strings.substr(data, 0, len(_JPEG_MAGIC)), _JPEG_MAGIC)
    is_png = tf.equal(tf.strings.substr(data, 0, len(_PNG_MAGIC)), _PNG_MAGIC)
    check = tf.debugging.Assert(tf.logical_or(is_jpeg, is_png), [
        "serve_image_bytes expects JPEG or PNG encoded images (the raw file "
        "bytes; base64 only in the JSON of TF Serving's REST API). Received a "
        "string that is neither, of length:", tf.strings.length(data)])
    with tf.control_dependencies([check]):
        size = _header_size(data, is_jpeg)
    short, long = tf.reduce_min(size), tf.reduce_max(size)
    small = tf.logical_and(short > 0, tf.logical_and(
        size[0] * size[1] <= max_pixels, long <= max_aspect * short))
    check = tf.debugging.Assert(small, [
        f"serve_image_bytes decodes images of at most {max_pixels} pixels whose "
        f"longest side is at most {max_aspect} times the shortest (set at export "
        "by --max_pixels, --max_aspect_ratio). Received an image whose header "
        "states height, width:", size[0], size[1]])
    with tf.control_dependencies([check]):
        return decode(data)


def _saved_model_module(dense, test_scale, flip, top_k, mean_rgb, max_pixels,
                        max_images, max_aspect):
    """A `tf.Module` with the two serving signatures and the weights, once each."""
    import tensorflow as tf

    # The paper's test-time rescale and the mean subtraction, the functions
    # evaluate.py uses, so a served image is seen exactly as in evaluation.
    from keras_vgg.recipes.data import normalize, rescale

    classes = int(dense.output.shape[-1])
    min_size = dense.get_layer("min_input_size").min_size
    labels = class_labels(classes)

    def net(images):
        with tf.control_dependencies([check_size(images, min_size)]):
            return dense(images, training=False)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32,
                                                name="images")])
    def serve_tensor(images):
        return heads(net(images), top_k, labels)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def serve_bytes(image_bytes):
        def one(data):
            image = rescale(_decode(data, max_pixels, max_aspect), test_scale)
            x = normalize(image, mean_rgb)[None]
            if flip:  # both in one batch: same size, one pass
                x = tf.concat([x, tf.reverse(x, axis=[2])], axis=0)
            return tf.reduce_mean(net(x), axis=0)

        count = tf.size(image_bytes)
        check = tf.debugging.Assert(count <= max_images, [
            f"serve_image_bytes takes at most {max_images} images per request (set "
            "at export by --max_images). Received:", count])
        with tf.control_dependencies([check]):
            image_bytes = tf.identity(image_bytes)
        # Images differ in size, so each one goes through the network alone,
        # one after another: memory holds one decoded image at a time.
        probabilities = tf.map_fn(one, image_bytes, parallel_iterations=1,
                                  fn_output_signature=tf.TensorSpec([classes], tf.float32))
        return heads(probabilities, top_k, labels)

    module = tf.Module()
    # Track the plain tf.Variables, not the Keras model: Keras 3 wraps each
    # tf.Variable in a keras Variable that is itself trackable, and
    # `model.export` tracks both (`variables` and `_all_variables`), so every
    # weight is written twice. Here each weight has one checkpoint entry.
    module.vgg_weights = [v.value for v in dense.weights]
    module.serving_default = serve_tensor
    module.serve_image_bytes = serve_bytes
    return module, {"serving_default": serve_tensor.get_concrete_function(),
                    "serve_image_bytes": serve_bytes.get_concrete_function()}


def export_saved_model(dense, path, test_scale=DEFAULT_TEST_SCALE, flip=False,
                       top_k=DEFAULT_TOP_K, mean_rgb=None, max_pixels=DEFAULT_MAX_PIXELS,
                       max_images=DEFAULT_MAX_IMAGES, max_aspect=DEFAULT_MAX_ASPECT_RATIO):
    """Writes the SavedModel of a fully-convolutional VGG to `path` (non-atomic).

    Use `export` for the versioned, atomic layout; this is the conversion
    itself, for a model made by `keras_vgg.fully_convolutional`. `mean_rgb`
    is what `serve_image_bytes` subtracts (default ImageNet's, as
    `keras_vgg.preprocess_input`).
    """
    import tensorflow as tf

    from keras_vgg.recipes.data import IMAGENET_MEAN_RGB

    module, signatures = _saved_model_module(
        dense, test_scale, flip, top_k, tuple(mean_rgb or IMAGENET_MEAN_RGB),
        max_pixels, max_images, max_aspect)
    tf.saved_model.save(module, path, signatures=signatures)
