"""CPU tests of the InstructPix2Pix editor (`igs2gs/ip2p.py`) on a tiny random model."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from igs2gs.editor import EditSettings, ImageEditor
from igs2gs.ip2p import DEFAULT_IP2P_MODEL, InstructPix2PixEditor, IP2PLoadError, load_ip2p_editor
from tests.tiny_ip2p import save_tiny_ip2p, tiny_components

REPO = Path(__file__).resolve().parents[1]
PROMPT = "turn the bear into a panda"


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Any:
    """The tiny model gains nothing from threads; with a busy CPU, OpenMP's spinning threads made single
    edits take 10 s instead of 0.05 s here."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def parts() -> dict[str, Any]:
    """Tiny components shared by the tests of this module (the editors never train them)."""
    return tiny_components(seed=0)


def make_editor(parts: dict[str, Any], **overrides: Any) -> InstructPix2PixEditor:
    """A float32 CPU editor with a fresh DDIM scheduler built from the tiny PNDM config."""
    from diffusers import DDIMScheduler

    kwargs = {**parts, "scheduler": DDIMScheduler.from_config(parts["scheduler"].config), **overrides}
    return InstructPix2PixEditor(**kwargs, device="cpu", dtype=torch.float32)


@pytest.fixture
def editor(parts: dict[str, Any]) -> InstructPix2PixEditor:
    return make_editor(parts)


def images(batch: int = 2, height: int = 64, width: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded (renders, originals) in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, height, width, generator=g), torch.rand(batch, 3, height, width, generator=g)


def python_path() -> str:
    """PYTHONPATH for a subprocess: the repository first, then whatever the caller had."""
    return os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)


# ------------------------------------------------------------------------------------ the guidance


class BranchStubUNet(torch.nn.Module):
    """Returns a known constant per branch (plus view_step x view index) and records its inputs."""

    def __init__(self, values: tuple[float, float, float], view_step: float = 0.01) -> None:
        super().__init__()
        self.config = SimpleNamespace(in_channels=8, out_channels=4)
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # gives the stub a device and dtype
        self.values = values
        self.view_step = view_step
        self.calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def forward(self, sample, timestep, encoder_hidden_states, return_dict=True):  # noqa: ANN001
        self.calls.append((sample.clone(), torch.as_tensor(timestep).clone(), encoder_hidden_states.clone()))
        views = sample.shape[0] // 3
        offset = (torch.arange(views, dtype=sample.dtype) * self.view_step).view(-1, 1, 1, 1)
        branches = [torch.full_like(sample[:views, :4], value) + offset for value in self.values]
        return (torch.cat(branches),)


def reference_text_embeddings(parts: dict[str, Any], prompt: str) -> torch.Tensor:  # [L, D]
    tokenizer = parts["tokenizer"]
    ids = tokenizer(prompt, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        return parts["text_encoder"](ids)[0][0]


@pytest.mark.parametrize("text_scale, image_scale", [(12.5, 1.5), (7.0, 2.0)])
def test_three_branch_guidance(
    parts: dict[str, Any], text_scale: float, image_scale: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    import igs2gs.ip2p

    values = (1.0, 0.25, -0.5)  # eps_text_image, eps_image, eps_none
    stub = BranchStubUNet(values)
    editor = make_editor(parts, unet=stub)
    step_inputs: list[torch.Tensor] = []
    step = igs2gs.ip2p.ddim_step

    def recording_step(eps, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        step_inputs.append(eps.clone())
        return step(eps, *args, **kwargs)

    monkeypatch.setattr(igs2gs.ip2p, "ddim_step", recording_step)
    renders, originals = images(batch=2)
    settings = EditSettings(PROMPT, guidance_scale=text_scale, image_guidance_scale=image_scale, diffusion_steps=5)
    editor.edit(renders, originals, settings, generator=seeded(0))

    # eps = eps_none + s_text (eps_text_image - eps_image) + s_img (eps_image - eps_none), per view
    a, b, c = values
    expected = c + text_scale * (a - b) + image_scale * (b - c)
    assert len(step_inputs) == len(stub.calls) == 5
    for eps in step_inputs:
        for view in range(2):
            torch.testing.assert_close(eps[view], torch.full_like(eps[view], expected + 0.01 * view))

    # One batched UNet call per step: latents x3 on channels 0-3, condition [c, c, 0] on channels 4-7.
    with torch.no_grad():
        condition = parts["vae"].encode(originals * 2 - 1).latent_dist.mode()  # unscaled
    for sample, _, text in stub.calls:
        assert sample.shape == (6, 8, 8, 8), sample.shape
        noisy = sample[:, :4].chunk(3)
        torch.testing.assert_close(noisy[1], noisy[0], rtol=0, atol=0)
        torch.testing.assert_close(noisy[2], noisy[0], rtol=0, atol=0)
        cond = sample[:, 4:].chunk(3)
        torch.testing.assert_close(cond[0], condition, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(cond[1], condition, rtol=1e-5, atol=1e-5)
        assert torch.count_nonzero(cond[2]) == 0
        # text: [prompt] x B, [""] x B, [""] x B
        prompt_emb, empty_emb = reference_text_embeddings(parts, PROMPT), reference_text_embeddings(parts, "")
        for row, reference in zip(text, [prompt_emb] * 2 + [empty_emb] * 4):
            torch.testing.assert_close(row, reference, rtol=1e-5, atol=1e-5)


def test_timesteps_lie_in_zero_to_T_and_T_is_shared(parts: dict[str, Any]) -> None:
    stub = BranchStubUNet((0.0, 0.0, 0.0))
    editor = make_editor(parts, unet=stub)
    settings = EditSettings(PROMPT, diffusion_steps=20)
    editor.edit(*images(batch=3), settings, generator=seeded(7))
    T = editor.draw_T(settings, seeded(7))  # T is documented as the generator's first draw
    # one timestep per UNet sample ([3B]), all equal: one T for the whole batch with one generator
    assert all(t.shape == (9,) and bool((t == t[0]).all()) for _, t, _ in stub.calls)
    timesteps = [int(t[0]) for _, t, _ in stub.calls]
    assert len(timesteps) == 20
    assert all(0 <= t < T for t in timesteps), (T, timesteps)
    assert timesteps == sorted(timesteps, reverse=True) and len(set(timesteps)) == 20, timesteps
    assert timesteps[0] >= T - 2 * (T // 20), (T, timesteps)  # the spread covers [0, T), not [0, 1000)


def test_latent_path_from_documented_draws(parts: dict[str, Any]) -> None:
    """Rebuild the edit by hand from the documented draw order (T, VAE noise, added noise) with eps = 0."""
    stub = BranchStubUNet((0.0, 0.0, 0.0), view_step=0.0)
    editor = make_editor(parts, unet=stub)
    vae, sf = parts["vae"], parts["vae"].config.scaling_factor
    renders, originals = images(batch=2)
    settings = EditSettings(PROMPT, diffusion_steps=4)
    out = editor.edit(renders, originals, settings, generator=seeded(11))

    g = seeded(11)
    editor.draw_T(settings, g)
    with torch.no_grad():
        posterior = vae.encode(renders * 2 - 1).latent_dist
    latents = (posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=g)) * sf
    noise = torch.randn(latents.shape, generator=g)
    alphas = editor.scheduler.alphas_cumprod.cpu()
    t0 = int(stub.calls[0][1][0])
    noisy = alphas[t0].sqrt() * latents + (1 - alphas[t0]).sqrt() * noise
    torch.testing.assert_close(stub.calls[0][0][:2, :4], noisy, rtol=1e-4, atol=1e-4)

    # With eps = 0 each DDIM step scales by sqrt(alpha_prev / alpha_t): the chain ends at alpha[0].
    final = noisy * (alphas[0] / alphas[t0]).sqrt()
    with torch.no_grad():
        expected = (vae.decode(final / sf).sample / 2 + 0.5).clamp(0, 1)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------ T and the schedule


def test_T_is_uniform_over_the_bounds(editor: InstructPix2PixEditor) -> None:
    g = seeded(0)
    settings = EditSettings(PROMPT)
    draws = torch.tensor([editor.draw_T(settings, g) for _ in range(20000)])
    assert int(draws.min()) == 700 and int(draws.max()) == 980
    counts = torch.bincount(draws - 700).float()
    assert counts.numel() == 281 and counts.min() > 0
    assert abs(float(draws.float().mean()) - 840.0) < 2.0
    assert {editor.draw_T(EditSettings(PROMPT, lower_bound=0.5, upper_bound=0.5), g) for _ in range(50)} == {500}


@pytest.mark.parametrize("steps", [1, 20, 50])
def test_ddim_schedule_spreads_over_zero_to_T(editor: InstructPix2PixEditor, steps: int) -> None:
    from diffusers import DDIMScheduler

    scheduler = editor.scheduler
    full_alphas = DDIMScheduler.from_config(scheduler.config).alphas_cumprod
    for T in range(steps + 1, 1001):
        with editor.timestep_schedule(T, steps) as timesteps:
            ts = timesteps.tolist()
            assert len(ts) == steps and all(0 <= t < T for t in ts), (T, ts)
            # step() goes back num_train_timesteps // num_inference_steps: exactly the spacing of the schedule
            stride = scheduler.config.num_train_timesteps // scheduler.num_inference_steps
            assert stride == T // steps
            assert all(a - b == stride for a, b in zip(ts, ts[1:])), (T, ts)
            assert ts[-1] - stride <= 0  # the last step lands on alphas_cumprod[0] or the final alpha
        assert scheduler.config.num_train_timesteps == 1000
    # the betas/alphas stay those of the 1000-step schedule
    torch.testing.assert_close(scheduler.alphas_cumprod.cpu(), full_alphas, rtol=0, atol=0)


def test_ddim_step_uses_the_spread_schedule(editor: InstructPix2PixEditor) -> None:
    scheduler = editor.scheduler
    with editor.timestep_schedule(700, 20) as timesteps:
        t, t_prev = int(timesteps[0]), int(timesteps[1])
        x = torch.ones(1, 4, 2, 2)
        # with eps = 0 a DDIM step scales x by sqrt(alpha_prev / alpha_t)
        prev = scheduler.step(torch.zeros_like(x), timesteps[0], x, return_dict=False)[0]
    alphas = scheduler.alphas_cumprod.cpu()
    expected = float((alphas[t_prev] / alphas[t]).sqrt())
    torch.testing.assert_close(prev, torch.full_like(x, expected))


# ------------------------------------------------------------------------------------ the whole edit


@pytest.mark.parametrize("shape", [(1, 3, 64, 64), (2, 3, 64, 64), (2, 3, 48, 64)])
def test_output_shape_dtype_range(editor: InstructPix2PixEditor, shape: tuple[int, ...]) -> None:
    renders, originals = images(shape[0], *shape[2:])
    out = editor.edit(renders.double(), originals.double(), EditSettings(PROMPT, diffusion_steps=4), seeded(0))
    assert out.shape == shape and out.dtype == torch.float32 and out.device == renders.device
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


def test_seeded_determinism(editor: InstructPix2PixEditor) -> None:
    renders, originals = images(2)
    settings = EditSettings(PROMPT, diffusion_steps=5)
    first = editor.edit(renders, originals, settings, seeded(0))
    # another edit with other settings in between must not change the next edit (scheduler state)
    editor.edit(renders, originals, dataclasses.replace(settings, lower_bound=0.3, diffusion_steps=7), seeded(3))
    again = editor.edit(renders, originals, settings, seeded(0))
    torch.testing.assert_close(again, first, rtol=0, atol=0)
    other = editor.edit(renders, originals, settings, seeded(1))
    assert (other - first).abs().max() > 1e-3
    # generator=None draws from the global CPU RNG
    torch.manual_seed(5)
    global_first = editor.edit(renders, originals, settings)
    torch.manual_seed(5)
    torch.testing.assert_close(editor.edit(renders, originals, settings), global_first, rtol=0, atol=0)


def test_prompt_embeddings_are_cached_per_prompt(editor: InstructPix2PixEditor) -> None:
    calls: list[int] = []
    handle = editor.text_encoder.register_forward_hook(lambda *_: calls.append(1))
    try:
        renders, originals = images(1)
        settings = EditSettings(PROMPT, diffusion_steps=2)
        editor.edit(renders, originals, settings, seeded(0))
        editor.edit(renders, originals, settings, seeded(1))
        assert len(calls) == 1
        editor.edit(renders, originals, dataclasses.replace(settings, prompt="make it snow"), seeded(0))
        assert len(calls) == 2
        editor.edit(renders, originals, settings, seeded(0))
        assert len(calls) == 2
    finally:
        handle.remove()
    embeddings = editor.encode_prompt(PROMPT)
    assert embeddings.shape == (3, 77, 16)
    torch.testing.assert_close(embeddings[1], embeddings[2], rtol=0, atol=0)
    assert (embeddings[0] - embeddings[1]).abs().max() > 1e-4


def test_editor_is_an_image_editor(editor: InstructPix2PixEditor) -> None:
    assert isinstance(editor, ImageEditor)
    assert editor.vae_scale_factor == 8 and editor.num_train_timesteps == 1000


# ------------------------------------------------------------------------------------ batched and cached edits


def generators(seeds: list[int]) -> list[torch.Generator]:
    return [seeded(s) for s in seeds]


def test_batched_views_equal_their_separate_edits(editor: InstructPix2PixEditor) -> None:
    renders, originals = images(batch=3, seed=4)
    settings = EditSettings(PROMPT, diffusion_steps=6)
    batched = editor.edit(renders, originals, settings, generator=generators([10, 11, 12]))
    for view, seed in enumerate([10, 11, 12]):
        single = editor.edit(renders[view : view + 1], originals[view : view + 1], settings, generator=seeded(seed))
        torch.testing.assert_close(batched[view : view + 1], single, rtol=1e-4, atol=1e-5)
    # each view drew its own T (different seeds give different T here)
    Ts = [editor.draw_T(settings, seeded(s)) for s in (10, 11, 12)]
    assert len(set(Ts)) == 3, Ts


def test_each_view_gets_its_own_timesteps(parts: dict[str, Any]) -> None:
    stub = BranchStubUNet((0.0, 0.0, 0.0))
    editor = make_editor(parts, unet=stub)
    settings = EditSettings(PROMPT, diffusion_steps=5)
    editor.edit(*images(batch=2), settings, generator=generators([1, 2]))
    Ts = [editor.draw_T(settings, seeded(s)) for s in (1, 2)]
    for view, T in enumerate(Ts):
        with editor.timestep_schedule(T, 5) as reference:
            # the UNet batch is [text+image x B, image x B, none x B]: view v sits at v, B + v and 2B + v
            for branch in range(3):
                got = [int(t[branch * 2 + view]) for _, t, _ in stub.calls]
                assert got == reference.tolist(), (view, branch, got)


def test_one_generator_per_view_of_one_view_equals_one_generator(editor: InstructPix2PixEditor) -> None:
    renders, originals = images(batch=1, seed=5)
    settings = EditSettings(PROMPT, diffusion_steps=4)
    torch.testing.assert_close(
        editor.edit(renders, originals, settings, generator=[seeded(3)]),
        editor.edit(renders, originals, settings, generator=seeded(3)),
        rtol=0,
        atol=0,
    )


def test_cached_condition_latents_equal_fresh_ones(editor: InstructPix2PixEditor) -> None:
    renders, originals = images(batch=2, seed=6)
    settings = EditSettings(PROMPT, diffusion_steps=4)
    fresh = editor.condition_latents(originals)
    first = editor.condition_latents(originals, view_ids=[7, 8])
    torch.testing.assert_close(first, fresh, rtol=0, atol=0)
    encodes: list[int] = []
    handle = editor.vae.encoder.register_forward_hook(lambda module, args, out: encodes.append(args[0].shape[0]))
    try:
        cached_edit = editor.edit(renders, originals, settings, generator=seeded(0), view_ids=[7, 8])
        assert encodes == [2], encodes  # only the renders were encoded: the originals came from the cache
        encodes.clear()
        plain_edit = editor.edit(renders, originals, settings, generator=seeded(0))
        assert encodes == [2, 2], encodes
    finally:
        handle.remove()
    torch.testing.assert_close(cached_edit, plain_edit, rtol=0, atol=0)
    # the cache holds each view once per size; a view in another batch position is found too
    torch.testing.assert_close(editor.condition_latents(originals.flip(0), view_ids=[8, 7]), fresh.flip(0))
    editor.clear_condition_cache()
    assert not editor._condition_cache


def test_padding_to_a_fixed_batch_changes_nothing(editor: InstructPix2PixEditor) -> None:
    renders, originals = images(batch=3, seed=7)
    settings = EditSettings(PROMPT, diffusion_steps=4)
    plain = editor.edit(renders, originals, settings, generator=generators([1, 2, 3]))
    editor.pad_views_to = 5
    padded = editor.edit(renders, originals, settings, generator=generators([1, 2, 3]))
    assert padded.shape == plain.shape
    torch.testing.assert_close(padded, plain, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("slicing", [False, True])
def test_vae_slicing_changes_nothing(editor: InstructPix2PixEditor, slicing: bool) -> None:
    renders, originals = images(batch=3, seed=8)
    settings = EditSettings(PROMPT, diffusion_steps=3)
    plain = editor.edit(renders, originals, settings, generator=seeded(2))
    if slicing:
        editor.enable_vae_slicing()
    torch.testing.assert_close(
        editor.edit(renders, originals, settings, generator=seeded(2)), plain, rtol=1e-4, atol=1e-5
    )
    editor.disable_vae_slicing()


def test_fast_kernels_and_attention_slicing_compute_the_same_edit(parts: dict[str, Any]) -> None:
    renders, originals = images(batch=2, seed=9)
    settings = EditSettings(PROMPT, diffusion_steps=4)
    reference = make_editor(parts).edit(renders, originals, settings, generator=generators([4, 5]))
    fast = make_editor(tiny_components(seed=0))
    fast.enable_fast_kernels()
    torch.testing.assert_close(
        fast.edit(renders, originals, settings, generator=generators([4, 5])), reference, rtol=1e-4, atol=1e-5
    )
    sliced = make_editor(tiny_components(seed=0))
    sliced.enable_attention_slicing()
    torch.testing.assert_close(
        sliced.edit(renders, originals, settings, generator=generators([4, 5])), reference, rtol=1e-4, atol=1e-5
    )
    sliced.disable_attention_slicing()
    torch.testing.assert_close(
        sliced.edit(renders, originals, settings, generator=generators([4, 5])), reference, rtol=1e-5, atol=1e-6
    )


def test_compile_and_offload_are_cuda_only(editor: InstructPix2PixEditor) -> None:
    with pytest.raises(ValueError, match="enable_compile needs a CUDA editor.*leave it off on CPU"):
        editor.enable_compile()
    with pytest.raises(ValueError, match="model CPU offload moves models to a CUDA device"):
        editor.enable_model_cpu_offload()


# ------------------------------------------------------------------------------------ input checks

_R, _O = images(1)
_NAN = torch.full_like(_R, float("nan"))


@pytest.mark.parametrize(
    "renders, originals, error, fragments",
    [
        (_R[0], _O[0], ValueError, ["renders", "(3, 64, 64)", "[B, 3, H, W]", "permute"]),
        (torch.rand(1, 4, 64, 64), _O, ValueError, ["renders", "(1, 4, 64, 64)", "[B, 3, H, W]"]),
        (_R, torch.rand(1, 3, 32, 32), ValueError, ["originals", "(1, 3, 32, 32)", "(1, 3, 64, 64)", "resize"]),
        (torch.rand(1, 3, 60, 64), torch.rand(1, 3, 60, 64), ValueError, ["60 x 64", "multiples of 8", "56 x 64"]),
        (_NAN, _O, ValueError, ["renders", "12288 non-finite", "[0, 1]"]),
        (_R, _NAN, ValueError, ["originals", "12288 non-finite"]),
        ((_R * 255).to(torch.uint8), _O, TypeError, ["renders", "torch.uint8", "/ 255"]),
    ],
)
def test_image_checks(
    editor: InstructPix2PixEditor, renders: Any, originals: Any, error: type[Exception], fragments: list[str]
) -> None:
    with pytest.raises(error) as info:
        editor.edit(renders, originals, EditSettings(PROMPT))
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))


@pytest.mark.parametrize(
    "changes, error, fragments",
    [
        ({"prompt": None}, TypeError, ["settings.prompt", "NoneType"]),
        ({"guidance_scale": 0.0}, ValueError, ["settings.guidance_scale", "0.0", "> 0", "12.5"]),
        ({"image_guidance_scale": -1}, ValueError, ["settings.image_guidance_scale", "-1", "> 0"]),
        ({"guidance_scale": float("nan")}, ValueError, ["settings.guidance_scale", "nan"]),
        ({"diffusion_steps": 0}, ValueError, ["settings.diffusion_steps", "0", ">= 1"]),
        ({"diffusion_steps": 2.5}, ValueError, ["settings.diffusion_steps", "2.5", "int"]),
        (
            {"lower_bound": 0.9, "upper_bound": 0.8},
            ValueError,
            ["lower_bound=0.9", "upper_bound=0.8", "0 < lower_bound <= upper_bound <= 1"],
        ),
        ({"upper_bound": 1.5}, ValueError, ["upper_bound=1.5", "<= 1", "0.70 and 0.98"]),
        ({"lower_bound": 0.0}, ValueError, ["lower_bound=0.0", "0 < lower_bound"]),
        ({"lower_bound": 0.01}, ValueError, ["settings.lower_bound=0.01", "diffusion_steps=20", "at least 0.021"]),
    ],
)
def test_settings_checks(
    editor: InstructPix2PixEditor, changes: dict[str, Any], error: type[Exception], fragments: list[str]
) -> None:
    with pytest.raises(error) as info:
        editor.edit(_R, _O, dataclasses.replace(EditSettings(PROMPT), **changes))
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))


def test_generator_check(editor: InstructPix2PixEditor) -> None:
    with pytest.raises(TypeError, match="generator must be a torch.Generator, a list of them or None, got int"):
        editor.edit(_R, _O, EditSettings(PROMPT), generator=42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="generator holds 2 generators for 1 views; pass one per view"):
        editor.edit(_R, _O, EditSettings(PROMPT), generator=[seeded(0), seeded(1)])
    with pytest.raises(TypeError, match="generator must be a torch.Generator or None, got int"):
        editor.edit(_R, _O, EditSettings(PROMPT), generator=[3])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="view_ids holds 2 ids for 1 views"):
        editor.edit(_R, _O, EditSettings(PROMPT), generator=seeded(0), view_ids=[0, 1])
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"CPU generator.*torch.Generator\('cpu'\)"):
            editor.edit(_R, _O, EditSettings(PROMPT), generator=torch.Generator("cuda"))


def test_constructor_rejects_wrong_components(parts: dict[str, Any]) -> None:
    stub = BranchStubUNet((0.0, 0.0, 0.0))
    stub.config.in_channels = 4
    with pytest.raises(ValueError, match="unet takes 4 input channels, but InstructPix2Pix needs 8"):
        make_editor(parts, unet=stub)
    with pytest.raises(TypeError, match="scheduler must be a diffusers DDIMScheduler, got PNDMScheduler"):
        InstructPix2PixEditor(**parts, device="cpu", dtype=torch.float32)


# ------------------------------------------------------------------------------------ loading


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_ip2p(tmp_path_factory.mktemp("tiny-ip2p"), seed=0)


def test_round_trip_save_load_edit(tiny_folder: Path, editor: InstructPix2PixEditor) -> None:
    index = json.loads((tiny_folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionInstructPix2PixPipeline"
    assert list((tiny_folder / "unet").glob("*.safetensors")) and list(
        (tiny_folder / "text_encoder").glob("*.safetensors")
    )
    with pytest.warns(UserWarning, match="overriding full_precision=False to float32"):
        loaded = load_ip2p_editor(str(tiny_folder), device="cpu")
    assert loaded.dtype == torch.float32 and type(loaded.scheduler).__name__ == "DDIMScheduler"
    renders, originals = images(2)
    settings = EditSettings(PROMPT, diffusion_steps=5)
    out = loaded.edit(renders, originals, settings, seeded(0))
    assert out.shape == (2, 3, 64, 64) and out.dtype == torch.float32
    # the same weights and schedule as the in-memory tiny model
    torch.testing.assert_close(out, editor.edit(renders, originals, settings, seeded(0)), rtol=0, atol=1e-6)


def test_loader_hub_id_offline_error(tmp_path: Path) -> None:
    code = (
        "from igs2gs.ip2p import load_ip2p_editor, IP2PLoadError\n"
        "try:\n"
        f"    load_ip2p_editor({DEFAULT_IP2P_MODEL!r}, device='cpu', full_precision=True)\n"
        "except IP2PLoadError as err:\n"
        "    print(err)\n"
        "else:\n"
        "    raise SystemExit('no error')\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path), "PYTHONPATH": python_path()}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    message = result.stdout
    for fragment in [DEFAULT_IP2P_MODEL, "HF_HUB_OFFLINE", "--pipeline.ip2p-model /path/to/folder", "hf download"]:
        assert fragment in message, (fragment, message)


@pytest.mark.parametrize("model", ["/nonexistent/ip2p-folder", "./missing-ip2p", "~/missing/ip2p"])
def test_loader_missing_local_folder(model: str) -> None:
    with pytest.raises(IP2PLoadError) as info:
        load_ip2p_editor(model, device="cpu", full_precision=True)
    for fragment in ["does not exist", "ip2p", "--pipeline.ip2p-model /path/to/folder", "HF_HUB_OFFLINE"]:
        assert fragment in str(info.value), (fragment, str(info.value))


def test_loader_rejects_non_ip2p_folders(tmp_path: Path, tiny_folder: Path) -> None:
    partial = tmp_path / "partial"
    (partial / "unet").mkdir(parents=True)
    with pytest.raises(IP2PLoadError, match="lacks the subfolders vae/, text_encoder/, tokenizer/, scheduler/"):
        load_ip2p_editor(str(partial), device="cpu", full_precision=True)

    a_file = tmp_path / "weights.safetensors"
    a_file.write_bytes(b"")
    with pytest.raises(IP2PLoadError, match="is a file, not a diffusers InstructPix2Pix folder"):
        load_ip2p_editor(str(a_file), device="cpu", full_precision=True)

    import shutil

    sd = tmp_path / "sd"
    shutil.copytree(tiny_folder, sd)
    config = json.loads((sd / "unet" / "config.json").read_text())
    (sd / "unet" / "config.json").write_text(json.dumps({**config, "in_channels": 4}))
    with pytest.raises(IP2PLoadError, match="in_channels=4, InstructPix2Pix's UNet takes 8"):
        load_ip2p_editor(str(sd), device="cpu", full_precision=True)

    no_weights = tmp_path / "no-weights"
    shutil.copytree(tiny_folder, no_weights)
    for weights in (no_weights / "vae").glob("*.safetensors"):
        weights.unlink()
    with pytest.raises(IP2PLoadError, match=r"reading its vae \(vae/\) failed") as info:
        load_ip2p_editor(str(no_weights), device="cpu", full_precision=True)
    assert "--pipeline.ip2p-model /path/to/folder" in str(info.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_loader_cuda_without_gpu(tiny_folder: Path) -> None:
    with pytest.raises(IP2PLoadError, match="no CUDA device.*pass device='cpu'"):
        load_ip2p_editor(str(tiny_folder), device="cuda")


# ------------------------------------------------------------------------------------ import cost, real arch


def test_import_stays_light() -> None:
    code = (
        "import sys, igs2gs.ip2p\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in {'diffusers', 'transformers'})\n"
        "print(heavy)\n"
        "sys.exit(1 if heavy else 0)\n"
    )
    env = {**os.environ, "PYTHONPATH": python_path()}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_real_architecture_configs_build_on_meta() -> None:
    spec = importlib.util.spec_from_file_location("make_random_ip2p", REPO / "benchmarks" / "make_random_ip2p.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not module.DEFAULT_ARCH.is_dir():
        pytest.skip(f"no architecture configs at {module.DEFAULT_ARCH}")
    built = module.build_arch_components(device=torch.device("meta"))
    counts = {name: sum(p.numel() for p in built[name].parameters()) for name in ("unet", "vae", "text_encoder")}
    assert counts == {"unet": 859_532_484, "vae": 83_653_863, "text_encoder": 123_060_480}, counts
    assert built["unet"].config.in_channels == 8 and built["vae"].config.scaling_factor == 0.18215
    assert type(built["scheduler"]).__name__ == "PNDMScheduler" and built["tokenizer"].model_max_length == 77


def test_fast_kernels_set_the_layout_and_group_norm_they_ask_for() -> None:
    from igs2gs.fast_group_norm import FastGroupNorm

    editor = make_editor(tiny_components(seed=0))  # its own models: the module's shared ones stay untouched

    def fast_norms() -> int:
        return sum(isinstance(m, FastGroupNorm) for model in (editor.unet, editor.vae) for m in model.modules())

    conv = editor.unet.conv_in.weight
    editor.enable_fast_kernels(channels_last=True, group_norm=False)  # the configuration torch.compile runs
    assert editor._memory_format == torch.channels_last and fast_norms() == 0
    assert editor.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    editor.enable_fast_kernels()  # the eager default
    assert editor._memory_format == torch.contiguous_format and fast_norms() > 0
    assert editor.unet.conv_in.weight.is_contiguous() and editor.unet.conv_in.weight.shape == conv.shape
