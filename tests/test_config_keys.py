"""Every validated config field, fed one invalid value through the YAML loader, gets an error
that names its exact dotted key.

The walk covers every dataclass reachable from the root configs (the run config of each recipe,
the Serve config). For each leaf field it tries values that a validator may refuse (negative,
zero, huge, empty, unknown words); the first refused value must give a ValueError whose key (the
text before the first ': ') is the field's dotted path, or (a rule between two fields of one
section) a sibling's dotted path with the changed field named in the text.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path

import pytest
import yaml

from cluster.loader import apply_overrides, build, load_yaml

ROOT = Path(__file__).resolve().parents[1]
BAD = {int: [-1, 0, 10**9, -(10**9)], float: [-1.0, 0.0, 1e9, -1e9, 0.3, 2.0, 1.5],
       str: ["", "bogus-value!", "nope:model", "x"], bool: []}
BAD_LISTS = [["bogus-value!"], [], [-1.0], [0.0, 0.0], [True]]


def _leaf_type(tp):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _leaf_type(args[0]) if len(args) == 1 else None
    return tp


def leaves(cls, data: dict, path: str = ""):
    """(dotted path, type) of every leaf field of cls, descending into nested dataclasses and into
    the first item of lists of dataclasses that the base config holds."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp, key = _leaf_type(hints[f.name]), f"{path}.{f.name}" if path else f.name
        sub = (data or {}).get(f.name) if isinstance(data, dict) else None
        if tp is not None and dataclasses.is_dataclass(tp):
            yield from leaves(tp, sub or {}, key)
        elif typing.get_origin(tp) is list:
            (item,) = typing.get_args(tp)
            if dataclasses.is_dataclass(item):
                if sub:
                    yield from leaves(item, sub[0], f"{key}.0")
            else:
                yield key, list
        elif tp in BAD:
            yield key, tp


def first_error(cls, base: dict, key: str, candidates) -> tuple[object, str] | None:
    for value in candidates:
        data = yaml.safe_load(yaml.safe_dump(base))
        apply_overrides(data, [f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"])
        try:
            build(cls, data)
        except ValueError as e:
            return value, str(e)
    return None


def names_key(msg: str, key: str) -> bool:
    head = msg.split(": ", 1)[0]
    if head == key or head.startswith(key + "."):  # the key, or an item of that list
        return True
    parent, _, leaf = key.rpartition(".")
    # a rule between fields of one section: a sibling's full key, and the changed field named
    return head.rpartition(".")[0] == parent and leaf in msg


def _run_config():
    from pipelines.run import RunConfig

    return RunConfig


def _serve_config():
    from serving.config import ServeConfig

    return ServeConfig


ROOTS = [  # (root class, base YAML, extra overrides that make the base valid)
    (_run_config, "tiny.yaml", []),
    (_run_config, "tiny_seam.yaml", []),
    (_run_config, "tiny_gen.yaml", []),
    (_run_config, "tiny_align.yaml", []),
    (_serve_config, "serve.yaml", ["model_dir=/tmp/some-reward-model"]),
]


@pytest.mark.parametrize("make_cls,base_file,extra", ROOTS, ids=[r[1] for r in ROOTS])
def test_every_validated_field_error_names_its_key(make_cls, base_file, extra):
    cls = make_cls()
    base = apply_overrides(load_yaml(ROOT / "configs" / base_file), extra)
    build(cls, yaml.safe_load(yaml.safe_dump(base)))  # the base itself is valid
    checked, wrong = 0, []
    recipe = cls.select(base) if hasattr(cls, "select") else cls  # the root config the file is
    for key, tp in leaves(recipe, base):
        hit = first_error(cls, base, key, BAD_LISTS if tp is list else BAD[tp])
        if hit is None:
            continue
        checked += 1
        value, msg = hit
        if not names_key(msg, key):
            wrong.append(f"{key}={value!r}: {msg}")
    assert not wrong, "errors that do not name their key:\n" + "\n".join(wrong)
    assert checked >= 25, f"only {checked} validated fields found under {base_file}"


def test_unknown_model_spec_names_the_spec_key():
    from pipelines.run import RunConfig

    base = load_yaml(ROOT / "configs" / "tiny.yaml")
    with pytest.raises(ValueError) as e:
        build(RunConfig, apply_overrides(base, ["weak.models.0.spec=gpt:2"]))
    assert str(e.value).startswith("weak.models.0.spec: ") and "gpt:2" in str(e.value)
