"""The serving graph of an exported VGG and its TF Serving SavedModel.

Two signatures over one copy of the weights: `serving_default` (preprocessed
float images) and `serve_image_bytes` (encoded JPEG/PNG strings, decoded,
rescaled and preprocessed in the graph with the recipes' own functions).
`heads` (probabilities and top-k) is shared with the ONNX export.
"""

DEFAULT_TEST_SCALE = 256
DEFAULT_TOP_K = 5
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


def _decode(data):
    """Decodes one JPEG or PNG string into float32 RGB pixels, checking it.

    The pixels come from `keras_vgg.recipes.data.decode`, the decoder evaluation uses.
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
        return decode(data)


def _saved_model_module(dense, test_scale, flip, top_k):
    """A `tf.Module` with the two serving signatures and the weights, once each."""
    import tensorflow as tf

    import keras_vgg
    # The paper's test-time rescale, the same function evaluate.py uses, so a
    # served image is seen exactly as in evaluation.
    from keras_vgg.recipes.data import rescale

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
            image = rescale(_decode(data), test_scale)
            x = keras_vgg.preprocess_input(image[None], data_format="channels_last")
            if flip:  # both in one batch: same size, one pass
                x = tf.concat([x, tf.reverse(x, axis=[2])], axis=0)
            return tf.reduce_mean(net(x), axis=0)

        # Images differ in size, so each one goes through the network alone.
        probabilities = tf.map_fn(one, image_bytes, fn_output_signature=tf.TensorSpec(
            [classes], tf.float32))
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
                       top_k=DEFAULT_TOP_K):
    """Writes the SavedModel of a fully-convolutional VGG to `path` (non-atomic).

    Use `export` for the versioned, atomic layout; this is the conversion
    itself, for a model made by `keras_vgg.fully_convolutional`.
    """
    import tensorflow as tf

    module, signatures = _saved_model_module(dense, test_scale, flip, top_k)
    tf.saved_model.save(module, path, signatures=signatures)
