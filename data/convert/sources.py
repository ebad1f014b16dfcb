"""Reading the tools' annotation files: JSON and the files a source names, with errors that name the file."""
import json
import os
from typing import Any, List


class SourceError(Exception):
    """An annotation source that cannot be read as its format (the message names the file)."""


def read_json(path: str) -> Any:
    try:
        with open(path, 'rb') as handle:
            return json.loads(handle.read().decode('utf-8-sig'))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SourceError(f'{path}: not a JSON file ({error})') from None


def files_with_suffix(source: str, suffixes: tuple) -> List[str]:
    """``source`` itself when it is a file, otherwise every file under it (recursively, sorted) whose name ends
    with one of ``suffixes`` (any case)."""
    if os.path.isfile(source):
        return [source]
    if not os.path.isdir(source):
        raise SourceError(f'{source}: no such file or folder')
    found = []
    for directory, subdirectories, names in os.walk(source):
        subdirectories.sort()
        found += [os.path.join(directory, name) for name in sorted(names) if name.lower().endswith(suffixes)]
    return found


def number(value: Any) -> float:
    """A coordinate of a JSON or XML source as a float (NaN for anything that is not a number, so that the
    shape is reported as degenerate rather than the file refused)."""
    if isinstance(value, bool):
        return float('nan')
    try:
        return float(value)
    except (TypeError, ValueError):
        return float('nan')
