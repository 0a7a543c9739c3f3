"""Transfer-learning models on ``keras.applications`` backbones (ResNet50V2 as seed 001, VGG16).

The backbone is built with ``input_tensor=`` on the normalised input, so the whole model is one flat
graph and Grad-CAM can reach ``post_relu`` / ``block5_conv3`` (also after ``load_model``).
Pretrained weights are loaded into a standalone copy of the backbone and copied by layer name, so
Keras' own ``*_notop.h5`` files and ``.weights.h5`` files saved from that backbone both work.

``weights``: None (a random backbone), ``"imagenet"`` (Keras' cached file, else downloaded once; an error
when that fails), ``"auto"`` (ImageNet when the file is cached or can be downloaded, else a random
backbone and one line saying so and why: :func:`resolve_weights`) or the path of a local weights file.
Setting ``COVID_TF_OFFLINE=1`` skips every download attempt (the tests do).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import keras

from covid_tf.errors import CovidTfError
from covid_tf.models import common

_WEIGHTS_BASE_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"
#: ``weights="auto"``: ImageNet when cached or downloadable, else a random backbone (said in one line).
AUTO = "auto"
# Set to 1 to never try a download (air-gapped machines, the tests).
OFFLINE_VARIABLE = "COVID_TF_OFFLINE"
# Seconds to wait for the weights server before calling the machine offline.
CONNECT_TIMEOUT = 3.0
# Backbones keras.applications does not provide: the file `auto` takes from Keras' cache folder when it is there
# (a ``.weights.h5`` saved from ``covid_tf.models.resnet18_backbone``, e.g. after porting torchvision's weights).
LOCAL_BACKBONE_FILES = {"resnet18": "resnet18_notop.weights.h5"}


@dataclass(frozen=True)
class Backbone:
    """One ``keras.applications`` backbone: its builder and its no-top ImageNet weights file."""

    application: Callable[..., keras.Model]
    weights_file: str
    weights_url: str
    weights_hash: str


BACKBONES = {
    "resnet50v2": Backbone(
        application=keras.applications.ResNet50V2,
        weights_file="resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
        weights_url=_WEIGHTS_BASE_URL + "resnet/resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
        weights_hash="fac2f116257151a9d068a22e544a4917",
    ),
    "vgg16": Backbone(
        application=keras.applications.VGG16,
        weights_file="vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        weights_url=_WEIGHTS_BASE_URL + "vgg16/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        weights_hash="6d6bbae143d832006294945121d1f1fc",
    ),
}


def keras_models_dir() -> Path:
    """The folder where Keras caches downloaded weights (``$KERAS_HOME/models``, else ``~/.keras/models``)."""
    home = os.environ.get("KERAS_HOME") or os.path.join("~", ".keras")
    return Path(home).expanduser() / "models"


def imagenet_weights_path(architecture: str) -> Path:
    """Return the local ImageNet weights file of a backbone: Keras' cached file, else downloaded once.

    Raises ``CovidTfError`` naming the file to fetch and where to put it when the download fails
    (for example offline).
    """
    backbone = BACKBONES[architecture]
    cache_dir = keras_models_dir()
    target = cache_dir / backbone.weights_file
    if target.is_file():
        # Used as it is: with a hash that differs, Keras would download it again and delete it when offline.
        return target
    try:
        path = keras.utils.get_file(
            backbone.weights_file,
            backbone.weights_url,
            cache_dir=str(cache_dir.parent),
            cache_subdir=cache_dir.name,
            file_hash=backbone.weights_hash,
        )
    except Exception as error:  # any download failure (offline, proxy, bad hash) gets the same advice
        raise CovidTfError(
            f"cannot download the ImageNet weights of {architecture} ({type(error).__name__}: {error}). "
            f"Download {backbone.weights_url} on a machine with internet access and put it at {target}, "
            f"or pass weights='path/to/{backbone.weights_file}'"
        ) from error
    return Path(path)


def can_download(url: str) -> bool:
    """Whether the host of ``url`` answers within :data:`CONNECT_TIMEOUT` (False when ``COVID_TF_OFFLINE=1``)."""
    if os.environ.get(OFFLINE_VARIABLE, "").strip() not in ("", "0"):
        return False
    host = urlparse(url).hostname or ""
    try:
        with socket.create_connection((host, 443), timeout=CONNECT_TIMEOUT):
            return True
    except OSError:
        return False


def resolve_weights(architecture: str, weights: str | Path | None, *, say=print) -> str | Path | None:
    """What a model of ``architecture`` starts from; ``"auto"`` becomes ``"imagenet"`` or None.

    ``"auto"`` is ``"imagenet"`` when Keras' cached file exists or can be downloaded (it is downloaded
    here, once); otherwise None, and ``say`` gets one line: the backbone is random, and why. ResNet18, which
    ``keras.applications`` lacks, takes :data:`LOCAL_BACKBONE_FILES`' file from Keras' cache folder, else it is
    random, said in one line too. Models trained from scratch get None quietly. Any other value is returned as it is.
    """
    if weights != AUTO:
        return weights
    if architecture in LOCAL_BACKBONE_FILES:
        return _cached_local_backbone(architecture, say)
    if architecture not in BACKBONES:
        return None
    backbone = BACKBONES[architecture]
    cached = keras_models_dir() / backbone.weights_file
    if cached.is_file():
        return "imagenet"
    host = urlparse(backbone.weights_url).hostname
    if os.environ.get(OFFLINE_VARIABLE, "").strip() not in ("", "0"):
        reason = f"offline: {OFFLINE_VARIABLE} is set"
    elif not can_download(backbone.weights_url):
        reason = f"offline: {host} cannot be reached"
    else:
        try:
            imagenet_weights_path(architecture)
            return "imagenet"
        except CovidTfError as error:
            reason = f"the download failed: {error.__cause__ or error}"
    say(f"{architecture}: random backbone, no ImageNet weights ({reason}; {backbone.weights_file} is not in "
        f"{cached.parent}); put it there or pass --weights PATH")
    return None


def _cached_local_backbone(architecture: str, say) -> Path | None:
    cached = keras_models_dir() / LOCAL_BACKBONE_FILES[architecture]
    if cached.is_file():
        return cached
    say(f"{architecture}: random backbone, no ImageNet weights (keras.applications has no {architecture} and "
        f"{cached.name} is not in {cached.parent}); put a .weights.h5 of covid_tf.models.{architecture}_backbone "
        "there or pass --weights PATH")
    return None


def _weights_file(architecture: str, weights: str | Path | None) -> Path | None:
    if weights is None:
        return None
    if weights == "imagenet":
        return imagenet_weights_path(architecture)
    return common.local_weights_file(weights, architecture)


def _build_transfer(architecture: str, options: common.BuildOptions) -> keras.Model:
    backbone = BACKBONES[architecture]
    weights_file = _weights_file(architecture, resolve_weights(architecture, options.weights))
    inputs, x = options.stem(rgb=True)
    base = backbone.application(include_top=False, weights=None, input_tensor=x)
    outputs = options.head(base.output, inputs)
    model = keras.Model(inputs, outputs, name=common.model_name(architecture))
    if weights_file is not None:
        try:
            pretrained = backbone.application(
                include_top=False, weights=str(weights_file), input_shape=(options.image_size, options.image_size, 3)
            )
        except (ValueError, OSError, KeyError) as error:
            raise CovidTfError(
                f"{weights_file}: not a weights file of the {architecture} backbone without top ({error})"
            ) from error
        common.copy_weights(pretrained, model)
    return model


def build_resnet50v2(options: common.BuildOptions) -> keras.Model:
    """ResNet50V2 backbone -> GAP -> Dense(128, relu) -> Dropout -> softmax (seed 001, two outputs).

    ``normalization='auto'`` scales to [-1, 1] as ResNet50V2 expects. ``weights``: None, 'imagenet'
    (downloaded once by Keras), 'auto' (see :func:`resolve_weights`) or a local ``.h5`` / ``.weights.h5``
    file of the backbone.
    """
    return _build_transfer("resnet50v2", options)


def build_vgg16(options: common.BuildOptions) -> keras.Model:
    """VGG16 backbone -> GAP -> Dense(128, relu) -> Dropout -> softmax; last conv layer ``block5_conv3``.

    ``normalization='auto'`` is the caffe convention VGG16's ImageNet weights expect.
    """
    return _build_transfer("vgg16", options)
