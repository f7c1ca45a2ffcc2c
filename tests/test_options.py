"""Method options live on the methods: resolving them, their help texts, and the CLI flags generated from them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Literal

import pytest

from core.cli import main
from core.errors import DraftScopeError
from core.options import Flag, LocalPath, ModelName, Range, option_fields, resolve
from core.specdec import SessionConfig
from core.specdec.drafters import DRAFTERS, build_drafter, drafter_options
from core.specdec.drafters.early_exit import EarlyExitDrafter
from core.specdec.verify import VERIFIERS


@dataclass
class Toy:
    width: Annotated[int, Range(1, 8, 1)] = 4  # children per node
    label: str | None = None  # a name (None: derived)
    mode: Annotated[Literal["a", "b"], Flag("--toy-mode")] = "a"  # which rule
    model: Annotated[str | None, ModelName] = None  # a preset
    path: Annotated[str | None, LocalPath] = None  # a file on the server


def test_resolve_defaults_mappings_instances_and_unknown_names():
    assert resolve(Toy, None, "toy") == Toy()
    assert resolve(Toy, {"width": 2}, "toy") == Toy(width=2)
    given = Toy(width=3)
    assert resolve(Toy, given, "toy") is given
    assert resolve(Toy, {"width": None}, "toy").width == 4  # None keeps a non-optional field's default
    assert resolve(Toy, {"label": None}, "toy").label is None
    with pytest.raises(DraftScopeError, match=r"unknown option 'widht' for the toy; its options: label, mode, model"):
        resolve(Toy, {"widht": 2}, "the toy")
    with pytest.raises(DraftScopeError, match="must be a mapping"):
        resolve(Toy, 3, "the toy")


def test_option_fields_read_types_hints_and_the_comment_of_each_field():
    fields = {f.name: f for f in option_fields(Toy)}
    assert fields["width"].kind is int and fields["width"].range == Range(1, 8, 1) and not fields["width"].optional
    assert fields["width"].help == "children per node" and fields["width"].flag == "--width"
    assert fields["label"].kind is str and fields["label"].optional and fields["label"].default is None
    assert fields["mode"].choices == ("a", "b") and fields["mode"].flag == "--toy-mode"
    assert fields["model"].model_name and not fields["model"].local_path
    assert fields["path"].local_path and fields["path"].help == "a file on the server"


@pytest.mark.parametrize("name", list(DRAFTERS) + [f"verifier:{v}" for v in VERIFIERS])
def test_every_registered_option_has_a_default_and_a_help_comment(name):
    cls = VERIFIERS[name.split(":", 1)[1]] if name.startswith("verifier:") else DRAFTERS[name]
    for f in option_fields(cls.Options):
        assert f.help and f.help != f.name, (name, f.name)
        assert f.kind in (int, float, bool, str), (name, f.name, f.kind)
    cls.Options()  # the defaults are valid


def test_drafter_options_are_checked_and_keywords_override(tiny_llama):
    assert drafter_options("ngram", {"ngram_size": 4}).ngram_size == 4
    with pytest.raises(DraftScopeError, match="unknown option 'exit_layer' for the 'ngram' drafter"):
        drafter_options("ngram", {"exit_layer": 2})
    with pytest.raises(DraftScopeError, match="unknown drafter 'nope'"):
        drafter_options("nope")
    with pytest.raises(DraftScopeError, match="n-gram size must satisfy"):
        drafter_options("ngram", {"ngram_size": 1, "min_ngram_size": 2})
    drafter = EarlyExitDrafter(tiny_llama, exit_layer=2)
    assert drafter.options.exit_layer == 2 and drafter.exit_layer == 2
    assert build_drafter("early-exit", tiny_llama, {"exit_layer": 3}).exit_layer == 3
    with pytest.raises(DraftScopeError, match="unknown option 'exit_lyer'"):
        EarlyExitDrafter(tiny_llama, exit_lyer=2)


def test_session_config_names_changed_options_one_by_one():
    a = SessionConfig(drafter="kangaroo", drafter_options={"eta": 0.5})
    b = SessionConfig(drafter="kangaroo", drafter_options={"eta": 0.2}, gamma=3)
    assert b.changes(a) == ["gamma", "eta"]


def _cli(capsys, *argv):
    code = main(["generate", "--target", "tiny-llama", "--prompt", "a b a b a b", "--max-new-tokens", "4", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_flags_come_from_the_options_and_foreign_flags_are_refused(capsys):
    code, out, err = _cli(capsys, "--drafter", "ngram", "--exit-layer", "2")
    assert code == 2 and err.startswith("error: --exit-layer is not an option of 'ngram'") and err.count("\n") == 1
    code, out, err = _cli(capsys, "--drafter", "easyspec", "--easyspec-base", "early-exit", "--exit-layer", "2",
                          "--group-size", "2", "--no-calibrate", "--json")
    assert code == 0, err
    options = json.loads(out)["settings"]["drafter_options"]
    assert options == {"base": "early-exit", "exit_layer": 2, "group_size": 2, "calibrate": False}
    code, out, err = _cli(capsys, "--drafter", "easyspec", "--easyspec-base", "tree")
    assert code == 2 and "invalid choice: 'tree'" in err
