"""Recipes: every shipped recipe loads, bad input fails early naming field and value, overrides work."""

import re
from pathlib import Path

import pytest
import yaml

from growth.recipe import Recipe, load_recipe, parse_overrides, recipe_from_dict
from growth.run import build_parser, parse_args

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
TINY = RECIPES / "tiny.yaml"
SHIPPED = sorted(RECIPES.glob("*.yaml"))


def test_recipes_are_shipped():
    names = {p.stem for p in SHIPPED}
    assert {"tiny", "tiny_baseline", "tiny_stack_middle", "tiny_stack_all", "tiny_zero", "gpt_125m", "gpt_1b"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_recipe_loads_and_round_trips(path):
    r = load_recipe(path)
    assert isinstance(r, Recipe) and r.name == path.stem and r.label
    assert r.training["output_dir"] == f"runs/{r.name}"
    assert recipe_from_dict(r.to_dict()) == r
    assert recipe_from_dict(yaml.safe_load(r.to_yaml())) == r  # what run.py writes as recipe.yaml
    s = r.growth.schedule
    assert r.model.num_layers == (s.final_depth if r.baseline else s.initial_depth)
    assert r.final_depth == s.final_depth


def test_gpu_recipes_are_the_intended_sizes():
    import torch
    import transformers

    from growth.models import build_config

    for name, low, high in (("gpt_125m", 110e6, 140e6), ("gpt_1b", 0.9e9, 1.2e9)):
        r = load_recipe(RECIPES / f"{name}.yaml")
        assert r.training["bf16"] is True and r.data.streaming == (name == "gpt_1b") and r.data.source.startswith("hf:")
        config = build_config(r.model, 50257)  # the GPT-2 tokenizer they name
        config.num_hidden_layers = r.final_depth
        with torch.device("meta"):  # sizes only, no memory
            model = transformers.AutoModelForCausalLM.from_config(config)
        assert low < sum(p.numel() for p in model.parameters()) < high, name


def test_base_merges_field_by_field_and_name_label_are_not_inherited():
    base, r = load_recipe(TINY), load_recipe(RECIPES / "tiny_baseline.yaml")
    assert r.baseline and r.model.num_layers == 6 and r.label == "baseline" and r.name == "tiny_baseline"
    assert r.model.hidden_size == base.model.hidden_size and r.data == base.data and r.growth == base.growth
    assert {k: v for k, v in r.training.items() if k != "output_dir"} == {
        k: v for k, v in base.training.items() if k != "output_dir"}
    assert load_recipe(RECIPES / "tiny_stack_middle.yaml").growth.operator == "stack_middle"


def test_a_field_mapping_replaces_the_base_value_whole(tmp_path):
    path = _write(tmp_path, "eq.yaml", {"base": str(TINY), "growth": {"schedule": {"kind": "equal", "depths": [2, 4, 6]}}})
    s = load_recipe(path).growth.schedule
    assert s.points == ((1 / 3, 4), (2 / 3, 6)) and s.unit == "fraction"


def _write(tmp_path, name, d):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(d))
    return path


def _bad(tmp_path, delta, match, name="bad.yaml"):
    path = _write(tmp_path, name, {"base": str(TINY), **delta})
    with pytest.raises(ValueError, match=match) as info:
        load_recipe(path)
    assert str(info.value).startswith(f"recipe {name}: ")
    return str(info.value)


def test_unknown_keys_name_the_field_and_list_known_keys(tmp_path):
    msg = _bad(tmp_path, {"growth": {"operatr": "stack_all"}}, r"growth\.operatr: unknown key \(did you mean 'operator'\?\)")
    assert "known keys: schedule, operator, init" in msg
    _bad(tmp_path, {"modle": {"hidden_size": 64}}, r"modle: unknown key \(did you mean 'model'\?\); known keys: name, label")
    _bad(tmp_path, {"training": {"max_step": 10}}, r"training\.max_step: unknown key \(did you mean 'max_steps'\?\)")
    _bad(tmp_path, {"data": {"block": 64}}, r"data\.block: unknown key")
    _bad(tmp_path, {"training": {"seed": 3}}, r"training\.seed: not set in a recipe; set the recipe's top-level seed")


def test_wrong_types_name_the_field_and_value(tmp_path):
    _bad(tmp_path, {"model": {"hidden_size": "big"}}, r"model\.hidden_size: expected int, got 'big' \(str\)")
    _bad(tmp_path, {"model": {"num_layers": 2.0}}, r"model\.num_layers: expected int, got 2\.0")
    _bad(tmp_path, {"baseline": "yes"}, r"baseline: expected bool, got 'yes'")
    _bad(tmp_path, {"training": {"learning_rate": "fast"}}, r"training\.learning_rate: expected float, got 'fast'")
    _bad(tmp_path, {"training": {"lr_scheduler_type": "cosin"}},
         r"training\.lr_scheduler_type: unknown value 'cosin'; choose one of linear, cosine.*\(did you mean 'cosine'\?\)")
    _bad(tmp_path, {"growth": "stack_last"}, r"growth: expected a mapping, got 'stack_last'")
    _bad(tmp_path, {"growth": {"init": "zeros"}}, r"growth\.init.*'zeros'")
    _bad(tmp_path, {"tokenizer": {"vocab_size": 100}}, r"tokenizer\.vocab_size must be at least 258.*got 100")


def test_impossible_schedules_fail_before_any_work(tmp_path):
    _bad(tmp_path, {"model": {"num_layers": 3}},
         r"growth\.schedule\.initial_depth: 2 does not match model\.num_layers 3")
    _bad(tmp_path, {"growth": {"schedule": {"initial_depth": 2, "unit": "fraction", "points": [[0.5, 4], [1.0, 6]]}}},
         r"growth\.schedule\.points\[1\]: point 1\.0 is at the end of the run")
    _bad(tmp_path, {"growth": {"schedule": {"initial_depth": 2, "points": [[100, 4], [400, 6]]}}},
         r"growth\.schedule\.points\[1\]: 400 steps lands at step 400, which is not before max_steps 400")
    _bad(tmp_path, {"growth": {"schedule": {"initial_depth": 2, "points": [[100, 4], [200, 4]]}}},
         r"growth\.schedule\.points\[1\]: target depth 4 is not larger than the previous depth 4")
    _bad(tmp_path, {"growth": {"block": 3}}, r"growth: stack_last cannot grow 2 -> 4 layers \(growth\.schedule\.points\[0\]\).*block 3")
    _bad(tmp_path, {"baseline": True}, r"model\.num_layers: a baseline trains the final depth of growth\.schedule \(6\) from step 0, got 2")


def test_missing_data_file_and_unsupported_family(tmp_path):
    _bad(tmp_path, {"data": {"source": str(tmp_path / "nope.txt")}}, r"data\.source: file '.*nope\.txt' does not exist")
    _bad(tmp_path, {"model": {"family": "bert"}}, r"model\.family: unsupported family 'bert'; supported: llama, mistral")
    _bad(tmp_path, {"data": {"block_size": 256}}, r"data\.block_size: 256 is larger than model\.max_position_embeddings 128")


def test_bad_files(tmp_path):
    with pytest.raises(ValueError, match=r"recipe: file '.*missing\.yaml' does not exist"):
        load_recipe(tmp_path / "missing.yaml")
    with pytest.raises(ValueError, match=r"recipe bad\.yaml: base: file '.*nope\.yaml' does not exist"):
        load_recipe(_write(tmp_path, "bad.yaml", {"base": "nope.yaml"}))
    _write(tmp_path, "a.yaml", {"base": "b.yaml"})
    _write(tmp_path, "b.yaml", {"base": "a.yaml"})
    with pytest.raises(ValueError, match=r"recipe a\.yaml: base: cycle a\.yaml -> b\.yaml -> a\.yaml"):
        load_recipe(tmp_path / "a.yaml")


def test_overrides_from_a_list_or_a_dict():
    r = load_recipe(TINY, ["--max_steps", "60", "--growth.init", "zero", "--model.hidden_size=64", "seed=3",
                           "--learning_rate", "3e-4", "--growth.schedule.points", "[[0.3, 4], [0.6, 6]]",
                           "--name", "123", "--training.warmup_steps", "5"])
    assert r.training["max_steps"] == 60 and r.growth.init == "zero" and r.model.hidden_size == 64 and r.seed == 3
    assert r.training["learning_rate"] == 3e-4 and r.training["warmup_steps"] == 5
    assert r.growth.schedule.points == ((0.3, 4), (0.6, 6)) and r.growth.schedule.unit == "fraction"
    assert r.name == "123" and r.label == "stack_last"  # a string field keeps the string
    r = load_recipe(TINY, {"baseline": True, "model.num_layers": 6, "max_steps": 20})
    assert r.baseline and r.model.num_layers == 6 and r.training["max_steps"] == 20
    assert parse_overrides(["--baseline", "--x", "[1, 2]"]) == {"baseline": True, "x": [1, 2]}
    with pytest.raises(ValueError, match=r"recipe tiny\.yaml: growth\.operatr: unknown key"):
        load_recipe(TINY, ["--growth.operatr", "stack_all"])
    with pytest.raises(ValueError, match=r"recipe tiny\.yaml: model\.hidden_size: expected int, got 'wide'"):
        load_recipe(TINY, {"model.hidden_size": "wide"})


def test_command_line(tmp_path):
    recipe, options = parse_args(["--config", str(TINY), "--max_steps", "50", "--output_dir", "out",
                                  "--growth.init", "zero", "--model.hidden_size", "64", "--baseline",
                                  "--model.num_layers", "6", "--disable_tqdm", "--overwrite_output_dir", "true"])
    assert recipe.training["max_steps"] == 50 and recipe.training["output_dir"] == "out"
    assert recipe.training["disable_tqdm"] is True and recipe.baseline and recipe.model.hidden_size == 64
    assert options.overwrite_output_dir and options.resume_from_checkpoint is None
    _, options = parse_args(["--config", str(TINY), "--resume_from_checkpoint", "true"])
    assert options.resume_from_checkpoint is True
    _, options = parse_args(["--config", str(TINY), "--resume_from_checkpoint", "runs/x/checkpoint-5"])
    assert options.resume_from_checkpoint == "runs/x/checkpoint-5"
    with pytest.raises(ValueError, match=r"training\.max_step: unknown key \(did you mean 'max_steps'\?\)"):
        parse_args(["--config", str(TINY), "--training.max_step", "5"])
    with pytest.raises(ValueError, match=r"training\.max_steps: expected int, got 'many'"):
        parse_args(["--config", str(TINY), "--max_steps", "many"])


def test_help_lists_every_field_with_its_help():
    text = build_parser().format_help()
    flat = re.sub(r"\s+", " ", text)
    for flag, help_words in (("--model.hidden_size", None), ("--growth.init", "new layers: copy"),
                             ("--data.block_size", "tokens per packed block"),
                             ("--tokenizer.vocab_size", "trained BPE only"),
                             ("--learning_rate", "initial learning rate"), ("--baseline", "final depth"),
                             ("--seed", None), ("--resume_from_checkpoint", "newest complete checkpoint"),
                             ("--allow_recipe_change", "run.json records the change"),
                             ("--safety.nonfinite_loss_steps", "non-finite training loss")):
        assert flag in text, flag
        if help_words:
            assert help_words.lower() in flat.lower(), help_words
    from dataclasses import fields

    from transformers import TrainingArguments

    for f in fields(TrainingArguments):
        if f.init and f.name not in ("local_rank",):
            assert f"--{f.name}" in text, f.name
