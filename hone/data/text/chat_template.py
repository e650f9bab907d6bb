"""Chat templates: the Jinja program a pretrained checkpoint ships to turn messages into text.

A template comes from whoever published the checkpoint, so it is untrusted code: it runs in
jinja2's `ImmutableSandboxedEnvironment`, which refuses underscore attributes (no walking
from `''.__class__` to the interpreter) and methods that change a list, dict or set. The
environment offers what Hugging Face templates are written against: `trim_blocks` and
`lstrip_blocks`, the `loopcontrols` extension (`break`, `continue`), a `tojson` filter that
leaves non-ASCII text and HTML characters as they are, and the globals `raise_exception` and
`strftime_now`.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from hone.errors import ConfigError


def _raise_exception(message: str) -> None:
    """What a template calls to refuse a conversation ("roles must alternate user/assistant")."""
    raise jinja2.exceptions.TemplateError(message)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # Jinja's own tojson escapes <, >, & and ' for HTML; a prompt must keep them as written.
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


def _plain_dict(*args: Any, **kwargs: Any) -> dict[Any, Any]:
    # Jinja's default `dict` global is the type itself, whose unbound methods the sandbox does
    # not see as mutating (`dict.update(messages[0], ...)` would edit the caller's message).
    return dict(*args, **kwargs)


def compile_chat_template(source: str, name: str) -> jinja2.Template:
    """The template `source` compiled in the sandbox; `name` says whose template it is in
    errors."""
    environment = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    environment.filters["tojson"] = _tojson
    environment.globals.update(
        raise_exception=_raise_exception,
        strftime_now=_strftime_now,
        dict=_plain_dict,
        namespace=Namespace,
    )
    try:
        return environment.from_string(source)
    except jinja2.exceptions.TemplateError as e:
        raise ConfigError(f"the chat template of {name} does not compile: {_one_line(e)}") from None


def render_chat_template(
    template: jinja2.Template,
    name: str,
    messages: list[dict[str, Any]],
    add_generation_prompt: bool,
    variables: dict[str, Any],
) -> str:
    """The text of `messages` through `template` (from `compile_chat_template`).

    `variables` (the checkpoint's special tokens: `bos_token`, `eos_token`, ...; a caller's
    extras such as `tools` or `enable_thinking`) are visible to the template. Messages are
    handed over as plain JSON data without None fields, as Hugging Face does: templates test
    whether a key is present, and would print a None.
    """
    plain = [
        {key: value for key, value in message.items() if value is not None}
        for message in json.loads(json.dumps(messages))
    ]
    context = {"tools": None, "documents": None, **variables}
    try:
        return str(
            template.render(messages=plain, add_generation_prompt=add_generation_prompt, **context)
        )
    except jinja2.exceptions.TemplateError as e:
        raise ConfigError(
            f"the chat template of {name} failed on these messages: {_one_line(e)}"
        ) from None


class Namespace(jinja2.utils.Namespace):
    """`namespace()` refusing names that start with `_`, as transformers' does: a template
    has no business naming internals, and refusing them where they are stored does not rely
    on every later read being checked."""

    def __init__(*args: Any, **kwargs: Any) -> None:  # noqa: N805 (jinja's own signature)
        self, values = args[0], dict(*args[1:], **kwargs)
        for key in values:
            _check_name(key)
        jinja2.utils.Namespace.__init__(self, values)

    def __setitem__(self, key: str, value: Any) -> None:
        _check_name(key)
        jinja2.utils.Namespace.__setitem__(self, key, value)


def _check_name(key: object) -> None:
    if isinstance(key, str) and key.startswith("_"):
        raise jinja2.exceptions.SecurityError(
            f"a chat template may not store {key!r}: names starting with _ are refused"
        )


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split()) or type(error).__name__
