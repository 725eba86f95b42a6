"""``prep-latents``: image shards -> latent shards the loader reads back; resumable; one-line errors."""
import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from diffengine.datasets.latent_shards import FLIPPED_LATENT_EXT, LATENT_EXT, LATENTS_RECORD
from diffengine.entry_point import build_parser, main
from diffengine.errors import ConfigError
from diffengine.tools.train import prepare_config
from tests.helpers import demo_cfg_options, image_bytes, keys_of, load, renamed_durably, sample, write_tar


def members(path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def prep(*argv) -> int:
    return main(["prep-latents", *map(str, argv), "--no-progress"])


def test_latent_shards_hold_parameters_caption_and_metadata(latent_shards, demo_shards, tiny_sd):
    folder, image_folder = Path(latent_shards).parent, Path(demo_shards).parent
    assert sorted(p.name for p in folder.iterdir()) == [f"{i:05d}.tar" for i in range(4)]
    stored, images = members(folder / "00000.tar"), members(image_folder / "00000.tar")
    key = "000000"
    assert {name for name in stored if name.startswith(key)} == {
        f"{key}.{LATENT_EXT}", f"{key}.txt", f"{key}.json"}
    assert stored[f"{key}.txt"] == images[f"{key}.txt"]
    parameters = np.load(io.BytesIO(stored[f"{key}.{LATENT_EXT}"]))
    assert parameters.dtype == np.float32 and parameters.shape == (8, 16, 16)  # mean + logvar, 32 px / 2
    meta = json.loads(stored[f"{key}.json"])
    assert {k: v for k, v in meta.items() if k != LATENTS_RECORD} == json.loads(images[f"{key}.json"])
    record = meta[LATENTS_RECORD]
    assert (record["resolution"], record["crop"], record["flipped_view"], record["dtype"]) == (
        32, "center", False, "float32")
    assert record["vae"] == f"{tiny_sd}/vae" and record["scaling_factor"] == pytest.approx(0.18215)
    # the loader reads them back: same keys and captions as the image shards, in the same order
    latents = next(iter(load(latent_shards, batch_size=4, resolution=32)))
    pixels = next(iter(load(demo_shards, batch_size=4, resolution=32)))
    assert latents["data_samples"]["keys"] == pixels["data_samples"]["keys"]
    assert latents["inputs"]["text"] == pixels["inputs"]["text"]
    # with SDXL's sizes of each sample's image, as an image batch carries them
    assert set(latents["inputs"]) == {"latent_parameters", "text", "original_size", "crop_top_left"}
    for size_key in ("original_size", "crop_top_left"):
        assert torch.equal(latents["inputs"][size_key], pixels["inputs"][size_key]), size_key
    assert record["sizes"] == {"original_size": pixels["inputs"]["original_size"][0].tolist(),
                               "crop_top_left": pixels["inputs"]["crop_top_left"][0].tolist()}
    assert latents["inputs"]["latent_parameters"].shape == (4, 8, 16, 16)
    assert sorted(keys_of(load(latent_shards, resolution=32))) == sorted(keys_of(load(demo_shards, resolution=32)))


def test_a_rerun_encodes_only_unfinished_shards(demo_shards, tiny_sd, tmp_path, capsys):
    out = tmp_path / "latents"
    assert prep(demo_shards.replace("00003", "00001"), out, "--vision-model", tiny_sd, "--resolution", 32) == 0
    finished = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")}
    assert sorted(finished) == ["00000.tar", "00001.tar"]
    (out / ".00002.tar.tmp").write_bytes(b"half a shard from a killed run")
    capsys.readouterr()
    assert prep(demo_shards, out, "--vision-model", tiny_sd, "--resolution", 32) == 0
    report = capsys.readouterr().out
    assert "encoded:  2 shard(s), 32 sample(s)" in report and "skipped: 2 shard(s)" in report
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("0000[01].tar")} == finished
    assert sorted(p.name for p in out.iterdir()) == [f"{i:05d}.tar" for i in range(4)]  # no temporary left
    assert len(keys_of(load(f"{out}/{{00000..00003}}.tar", resolution=32))) == 64
    assert prep(demo_shards, out, "--vision-model", tiny_sd, "--resolution", 32, "--overwrite") == 0
    assert "encoded:  4 shard(s), 64 sample(s)" in capsys.readouterr().out
    # a rerun with other settings into the same folder would mix latents that do not belong together
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    for option, difference in ((["--resolution", 64], "resolution 32 vs 64"),
                               (["--resolution", 32, "--flip"], "flipped_view False vs True")):
        assert prep(demo_shards, out, "--vision-model", tiny_sd, *option) == 2
        assert (f"00000.tar, finished by an earlier run, differs from what this run writes ({difference}): "
                "encode into another OUT_DIR, or pass --overwrite") in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_a_latent_shard_reaches_the_disk_before_it_takes_its_name(demo_shards, tiny_sd, tmp_path, disk_events):
    out = tmp_path / "latents"
    assert prep(demo_shards.replace("{00000..00003}", "00000"), out, "--vision-model", tiny_sd,
                "--resolution", 32) == 0
    assert renamed_durably(disk_events, out / ".00000.tar.tmp", out / "00000.tar")


def test_float16_storage(demo_shards, tiny_sd, tmp_path):
    out = tmp_path / "half"
    assert prep(demo_shards.replace("{00000..00003}", "00000"), out, "--vision-model", tiny_sd,
                "--resolution", 32, "--latent-dtype", "float16") == 0
    batch = next(iter(load(f"{out}/00000.tar", batch_size=2, resolution=32)))
    assert batch["inputs"]["latent_parameters"].dtype.is_floating_point
    assert str(batch["inputs"]["latent_parameters"].dtype) == "torch.float16"


def test_bad_inputs_are_one_line_errors(demo_shards, latent_shards, tiny_sd, tmp_path, capsys):
    def error(*argv) -> str:
        assert prep(*argv) == 2
        message = capsys.readouterr().err
        assert message.count("\n") == 1 and message.startswith("diffengine: error: ")
        return message

    assert "matches no file" in error(tmp_path / "none_{0..3}.tar", tmp_path / "o", "--vision-model",
                                      tiny_sd, "--resolution", 32)
    no_vae = tmp_path / "no_vae"
    shutil.copytree(tiny_sd, no_vae, ignore=shutil.ignore_patterns("vae"))
    assert "has no vae/" in error(demo_shards, tmp_path / "o", "--vision-model", no_vae, "--resolution", 32)
    (no_vae / "vae").mkdir()
    assert "has no vae/config.json: an incomplete copy" in error(demo_shards, tmp_path / "o", "--vision-model",
                                                                 no_vae, "--resolution", 32)
    cut = tmp_path / "cut_weights"
    shutil.copytree(tiny_sd, cut)
    weights = cut / "vae" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # a copy cut short: from_pretrained's OSError
    assert "diffusion_pytorch_model.safetensors" in error(demo_shards, tmp_path / "o", "--vision-model", cut,
                                                          "--resolution", 32)
    assert "holds the image shards themselves" in error(demo_shards, Path(demo_shards).parent,
                                                        "--vision-model", tiny_sd, "--resolution", 32)
    assert "is a latent shard already" in error(latent_shards, tmp_path / "o", "--vision-model", tiny_sd,
                                                "--resolution", 32)
    # after an image shard too, and before the VAE loads: the vision model named here does not exist
    first_image_shard = demo_shards.replace("{00000..00003}", "00000")
    assert "00001.tar is a latent shard already" in error(
        first_image_shard, latent_shards.replace("{00000..00003}", "00001"), tmp_path / "o", "--vision-model",
        tmp_path / "no_such_model", "--resolution", 32)
    assert not list((tmp_path / "o").glob("*"))  # the refused shard left nothing behind
    (tmp_path / "afile").write_text("not a folder")
    assert "afile: cannot create this folder (File exists)" in error(demo_shards, tmp_path / "afile",
                                                                     "--vision-model", tiny_sd, "--resolution", 32)
    with pytest.raises(SystemExit):  # argparse: --resolution is required
        prep(demo_shards, tmp_path / "o", "--vision-model", tiny_sd)


def test_flip_stores_the_mirror_images_latents(flipped_latent_shards, demo_shards, tiny_sd):
    from diffusers import AutoencoderKL

    from diffengine.datasets.latent_shards import read_latent
    from diffengine.models.data_preprocessor import normalize_pixels

    stored = members(Path(flipped_latent_shards).parent / "00001.tar")
    pixels = next(iter(load(demo_shards.replace("{00000..00003}", "00001"), batch_size=2, resolution=32,
                            random_flip=False)))
    key = pixels["data_samples"]["keys"][0]
    vae = AutoencoderKL.from_pretrained(tiny_sd, subfolder="vae")
    with torch.no_grad():
        mirrored = vae.encode(normalize_pixels(pixels["inputs"]["pixel_values"][:1].flip(-1))).latent_dist.parameters
    assert json.loads(stored[f"{key}.json"])[LATENTS_RECORD]["flipped_view"] is True
    torch.testing.assert_close(read_latent(stored[f"{key}.{FLIPPED_LATENT_EXT}"]), mirrored[0], atol=1e-5, rtol=1e-4)
    # a sample flips alike from either shard, and its crop offset is that of the view trained on
    flipping = [next(iter(load(shards, batch_size=8, resolution=32, random_flip=True)))["inputs"]
                for shards in (demo_shards, flipped_latent_shards)]
    assert torch.equal(flipping[0]["crop_top_left"], flipping[1]["crop_top_left"])
    assert torch.equal(flipping[0]["original_size"], flipping[1]["original_size"])


def test_a_recaption_file_is_the_caption_the_latent_shards_keep(tiny_t5, tiny_sd, tmp_path):
    samples = [{**sample(f"k{i}", "original alt text", image_bytes(seed=i), meta={"caption": "alt text"}),
                "recap.txt": f"a detailed recaption {i}"} for i in range(4)]
    images = write_tar(tmp_path / "images.tar", samples)
    assert prep(images, tmp_path / "latents", "--vision-model", tiny_sd, "--resolution", 8,
                "--caption-key", "recap.txt") == 0
    latent_shard = tmp_path / "latents" / "images.tar"
    texts = {name: data.decode() for name, data in members(latent_shard).items() if name.endswith(".txt")}
    assert texts == {f"k{i}.txt": f"a detailed recaption {i}" for i in range(4)}
    # training the latents with the image shards' caption_key would take the json's caption: refused
    for caption_key, refused in (("recap.txt", True), ("txt", False)):
        args = build_parser().parse_args([
            "wds_train", "lavi_bridge_demo", "--work-dir", str(tmp_path / "work"), "--cfg-options",
            *demo_cfg_options(tiny_t5, tiny_sd, str(latent_shard)), "model.vae_encoder=False",
            "train_dataloader.resolution=8", f"train_dataloader.caption_key={caption_key}"])
        if refused:
            with pytest.raises(ConfigError, match=rf"caption_key='recap.txt', but latent shard {latent_shard} "
                                                  r"holds no .recap.txt: prep-latents stores the caption it read "
                                                  r"as .txt"):
                prepare_config(args, wds=True)
        else:
            prepare_config(args, wds=True)


def test_latent_samples_carry_the_crop_of_the_view_they_store(tiny_sd, tmp_path):
    """Landscape images leave an odd margin (20 x 14 px resized to 8 px high: 11 wide, 3 spare), so
    the center crop is 1 px from the left and 2 from the right, and the flipped view's crop 2 from
    the left: latent samples give the offset of the view the flip draw picked, as image samples do."""
    images = write_tar(tmp_path / "images.tar",
                       [sample(f"k{i}", f"caption {i}", image_bytes(seed=i)) for i in range(12)])
    assert prep(images, tmp_path / "latents", "--vision-model", tiny_sd, "--resolution", 8, "--flip") == 0
    batches = [next(iter(load(shards, batch_size=12, resolution=8, random_flip=True)))
               for shards in (images, str(tmp_path / "latents" / "images.tar"))]
    assert batches[0]["data_samples"]["keys"] == batches[1]["data_samples"]["keys"]
    crops = batches[1]["inputs"]["crop_top_left"]
    assert torch.equal(crops, batches[0]["inputs"]["crop_top_left"])
    assert set(crops[:, 1].tolist()) == {1, 2}  # both views were drawn
    assert torch.equal(batches[1]["inputs"]["original_size"], torch.tensor([[14, 20]] * 12))


def test_a_shard_without_usable_samples_writes_nothing(demo_shards, tiny_sd, tmp_path, capsys):
    (tmp_path / "images").mkdir()
    # whole, and every sample unusable: no image, or an empty caption
    empty = Path(write_tar(tmp_path / "images" / "empty.tar", [sample("a", image=None), sample("b", caption="")]))
    out = tmp_path / "latents"
    assert prep(empty, out, "--vision-model", tiny_sd, "--resolution", 32) == 1
    assert capsys.readouterr().err == "diffengine: error: no sample encoded from 1 shard(s): no latent shard written\n"
    assert not list(out.iterdir())
    # beside a usable shard: that one is written, the empty one named and left out
    first = demo_shards.replace("{00000..00003}", "00000")
    assert prep(f"{{{first},{empty}}}", out, "--vision-model", tiny_sd, "--resolution", 32) == 0
    assert f"no usable sample, not written: 1 shard(s), e.g. {empty}" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["00000.tar"]


def test_a_shard_that_does_not_read_whole_is_not_finished(demo_shards, tiny_sd, tmp_path, capsys):
    # an image shard still being copied: its latent shard would be finished, and short, for good
    images = tmp_path / "images"
    images.mkdir()
    whole = Path(demo_shards.replace("{00000..00003}", "00001"))
    shutil.copy(whole.parent / "00000.tar", images / "00000.tar")
    (images / "00001.tar").write_bytes(whole.read_bytes()[:whole.stat().st_size // 2])
    out = tmp_path / "latents"
    assert prep(f"{images}/{{00000..00001}}.tar", out, "--vision-model", tiny_sd, "--resolution", 32) == 1
    captured = capsys.readouterr()
    assert f"did not read whole, not written: 1 shard(s), e.g. {images / '00001.tar'}" in captured.out
    assert captured.err == (f"diffengine: error: 1 image shard(s) did not read whole (cut, corrupt or missing, e.g. "
                            f"{images / '00001.tar'}): no latent shard written for them, the others are finished; "
                            "run again once they are whole, or leave damaged ones out of SHARDS\n")
    assert sorted(p.name for p in out.iterdir()) == ["00000.tar"]  # no short shard, no temporary
    shutil.copy(whole, images / "00001.tar")  # the copy finished: a rerun encodes that shard alone
    assert prep(f"{images}/{{00000..00001}}.tar", out, "--vision-model", tiny_sd, "--resolution", 32) == 0
    assert "encoded:  1 shard(s), 16 sample(s)" in capsys.readouterr().out
    assert len(keys_of(load(f"{out}/{{00000..00001}}.tar", resolution=32))) == 32


@pytest.mark.parametrize(("change", "latent_dtype", "cause"), [
    ({"encoder.conv_in.weight": float("nan")}, "float32", "the VAE made them: a float16 VAE overflows"),
    ({"quant_conv.bias": 1e6}, "float16", "they overflowed float16 storage: use --latent-dtype float32"),
], ids=["broken-vae", "float16-storage"])
def test_non_finite_latents_are_refused_not_written(change, latent_dtype, cause, demo_shards, tiny_sd, tmp_path,
                                                    capsys):
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken_sd"
    shutil.copytree(tiny_sd, broken)
    weights = broken / "vae" / "diffusion_pytorch_model.safetensors"
    tensors = load_file(weights)
    save_file({**tensors, **{name: torch.full_like(tensors[name], value) for name, value in change.items()}},
              weights)
    first, second = (demo_shards.replace("{00000..00003}", f"0000{index}") for index in (0, 1))
    assert prep(first, tmp_path / "out", "--vision-model", tiny_sd, "--resolution", 32) == 0
    capsys.readouterr()
    args = ("--vision-model", broken, "--resolution", 32, "--latent-dtype", latent_dtype)
    assert prep(second, tmp_path / "out", *args) == 1
    assert capsys.readouterr().err.strip() == (
        f"diffengine: error: 16 of 16 image(s) of a batch of {second} (e.g. sample 000016) got non-finite "
        f"latents, and {cause}" + ("" if "storage" in cause else " where bfloat16 and float32 do not (--dtype), "
                                   "or its weights are broken") +
        "; no latent shard is written for that image shard (finished ones are kept)")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["00000.tar"]
