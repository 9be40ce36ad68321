"""Every setting of every stage config declares its domain, and values outside it are refused
wherever they enter (a preset, ``--set``, ``run.json``) with one line naming the setting."""

from __future__ import annotations

import json
import math
from dataclasses import MISSING, asdict, fields
from pathlib import Path
from typing import Any

import pytest

from kilonerf.cli import main
from kilonerf.settings import Domain, SettingError, Settings, domain_of
from kilonerf.names import PRESETS, TEACHERS
from kilonerf.run.pipeline import new_config
from kilonerf.train.config import SECTIONS, NeRFTeacherConfig, resolve_config, scene_type_settings, teacher_config_class

CONFIGS: list[tuple[str, type[Settings]]] = [*SECTIONS.items(), ("teacher_params", NeRFTeacherConfig)]


def _bad_texts(d: Domain) -> list[str]:
    """Command-line texts outside domain ``d``."""
    if d.kind is bool:
        return ["maybe", "2", ""]
    if d.kind is str:
        return ["no_such_choice", ""]
    if d.kind == "schedule":
        return ["x", "[[1, 2]]", "[[5, 80, 80], [1, 90, 90]]", "[[-1, 80, 80]]", "[[1, 80, 1.5]]", "[" * 5000]
    texts = ["abc", "nan", "inf", "-inf", "[1]", "1e999"]
    if d.kind is int:
        texts.append("1.5")
    if d.ge is not None:
        texts.append(str(d.ge - 1))
    if d.gt is not None:
        texts.append(str(d.gt))
    if d.le is not None:
        texts.append(str(d.le + 1))
    if d.lt is not None:
        texts.append(str(d.lt))
    if not d.optional:
        texts.append("null")
    return texts


def _bad_values(d: Domain) -> list[Any]:
    """JSON values (as ``run.json`` holds them) outside domain ``d``."""
    values: list[Any] = [[1], {"a": 1}]
    if d.kind is not str:
        values.append("1")
    if d.kind in (int, float):
        values += [True, math.nan, math.inf]
    if d.kind is bool:
        values += [1, 0.0]
    if not d.optional:
        values.append(None)
    return values


@pytest.mark.parametrize(("section", "cls"), CONFIGS, ids=[f"{s}:{c.__name__}" for s, c in CONFIGS])
def test_every_field_refuses_values_outside_its_domain(section: str, cls: type[Settings]) -> None:
    default = asdict(cls(max_steps=10)) if section.endswith("_loop") else asdict(cls())
    assert cls.from_dict(default, section) == cls.from_dict(dict(default), section)
    for f in fields(cls):  # type: ignore[arg-type]
        if f.default is MISSING:
            with pytest.raises(SettingError, match=f"missing settings {section}.{f.name}"):
                cls.from_dict({k: v for k, v in default.items() if k != f.name}, section)
        domain = domain_of(f)  # a field without a declared domain fails here
        name = f"'{section}.{f.name}'"
        for text in _bad_texts(domain):
            with pytest.raises(SettingError) as info:
                cls.parse(f.name, text, section)
            message = str(info.value)
            assert name in message and domain.describe() in message and "\n" not in message, (f.name, text, message)
        for value in _bad_values(domain):
            with pytest.raises(SettingError) as info:
                cls.from_dict({**default, f.name: value}, section)
            assert name in str(info.value), (f.name, value)


def test_presets_and_defaults_lie_inside_their_domains() -> None:
    for preset in PRESETS:
        for teacher in TEACHERS:
            cfg = resolve_config(preset, teacher)
            cfg.validate()
            assert teacher_config_class(teacher).from_dict(cfg.teacher_params).seed == 0


def test_domains_read_as_words() -> None:
    assert Domain(int, ge=1).describe() == "an integer >= 1"
    assert Domain(float, gt=0, le=1).describe() == "a finite number in (0, 1]"
    assert Domain(float, gt=0, optional=True).describe() == "a finite number > 0, or null"
    assert Domain(str, choices=("relu", "leaky_relu")).describe() == "one of relu, leaky_relu"


def test_command_line_values_take_their_declared_types() -> None:
    cfg = new_config("cpu", "fast", overrides={
        "teacher_params.random_background": "True", "occupancy.keep_unseen": "0", "finetune.lr": "2",
        "teacher_loop.max_seconds": "60", "distill_loop.max_seconds": "null",
        "teacher_params.res_schedule": "[[100, 64, 64]]", "finetune_loop.max_steps": "7",
    })  # fmt: skip
    assert cfg.teacher_params["random_background"] is True and cfg.occupancy["keep_unseen"] is False
    assert cfg.finetune["lr"] == 2.0 and isinstance(cfg.finetune["lr"], float)
    assert cfg.teacher_loop["max_seconds"] == 60.0 and cfg.distill_loop["max_seconds"] is None
    assert cfg.teacher_params["res_schedule"] == ((100, 64, 64),) and cfg.finetune_loop["max_steps"] == 7
    with pytest.raises(SettingError, match="unknown setting 'finetune.bogus'"):
        new_config("cpu", "fast", overrides={"finetune.bogus": "1"})
    with pytest.raises(SettingError, match="unknown setting 'nosuch.x'"):
        new_config("cpu", "fast", overrides={"nosuch.x": "1"})


def test_train_refuses_a_setting_out_of_range_before_any_work(
    tiny_scene: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    for setting in ("teacher_params.total_steps=-5", "finetune.lr=nan", "teacher_loop.max_steps=0",
                    "distill.occupied_fraction=1.5", "occupancy.keep_unseen=perhaps", "finetune_loop.max_seconds=inf"):
        assert main(["train", str(tiny_scene), "--out", str(run), "--set", setting]) == 2
        err = capsys.readouterr().err.strip()
        assert f"'{setting.split('=')[0]}' must be" in err and "\n" not in err, err
        assert not run.exists()


def test_a_run_json_edited_out_of_range_is_refused(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    meta = json.loads((trained_run / "run.json").read_text())
    meta["config"]["teacher_params"]["total_steps"] = -5
    (run / "run.json").write_text(json.dumps(meta))
    assert main(["train", "--out", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert "run.json" in err and "'teacher_params.total_steps' must be an integer >= 1, got -5" in err and "\n" not in err
    assert sorted(p.name for p in run.iterdir()) == ["run.json"]


def test_demo_settings_keep_its_shorter_teacher_over_the_cpu_preset() -> None:
    from kilonerf.demo import DEMO_SETTINGS

    preset, demo = new_config("cpu", "fast"), new_config("cpu", "fast", overrides=DEMO_SETTINGS)
    assert preset.teacher_params["total_steps"] == 3000 and preset.teacher_loop["max_steps"] == 3000
    assert demo.teacher_params["total_steps"] == 2000 and demo.teacher_loop["max_steps"] == 2000
    assert demo.finetune["num_samples"] == 128 and preset.finetune["num_samples"] == 192


def test_demo_refuses_a_bad_setting_before_rendering_its_scene(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--set", "finetune.rays_per_step=0"]) == 2
    assert "'finetune.rays_per_step' must be an integer >= 1, got '0'" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("scene_type", ["object", "forward", "unbounded"])
@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("teacher", TEACHERS)
def test_scene_type_settings_lie_in_their_domains_and_keep_the_presets_schedules(
        scene_type: str, preset: str, teacher: str) -> None:  # fmt: skip
    settings = scene_type_settings(scene_type, teacher, preset)
    cfg = new_config(preset, teacher, False, settings)
    base = resolve_config(preset, teacher)
    for key, value in settings.items():
        section, name = key.split(".")
        assert getattr(cfg, section)[name] == (tuple(tuple(r) for r in value) if isinstance(value, list) else value)
    if preset == "paper":  # a scene type never shortens the paper's fine-tuning
        assert cfg.finetune["iterations"] == base.finetune["iterations"]
        assert cfg.finetune_loop["max_steps"] == base.finetune_loop["max_steps"]
    assert cfg.finetune_loop["max_steps"] == cfg.finetune["iterations"]
