"""nerfstudio checkpoints load with torch.load(weights_only=True) once their numpy types are allowlisted."""

import subprocess
import sys
import textwrap


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)


SAVE_SCHEDULER_STATE = """
    import io, torch
    from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig
    param = torch.nn.Parameter(torch.zeros(3))
    optimizer = torch.optim.Adam([param], lr=1.6e-4)
    schedule = ExponentialDecaySchedulerConfig(lr_final=1.6e-6, max_steps=30000).setup()
    scheduler = schedule.get_scheduler(optimizer, 1.6e-4)
    optimizer.step(); scheduler.step()
    buffer = io.BytesIO()
    state = {"schedulers": {"means": scheduler.state_dict()}, "optimizers": {"means": optimizer.state_dict()}}
    torch.save(state, buffer)
    buffer.seek(0)
"""


def test_scheduler_state_is_refused_without_the_allowlist():
    result = _run(SAVE_SCHEDULER_STATE + "    torch.load(buffer)\n")
    assert result.returncode != 0 and "Weights only load failed" in result.stderr


def test_scheduler_state_loads_with_weights_only_after_the_allowlist():
    code = (
        SAVE_SCHEDULER_STATE
        + """
    from igs2gs.checkpoint_compat import allow_numpy_scalars_in_checkpoints
    allow_numpy_scalars_in_checkpoints()
    state = torch.load(buffer, weights_only=True)
    print("lr", state["schedulers"]["means"]["_last_lr"][0])
    """
    )
    result = _run(code)
    assert result.returncode == 0, result.stderr
    assert "lr 0.0001599" in result.stdout


def test_allowlist_still_refuses_arbitrary_globals():
    code = """
    import io, os, pickle, torch
    from igs2gs.checkpoint_compat import allow_numpy_scalars_in_checkpoints
    allow_numpy_scalars_in_checkpoints()

    class Evil:
        def __reduce__(self):
            return (os.getcwd, ())

    buffer = io.BytesIO()
    torch.save({"x": Evil()}, buffer)
    buffer.seek(0)
    try:
        torch.load(buffer)
    except pickle.UnpicklingError as error:
        print("refused", "getcwd" in str(error))
    """
    result = _run(code)
    assert "refused True" in result.stdout, result.stdout + result.stderr
