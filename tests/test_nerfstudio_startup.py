"""nerfstudio's list of installable methods is built without `inspect.stack()` (igs2gs/nerfstudio_startup.py)."""

from __future__ import annotations

import inspect

import pytest
from nerfstudio.configs import external_methods

import igs2gs.igs2gs_config  # noqa: F401 (the plugin's import makes the change, as nerfstudio's discovery does)
from igs2gs.nerfstudio_startup import skip_external_method_stacks


def test_listing_the_installable_methods_walks_no_stack(monkeypatch):
    def no_stack(*args, **kwargs):
        raise AssertionError("inspect.stack() was called")

    monkeypatch.setattr(inspect, "stack", no_stack)
    configs, descriptions = external_methods.get_external_methods()
    slugs = {slug for method in external_methods.external_methods for slug, _ in method.configurations}
    assert set(configs) == slugs and set(descriptions) == slugs
    assert all(config.method_name == slug for slug, config in configs.items())


def test_a_method_picked_on_the_command_line_still_offers_its_install(monkeypatch):
    printed = []
    monkeypatch.setattr(external_methods.CONSOLE, "print", lambda *args, **kwargs: printed.append(args))
    method = external_methods.ExternalMethod("How to install it.", configurations=[("some-method", "A method")])
    with pytest.raises(SystemExit) as stopped:
        external_methods.ExternalMethodDummyTrainerConfig(method_name="some-method", method=method)
    assert stopped.value.code == 0 and printed == [("How to install it.",)]


def test_the_change_is_made_once():
    skip_external_method_stacks()
    first = external_methods.ExternalMethodDummyTrainerConfig.__post_init__
    skip_external_method_stacks()
    assert external_methods.ExternalMethodDummyTrainerConfig.__post_init__ is first
