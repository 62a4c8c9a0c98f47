"""Checks that need a CUDA device: run them on the lent GPU (`python -m pytest tests/test_gpu.py`).

On a machine without CUDA they are skipped; the CPU suite covers the same logic with the CUDA parts off
(tests/test_step_overhead.py, tests/test_async_edits.py).
"""

from __future__ import annotations

import threading
import time

import pytest
import torch

from igs2gs.edit_streams import editing_stream, ready_event
from igs2gs.edit_worker import EditJob, EditWorker
from igs2gs.editor import EditSettings
from igs2gs.graphed_lpips import GraphedLPIPS
from tests.test_async_edits import SlowInvertEditor
from tests.test_edit_process import pid_editor
from tests.test_pipeline import InvertEditorPipeline, make_trainer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (run on the lent GPU)")


def _in_own_thread(fn):
    """Run fn in a new thread (its CUDA stream settings stay there) and return its result."""
    out = {}
    thread = threading.Thread(target=lambda: out.setdefault("value", fn()))
    thread.start()
    thread.join()
    return out["value"]


def test_graphed_lpips_gives_the_eager_loss_and_gradient(random_lpips_backbones):
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    net = LearnedPerceptualImagePatchSimilarity(normalize=True).net.cuda()

    def loss(pred, gt):
        return net(pred, gt, normalize=True).mean()

    graphed = GraphedLPIPS(loss)
    graphed.capture([(64, 48)], torch.device("cuda"))
    assert graphed.sizes == [(64, 48)]
    values = []
    for seed in range(3):  # each replay sees its own inputs
        torch.manual_seed(seed)
        pred = torch.rand(64, 48, 3, device="cuda", requires_grad=True)
        gt = torch.rand(64, 48, 3, device="cuda")
        got = graphed(pred.permute(2, 0, 1)[None], gt.permute(2, 0, 1)[None])
        got.backward()
        pred_eager = pred.detach().clone().requires_grad_(True)
        expected = loss(pred_eager.permute(2, 0, 1)[None], gt.permute(2, 0, 1)[None])
        expected.backward()
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(pred.grad, pred_eager.grad, rtol=1e-3, atol=1e-6)
        values.append(got)
    assert len({round(v.item(), 6) for v in values}) == 3  # outputs are copies, not the graph's buffer


def test_the_worker_waits_for_renders_made_on_the_training_stream():
    device = torch.device("cuda")

    def run() -> list:
        stream = editing_stream(device)
        with EditWorker(lambda jobs: [job.render * 2 for job in jobs], stream=stream) as worker:
            for value in range(4):
                render = torch.zeros(1, 3, 256, 256, device=device)
                torch.cuda._sleep(20_000_000)  # ~10 ms of GPU time before the render is written
                render.fill_(value)
                job = EditJob(value, render, render, EditSettings(prompt="x"), seed=0, ready=ready_event(render))
                worker.submit(job)
            return [r.image for r in worker.wait()]

    images = _in_own_thread(run)
    for value, image in enumerate(images):
        assert torch.all(image == 2 * value), f"job {value} was edited before its render was written"


class SlowGpuInvertPipeline(InvertEditorPipeline):
    def build_editor(self):
        editor = SlowInvertEditor()
        editor.delay = 0.05
        return editor


def test_a_one_gpu_run_edits_in_the_background(splatfacto_run, tmp_path, random_lpips_backbones):
    def run():
        trainer = make_trainer(splatfacto_run, tmp_path, iterations=30, device_type="cuda")
        trainer.config.pipeline._target = SlowGpuInvertPipeline
        trainer.setup()
        pipeline = trainer.pipeline
        assert pipeline.async_round is not None, "overlap_edits is on by default on a GPU"
        datamanager = pipeline.datamanager
        datamanager.cached_train  # noqa: B018 (records the originals)
        originals = [image.clone() for image in datamanager.original_images]
        started = time.perf_counter()
        trainer.train()
        assert datamanager.edited_views == set(range(datamanager.num_train_views))
        for idx, original in enumerate(originals):
            expected = torch.round((1.0 - original[..., :3].cuda()) * 255) / 255
            cached = datamanager.cached_train[idx]["image"][..., :3].cuda()
            torch.testing.assert_close(cached, expected, atol=1e-6, rtol=0)
        assert pipeline.model.graphed_lpips.sizes, "the LPIPS loss was captured as CUDA graphs"
        return time.perf_counter() - started

    assert _in_own_thread(run) > 0


def test_gsplat_sh_on_a_side_stream_waits_for_its_inputs():
    from gsplat import spherical_harmonics

    import igs2gs.igs2gs_config  # noqa: F401 (orders gsplat's SH kernels with the current stream)

    device = torch.device("cuda")
    torch.manual_seed(0)
    dirs = torch.randn(200_000, 3, device=device)
    coeffs = torch.randn(200_000, 16, 3, device=device)
    expected = spherical_harmonics(3, dirs, coeffs)

    def on_side_stream():
        with torch.cuda.stream(torch.cuda.Stream()):
            late = torch.zeros_like(coeffs)
            torch.cuda._sleep(50_000_000)  # the inputs are written only after ~25 ms of GPU time
            late.copy_(coeffs)
            colors = spherical_harmonics(3, dirs, late)
            return colors.clone()

    torch.testing.assert_close(_in_own_thread(on_side_stream), expected)


def test_a_run_with_training_on_a_high_priority_stream(splatfacto_run, tmp_path, random_lpips_backbones):
    def run():
        trainer = make_trainer(splatfacto_run, tmp_path, iterations=30, device_type="cuda")
        trainer.config.pipeline._target = SlowGpuInvertPipeline
        trainer.config.pipeline.training_stream_priority = True
        trainer.setup()
        assert torch.cuda.current_stream().priority < 0
        trainer.train()
        means = trainer.pipeline.model.means
        assert torch.isfinite(means).all()
        views = trainer.pipeline.datamanager.num_train_views
        assert trainer.pipeline.datamanager.edited_views == set(range(views))

    _in_own_thread(run)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_group_norm_from_row_reductions_matches_torch_on_the_gpu(dtype):
    from igs2gs.fast_group_norm import FastGroupNorm, splits_better

    torch.manual_seed(0)
    norm = FastGroupNorm(32, 128).cuda().to(dtype)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.normal_()
    x = (torch.randn(1, 128, 256, 256, device="cuda") * 4 + torch.randn(1, 128, 1, 1, device="cuda") * 20).to(dtype)
    assert splits_better(x, 32), "a VAE-sized input takes the reductions"
    expected = torch.nn.functional.group_norm(x.double(), 32, norm.weight.double(), norm.bias.double(), norm.eps)
    got, torch_own = norm(x).double(), torch.nn.GroupNorm.forward(norm, x).double()
    tolerance = 2 * (torch_own - expected).abs().max().item() + (1e-5 if dtype == torch.float32 else 1e-2)
    assert (got - expected).abs().max().item() < tolerance


class ProcessGpuPipeline(InvertEditorPipeline):
    process_editor_builder = pid_editor


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_a_two_gpu_run_edits_in_a_process_of_its_own(splatfacto_run, tmp_path, random_lpips_backbones):
    trainer = make_trainer(splatfacto_run, tmp_path, iterations=30, device_type="cuda")
    trainer.config.pipeline._target = ProcessGpuPipeline
    trainer.config.pipeline.ip2p_device = "cuda:1"
    trainer.config.pipeline.ip2p_process = True
    trainer.setup()
    pipeline, datamanager = trainer.pipeline, trainer.pipeline.datamanager
    assert pipeline.edit_process is not None
    originals = [image.clone() for image in datamanager.original_images]
    trainer.train()
    assert datamanager.edited_views == set(range(datamanager.num_train_views))
    for idx, original in enumerate(originals):
        expected = torch.round((1.0 - original[..., :3].cuda()) * 255) / 255
        cached = datamanager.cached_train[idx]["image"][..., :3].cuda()
        torch.testing.assert_close(cached[1:, 1:], expected[1:, 1:], atol=1e-6, rtol=0)
    assert not pipeline.edit_process.alive


def test_the_background_journal_copies_a_cuda_edit_only_once_it_is_made(tmp_path):
    from igs2gs.background_journal import BackgroundJournal
    from igs2gs.edit_journal import EditJournal

    journal = BackgroundJournal(EditJournal(tmp_path))
    side = torch.cuda.Stream()  # created non-blocking: nothing orders the writer thread's copy after it but the event
    with torch.cuda.stream(side):
        image = torch.zeros(512, 512, 3, dtype=torch.uint8, device="cuda")
        a = torch.randn(4096, 4096, device="cuda")
        for _ in range(20):  # keep the stream busy for a while before the edit is written into `image`
            a = torch.tanh(a @ a)
        image.copy_((a[:512, :512, None] > 2).to(torch.uint8).expand(-1, -1, 3) + 77)
        journal.write_edit(0, image)
    journal.flush()
    expected = image.cpu()
    assert expected.min().item() >= 77
    assert torch.equal(journal.journal.read_edit(0), expected)


def test_one_pass_of_the_fused_adams_makes_torchs_update_on_cuda():
    from tests.test_grouped_adam import step_both

    step_both("cuda")


def test_a_fresh_process_loads_the_editors_saved_compile_and_edits_the_same(tmp_path):
    from tests.test_saved_compile import check_saved_edit_loads_in_fresh_process

    check_saved_edit_loads_in_fresh_process(tmp_path, "cuda")


POOL_PROBE = """
import sys, torch
if sys.argv[1] == "in-process":
    from igs2gs.inductor_workers import compile_in_process
    compile_in_process()
from torch._inductor.async_compile import AsyncCompile
step = torch.compile(lambda x: torch.sin(x) * 2 + 1)
step(torch.ones(64, device="cuda"))
print(AsyncCompile.process_pool.cache_info().currsize)
"""


def test_a_process_that_compiles_in_process_starts_no_compile_workers():
    import subprocess
    import sys

    def pools(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", POOL_PROBE, mode], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        return int(out.stdout.split()[-1])

    assert pools("in-process") == 0
    assert pools("default") == 1  # inductor's default on this machine: the pool the change avoids


def tiny_cuda_compiled_editor(config, device):
    """The tiny InstructPix2Pix set up as `configure_editor` sets up a compiling one, its pieces kept in
    `config.cache`."""
    from pathlib import Path

    from tests.tiny_ip2p import tiny_editor

    editor = tiny_editor(device=device)
    editor.enable_fast_kernels(channels_last=True, group_norm=False)
    editor.enable_compile(cache_dir=Path(config.cache), saved=True)
    return editor


def test_a_background_compile_on_the_training_gpu_serves_the_next_run(tmp_path):
    """One GPU's first compiled run: a child compiles on the same GPU (background_compile.py), and an editor built in
    this process then finds the child's pieces for its plan (their keys name the device, the versions, the global
    state: the same in the child)."""
    from types import SimpleNamespace

    from igs2gs.background_compile import BackgroundCompile, compiles_aside

    plan, options = ([(64, 64)], 2), SimpleNamespace(edit_max_side=0, cache=str(tmp_path))
    here = tiny_cuda_compiled_editor(options, "cuda:0")
    assert compiles_aside(here, *plan)
    process = BackgroundCompile(options, "cuda:0", builder=tiny_cuda_compiled_editor)
    process.plan(*plan, EditSettings(prompt="turn it blue", diffusion_steps=3))
    process.close(finish_compile=True)
    assert process.compiled and process._child.process.exitcode == 0
    later = tiny_cuda_compiled_editor(options, "cuda:0")
    assert later.saved_plan_ready(*plan) and not compiles_aside(later, *plan)
