"""Converters from the annotation tools people label with to the original DBNet layout, and its checker.

``python -m data.convert FORMAT SRC --out DIR [--images DIR] [--split train|test] [--subset SET]`` writes
``DIR/{split}_images/`` (copies of the images), ``DIR/{split}_gts/<image name>.txt`` (``x1,y1,...,xn,yn,text``
per word: ``gt_format: converted``) and ``DIR/{split}_list.txt`` (:mod:`data.convert.layout`);
``python -m data.convert check DIR`` reads it back as training does (:mod:`data.convert.check`).

Formats (one module each): ``labelme`` (:mod:`.labelme`), ``coco-text`` (COCO-Text v2, :mod:`.coco_text`),
``totaltext-mat`` (Total-Text's ``gt_img*.mat``, :mod:`.totaltext_mat`), ``cvat`` (CVAT for images 1.1 XML,
:mod:`.cvat`), ``label-studio`` (Label Studio JSON export, :mod:`.label_studio`).

**Don't care** (``###``, the mark every reader uses), the one rule (:mod:`.words`): a word is don't care when

==================  =====================================================================================
labelme             its label or description is a don't-care name, or a shape flag so named is true
COCO-Text v2        ``legibility`` is not ``legible`` (with ``--english_only``: or ``language`` is not ``english``)
Total-Text .mat     transcription ``#`` (or empty), or orientation ``#``
CVAT                its label name, or an attribute's value, is a don't-care name; or an attribute so named
                    is true (``illegible = true``)
Label Studio        a label, a per-region choice or the ``textarea`` text is a don't-care name
==================  =====================================================================================

and in every format when its transcription is ``###``. The don't-care names, compared without case and
surrounding white space: ``###``, ``#``, ``illegible``, ``unreadable``, ``dontcare``, ``dont care``,
``don't care``, ``dont_care``, ``do not care``, ``ignore``, ``ignored``, ``difficult`` (:data:`.words.DONT_CARE_NAMES`).

**Geometry**: rotated rectangles (Label Studio ``rotation``, labelme's two-point ``rectangle``, CVAT ``box`` with
``rotation``) become 4-point polygons in image pixels, clockwise on screen from the rectangle's first corner;
points outside the image are moved onto its border (counted and reported); a degenerate shape (a non-finite
number, fewer than 3 distinct points, zero area, after clipping) is skipped with a message naming the file and the
shape's index; an image whose annotation has no words gets an empty gt file (a negative sample, reported).
Transcriptions stay UTF-8; the few that the converted line cannot hold as they are change, reported
(:func:`.words.converted_transcription`).
"""
