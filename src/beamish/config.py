"""Configuration per environment: TOML files, merged, validated, reloadable.

A project keeps its configuration in a directory (`config/` by default),
one file per concern, as a Mix project keeps `config/*.exs`:

- `config.toml`: what holds everywhere (Elixir's `config/config.exs`);
- `dev.toml`, `test.toml`, `prod.toml`, ...: the environment's file, chosen
  by `BEAMISH_ENV` (default `dev`; Elixir's `config_env()`);
- `runtime.toml`: applied last, for the deployment (Elixir's `runtime.exs`).

Every file is optional. Each top-level table is one application's env and
later files override earlier ones key by key (tables merge deeply). A string
value of the form `"${NAME}"` or `"${NAME:-default}"` is read from the
environment variable `NAME` when the files are loaded, so secrets stay out of
the files; an unset variable without a default is an error naming the file,
line and key.

```toml
# config/config.toml               (config :my_app, max_retries: 3, ...)
[my_app]
max_retries = 3
timeout = 5.0

[my_app.Worker]                    # (config :my_app, MyApp.Worker, ...)
batch_size = 100

# config/runtime.toml
[my_app]
api_key = "${MY_APP_API_KEY}"
```

>>> import pathlib, tempfile
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = (d / "config.toml").write_text('[my_app]\\npool_size = 10\\ndebug = false\\n')
>>> _ = (d / "dev.toml").write_text('[my_app]\\ndebug = true\\n')
>>> load(d, env="dev").sections["my_app"]
{'pool_size': 10, 'debug': True}

Typed validation: an application may declare a schema (a pydantic model, a
dataclass or a TypedDict; pydantic is needed only then, `pip install
beamish[config]`). `validate` checks a section against it and every problem
is reported with the file, line, key and expected type; keys the schema does
not know are errors too, so a typo never passes silently:

>>> from pydantic import BaseModel
>>> class MyApp(BaseModel):
...     pool_size: int
...     debug: bool = False
>>> _ = (d / "prod.toml").write_text('[my_app]\\npool_size = "ten"\\nverbose = 1\\n')
>>> cfg = load(d, env="prod")
>>> validate(cfg, "my_app", MyApp, cfg.sections["my_app"])  # doctest: +ELLIPSIS
Traceback (most recent call last):
  ...
beamish.config.ConfigError: invalid configuration
  .../prod.toml:2: my_app.pool_size: expected int, got 'ten' (Input should be a valid integer, ...)
  .../prod.toml:3: my_app.verbose: unknown key

A file that is not valid TOML stops loading with its file and line. The
application controller (`beamish.application`) loads the configuration
into the applications' env, validates each application's section against its
schema before anything starts, and on `reload_config()` re-reads the files
and tells each running application what changed (`config_change`).

OTP: mirrors Mix's config files and `config_env()` and Elixir's
`Config.Provider` for runtime configuration; differs in the format (TOML data,
not code, so reading configuration never runs anything) and in checking
types and unknown keys, which Elixir leaves to each application.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path

from .terms import Term

__all__ = ["FILES", "Config", "ConfigError", "Problem", "env", "load", "validate"]

FILES = ("config.toml", "{env}.toml", "runtime.toml")
"""The files read, in order; `{env}` is the environment's name."""

_VAR = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?\}$", re.DOTALL)
_ENV_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def env() -> str:
    """The environment's name: `$BEAMISH_ENV`, default `"dev"`."""
    name = os.environ.get("BEAMISH_ENV", "") or "dev"
    if not _ENV_NAME.match(name):
        raise ConfigError([Problem(None, None, "BEAMISH_ENV", f"expected a lowercase name, got {name!r}")])
    return name


@dataclasses.dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with the configuration, and where."""

    file: Path | None
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}: " if self.file and self.line else f"{self.file}: " if self.file else ""
        return f"{where}{self.key}: {self.message}"


class ConfigError(Exception):
    """The configuration cannot be used; `problems` says every reason."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"invalid configuration\n{lines}")


@dataclasses.dataclass(frozen=True, slots=True)
class Config:
    """Configuration as loaded: each application's merged section, and for
    every key path (`("my_app", "Worker", "batch_size")`) the file and line
    that set it last."""

    directory: Path | None
    env: str
    sections: dict[str, dict[str, Term]]
    origins: dict[tuple[str, ...], tuple[Path, int | None]]
    files: tuple[Path, ...]

    def where(self, path: Sequence[str]) -> tuple[Path | None, int | None]:
        """The file and line that set `path`, or its closest enclosing table."""
        key = tuple(path)
        while key:
            if key in self.origins:
                return self.origins[key]
            key = key[:-1]
        return (self.files[-1] if self.files else None), None


def load(directory: str | os.PathLike[str] | None = None, *, env: str | None = None) -> Config:
    """Read and merge `config.toml`, the environment's file and `runtime.toml`
    from `directory` (missing files are skipped; `None` means no files).

    Raises `ConfigError` for a TOML syntax error (file and line), a value
    that is not a table at the top level, or an unset `${VAR}`.
    """
    name = globals()["env"]() if env is None else env
    if not _ENV_NAME.match(name):
        raise ConfigError([Problem(None, None, "env", f"expected a lowercase name, got {name!r}")])
    sections: dict[str, dict[str, Term]] = {}
    origins: dict[tuple[str, ...], tuple[Path, int | None]] = {}
    files: list[Path] = []
    problems: list[Problem] = []
    base = None if directory is None else Path(directory)
    if base is not None and not base.is_dir():
        raise ConfigError([Problem(base, None, "directory", "no such configuration directory")])
    for pattern in FILES if base is not None else ():
        assert base is not None
        path = base / pattern.format(env=name)
        if not path.is_file():
            continue
        files.append(path)
        text = path.read_text(encoding="utf-8")
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            line = _line_of_decode_error(exc)
            problems.append(Problem(path, line, "syntax", str(exc)))
            continue
        lines = _KeyLines(text)
        for app, section in data.items():
            if not isinstance(section, dict):
                problems.append(
                    Problem(path, lines.find((app,)), app, "expected a table of the application's keys, e.g. [my_app]")
                )
                continue
            target = sections.setdefault(app, {})
            _merge(target, section, (app,), path, lines, origins, problems)
    if problems:
        raise ConfigError(problems)
    return Config(base, name, sections, origins, tuple(files))


def validate(config: Config | None, app: str, schema: object, section: Mapping[str, Term]) -> dict[str, Term]:
    """Check `section` (the env of application `app`) against `schema` and
    return it as validated plain values (nested models become dicts).

    `schema` is a pydantic model class, a dataclass or a TypedDict. Raises
    `ConfigError` naming, for each problem, the file and line (from `config`)
    and the key, with the expected type.
    """
    try:
        import pydantic
    except ImportError:  # pragma: no cover - the extra is part of the test setup
        raise ConfigError(
            [Problem(None, None, app, "a config schema needs pydantic: pip install 'beamish[config]'")]
        ) from None
    problems = [_problem(config, (app, *path), "unknown key") for path in _unknown_keys(schema, section, ())]
    adapter: pydantic.TypeAdapter[object] = pydantic.TypeAdapter(schema)  # type: ignore[arg-type]
    try:
        value = adapter.validate_python(dict(section))
    except pydantic.ValidationError as exc:
        for error in exc.errors():
            path = tuple(str(p) for p in error["loc"])
            expected = _expected_type(schema, path)
            if error["type"] == "missing":
                message = f"required key missing (expected {expected})"
            else:
                message = f"expected {expected}, got {error['input']!r} ({error['msg']})"
            problems.append(_problem(config, (app, *path), message))
    else:
        if not problems:
            dumped = adapter.dump_python(value, mode="python", by_alias=True)
            assert isinstance(dumped, dict)
            return dumped
    problems.sort(key=lambda p: (str(p.file), p.line or 0, p.key))
    raise ConfigError(problems)


# --- internals -----------------------------------------------------------------


def _merge(
    target: dict[str, Term],
    source: Mapping[str, Term],
    path: tuple[str, ...],
    file: Path,
    lines: _KeyLines,
    origins: dict[tuple[str, ...], tuple[Path, int | None]],
    problems: list[Problem],
) -> None:
    """Merge `source` into `target` deeply, recording where each key came
    from and substituting `${VAR}` strings."""
    origins.setdefault(path, (file, lines.find(path)))
    for key, value in source.items():
        here = (*path, key)
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            sub = target[key]
            assert isinstance(sub, dict)
            _merge(sub, value, here, file, lines, origins, problems)
            continue
        line = lines.find(here)
        origins[here] = (file, line)
        _forget_below(origins, here)
        try:
            target[key] = _substitute(value)
        except KeyError as missing:
            problems.append(Problem(file, line, ".".join(here), f"environment variable {missing.args[0]} is not set"))
        if isinstance(value, dict):
            for sub_key in _leaf_paths(value, here):
                origins[sub_key] = (file, lines.find(sub_key))


def _forget_below(origins: dict[tuple[str, ...], tuple[Path, int | None]], path: tuple[str, ...]) -> None:
    for key in [k for k in origins if len(k) > len(path) and k[: len(path)] == path]:
        del origins[key]


def _leaf_paths(table: Mapping[str, Term], path: tuple[str, ...]) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []
    for key, value in table.items():
        found.append((*path, key))
        if isinstance(value, dict):
            found.extend(_leaf_paths(value, (*path, key)))
    return found


def _substitute(value: Term) -> Term:
    if isinstance(value, str):
        match = _VAR.match(value)
        if match is None:
            return value
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is None:
            raise KeyError(name)
        return default
    if isinstance(value, dict):
        return {k: _substitute(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v) for v in value]
    return value


def _line_of_decode_error(exc: tomllib.TOMLDecodeError) -> int | None:
    lineno = getattr(exc, "lineno", None)  # Python 3.14+
    if isinstance(lineno, int):
        return lineno
    match = re.search(r"at line (\d+)", str(exc))
    return int(match.group(1)) if match else None


class _KeyLines:
    """Where each key path is written in a TOML text.

    tomllib does not report positions, so this follows the text's table
    headers and `key = ` lines (bare, quoted and dotted keys); a value
    spread over several lines is found at its first line. Good enough to
    point a person at the right line; never used to read values.
    """

    _HEADER = re.compile(r"^\s*\[\[?\s*(?P<keys>[^\]]+?)\s*\]\]?\s*(#.*)?$")
    _ASSIGN = re.compile(r"^\s*(?P<keys>(?:[A-Za-z0-9_-]+|\"(?:[^\"\\]|\\.)*\"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|\"(?:[^\"\\]|\\.)*\"|'[^']*'))*)\s*=")

    def __init__(self, text: str) -> None:
        self.lines: dict[tuple[str, ...], int] = {}
        table: tuple[str, ...] = ()
        for number, line in enumerate(text.splitlines(), start=1):
            header = self._HEADER.match(line)
            if header is not None:
                table = _split_keys(header.group("keys"))
                self.lines.setdefault(table, number)
                continue
            assign = self._ASSIGN.match(line)
            if assign is not None:
                self.lines.setdefault((*table, *_split_keys(assign.group("keys"))), number)

    def find(self, path: tuple[str, ...]) -> int | None:
        return self.lines.get(path)


def _split_keys(keys: str) -> tuple[str, ...]:
    parts = re.findall(r"\"((?:[^\"\\]|\\.)*)\"|'([^']*)'|([A-Za-z0-9_-]+)", keys)
    return tuple(a or b or c for a, b, c in parts)


def _problem(config: Config | None, path: tuple[str, ...], message: str) -> Problem:
    file, line = config.where(path) if config is not None else (None, None)
    return Problem(file, line, ".".join(path), message)


def _fields(schema: object) -> dict[str, object] | None:
    """Field name (and alias) -> annotation of a model, dataclass or TypedDict."""
    import typing

    import pydantic

    if isinstance(schema, type) and issubclass(schema, pydantic.BaseModel):
        fields: dict[str, object] = {}
        for name, info in schema.model_fields.items():
            fields[name] = info.annotation
            if info.alias:
                fields[info.alias] = info.annotation
        return fields
    if dataclasses.is_dataclass(schema) and isinstance(schema, type):
        hints = typing.get_type_hints(schema)
        return {f.name: hints.get(f.name, object) for f in dataclasses.fields(schema)}
    if isinstance(schema, type) and hasattr(schema, "__required_keys__"):  # a TypedDict
        return dict(typing.get_type_hints(schema))
    return None


def _unknown_keys(schema: object, section: Mapping[str, Term], path: tuple[str, ...]) -> list[tuple[str, ...]]:
    fields = _fields(schema)
    if fields is None:
        return []
    found: list[tuple[str, ...]] = []
    for key, value in section.items():
        if key not in fields:
            found.append((*path, key))
        elif isinstance(value, Mapping):
            found.extend(_unknown_keys(fields[key], value, (*path, key)))
    return found


def _expected_type(schema: object, path: tuple[str, ...]) -> str:
    annotation: object = schema
    for key in path:
        fields = _fields(annotation)
        if fields is None or key not in fields:
            break
        annotation = fields[key]
    else:
        return _type_name(annotation)
    return "a valid value"


def _type_name(annotation: object) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")
