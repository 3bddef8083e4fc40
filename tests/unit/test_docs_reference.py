"""The docs site's generated reference (scripts/docs_reference.py) names every setting and
option with its meaning, and refuses to build when one has none."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from pyscore.client import config
from pyscore.client.cli import build_parser
from pyscore.server.cli import parser as server_parser
from pyscore.server.settings import NOT_FROM_ENV, Settings
from scripts import docs_reference as ref


def every_option(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.Action]]:
    return [
        (" ".join((parser.prog, *path)), action)
        for path, sub, _ in ref.commands(parser)
        for action in ref.options(sub)
    ]


@pytest.mark.parametrize(
    ("make", "page"), [(build_parser, ref.client_cli), (server_parser, ref.server_cli)]
)
def test_every_command_and_option_is_in_the_cli_reference_with_its_help(make, page):
    text = page()
    for command, action in every_option(make()):
        assert f"## {command}" in text or command in ("score-client", "score-server")
        name = action.option_strings[0] if action.option_strings else action.dest
        assert f"`{name}`" in text, f"{command} {name} missing"
        assert ref.cell(action.help) in text, f"{command} {name}: its help is missing"


def test_an_option_without_help_stops_the_build():
    p = argparse.ArgumentParser(prog="tool")
    sub = p.add_subparsers()
    cmd = sub.add_parser("go", help="do it")
    cmd.add_argument("--fast", help="quickly")
    cmd.add_argument("--quiet")
    with pytest.raises(ref.Undocumented, match=r"tool go --quiet"):
        ref.cli_page(p, "t", "i")


def test_every_server_setting_is_in_the_reference_with_env_name_default_and_meaning():
    text = ref.server_settings()
    docs = ref.field_docs(Settings)
    for f in dataclasses.fields(Settings):
        row = next(line for line in text.splitlines() if line.startswith(f"| `{f.name}` |"))
        assert ref.prose(docs[f.name]) in row
        if f.name not in NOT_FROM_ENV:
            assert f"`PYSCORE_{f.name.upper()}`" in row
    assert "| `token_cache_seconds` | `PYSCORE_TOKEN_CACHE_SECONDS` (a number) | `5` |" in text


def test_a_setting_without_a_docstring_is_found():
    @dataclasses.dataclass
    class Two:
        said: int = 1
        """documented"""
        unsaid: int = 2

    assert ref.field_docs(Two) == {"said": "documented"}


def test_every_client_setting_is_in_the_reference_with_its_environment_names():
    text = ref.client_settings()
    for key in config.DEFAULTS:
        row = next(line for line in text.splitlines() if line.startswith(f"| `{key}` |"))
        assert config.MEANINGS[key] in row
        for env in config.env_names(key):
            assert f"`{env}`" in row


def test_the_http_reference_has_every_operation_and_marks_ours():
    doc = ref.openapi()
    text = ref.http_api()
    for path, ops in doc["paths"].items():
        for method in ops:
            assert f"### `{method.upper()} {path}`" in text
    ours = text.count("**pyscore extension**:")
    assert ours == 5, "batch lookups (2), batch uploads (2), anonymous /listing"
    assert "### `POST /download/batch`\n\n**pyscore extension**" in text


def test_the_python_api_page_documents_every_public_method_of_the_client():
    import inspect

    import pyscore

    text = ref.python_api()
    assert "Not yet available" not in text
    for name, member in inspect.getmembers(pyscore.Client, inspect.isfunction):
        if name.startswith("_") and name != "__init__":
            continue
        assert member.__doc__, f"Client.{name} has no docstring"
        assert f"## `Client.{name}(" in text
        assert inspect.cleandoc(member.__doc__) in text
