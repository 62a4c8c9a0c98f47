"""The `igs2gs` method: registered with nerfstudio through the `nerfstudio.method_configs` entry point.

nerfstudio imports this module on every `ns-*` command, so it stays light: diffusers and
transformers are imported only when the first edit builds InstructPix2Pix.
"""

from __future__ import annotations

from nerfstudio.configs.base_config import ViewerConfig
from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig
from nerfstudio.plugins.types import MethodSpecification

from igs2gs.checkpoint_compat import allow_numpy_scalars_in_checkpoints
from igs2gs.cpu_fallback import install_cpu_fallback
from igs2gs.gsplat_streams import order_sh_kernels_with_current_stream
from igs2gs.gsplat_syncs import invert_without_sync
from igs2gs.igs2gs_pipeline import IGS2GSPipelineConfig
from igs2gs.nerfstudio_startup import skip_external_method_stacks
from igs2gs.trainer_config import IGS2GSTrainerConfig

allow_numpy_scalars_in_checkpoints()
install_cpu_fallback()
order_sh_kernels_with_current_stream()
invert_without_sync()
skip_external_method_stacks()

EDIT_ITERATIONS = 7500
"""Default length of an edit: 7,500 steps after the checkpoint's step (3 rounds at gs_steps 2,500)."""

# While editing, the means learn at 1.6e-5 decaying to 1.6e-6 over the edit (splatfacto's own rate at about
# step 15k, then its final rate). splatfacto's schedule is not restored from the checkpoint (load_scheduler
# False): at 30k it has already decayed to 1.6e-6 and the geometry could barely follow the edits. An unfinished igs2gs
# run's own schedules are restored when it is resumed (igs2gs/trainer_config.py).
MEANS_LR = 1.6e-5

igs2gs_method = MethodSpecification(
    config=IGS2GSTrainerConfig(  # checks --data and --load-dir, and resumes unfinished igs2gs runs
        method_name="igs2gs",
        steps_per_eval_image=100,
        steps_per_eval_batch=0,
        max_num_iterations=EDIT_ITERATIONS,
        save_only_latest_checkpoint=True,
        mixed_precision=False,
        load_scheduler=False,
        pipeline=IGS2GSPipelineConfig(),
        optimizers={
            "means": {
                "optimizer": AdamOptimizerConfig(lr=MEANS_LR, eps=1e-15),
                "scheduler": ExponentialDecaySchedulerConfig(lr_final=MEANS_LR / 10, max_steps=EDIT_ITERATIONS),
            },
            "features_dc": {"optimizer": AdamOptimizerConfig(lr=0.0025, eps=1e-15), "scheduler": None},
            "features_rest": {"optimizer": AdamOptimizerConfig(lr=0.0025 / 20, eps=1e-15), "scheduler": None},
            "opacities": {"optimizer": AdamOptimizerConfig(lr=0.05, eps=1e-15), "scheduler": None},
            "scales": {"optimizer": AdamOptimizerConfig(lr=0.005, eps=1e-15), "scheduler": None},
            "quats": {"optimizer": AdamOptimizerConfig(lr=0.001, eps=1e-15), "scheduler": None},
            "camera_opt": {
                "optimizer": AdamOptimizerConfig(lr=1e-4, eps=1e-15),
                "scheduler": ExponentialDecaySchedulerConfig(lr_final=5e-7, max_steps=EDIT_ITERATIONS),
            },
            "bilateral_grid": {
                "optimizer": AdamOptimizerConfig(lr=2e-3, eps=1e-15),
                "scheduler": ExponentialDecaySchedulerConfig(lr_final=1e-4, max_steps=EDIT_ITERATIONS),
            },
        },
        viewer=ViewerConfig(num_rays_per_chunk=1 << 15),
        vis="viewer",
    ),
    description=(
        "Instruct-GS2GS: edit a trained splatfacto scene from a text instruction with InstructPix2Pix. "
        "Continue from a checkpoint: "
        'ns-train igs2gs --data DIR --load-dir .../nerfstudio_models --pipeline.prompt "..."'
    ),
)
