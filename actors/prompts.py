"""Render an option-choice row as a prompt whose next token is the option label."""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass

_FIELD = re.compile(r"\{(prompt|options|choices)\}")


@dataclass
class TemplateConfig:
    # {prompt}: the row's prompt; {options}: one option_line per option, in the shown order;
    # {choices}: the labels as words ("A or B", "A, B, C or D").
    template: str = "{prompt}\n{options}\nAnswer:"
    option_line: str = "{label}. {option}"
    # letters: labels A, B, C ... by shown position; options: the option texts are the labels
    # (only for single-word options such as No / Yes whose first tokens differ).
    labels: str = "letters"
    # label: the answer is one label token, scored in one forward pass at the answer position.
    # text: the answer is the option's text, scored by its length-normalised log-likelihood
    #   (1/|y|) sum_i log p(y_i | x, y_<i) (seed 001 Eq. 1): one forward per option.
    answer: str = "label"
    option_sep: str = "\n"  # between option lines in {options}
    label_prefix: str = " "  # the label token follows "Answer:" after a space ("" with chat)
    # wrap the text as the user turn of the model's chat template; the label is the assistant's
    # first token (instruct models)
    chat: bool = False

    def __post_init__(self):
        if "{prompt}" not in self.template:
            raise ValueError("template: must contain {prompt}")
        if self.labels not in ("letters", "options"):
            raise ValueError(f"labels: must be letters or options, got {self.labels!r}")
        if self.answer not in ("label", "text"):
            raise ValueError(f"answer: must be label or text, got {self.answer!r}")
        if self.answer == "label" and self.labels == "letters" and "{options}" not in self.template:
            raise ValueError("template: letter labels need {options} in the template")
        letters = self.answer == "label" and self.labels == "letters"
        if "{option}" not in self.option_line or (letters and "{label}" not in self.option_line):
            raise ValueError("option_line: must contain {option} (and {label} with letter labels)")


def template_fields(template: str) -> set[str]:
    """The fields a template fills: a subset of {"prompt", "options", "choices"}."""
    return set(_FIELD.findall(template))


def render(prompt: str, options: Sequence[str], order: Sequence[int], cfg: TemplateConfig) -> tuple[str, list[str]]:
    """Prompt text showing options in `order` (position j shows options[order[j]]), and what is
    scored for each shown position: its label string (answer: label) or its text (answer: text).
    Probabilities returned per position map back via `order`."""
    if len(options) > len(string.ascii_uppercase):
        raise ValueError(f"at most {len(string.ascii_uppercase)} options, got {len(options)}")
    shown = [options[k] for k in order]
    names = list(string.ascii_uppercase[: len(shown)]) if cfg.labels == "letters" else list(shown)
    lines = cfg.option_sep.join(cfg.option_line.replace("{label}", n).replace("{option}", o)
                                for n, o in zip(names, shown))
    choices = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
    fields = {"prompt": prompt, "options": lines, "choices": choices}
    # one pass, so braces or "{options}" inside a prompt are left alone
    text = _FIELD.sub(lambda m: fields[m.group(1)], cfg.template)
    scored = shown if cfg.answer == "text" else names
    return text, [cfg.label_prefix + n for n in scored]
