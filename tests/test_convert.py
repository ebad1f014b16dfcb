"""data.convert: the annotation tools' exports to the original layout (read back by the reader training uses,
``read_converted``), the awkward cases (rotated rectangles, clipping, negatives, degenerate shapes, non-ASCII and
comma transcriptions, an image already in the output), and ``check``'s statistics and overlays.

The annotation files are the tools' real schemas: the checked-in samples under tests/fixtures/convert/ (one per
format) and small files written here; the images are tiny PNG / JPEG files written with cv2 into tmp_path."""
import json
import os
import shutil

import cv2
import numpy as np
import pytest

from data.convert.__main__ import convert, main
from data.convert.check import check_converted
from data.convert.layout import ConvertError
from data.convert.words import converted_transcription
from data.readers import read_converted

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures', 'convert')
WIDTH, HEIGHT = 200, 100


def write_image(path, seed=0, width=WIDTH, height=HEIGHT):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), pixels)
    return str(path)


def fixture_copy(name, directory):
    os.makedirs(directory, exist_ok=True)
    return shutil.copy(os.path.join(FIXTURES, name), os.path.join(directory, name))


def gt(out, name, split='train'):
    """(points as tuples, text) of each line of a converted gt file, read by the project's reader."""
    return [([tuple(p) for p in line['poly']], line['text'])
            for line in read_converted(os.path.join(out, f'{split}_gts', f'{name}.txt'))]


def listed(out, split='train'):
    with open(os.path.join(out, f'{split}_list.txt'), encoding='utf-8') as handle:
        return handle.read().split()


def box(x0, y0, x1, y1):
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def labelme_set(tmp_path, shapes=None, image_path='..\\images\\photo1.jpg'):
    """The checked-in labelme sample (or one with ``shapes``) in tmp_path/labels, its image in tmp_path/images
    (outside the JSON file's folder: converted with ``--images tmp_path/images``)."""
    source = fixture_copy('labelme.json', tmp_path / 'labels')
    content = json.load(open(source, encoding='utf-8'))
    if shapes is not None:
        content['shapes'] = shapes
    content['imagePath'] = image_path
    with open(source, 'w', encoding='utf-8') as handle:
        json.dump(content, handle, ensure_ascii=False)
    write_image(tmp_path / 'images' / 'photo1.jpg')
    return source


def test_labelme_converts_and_round_trips(tmp_path):
    source = labelme_set(tmp_path)
    out = str(tmp_path / 'out')
    lines, report = convert('labelme', str(tmp_path / 'labels'), out, images=str(tmp_path / 'images'))
    assert listed(out) == ['photo1.jpg']
    assert gt(out, 'photo1.jpg') == [
        (box(10, 10, 60, 30), 'Straße'),
        (box(80, 20, 120, 40), '東京'),                     # two-point rectangle, corners in either order
        (box(5, 50, 40, 70), '###'),                        # label ###
        (box(100, 60, 150, 80), '###'),                     # flag illegible: true
        (box(130, 5, 170, 15), '5,000'),                    # a comma in the transcription
        (box(180, 80, 200, 100), 'SALE'),                   # clipped to the 200 x 100 image
    ]
    assert (report.clipped_points, report.clipped_words) == (3, 1)
    assert report.skipped == [f'{source}: shape 7: zero area']
    assert report.ignored == [f"{source}: shape 4: shape_type 'line' is no text region"]
    assert any('clipped: 3 in 1 words' in line for line in lines)
    # copied, never moved: the source image is still there and identical
    assert open(tmp_path / 'images' / 'photo1.jpg', 'rb').read() == open(
        os.path.join(out, 'train_images', 'photo1.jpg'), 'rb').read()


def test_labelme_embedded_image_data_and_test_split(tmp_path):
    write_image(tmp_path / 'pixels.png')
    import base64
    data = base64.b64encode(open(tmp_path / 'pixels.png', 'rb').read()).decode('ascii')
    source = tmp_path / 'scan.json'
    source.write_text(json.dumps({'version': '5.4.1', 'flags': {}, 'imagePath': 'gone/scan.png', 'imageData': data,
                                  'imageHeight': HEIGHT, 'imageWidth': WIDTH,
                                  'shapes': [{'label': 'a', 'points': [[1, 1], [9, 1], [9, 5]],
                                              'shape_type': 'polygon', 'flags': {}}]}))
    out = str(tmp_path / 'out')
    convert('labelme', str(source), out, split='test')
    assert listed(out, 'test') == ['scan.png']
    assert gt(out, 'scan.png', 'test') == [([(1, 1), (9, 1), (9, 5)], 'a')]
    assert os.path.getsize(os.path.join(out, 'test_images', 'scan.png')) == os.path.getsize(tmp_path / 'pixels.png')


def test_coco_text_converts_and_round_trips(tmp_path):
    source = fixture_copy('coco_text.json', tmp_path)
    for seed, image in enumerate(('101', '102', '103')):
        write_image(tmp_path / 'train2014' / f'COCO_train2014_000000000{image}.jpg', seed)
    out = str(tmp_path / 'out')
    lines, report = convert('coco-text', source, out, images=str(tmp_path / 'train2014'))
    assert listed(out) == [f'COCO_train2014_000000000{image}.jpg' for image in ('101', '102', '103')]
    assert gt(out, 'COCO_train2014_000000000101.jpg') == [
        ([(10.5, 10), (60, 12), (59.5, 30), (10, 28.5)], 'STOP'),
        (box(70, 40, 90, 50), '###'),                       # legibility: illegible
        (box(100, 60, 150, 80), 'Café'),                    # language: not english, legible: text
    ]
    assert gt(out, 'COCO_train2014_000000000102.jpg') == [(box(20, 30, 60, 40), 'EXIT')]  # bbox, no mask
    assert gt(out, 'COCO_train2014_000000000103.jpg') == []
    assert report.negatives == ['COCO_train2014_000000000103.jpg']
    assert any(line.startswith('negative samples') and '103' in line for line in lines)
    english = str(tmp_path / 'english')
    convert('coco-text', source, english, images=str(tmp_path / 'train2014'), english_only=True)
    assert gt(english, 'COCO_train2014_000000000101.jpg')[2] == (box(100, 60, 150, 80), '###')
    subset = str(tmp_path / 'subset')
    convert('coco-text', source, subset, images=str(tmp_path / 'train2014'), subset='val')
    assert listed(subset) == ['COCO_train2014_000000000102.jpg']


def test_totaltext_mat_both_cell_layouts(tmp_path):
    import scipy.io

    def cells(rows):
        array = np.empty((len(rows), len(rows[0])), dtype=object)
        for i, row in enumerate(rows):
            for j, value in enumerate(row):
                array[i, j] = value
        return array

    polygt = cells([['x', np.array([[10., 50., 50., 10.]]), 'y', np.array([[10., 10., 30., 30.]]), 'HELLO', 'h'],
                    ['x', np.array([[60., 90., 90., 60.]]), 'y', np.array([[40., 40., 60., 60.]]), '#', '#'],
                    ['x', np.array([[100., 120., 140., 140., 120., 100.]]), 'y',
                     np.array([[10., 5., 10., 30., 25., 30.]]), 'CURVE', 'c']])
    legacy = cells([[np.array([[5., 25., 25., 5.]]), np.array([[5., 5., 15., 15.]]), 'OLD', 'm'],
                    [np.array([[30., 40., 40., 30.]]), np.array([[5., 5., 15., 15.]]), 'x', '#']])
    (tmp_path / 'gt').mkdir()
    scipy.io.savemat(str(tmp_path / 'gt' / 'poly_gt_img1.mat'), {'polygt': polygt})
    scipy.io.savemat(str(tmp_path / 'gt' / 'gt_img2.mat'), {'gt': legacy})
    write_image(tmp_path / 'Images' / 'img1.jpg', 1)
    write_image(tmp_path / 'Images' / 'img2.JPG', 2)
    out = str(tmp_path / 'out')
    convert('totaltext-mat', str(tmp_path / 'gt'), out, images=str(tmp_path / 'Images'))
    assert listed(out) == ['img2.JPG', 'img1.jpg']          # in the order of the .mat files' names
    assert gt(out, 'img1.jpg') == [(box(10, 10, 50, 30), 'HELLO'), (box(60, 40, 90, 60), '###'),
                                   ([(100, 10), (120, 5), (140, 10), (140, 30), (120, 25), (100, 30)], 'CURVE')]
    assert gt(out, 'img2.JPG') == [(box(5, 5, 25, 15), 'OLD'), (box(30, 5, 40, 15), '###')]  # orientation '#'


def test_cvat_rotated_box_corners_by_hand(tmp_path):
    source = fixture_copy('cvat.xml', tmp_path)
    write_image(tmp_path / 'scans' / 'sign.png', 1)
    write_image(tmp_path / 'scans' / 'empty.png', 2)
    out = str(tmp_path / 'out')
    _, report = convert('cvat', source, out)
    assert listed(out) == ['sign.png', 'empty.png']
    # box 10..30 x 10..20 turned 90 degrees clockwise about its centre (20, 15): the top-left corner (10, 10),
    # 10 px left of and 5 px above the centre, goes to 5 px right of and 10 px above it, (25, 5); and so on.
    assert gt(out, 'sign.png') == [
        ([(25, 5), (25, 25), (15, 25), (15, 5)], 'Straße'),
        (box(100, 10, 150, 30), '東京'),
        (box(10, 50, 40, 70), '###'),                       # label "illegible"
        (box(60, 60, 90, 80), '###'),                       # attribute illegible = true
    ]
    assert gt(out, 'empty.png') == [] and report.negatives == ['empty.png']
    assert len(report.ignored) == 1 and 'shape 4 (polyline)' in report.ignored[0]


def test_label_studio_rotated_rectangle_by_hand(tmp_path):
    source = fixture_copy('label_studio.json', tmp_path)
    write_image(tmp_path / 'media' / 'shop.jpg', 1)        # uploaded as 6f1e2a3b-shop.jpg
    write_image(tmp_path / 'media' / 'blank.jpg', 2)       # a local file, ?d=photos/blank.jpg
    out = str(tmp_path / 'out')
    _, report = convert('label-studio', source, out, images=str(tmp_path / 'media'))
    assert listed(out) == ['shop.jpg', 'blank.jpg']         # task 3 has no annotation: left out
    # x 10 %, y 20 %, 20 % x 10 % of 200 x 100 px: top-left (20, 20), 40 x 10 px, turned 90 degrees clockwise
    # about (20, 20): (60, 20) -> (20, 60), (60, 30) -> (10, 60), (20, 30) -> (10, 20).
    assert gt(out, 'shop.jpg') == [
        ([(20, 20), (20, 60), (10, 60), (10, 20)], 'SALE'),
        (box(100, 10, 150, 30), '東京'),                     # polygon in percent
        (box(80, 50, 100, 70), '###'),                      # label "Illegible"
        (box(120, 50, 140, 70), '###'),                     # per-region choice "illegible"
    ]
    assert gt(out, 'blank.jpg') == [] and report.negatives == ['blank.jpg']


def test_points_outside_the_image_are_clipped_and_counted(tmp_path):
    shapes = [{'label': 'edge', 'points': [[-10, -5], [50, -5], [50, 20], [-10, 20]], 'shape_type': 'polygon'},
              {'label': 'gone', 'points': [[210, 10], [250, 10], [250, 30], [210, 30]], 'shape_type': 'polygon'}]
    source = labelme_set(tmp_path, shapes)
    out = str(tmp_path / 'out')
    lines, report = convert('labelme', source, out, images=str(tmp_path / 'images'))
    assert gt(out, 'photo1.jpg') == [(box(0, 0, 50, 20), 'edge')]
    assert (report.clipped_points, report.clipped_words) == (3, 1)
    assert report.skipped == [f'{source}: shape 1: fewer than 3 distinct points (2) after clipping to the image']


def test_empty_annotation_file_gives_a_negative_sample(tmp_path):
    source = labelme_set(tmp_path, shapes=[])
    out = str(tmp_path / 'out')
    lines, report = convert('labelme', source, out, images=str(tmp_path / 'images'))
    assert listed(out) == ['photo1.jpg']
    assert open(os.path.join(out, 'train_gts', 'photo1.jpg.txt'), 'rb').read() == b''
    assert report.negatives == ['photo1.jpg']
    assert 'negative samples (images without words, empty gt file): 1: photo1.jpg' in lines


def test_degenerate_shapes_are_skipped_naming_file_and_index(tmp_path):
    shapes = [{'label': 'ok', 'points': [[1, 1], [20, 1], [20, 9], [1, 9]], 'shape_type': 'polygon'},
              {'label': 'two', 'points': [[1, 1], [20, 1]], 'shape_type': 'polygon'},
              {'label': 'repeat', 'points': [[1, 1], [20, 1], [20, 1], [1, 1]], 'shape_type': 'polygon'},
              {'label': 'flat', 'points': [[1, 1], [20, 1], [40, 1]], 'shape_type': 'polygon'},
              {'label': 'nan', 'points': [[1, 1], [20, 1], ['NaN', 9]], 'shape_type': 'polygon'}]
    source = labelme_set(tmp_path, shapes)
    out = str(tmp_path / 'out')
    lines, report = convert('labelme', source, out, images=str(tmp_path / 'images'))
    assert gt(out, 'photo1.jpg') == [(box(1, 1, 20, 9), 'ok')]
    assert report.skipped == [f'{source}: shape 1: fewer than 3 distinct points (2)',
                              f'{source}: shape 2: fewer than 3 distinct points (2)',
                              f'{source}: shape 3: zero area',
                              f'{source}: shape 4: a non-finite coordinate']
    assert 'degenerate shapes skipped: 4' in lines and f'  {source}: shape 3: zero area' in lines


def test_non_ascii_and_comma_transcriptions(tmp_path):
    texts = ['Straße', '東京', 'Hello,world', '1,000', '1,000,000', '12,34,abc', 'two\nlines', '5,###']
    shapes = [{'label': text, 'points': [[1, 1 + 10 * i], [20, 1 + 10 * i], [20, 8 + 10 * i]],
               'shape_type': 'polygon'} for i, text in enumerate(texts)]
    source = labelme_set(tmp_path, shapes)
    out = str(tmp_path / 'out')
    _, report = convert('labelme', source, out, images=str(tmp_path / 'images'))
    read = gt(out, 'photo1.jpg')
    assert [text for _, text in read] == ['Straße', '東京', 'Hello,world', '1,000', '1 000 000', '12 34,abc',
                                          'two lines', '5,###']
    assert all(len(points) == 3 for points, _ in read)     # no number of a transcription lent to a polygon
    raw = open(os.path.join(out, 'train_gts', 'photo1.jpg.txt'), 'rb').read()
    assert 'Straße'.encode('utf-8') in raw and '東京'.encode('utf-8') in raw
    assert [entry.split(': ', 2)[2] for entry in report.changed_texts] == [
        "'1,000,000' -> '1 000 000'", "'12,34,abc' -> '12 34,abc'", "'two\\nlines' -> 'two lines'"]
    assert converted_transcription(' a , b ') == ('a,b', True)
    assert converted_transcription('2015') == ('2015', False)


def test_an_existing_different_image_is_refused(tmp_path):
    source = labelme_set(tmp_path)
    out = tmp_path / 'out'
    write_image(out / 'train_images' / 'photo1.jpg', seed=99)    # another picture of the same name
    before = open(out / 'train_images' / 'photo1.jpg', 'rb').read()
    with pytest.raises(ConvertError, match='exists and is a different file'):
        convert('labelme', source, str(out), images=str(tmp_path / 'images'))
    assert open(out / 'train_images' / 'photo1.jpg', 'rb').read() == before
    assert not (out / 'train_gts').exists() and not (out / 'train_list.txt').exists()   # nothing written
    assert main(['labelme', source, '--out', str(out), '--images', str(tmp_path / 'images')]) == 2
    # the same image already there (a rerun) is fine
    shutil.copy(tmp_path / 'images' / 'photo1.jpg', out / 'train_images' / 'photo1.jpg')
    assert main(['labelme', source, '--out', str(out), '--images', str(tmp_path / 'images')]) == 0
    assert listed(str(out)) == ['photo1.jpg']


def write_known_set(directory):
    """A converted set whose statistics are worked out by hand (docstring of test_check_statistics...)."""
    rows = {'a.png': ['10,10,50,10,50,20,10,20,abc',                       # 40 x 10: height 10
                      '60,10,100,10,100,40,60,40,word',                     # 40 x 30: height 30
                      '10,50,30,50,50,50,50,70,30,70,10,70,Straße',         # 6 points, 40 x 20: height 20
                      '',
                      '120,50,150,50,150,60,120,60,###'],                   # don't care
            'b.png': [],                                                   # no words
            'c.png': ['10,10,40,10,70,10,flat',                             # degenerate, line 1
                      '150,60,210,60,210,90,150,90,edge']}                  # 2 points outside 200 px, height 30
    for seed, (name, lines) in enumerate(rows.items()):
        write_image(os.path.join(directory, 'train_images', name), seed)
        os.makedirs(os.path.join(directory, 'train_gts'), exist_ok=True)
        with open(os.path.join(directory, 'train_gts', name + '.txt'), 'w', encoding='utf-8') as handle:
            handle.write(''.join(line + '\n' for line in lines))
    with open(os.path.join(directory, 'train_list.txt'), 'w', encoding='utf-8') as handle:
        handle.write('a.png\nb.png\nc.png\n')


def test_check_statistics_on_a_known_set_and_overlays(tmp_path, capsys):
    """3 images; 6 words (a: 4, c: 2), 1 don't care (1/6); cared-for heights 10, 30, 20, 30 (the degenerate line
    has none): range 10..30, median 25; polygons: 3 points 1, 4 points 4, 6 points 1; b.png has no words; c.png
    line 1 is degenerate (zero area); 2 points lie outside the 200 x 100 image."""
    directory = str(tmp_path / 'set')
    write_known_set(directory)
    result = check_converted(directory, 'train', overlays=2)
    assert (result.images, result.words, result.dont_care) == (3, 6, 1)
    assert result.dont_care_share == pytest.approx(1 / 6)
    assert sorted(result.heights) == pytest.approx([10, 20, 30, 30])
    assert dict(result.point_counts) == {3: 1, 4: 4, 6: 1}
    assert result.without_words == ['b.png']
    assert result.degenerate == [f'{os.path.join(directory, "train_gts", "c.png.txt")}:1: zero area']
    assert result.outside_points == 2 and result.errors == []
    assert sorted(os.listdir(os.path.join(directory, 'check'))) == ['train_a.png.png', 'train_c.png.png']
    overlay = cv2.imread(os.path.join(directory, 'check', 'train_a.png.png'))
    assert overlay.shape == (HEIGHT, WIDTH, 3)
    assert tuple(overlay[10, 30]) == (0, 200, 0) and tuple(overlay[50, 135]) == (0, 0, 255)  # cared, don't care
    assert sorted(os.listdir(os.path.join(directory, 'train_images'))) == ['a.png', 'b.png', 'c.png']
    assert main(['check', directory, '--overlays', '3', '--out', str(tmp_path / 'pictures')]) == 0
    printed = capsys.readouterr().out
    assert 'word height (cared-for words, short side of the minimum-area rectangle): 10.0 .. 30.0 px, median 25.0' \
        in printed and "don't care: 1 (16.7 %)" in printed and '3 points: 1, 4 points: 4, 6 points: 1' in printed
    assert len(os.listdir(tmp_path / 'pictures')) == 3
    with pytest.raises(ConvertError, match='train_images'):
        check_converted(directory, overlays=1, overlay_dir=os.path.join(directory, 'train_images', 'x'))


def test_cli_converts_then_checks(tmp_path, capsys):
    source = fixture_copy('cvat.xml', tmp_path)
    write_image(tmp_path / 'scans' / 'sign.png', 1)
    write_image(tmp_path / 'scans' / 'empty.png', 2)
    out = str(tmp_path / 'out')
    assert main(['cvat', source, '--out', out, '--split', 'test']) == 0
    assert 'wrote 2 images, 4 words (2 don\'t care (50.0 %))' in capsys.readouterr().out
    assert main(['check', out, '--split', 'test', '--overlays', '1']) == 0
    printed = capsys.readouterr().out
    assert 'images: 2' in printed and 'images without words: 1 (empty.png)' in printed
    os.remove(tmp_path / 'scans' / 'empty.png')
    assert main(['cvat', source, '--out', str(tmp_path / 'again')]) == 1   # an image not found: reported
    assert "image 'empty.png' not found" in capsys.readouterr().out


def labelme_file(path, image_path):
    """A labelme file at ``path`` naming ``image_path``, one word, no embedded image."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w', encoding='utf-8') as handle:
        json.dump({'version': '5.4.1', 'flags': {}, 'imagePath': image_path, 'imageData': None,
                   'imageHeight': HEIGHT, 'imageWidth': WIDTH,
                   'shapes': [{'label': 'a', 'points': [[1, 1], [9, 1], [9, 5]], 'shape_type': 'polygon'}]}, handle)
    return str(path)


def coco_file(path, file_names):
    """A COCO-Text v2 file at ``path`` listing ``file_names`` (images 1, 2, ...), one word on the first."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    content = {'imgs': {str(i + 1): {'id': i + 1, 'set': 'train', 'width': WIDTH, 'height': HEIGHT,
                                     'file_name': name} for i, name in enumerate(file_names)},
               'anns': {'7': {'id': 7, 'image_id': 1, 'mask': [1, 1, 9, 1, 9, 5], 'utf8_string': 'a',
                              'legibility': 'legible', 'language': 'english'}},
               'imgToAnns': {'1': [7]}}
    with open(path, 'w', encoding='utf-8') as handle:
        json.dump(content, handle)
    return str(path)


def read_bytes(path):
    with open(path, 'rb') as handle:
        return handle.read()


@pytest.mark.parametrize('reference', ['../secret/photo.png', '..\\secret\\photo.png', 'sub/../../secret/photo.png',
                                       'ABSOLUTE'])
def test_labelme_never_reads_an_image_outside_the_folders(tmp_path, reference, capsys):
    secret = write_image(tmp_path / 'secret' / 'photo.png', seed=7)          # outside the folders searched
    reference = secret if reference == 'ABSOLUTE' else reference
    source = labelme_file(tmp_path / 'labels' / 'photo.json', reference)
    os.makedirs(tmp_path / 'labels' / 'sub')
    out = tmp_path / 'out'
    assert main(['labelme', source, '--out', str(out)]) == 1                   # a missing image, reported
    assert "image 'photo.png' not found" in capsys.readouterr().out
    assert not (out / 'train_images' / 'photo.png').exists() and listed(str(out)) == []
    # with --images: the base name is looked up inside it, the file outside is never read
    inside = write_image(tmp_path / 'images' / 'photo.png', seed=8)
    _, report = convert('labelme', source, str(out), images=str(tmp_path / 'images'))
    assert report.missing_images == [] and listed(str(out)) == ['photo.png']
    copied = read_bytes(out / 'train_images' / 'photo.png')
    assert copied == read_bytes(inside) and copied != read_bytes(secret)
    # without --images, the base name inside the JSON file's folder
    os.remove(inside)
    beside = write_image(tmp_path / 'labels' / 'photo.png', seed=8)
    _, report = convert('labelme', source, str(tmp_path / 'out2'))
    assert read_bytes(tmp_path / 'out2' / 'train_images' / 'photo.png') == read_bytes(beside)


@pytest.mark.parametrize('reference', ['../secret/COCO_1.jpg', 'ABSOLUTE'])
def test_coco_text_never_reads_an_image_outside_the_folders(tmp_path, reference):
    secret = write_image(tmp_path / 'coco' / 'secret' / 'COCO_1.jpg', seed=7)   # train2014/../secret
    source = coco_file(tmp_path / 'coco' / 'cocotext.json', [secret if reference == 'ABSOLUTE' else reference])
    images = tmp_path / 'coco' / 'train2014'
    write_image(images / 'other.jpg', seed=1)
    out = tmp_path / 'out'
    _, report = convert('coco-text', source, str(out), images=str(images))
    assert len(report.missing_images) == 1 and 'COCO_1.jpg' in report.missing_images[0]
    assert not (out / 'train_images' / 'COCO_1.jpg').exists()
    inside = write_image(images / 'COCO_1.jpg', seed=8)                      # the base name inside --images
    _, report = convert('coco-text', source, str(out), images=str(images))
    assert report.missing_images == [] and listed(str(out)) == ['COCO_1.jpg']
    assert read_bytes(out / 'train_images' / 'COCO_1.jpg') == read_bytes(inside) != read_bytes(secret)


def test_a_link_inside_the_folder_leading_out_is_not_followed(tmp_path):
    secret = write_image(tmp_path / 'secret' / 'photo.png', seed=7)
    os.makedirs(tmp_path / 'labels')
    os.symlink(secret, tmp_path / 'labels' / 'photo.png')
    source = labelme_file(tmp_path / 'labels' / 'photo.json', 'photo.png')
    _, report = convert('labelme', source, str(tmp_path / 'out'))
    assert len(report.missing_images) == 1 and not (tmp_path / 'out' / 'train_images' / 'photo.png').exists()


def test_a_source_image_that_does_not_decode_stops_before_anything_is_written(tmp_path, capsys):
    images = tmp_path / 'train2014'
    write_image(images / 'a.jpg', seed=1)
    write_image(images / 'c.jpg', seed=3)
    (images / 'b.png').write_text('not an image, a text file named .png\n')
    source = coco_file(tmp_path / 'cocotext.json', ['a.jpg', 'b.png', 'c.jpg'])
    out = tmp_path / 'out'
    with pytest.raises(ConvertError, match=r'train2014.b\.png: not an image.*image of .*cocotext\.json: image 2'):
        convert('coco-text', source, str(out), images=str(images))
    assert main(['coco-text', source, '--out', str(out), '--images', str(images)]) == 2   # no traceback
    assert str(images / 'b.png') in capsys.readouterr().err
    assert not out.exists()                                                     # no images, gt files or list
    # labelme's embedded image data that does not decode: the same
    scan = tmp_path / 'scan.json'
    scan.write_text(json.dumps({'imagePath': 'gone.png', 'imageData': 'bm90IGFuIGltYWdl', 'shapes': []}))
    with pytest.raises(ConvertError, match='scan.json.*imageData'):
        convert('labelme', str(scan), str(out))
    assert not out.exists()


def test_written_files_get_the_umask_default_mode(tmp_path):
    write_image(tmp_path / 'train2014' / 'a.jpg', seed=1)
    source = coco_file(tmp_path / 'cocotext.json', ['a.jpg'])
    out = tmp_path / 'out'
    previous = os.umask(0o022)
    try:
        convert('coco-text', source, str(out), images=str(tmp_path / 'train2014'))
    finally:
        os.umask(previous)
    for path in ('train_list.txt', 'train_gts/a.jpg.txt', 'train_images/a.jpg'):
        assert os.stat(out / path).st_mode & 0o777 == 0o644, path
    assert [name for name in os.listdir(out) if name.endswith('.tmp')] == []
    os.chmod(out / 'train_list.txt', 0o640)                                    # a replaced list keeps its mode
    convert('coco-text', source, str(out), images=str(tmp_path / 'train2014'))
    assert os.stat(out / 'train_list.txt').st_mode & 0o777 == 0o640 and listed(str(out)) == ['a.jpg']
