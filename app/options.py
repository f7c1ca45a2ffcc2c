"""The drafters' option controls, generated from their ``Options`` dataclasses (``core.options.option_fields``), so a
new option appears in the app with no edit here.

One control per option name across the drafters a tab offers (``draft_model`` of model, easyspec and sorted is one
dropdown), shown only while a drafter that declares it is chosen. The field decides the control:

- a ``Literal`` (``choices``) → Dropdown; a ``ModelName`` → Dropdown of the presets (custom values only with
  ``--allow-local-models``); ``bool`` → Checkbox; other ``str`` → Textbox;
- ``int`` / ``float`` with a ``Range`` → Slider; an optional one starts one step below the range (ℓ: 0), which stands
  for None, the drafter's own default; without a range → Number;
- a ``LocalPath`` names a file on the server: no control (and no API parameter) unless local models are allowed.

The label is the field's help comment (that of the chosen drafter where several declare it) and the drafters that use
it; the elem_id is the name with "-" for "_" after the tab's prefix (``#draft-model``, ``#trees-exit-layer``). Only
the chosen drafter's fields reach the config (``drafter_values``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import gradio as gr

from core import checks
from core.options import OptionField, option_fields
from core.runtime.models import preset_names, suggested_draft
from core.specdec.drafters import drafter_class

MODEL_NAME_START = "tiny-llama"  # where a model-name option without a default starts: tiny, SmolLM2's tokenizer


@dataclass
class Option:
    """One option name and the drafters that declare it (drafter → its field, in registry order)."""

    name: str
    fields: dict[str, OptionField]

    def field(self, drafter: str | None = None) -> OptionField:
        """``drafter``'s field, or the first drafter's where it has none."""
        return self.fields.get(drafter) or next(iter(self.fields.values()))


def gather(drafters: Iterable[str], allow_local: bool = False) -> list[Option]:
    """The options of ``drafters``, one per name in order of first declaration (local paths only if allowed)."""
    uses: dict[str, dict[str, OptionField]] = {}
    for drafter in drafters:
        for f in option_fields(drafter_class(drafter).Options):
            if allow_local or not f.local_path:
                uses.setdefault(f.name, {})[drafter] = f
    for name, fields in uses.items():
        if len({f.kind for f in fields.values()}) > 1:
            raise TypeError(f"option '{name}' has different types in {', '.join(fields)}")
    return [Option(name, fields) for name, fields in uses.items()]


def option_names(drafters: Iterable[str], allow_local: bool = False) -> tuple[str, ...]:
    """The names of the controls ``build`` makes for ``drafters`` (the handlers' API parameters), in its order."""
    return tuple(o.name for o in gather(drafters, allow_local))


# ------------------------------------------------------------------------------------------------ values
def none_at(f: OptionField) -> float | None:
    """The slider value that stands for None on an optional number with a range: one step below it (ℓ ≥ 1: 0)."""
    if f.optional and f.range is not None and f.kind in (int, float):
        return f.range.lo - (f.range.step or 1)
    return None


def to_option(f: OptionField, value):
    """A control's value as the option's: an optional slider's None position or an empty optional text → None (the
    drafter's default), else the field's type."""
    if value is None:
        return None
    if f.kind is str:
        value = checks.text(f.name.replace("_", " "), value, checks.SHORT_TEXT).strip()
        return None if f.optional and not value else value
    if value == none_at(f):
        return None
    return f.kind(value)


def control_value(f: OptionField, value):
    """The control value that stands for the option value ``value`` (``to_option``'s inverse): None → an optional
    slider's None position, or an empty text."""
    if value is None:
        at = none_at(f)
        return at if at is not None else ("" if f.kind is str else None)
    return value


def drafter_values(drafter: str, settings: Mapping) -> dict:
    """The options of ``drafter`` found in ``settings`` (the UI values), as option values; other drafters' controls
    are left out, so moving them changes nothing."""
    return {f.name: to_option(f, settings[f.name]) for f in option_fields(drafter_class(drafter).Options)
            if f.name in settings}


# ------------------------------------------------------------------------------------------------ controls
def label(option: Option, drafter: str | None = None) -> str:
    """The help text of ``drafter``'s field (None written as the slider's value for it) and who uses the option."""
    f = option.field(drafter)
    text = f.help if none_at(f) is None else f.help.replace("None", f"{none_at(f):g}")
    return f"{text} · {', '.join(option.fields)}"


def model_name_start() -> str:
    """Where a model-name option without a default starts: the default target's paired draft where it has one (a
    Hub pair), else ``MODEL_NAME_START``."""
    from app import common  # here, not at the top: common imports this module

    return suggested_draft(common.default_target()) or MODEL_NAME_START


def control(f: OptionField, *, elem_id: str, label: str, allow_local: bool = False, **kw) -> gr.components.Component:
    """The control for one field, in the current Blocks context (``kw``: more component arguments, e.g. visible, or
    a ``value`` to start from instead of the field's default)."""
    kw.update(label=label, elem_id=elem_id)
    default = kw.pop("value", f.default)
    if f.choices:
        return gr.Dropdown(list(f.choices), value=default, **kw)
    if f.model_name:
        info = "a preset" + (", a Hugging Face id or a local directory" if allow_local else "")
        return gr.Dropdown(preset_names(), value=default or model_name_start(), allow_custom_value=allow_local,
                           info=info, **kw)
    if f.kind is bool:
        return gr.Checkbox(value=bool(default), **kw)
    if f.kind in (int, float) and f.range is not None:
        low = none_at(f)
        low = f.range.lo if low is None else low
        step = f.range.step or (1 if f.kind is int else None)
        return gr.Slider(low, f.range.hi, value=low if default is None else default, step=step, **kw)
    if f.kind in (int, float):
        return gr.Number(value=default, precision=0 if f.kind is int else None, **kw)
    return gr.Textbox(value=default or "", max_length=checks.SHORT_TEXT, **kw)


def field_control(drafter: str, name: str, *, elem_id: str, label: str, **kw) -> gr.components.Component:
    """A purpose-built tab's control for one option of one drafter, with that option's range and default."""
    f = next(f for f in option_fields(drafter_class(drafter).Options) if f.name == name)
    return control(f, elem_id=elem_id, label=label, **kw)


@dataclass
class OptionControls:
    """The option controls of one drafter picker: option name → component, in ``option_names`` order."""

    options: list[Option]
    components: dict[str, gr.components.Component]
    labels: dict[str, str] = field(default_factory=dict)  # fixed labels (the others follow the chosen drafter)

    def show(self, drafter: str) -> list:
        """Updates that show the controls of ``drafter`` (labelled with its help texts) and hide the others."""
        return [gr.update(visible=True, label=self.labels.get(o.name) or label(o, drafter)) if drafter in o.fields
                else gr.update(visible=False) for o in self.options]

    def follow(self, picker: gr.Dropdown) -> None:
        """Show the controls of whatever drafter ``picker`` holds."""
        picker.change(self.show, picker, list(self.components.values()), queue=False, api_visibility="private")

    def pair_with(self, target: gr.Dropdown) -> None:
        """A target the user picks that has paired drafts (a Hub pair) puts its first draft in the draft-model control;
        other targets leave the control as it is."""
        control = self.components.get("draft_model")
        if control is not None:
            target.input(lambda name: suggested_draft(name) or gr.skip(), target, control, queue=False,
                         api_visibility="private")


def build(drafters: Iterable[str], chosen: str, picker: gr.Dropdown | None = None, *, prefix: str = "",
          allow_local: bool = False, labels: Mapping[str, str] | None = None) -> OptionControls:
    """One control per option of ``drafters`` in the current Blocks context, those of ``chosen`` visible; with a
    ``picker`` (the drafter dropdown) the visible set follows it. ``prefix`` starts every elem_id; ``labels`` fixes
    the label of some options (a tab that gives one its own meaning)."""
    labels = dict(labels or {})
    options = gather(drafters, allow_local)
    components = {o.name: control(o.field(chosen), elem_id=prefix + o.name.replace("_", "-"),
                                  label=labels.get(o.name) or label(o, chosen), allow_local=allow_local,
                                  visible=chosen in o.fields) for o in options}
    controls = OptionControls(options, components, labels)
    if picker is not None:
        controls.follow(picker)
    return controls
