"""``python -m data.convert``: FORMAT SRC --out DIR converts an annotation tool's export to the original layout;
``check DIR`` reports on a converted set and draws overlays (the package docstring, docs/data.md)."""
import argparse
import sys
from typing import Callable, Dict, Iterator, List, Optional, Tuple

from .check import check_converted
from .coco_text import read_coco_text
from .cvat import read_cvat
from .label_studio import read_label_studio
from .labelme import read_labelme
from .layout import SPLITS, ConvertError, Report, Sample, write_converted
from .sources import SourceError
from .totaltext_mat import read_totaltext_mat

READERS: Dict[str, Callable[..., Iterator[Sample]]] = {
    'labelme': read_labelme,
    'coco-text': read_coco_text,
    'totaltext-mat': read_totaltext_mat,
    'cvat': read_cvat,
    'label-studio': read_label_studio,
}


def convert(fmt: str, source: str, out: str, images: Optional[str] = None, split: str = 'train',
            subset: Optional[str] = None, english_only: bool = False) -> Tuple[List[str], Report]:
    """Convert ``source`` (format ``fmt``) into ``out``: the summary lines and the report. Raises ConvertError
    or SourceError (nothing written then)."""
    if fmt not in READERS:
        raise ConvertError(f'unknown format {fmt!r}, expected one of {sorted(READERS)}')
    if (subset is not None or english_only) and fmt != 'coco-text':
        raise ConvertError('--subset and --english_only apply to coco-text only')
    samples = (read_coco_text(source, images, subset, english_only) if fmt == 'coco-text'
               else READERS[fmt](source, images))
    report = write_converted(samples, out, split)
    return report.lines(out, split), report


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='python -m data.convert', description=__doc__)
    commands = parser.add_subparsers(dest='command', required=True)
    for fmt in READERS:
        command = commands.add_parser(fmt, help=f'convert a {fmt} export')
        command.add_argument('source', metavar='SRC', help='the annotation file (or folder of files)')
        command.add_argument('--out', required=True, metavar='DIR', help='the converted set (created)')
        command.add_argument('--images', metavar='DIR', help="the images' folder (default: next to SRC)")
        command.add_argument('--split', choices=SPLITS, default='train')
        if fmt == 'coco-text':
            command.add_argument('--subset', choices=('train', 'val'), help="only images of this COCO-Text 'set'")
            command.add_argument('--english_only', action='store_true',
                                 help="legible text whose language is not 'english' is don't care too")
    check = commands.add_parser('check', help='statistics and overlays of a converted set')
    check.add_argument('directory', metavar='DIR')
    check.add_argument('--split', choices=SPLITS, default='train')
    check.add_argument('--overlays', type=int, default=8, metavar='N', help='overlay pictures to draw (default 8)')
    check.add_argument('--out', metavar='OVERLAY_DIR', help='where the overlays go (default DIR/check/)')
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """0 when all went well; 1 when samples were left out (images not found; ``check``: unreadable files); 2 on an
    error (ConvertError, SourceError: nothing written; an image file that does not decode is one)."""
    args = _parser().parse_args(argv)
    try:
        if args.command == 'check':
            result = check_converted(args.directory, args.split, args.overlays, args.out)
            print('\n'.join(result.lines()))
            return 1 if result.errors else 0
        lines, report = convert(args.command, args.source, args.out, args.images, args.split,
                                getattr(args, 'subset', None), getattr(args, 'english_only', False))
        print('\n'.join(lines))
        return 1 if report.missing_images else 0
    except (ConvertError, SourceError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
