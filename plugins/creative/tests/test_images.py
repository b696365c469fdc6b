"""The image generator: data from digits, CIFAR-10 and a user's folder (bad files counted), EDM and its samplers, a run end to end."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genforge.core import ConfigError, DataError
from genforge.core.plugin_manager import get_generator
from genforge.core.runner import create_run, run_all
from genforge.core.testing import check_generator, quick_run
from genforge.core.testing.conformance import check_config_defaults
from genforge.plugins.creative.images import data as image_data
from genforge.plugins.creative.images.data import ImageDataConfig, read_cifar10
from genforge.plugins.creative.images.edm import EDM, SAMPLERS, guided, stochastic
from genforge.plugins.creative.images.unet import UNet, UNetConfig


def _png(img: Image.Image, format: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=format)
    return buf.getvalue()


def _picture(rng: np.random.Generator, size=(24, 20), mode="RGB") -> Image.Image:
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    arr[:, : size[0] // 2] //= 3  # some structure: a dark left half
    return Image.fromarray(arr).convert(mode)


@pytest.fixture
def messy_folder(tmp_path: Path) -> Path:
    """Two class folders of good pictures, plus every kind of bad file a studio's folder holds."""
    rng = np.random.default_rng(0)
    root = tmp_path / "pictures"
    for cls in ("logos", "icons"):
        (root / cls).mkdir(parents=True)
        for i in range(12):
            _picture(rng).save(root / cls / f"{i}.png")
    good_jpeg = _png(_picture(rng, (40, 30)), format="JPEG")
    (root / "logos" / "truncated.jpg").write_bytes(good_jpeg[: len(good_jpeg) // 2])
    (root / "logos" / "notes.png").write_text("this is a text file renamed .png\n")
    Image.new("RGB", (1, 1), (255, 0, 0)).save(root / "icons" / "pixel.png")
    Image.fromarray((rng.integers(0, 65535, (20, 20))).astype(np.uint16)).save(root / "icons" / "deep.png")  # 16-bit grey
    _picture(rng, (20, 20)).convert("CMYK").save(root / "icons" / "print.jpg", format="JPEG")
    rgba = _picture(rng, (20, 20)).convert("RGBA")
    rgba.putalpha(0)  # fully transparent: flattened on white
    rgba.save(root / "logos" / "alpha.png")
    (root / "README.txt").write_text("not an image name: ignored")
    return root


def test_defaults_round_trip():
    check_config_defaults("image-diffusion")


def test_image_diffusion_passes_the_conformance_checks(genforge_home):
    steps = check_generator("image-diffusion")
    training = steps.run.read_json("training.json")
    assert training["step"] == 12 and training["throughput"]["unit"] == "images/s"
    samples = steps.run.read_json("samples.json")
    assert samples["details"]["network_evaluations_per_image"] == 5 and samples["details"]["label"] == "all classes"
    with np.load(steps.run.samples_dir / "images.npz") as z:
        assert z["images"].shape == (40, 8, 8) and z["images"].dtype == np.uint8
        assert np.bincount(z["labels"]).tolist() == [4] * 10  # every class in equal shares
    assert len(list((steps.run.samples_dir / "png").glob("*.png"))) == 40


def test_a_messy_folder_trains_and_counts_each_skipped_file(genforge_home, messy_folder):
    spec = {**get_generator("image-diffusion").test_spec, "data": {"path": str(messy_folder), "resolution": 8, "test_fraction": 0.25}}
    run = quick_run("image-diffusion", spec)
    assert run.status["state"] == "finished"
    data = run.read_json("data.json")
    assert data["train"]["read"] == 30  # 24 good + 6 odd files; README.txt is not an image name
    assert data["train"]["rejected"] == {"truncated": 1, "not an image": 1, "smaller than 8 px": 1}
    assert data["details"]["converted"] == {"16-bit converted to 8-bit": 1, "CMYK converted to RGB": 1, "alpha flattened on white": 1}
    assert data["details"]["classes"] == ["icons", "logos"] and data["details"]["channels"] == 3
    assert data["train"]["kept"] + data["train"]["held_out"] == 27
    report = (run.path / "report.md").read_text()
    assert "truncated" in report and "not an image" in report
    # the conversions reach the summary and the report, not only data.json
    assert "3 picture conversion(s): " in report and "CMYK converted to RGB" in report
    with np.load(run.samples_dir / "images.npz") as z:
        assert z["images"].shape == (40, 8, 8, 3)


def test_a_folder_plans_its_steps_to_its_minutes_and_trains_with_told_augmentation(genforge_home, messy_folder):
    from genforge.plugins.creative.images.generator import ImageDiffusionConfig, dihedral

    folder = ImageDiffusionConfig.model_validate({"data": {"path": str(messy_folder)}}).train
    digits = ImageDiffusionConfig().train
    assert (folder.plan, folder.max_steps, folder.batch_size) == (True, None, 32)
    assert (digits.plan, digits.max_steps, digits.batch_size) == (False, 2000, 128)
    assert ImageDiffusionConfig.model_validate({"data": {"path": "x"}, "train": {"max_steps": 50}}).train.plan is False
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    turned = dihedral(x, torch.tensor([1, 6]))
    assert torch.equal(turned[0], torch.rot90(x[0], 1, (-2, -1))) and torch.equal(turned[1], torch.rot90(x[1], 2, (-2, -1)).flip(-1))
    assert torch.equal(dihedral(x, torch.tensor([0, 0])), x)

    base = get_generator("image-diffusion").test_spec
    spec = {
        **base,
        "data": {"path": str(messy_folder), "resolution": 8},
        "train": {**base["train"], "max_steps": None, "max_minutes": 0.1, "checkpoint_every": 100, "log_every": 20},
    }
    run = quick_run("image-diffusion", spec)
    training = run.read_json("training.json")
    plan = training["plan"]
    assert plan["max_steps"] >= 5 and plan["seconds_per_step"] > 0
    # the engine follows the plan (whether it completes in time is timed in tests/test_training.py with paced steps; here a
    # loaded machine can slow the steps after the measurement)
    assert training["stopped_by"] in ("max_steps", "max_minutes") and training["step"] <= plan["max_steps"]
    assert training["stopped_by"] == "max_minutes" or training["step"] == plan["max_steps"]
    assert training["details"]["augment"] == 0.5 and (run.path / "checkpoints" / "plan.json").exists()
    assert f"Planned {plan['max_steps']:,} steps to complete within train.max_minutes" in (run.path / "report.md").read_text()


def test_a_picture_over_max_pixels_is_skipped_from_its_header_without_pils_warning():
    import warnings

    huge = _png(Image.new("1", (11000, 11000)))  # 121 megapixels: PIL warns of a decompression bomb on opening it
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning is a failure here
        with pytest.raises(image_data.SkipImage, match=r"larger than data.max_pixels \(50,000,000 pixels\)"):
            image_data.read_image(huge, max_pixels=image_data.ImageDataConfig().max_pixels)
        with pytest.raises(image_data.SkipImage, match="larger than data.max_pixels"):
            image_data.read_image(_png(Image.new("L", (300, 300))), max_pixels=50_000)


def test_names_that_are_no_regular_file_are_counted_never_opened(tmp_path):
    """A FIFO named like a picture (opening it would block), a link that leads nowhere, a loop of links: counted, not read."""
    import os

    folder = tmp_path / "pictures"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        (folder / f"ok-{i}.png").write_bytes(_png(_picture(rng, (16, 16))))
    os.mkfifo(folder / "pipe.png")
    (folder / "gone.png").symlink_to(tmp_path / "deleted.png")
    (folder / "loop.png").symlink_to(folder / "loop.png")
    cfg = image_data.ImageDataConfig(path=str(folder), resolution=8)
    files, classes = image_data.folder_files(folder)
    loaded = image_data.load_folder(folder, cfg, files, classes)
    assert loaded.read == 6 and len(loaded.images) == 3 and loaded.rejected == {"not a regular file": 3}
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(DataError, match="is a loop of symbolic links"):
        image_data.folder_files(tmp_path / "a")


def test_read_image_conversions():
    rng = np.random.default_rng(1)
    arr, notes = image_data.read_image(_png(Image.fromarray(np.full((10, 10), 65535, np.uint16))))
    assert notes == ["16-bit converted to 8-bit"] and arr.dtype == np.uint8 and arr.max() == 255
    rgba = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    arr, notes = image_data.read_image(_png(rgba))
    assert notes == ["alpha flattened on white"] and (arr == 255).all()  # transparent black on white is white
    arr, _ = image_data.read_image(_png(_picture(rng, (30, 10)), format="JPEG"))
    square = image_data.fit_square(arr, 8, gray=False)
    assert square.shape == (8, 8, 3)
    assert image_data.fit_square(arr, 8, gray=True).shape == (8, 8)


@pytest.mark.parametrize("case", ["empty", "missing", "file"])
def test_an_empty_or_missing_folder_is_one_line(genforge_home, tmp_path, case):
    target = tmp_path / "images"
    if case == "empty":
        target.mkdir()
    elif case == "file":
        target.write_text("x")
    run = create_run("image-diffusion", spec=get_generator("image-diffusion").test_spec, overrides=[f"data.path={target}"])
    with pytest.raises(DataError) as err:
        run_all(run)
    message = str(err.value)
    assert "\n" not in message and str(target) in message
    assert {"empty": "holds no image files", "missing": "does not exist", "file": "is a file"}[case] in message


def test_a_folder_of_undecodable_files_is_one_line(tmp_path):
    (tmp_path / "a.png").write_text("nope")
    (tmp_path / "b.jpg").write_bytes(b"\xff\xd8\xff")
    cfg = ImageDataConfig(path=str(tmp_path))
    with pytest.raises(DataError, match=r"none of its 2 image files could be read \(2 not an image\)"):
        image_data.prepare(cfg, tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("images-*"))  # nothing half-written in the cache


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="data.path is set but data.source is 'digits'"):
        ImageDataConfig(source="digits", path="/x")
    gen = get_generator("image-diffusion")
    with pytest.raises(ValueError, match="data.resolution 18 must be divisible by 4"):
        gen.Config.model_validate({"data": {"resolution": 18}})
    with pytest.raises(ValueError, match="model.groups"):
        gen.Config.model_validate({"model": {"channels": 12}})


def test_a_class_can_be_asked_for_and_a_wrong_one_names_the_classes(genforge_home):
    spec = get_generator("image-diffusion").test_spec
    run = quick_run("image-diffusion", {**spec, "sample": {"n": 12, "steps": 2, "label": "7", "guidance": 2.0}})
    with np.load(run.samples_dir / "images.npz") as z:
        assert (z["labels"] == 7).all() and z["images"].shape[0] == 12
    details = run.read_json("samples.json")["details"]
    assert details["label"] == "7" and details["network_evaluations_per_image"] == 6  # 3 Heun evaluations x 2 guidance branches
    # the trained run again, another class at another guidance, without training (genforge sample RUN)
    from genforge.core.models import create_sample_run

    again = create_sample_run(run.id, ["sample.label=3", "sample.guidance=0.5", "sample.n=6"])
    run_all(again)
    with np.load(again.samples_dir / "images.npz") as z:
        assert (z["labels"] == 3).all() and z["images"].shape[0] == 6
    assert again.read_json("samples.json")["details"]["guidance"] == 0.5 and again.read_json("training.json")["trained"] is False
    assert not list((again.path / "checkpoints").glob("*.pt"))  # nothing trained
    bad = create_run("image-diffusion", spec={**spec, "sample": {"label": "cat"}})
    with pytest.raises(ConfigError, match=r"sample.label='cat' is not a class of this model; classes: 0, 1, 2"):
        run_all(bad)
    assert not (bad.path / "model.safetensors").exists()  # refused before training


def _cifar_records(n: int, rng: np.random.Generator) -> tuple[bytes, np.ndarray, np.ndarray]:
    labels = rng.integers(0, 10, n).astype(np.uint8)
    planes = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    return b"".join(bytes([lab]) + p.tobytes() for lab, p in zip(labels, planes)), labels, planes


def test_cifar10_binary_archive(tmp_path):
    rng = np.random.default_rng(0)
    archive = tmp_path / "cifar-10-binary.tar.gz"
    expected = {}
    with tarfile.open(archive, "w:gz") as tar:
        for name, n in (("data_batch_1.bin", 5), ("data_batch_2.bin", 3), ("test_batch.bin", 4)):
            blob, labels, planes = _cifar_records(n, rng)
            expected[name] = (labels, planes)
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    splits = read_cifar10(archive)
    images, labels = splits["train"]
    assert (
        images.shape == (8, 32, 32, 3)
        and labels.tolist() == expected["data_batch_1.bin"][0].tolist() + expected["data_batch_2.bin"][0].tolist()
    )
    assert (images[0][..., 1] == expected["data_batch_1.bin"][1][0, 1]).all()  # planes -> (H, W, RGB)
    assert splits["test"][0].shape == (4, 32, 32, 3)
    path, key, stats, cache = image_data.prepare(ImageDataConfig(source="cifar10", path=str(archive), resolution=16), tmp_path / "c")
    assert cache == "miss" and stats["train"]["kept"] == 8 and stats["test"]["kept"] == 4 and stats["channels"] == 3
    assert image_data.load_split(path, "train")[0].shape == (8, 16, 16, 3)
    python_version = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(python_version, "w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    with pytest.raises(DataError, match="Python/pickle version"):
        read_cifar10(python_version)


# -- EDM and the samplers -------------------------------------------------------------------------


class ZeroNet(torch.nn.Module):
    def forward(self, x, noise, labels=None):
        return torch.zeros_like(x)


def test_preconditioning_and_noise_levels():
    edm = EDM()
    x = torch.randn(3, 1, 4, 4)
    sigma = torch.tensor([0.1, 0.5, 10.0])
    expected = x * (0.25 / (sigma**2 + 0.25)).reshape(-1, 1, 1, 1)  # c_skip alone when the network outputs zero
    assert torch.allclose(edm.denoise(ZeroNet(), x, sigma), expected)
    levels = edm.sigmas(9)
    assert len(levels) == 10 and levels[0] == pytest.approx(80) and levels[-2] == pytest.approx(0.002) and levels[-1] == 0
    assert (levels[:-1].diff() < 0).all()


@pytest.mark.parametrize("sampler", ["heun", "euler", "stochastic"])
def test_samplers_reach_the_data_distribution_with_the_ideal_denoiser(sampler):
    """Data N(m, s²): the exact denoiser is E[x0 | x] = (s²·x + σ²·m)/(s² + σ²); sampling with it must give N(m, s²)."""
    m, s = 0.3, 0.2

    def ideal(x, sigma):
        v = sigma.double().reshape(-1, 1, 1, 1) ** 2
        return ((s**2 * x.double() + v * m) / (s**2 + v)).float()

    steps = {"heun": 40, "euler": 100, "stochastic": 60}[sampler]
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(4000, 1, 2, 2, generator=gen)
    sigmas = EDM().sigmas(steps)
    out = stochastic(ideal, noise, sigmas, generator=gen) if sampler == "stochastic" else SAMPLERS[sampler](ideal, noise, sigmas)
    assert out.mean().item() == pytest.approx(m, abs=0.01)
    assert out.std().item() == pytest.approx(s, rel=0.04)


def test_heun_beats_euler_at_equal_network_evaluations():
    m, s = 0.3, 0.2

    def ideal(x, sigma):
        v = sigma.double().reshape(-1, 1, 1, 1) ** 2
        return ((s**2 * x.double() + v * m) / (s**2 + v)).float()

    noise = torch.randn(4000, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    edm = EDM()
    err_heun = abs(SAMPLERS["heun"](ideal, noise, edm.sigmas(18)).std().item() - s)  # 35 evaluations
    err_euler = abs(SAMPLERS["euler"](ideal, noise, edm.sigmas(35)).std().item() - s)  # 35 evaluations
    assert err_heun < 0.9 * err_euler


def test_guidance_mixes_conditional_and_unconditional():
    torch.manual_seed(0)
    net = UNet(UNetConfig(channels=8, channel_mult=[1, 2], attention_at=4, groups=4), 1, 8, n_classes=3).eval()
    for p in net.parameters():  # zero-initialised output layers would hide the labels: give them weights
        torch.nn.init.normal_(p, std=0.1)
    edm, x, sigma = EDM(), torch.randn(4, 1, 8, 8), torch.full((4,), 1.0)
    labels = torch.tensor([0, 1, 2, 0])
    cond = edm.denoise(net, x, sigma, labels)
    uncond = edm.denoise(net, x, sigma, torch.full_like(labels, 3))
    assert not torch.allclose(cond, uncond)
    assert torch.allclose(guided(edm, net, labels, 1.0, 3)(x, sigma), cond)
    assert torch.allclose(guided(edm, net, labels, 0.0, 3)(x, sigma), uncond, atol=1e-6)
    assert torch.allclose(guided(edm, net, labels, 2.0, 3)(x, sigma), 2 * cond - uncond, atol=1e-5)


def test_unet_shapes():
    net = UNet(UNetConfig(channels=8, channel_mult=[1, 2, 2], attention_at=4, groups=4), 3, 16, n_classes=0)
    out = net(torch.randn(2, 3, 16, 16), torch.zeros(2))
    assert out.shape == (2, 3, 16, 16)
    assert float(out.detach().abs().max()) == 0.0  # the output layer starts at zero: D(x; σ) starts as c_skip·x


def test_the_gpu_config_and_the_deployment_agree(genforge_home):
    import yaml

    root = Path(__file__).resolve().parents[3]
    path = root / "plugins/creative/configs/cifar10-32.yaml"
    config = yaml.safe_load(path.read_text())
    run = create_run("image-diffusion", config_path=path)  # valid as written
    assert run.spec["data"]["source"] == "cifar10" and run.spec["train"]["compile"] is True
    deployments = {d["name"]: d for d in yaml.safe_load((root / "deploy/prefect.yaml").read_text())["deployments"]}
    spec = deployments["image-diffusion"]["parameters"]["spec"]
    for section, fields in spec.items():
        assert fields == {k: v for k, v in config[section].items() if k in fields}, section
    assert set(spec) == set(config)


def test_the_test_split_keeps_every_class_under_a_cap_and_refuses_an_empty_one():
    from collections import Counter

    from genforge.plugins.creative.images.data import Loaded, split

    labels = np.repeat(np.arange(10), 200)
    loaded = Loaded(np.zeros((len(labels), 8, 8), np.uint8), labels, [str(i) for i in range(10)], "test", len(labels), Counter(), Counter())
    parts = split(loaded, ImageDataConfig(test_fraction=0.8, max_test=100))
    test_labels = parts["test"][1]
    assert len(test_labels) == 100 and set(test_labels) == set(range(10))  # the cap takes from every class
    assert set(parts["train"][1]) == set(range(10))
    two = Loaded(np.zeros((2, 8, 8), np.uint8), np.array([0, 1]), ["a", "b"], "two pictures", 2, Counter(), Counter())
    with pytest.raises(DataError, match="too few images to hold any out"):
        split(two, ImageDataConfig(path="/x"))


def test_the_image_evaluator_without_a_training_set(genforge_home, tmp_path):
    """`genforge evaluate images X --reference test.npz` alone: half the reference stands in for the training images."""
    from genforge.core import Reference, Samples
    from genforge.core.kinds import Images
    from genforge.plugins.creative.images.evaluator import ImageEvaluator

    cfg = ImageDataConfig(resolution=8)
    folder, *_ = image_data.prepare(cfg, tmp_path / "cache")
    test = folder / "test.npz"
    samples = Images().write(image_data.load_split(folder, "train")[0][:60], tmp_path / "s")
    ev = ImageEvaluator()
    result = ev.evaluate(Samples("images", samples, 60), Reference("images", test=test), tmp_path / "out", ev.Config(classifier_steps=30))
    values = {m.name: m.value for m in result.metrics}
    assert np.isfinite(values["fd"]) and 0.3 < values["nn_ratio"] < 3
    # a feature classifier trained 30 steps is no judge: its figures are marked unreliable, and said so
    if values["classifier_accuracy"] < 0.9:
        assert values["features_reliable"] == 0 and any("unreliable" in n for n in result.notes), result.notes
    junk = np.random.default_rng(0).integers(0, 256, (60, 8, 8), dtype=np.uint8)  # noise, not digits
    weak = ev.evaluate(
        Samples("images", Images().write(junk, tmp_path / "junk"), 60),
        Reference("images", test=test),
        tmp_path / "o3",
        ev.Config(classifier_steps=1),
    )
    assert {m.name: m.value for m in weak.metrics}["features_reliable"] == 0
    assert any(n.startswith("the feature classifier labels only") and "unreliable" in n for n in weak.notes), weak.notes
    with pytest.raises(DataError, match=r"more than evaluate.image.k=3 of each \(raise sample.n\)"):
        ev.evaluate(
            Samples("images", Images().write(np.zeros((3, 8, 8), np.uint8), tmp_path / "few"), 3),
            Reference("images", test=test),
            tmp_path / "o2",
            ev.Config(),
        )
