"""The networks train_16k.py builds: the seed's MLP and the small CNN on
log-mel patches (every operation an int8 kernel of TensorFlow Lite Micro),
chosen and checked from the settings before any training."""

from pipeline import settings
from pipeline.errors import PipelineError
from pipeline.quiet import import_keras


def architecture(cfg, config):
    """The model to build, from the settings: kind ("mlp" or "cnn") and the
    units (MLP) or filters (CNN) of each layer. Checked before any training."""
    if cfg.recipe not in ("default", "seed"):
        raise PipelineError(f"--recipe={cfg.recipe!r}: expected 'default' or 'seed'")
    if cfg.recipe == "seed" and config.preset != "seed":
        raise PipelineError("--recipe=seed runs the seed's method on the seed's features: build "
                            "the dataset with `python make_dataset_16k.py --features=seed`")
    if cfg.recipe == "seed" and cfg.architecture not in ("auto", "mlp"):
        raise PipelineError(f"--recipe=seed trains the seed's MLP, not --architecture={cfg.architecture}")
    kind = cfg.architecture if cfg.architecture != "auto" else ("cnn" if config.input_shape else "mlp")
    if kind not in ("mlp", "cnn", "pretrained"):
        raise PipelineError(f"--architecture={cfg.architecture!r}: expected 'mlp', 'cnn', 'pretrained' or "
                            "'auto'")
    if kind == "pretrained":
        from pipeline import pretrained
        pretrained.check_preset(config, cfg.dataset)
        if not cfg.teacher:
            raise PipelineError("--architecture=pretrained needs --teacher=FOLDER (a pretrained "
                                "tagger's .tflite file and class list; README: 'Best model on "
                                "real recordings')")
        return kind, []
    if kind == "cnn" and not config.input_shape:
        raise PipelineError("--architecture=cnn needs 2-D features: build the dataset with "
                            "`python make_dataset_16k.py --features=logmel_patch`")
    option, text = (("cnn_filters", cfg.cnn_filters) if kind == "cnn"
                    else ("hidden_layers", cfg.hidden_layers))
    return kind, layer_units(text, option)


def layer_units(text, option):
    """Units or filters of each layer from a setting such as "16,32,32"."""
    units = settings.parse_list(text, int, option)
    if not units or min(units) < 1:
        raise PipelineError(f"--{option}={text!r}: expected positive integers, e.g. 16,32,32")
    return units


def build_model(n_inputs, n_classes, kind, units, *, dropout, learning_rate, seed,
                input_shape=None, batch_norm=False, band_norm=0.0, separable=False,
                label_smoothing=0.0):
    """The seed's MLP, or a small CNN on log-mel patches.

    MLP: Dense+ReLU layers of ``units``, dropout after the last, softmax
    out. The seed put ReLU on the output layer; categorical cross-entropy
    needs class probabilities, so the output is softmax (ReLU outputs can be
    all zero, which makes the loss undefined and the prediction arbitrary).

    CNN: the flat input is reshaped to ``input_shape`` + (1,), then one 3x3
    conv (+ batch normalisation with ``batch_norm``, folded into the conv by
    the int8 converter) + ReLU + 2x2 max-pool block per entry of ``units``
    (its filters), global average pooling, dropout, softmax; every operation
    has an int8 kernel in TensorFlow Lite Micro. With ``band_norm`` > 0 the
    patch first loses that share of each band's mean over its frames
    (average pooling over time, scaled unless the share is 1, subtracted
    with broadcasting: int8 TFLM operations); 1 is cepstral mean
    normalisation as for speech, less than 1 the relaxed form of
    frequency-wise normalisation (RFN, Kim et al. 2021), which keeps part
    of the clip's spectral shape. With ``separable`` every
    conv after the first is depthwise-separable (a 3x3 depthwise conv, then
    a 1x1 conv to ``units`` filters: both TFLM int8 operations), about 8x
    fewer multiply-adds per filter. ``label_smoothing``
    trains on targets with that share spread evenly over the classes.
    """
    keras = import_keras()
    inputs = keras.Input(shape=(n_inputs,))
    layers = []
    x = inputs
    if kind == "cnn":
        x = keras.layers.Reshape((*input_shape, 1))(x)
        if band_norm:
            frames = input_shape[0]
            means = keras.layers.AveragePooling2D(pool_size=(frames, 1))(x)
            if band_norm != 1:
                means = keras.layers.Rescaling(band_norm)(means)
            x = keras.layers.Subtract()([x, means])  # broadcast over the frames
        for k, filters in enumerate(units):
            if separable and k > 0:
                layers.append(keras.layers.DepthwiseConv2D(3, padding="same"))
                conv = keras.layers.Conv2D(filters, 1, use_bias=not batch_norm,
                                           activation=None if batch_norm else "relu")
            else:
                conv = keras.layers.Conv2D(filters, 3, padding="same", use_bias=not batch_norm,
                                           activation=None if batch_norm else "relu")
            layers.append(conv)
            if batch_norm:
                layers += [keras.layers.BatchNormalization(), keras.layers.ReLU()]
            layers.append(keras.layers.MaxPooling2D(2))
        layers.append(keras.layers.GlobalAveragePooling2D())
    else:
        layers += [keras.layers.Dense(u, activation="relu") for u in units]
    layers += [keras.layers.Dropout(dropout, seed=seed),
               keras.layers.Dense(n_classes, activation="softmax")]
    for layer in layers:
        x = layer(x)
    model = keras.Model(inputs, x)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
                  metrics=["accuracy"])
    return model
