"""What a converted word says: its transcription as the converted format can hold it, and the one don't-care rule.

The rule (docs/data.md, "Your own annotations"): a word is don't care (``###``, the mark every reader uses) when
its transcription is ``###``, or when one of the names that the tools use for a mark (a label, a labelme flag set
to true, a CVAT attribute or Label Studio choice) is a don't-care name (:data:`DONT_CARE_NAMES`, compared without
case and surrounding white space). Each format adds its own fields (COCO-Text ``legibility`` / ``language``,
Total-Text ``#``); the module of the format says which.
"""
import re
from dataclasses import dataclass
from typing import Iterable, List, Optional, Tuple

from ..readers import DONT_CARE

# The names annotators give a "cannot read this" mark in the tools' label sets and attributes.
DONT_CARE_NAMES = frozenset({'###', '#', 'illegible', 'unreadable', 'dontcare', 'dont care', "don't care",
                             'dont_care', 'do not care', 'ignore', 'ignored', 'difficult'})

# Values of a boolean attribute or flag that mean "set".
TRUE_VALUES = frozenset({'true', '1', 'yes', 'y', 'on'})

# Every boundary str.splitlines splits at: a transcription holding one would split its line in two.
_LINE_BOUNDARY = re.compile('[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]+')


@dataclass
class Word:
    """One annotated region of an image: points in image pixels (as annotated, before clipping), the
    transcription (``###`` = don't care), and ``where``: the source file and the shape's index, for messages."""
    points: List[Tuple[float, float]]
    text: str
    where: str


def is_dont_care_name(name: object) -> bool:
    """Whether a label, flag, attribute or choice name is one of :data:`DONT_CARE_NAMES`."""
    return isinstance(name, str) and name.strip().lower() in DONT_CARE_NAMES


def word_text(text: Optional[str], marks: Iterable[object] = ()) -> str:
    """The transcription of a word: ``###`` when the text itself or any of ``marks`` (labels, set flags,
    attribute values, choices) is a don't-care name, otherwise the text ('' when there is none)."""
    if (text is not None and is_dont_care_name(text)) or any(is_dont_care_name(mark) for mark in marks):
        return DONT_CARE
    return text or ''


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def converted_transcription(text: str) -> Tuple[str, bool]:
    """``text`` as a line of the converted format reads it back (``data.readers.read_converted``), and
    whether it had to change. That reader splits the line at commas, strips every part, and takes the longest
    even run of leading numbers as coordinates; it has no quoting. So:

    * a line boundary (``\\n``, ``\\r``, ...) becomes a space; white space around commas and at the ends goes;
    * a transcription whose first two comma-separated parts are numbers (``1,000,000``, ``12,34,abc``) would
      lend them to the polygon as one more point: the commas between its leading numbers become spaces
      (``1 000 000``, ``12 34,abc``). Any other comma stays (``1,000``, ``Hi,there``, ``5,###``);
    * a byte-order mark character (U+FEFF) or NUL, which the reader drops or refuses, goes; a character that
      UTF-8 cannot hold (a lone surrogate from JSON) becomes ``?``."""
    clean = text.replace('\ufeff', '').replace('\x00', '').encode('utf-8', 'replace').decode('utf-8')
    parts = [part.strip() for part in _LINE_BOUNDARY.sub(' ', clean).split(',')]
    if len(parts) >= 3 and _is_number(parts[0]) and _is_number(parts[1]):
        leading = 1
        while leading < len(parts) and _is_number(parts[leading]):
            leading += 1
        parts = [' '.join(parts[:leading])] + parts[leading:]
    written = ','.join(parts)
    return written, written != text
