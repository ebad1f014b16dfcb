"""N-point polygons in the ICDAR 2015 line form, the ambiguous lines refused, and the encoding of ground-truth
files (issue 23), on hand-written files: the reader, the training label maps and tools.score."""
import os
import re

import cv2
import numpy as np
import pytest
from shapely.geometry import Polygon

from data import ImageDataset
from data.image_io import DataError
from data.processes import MakeICDARData, MakeSegDetectionData
from data.readers import read_converted, read_icdar2015
from tools.score import score

# A word bent along an arc: 7 points on the outer side (radius 60 about (100, 100)), 7 back on the inner (40).
CURVE = [(40, 100), (48, 70), (70, 48), (100, 40), (130, 48), (152, 70), (160, 100),
         (140, 100), (135, 80), (120, 65), (100, 60), (80, 65), (65, 80), (60, 100)]
# A six-point don't-care region whose last two points the old reader made a transcription: '165,240,140,220,###'.
HEXAGON = [(100, 200), (150, 196), (180, 212), (190, 236), (165, 240), (140, 220)]
BOX = [(377, 117), (463, 117), (465, 130), (378, 130)]


def flat(points):
    return ','.join(f'{x},{y}' for x, y in points)


def write(path, text, encoding='utf-8'):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    with open(path, 'w', encoding=encoding, newline='') as handle:
        handle.write(text)
    return str(path)


def shoelace(points):
    """Area by the shoelace formula, written out here independently of the project's geometry."""
    total = 0.0
    for (x0, y0), (x1, y1) in zip(points, points[1:] + points[:1]):
        total += x0 * y1 - x1 * y0
    return abs(total) / 2.0


def test_a_fourteen_point_curved_word_reads_as_the_whole_polygon(tmp_path):
    path = write(tmp_path / 'gt_img_1.txt', f'{flat(CURVE)},curved\n')
    [line] = read_icdar2015(path)
    assert line == {'poly': [list(point) for point in CURVE], 'text': 'curved'}
    assert shoelace(CURVE) == Polygon(CURVE).area == 2979.0       # the word
    assert Polygon(line['poly']).area == 2979.0 != shoelace(CURVE[:4]) == 902.0  # not its first four points


def test_a_six_point_dont_care_region_is_dont_care(tmp_path):
    path = write(tmp_path / 'gt_img_1.txt', f'{flat(HEXAGON)},###\n{flat(HEXAGON)},"###"\n')
    lines = read_icdar2015(path)
    assert [line['text'] for line in lines] == ['###', '###']
    assert all(line['poly'] == [list(point) for point in HEXAGON] for line in lines)


def test_four_point_lines_read_as_before_numeric_transcriptions_included(tmp_path):
    # the official reading (8 coordinates, the rest the transcription), also when the transcription is a
    # number or begins with one: these lines read as the reader always read them
    box = flat(BOX)
    rows = [f'{box},Genaxis Theatre', f'{box},2015', f'{box},1,000', f'{box},1,000m', f'{box},5,###',
            f'{box},a,b', f'{box},', f' {box.replace(",", " , ")} ,"say \\"hi\\""']
    path = write(tmp_path / 'gt_img_1.txt', '\n'.join(rows) + '\n')
    lines = read_icdar2015(path)
    assert [line['text'] for line in lines] == ['Genaxis Theatre', '2015', '1,000', '1,000m', '5,###', 'a,b', '',
                                                'say "hi"']
    assert all(line['poly'] == [list(point) for point in BOX] for line in lines)


def test_a_numeric_transcription_after_more_points_is_read_when_quoted(tmp_path):
    path = write(tmp_path / 'gt_img_1.txt', f'{flat(CURVE)},"2015"\n{flat(HEXAGON)},"5,###"\n'
                                            f'{flat(HEXAGON)},"1,000"\n{flat(CURVE[:5])},10th\n')
    lines = read_icdar2015(path)
    assert [(len(line['poly']), line['text']) for line in lines] == [(14, '2015'), (6, '5,###'), (6, '1,000'),
                                                                     (5, '10th')]


@pytest.mark.parametrize('row, shown', [
    (f'{flat(CURVE[:7])},5,###', "15 numbers, then '###'"),           # a missing coordinate, or text '5,###'?
    (f'{flat(CURVE)},1,000m', "29 numbers, then '000m'"),              # 14 points and '1,000m', or 15 points?
    (f'{flat(CURVE)},2015', 'all 29 values are numbers'),              # 14 points and '2015'?
    (f'{flat(HEXAGON)},1,000', 'all 14 values are numbers'),           # 6 points and '1,000', or 7 and nothing?
    (f'{flat(BOX)},1,000,000', 'all 11 values are numbers'),           # 4 points and '1,000,000', or 5 and '000'?
])
def test_ambiguous_lines_are_errors_naming_file_and_line(tmp_path, row, shown):
    path = write(tmp_path / 'gt_img_7.txt', f'{flat(BOX)},fine\n\n{row}\n')
    with pytest.raises(DataError) as error:
        read_icdar2015(path)
    message = str(error.value)
    assert message.startswith(f'{path}:3: cannot tell where the coordinates end') and shown in message
    assert 'double quotes' in message


@pytest.mark.parametrize('row', ['1,2,3,4,5,6,word', '1,2,3,4,5,6,7,8', '1,2,3,x,5,6,7,8,word'])
def test_fewer_than_four_points_or_no_transcription_is_an_error(tmp_path, row):
    path = write(tmp_path / 'gt_img_1.txt', f'{row}\n')
    with pytest.raises(DataError, match=r'gt_img_1.txt:1: expected at least 8 coordinates then a transcription'):
        read_icdar2015(path)


def test_the_converted_format_keeps_its_numeric_labels(tmp_path):
    # the one coordinate rule of both line forms; the converted format reads a numeric label after any
    # number of points (MSRA-TD500's difficult flag '1'), it never refuses it
    path = write(tmp_path / 'img.jpg.txt', f'{flat(CURVE)},1\n{flat(HEXAGON)},1,000\n')
    assert [(len(line['poly']), line['text']) for line in read_converted(path)] == [(14, '1'), (6, '1,000')]


NPOINT_FILE = f'{flat(CURVE)},curved\n{flat(HEXAGON)},###\n{flat(BOX)},Genaxis Theatre\n'


@pytest.mark.parametrize('encoding', ['utf-16', 'utf-16-be', 'utf-32'])
def test_a_file_with_a_utf16_or_utf32_byte_order_mark_is_read_in_that_encoding(tmp_path, encoding):
    path = str(tmp_path / 'gt_img_1.txt')
    with open(path, 'wb') as handle:  # 'utf-16' writes the platform's order with its mark; BE with a BE mark
        handle.write(('\ufeff' if encoding == 'utf-16-be' else '').encode(encoding)
                     + NPOINT_FILE.replace('Genaxis', 'Génaxis').encode(encoding))
    lines = read_icdar2015(path)
    assert [(len(line['poly']), line['text']) for line in lines] == [(14, 'curved'), (6, '###'),
                                                                     (4, 'Génaxis Theatre')]


@pytest.mark.parametrize('encoding', ['utf-16-le', 'utf-16-be'])
def test_utf16_without_a_byte_order_mark_is_refused_naming_file_and_encoding(tmp_path, encoding):
    path = str(tmp_path / 'gt_img_1.txt')
    with open(path, 'wb') as handle:
        handle.write(NPOINT_FILE.encode(encoding))
    with pytest.raises(DataError) as error:
        read_icdar2015(path)
    message = str(error.value)
    assert message.startswith(f'{path}:1: not UTF-8 text: NUL byte') and 'UTF-16' in message
    assert 'save the file as UTF-8' in message


def test_a_nul_inside_utf8_text_names_its_line_and_latin1_files_still_read(tmp_path):
    path = str(tmp_path / 'gt_img_1.txt')
    with open(path, 'wb') as handle:
        handle.write(f'{flat(BOX)},ok\n{flat(BOX)},bad\x00word\n'.encode('utf-8'))
    with pytest.raises(DataError, match=r'gt_img_1.txt:2: not UTF-8 text: NUL byte'):
        read_icdar2015(path)
    with open(path, 'wb') as handle:  # a legacy 8-bit file: read as Latin-1, as documented
        handle.write(f'{flat(CURVE)},Caf\xe9\n'.encode('latin-1'))
    assert [(len(line['poly']), line['text']) for line in read_icdar2015(path)] == [(14, 'Café')]


def test_an_n_point_word_reaches_the_training_labels_as_the_whole_polygon(tmp_path):
    write(tmp_path / 'train_gts' / 'gt_curve.txt', f'{flat(CURVE)},curved\n')
    write(tmp_path / 'train_list.txt', 'curve.jpg\n')
    os.makedirs(tmp_path / 'train_images')
    cv2.imwrite(str(tmp_path / 'train_images' / 'curve.jpg'), np.zeros((200, 200, 3), np.uint8))
    dataset = ImageDataset([str(tmp_path)], [str(tmp_path / 'train_list.txt')],
                           [MakeICDARData(), MakeSegDetectionData()], gt_format='icdar2015', on_bad_sample='raise')
    assert dataset.is_training
    sample = dataset[0]
    [polygon] = sample['polygons']
    assert polygon.shape == (14, 2) and Polygon(polygon).area == 2979.0 and not sample['ignore_tags'][0]
    text = sample['gt'][0] > 0
    # the right half of the arc (x > 110) lies outside the quadrilateral of the first four points (x <= 100)
    assert text[:, 111:].sum() > 200 and text[:, :100].sum() > 200


def test_score_on_exact_n_point_polygons_is_perfect_as_in_the_converted_format(tmp_path):
    gt_text = NPOINT_FILE + f'{flat([(x, y + 100) for x, y in CURVE])},bent\n'
    write(tmp_path / 'gt' / 'gt_img_1.txt', gt_text)
    write(tmp_path / 'gt_converted' / 'img_1.jpg.txt', gt_text)
    detections = [CURVE, HEXAGON, BOX, [(x, y + 100) for x, y in CURVE]]
    write(tmp_path / 'res' / 'res_img_1.txt', ''.join(flat(points) + '\n' for points in detections))
    scored = score(str(tmp_path / 'gt'), str(tmp_path / 'res'), gt_format='icdar2015')
    assert scored['method'] == {'precision': 1.0, 'recall': 1.0, 'hmean': 1.0, 'AP': 0}
    result = scored['per_image']['img_1']
    assert (result['gt_care'], result['det_care'], result['matched']) == (3, 3, 3)  # the hexagon is don't care
    converted = score(str(tmp_path / 'gt_converted'), str(tmp_path / 'res'), gt_format='converted')
    assert converted['method'] == scored['method']


def test_score_refuses_a_utf16_result_file_without_its_mark_naming_the_encoding(tmp_path):
    write(tmp_path / 'gt' / 'gt_img_1.txt', NPOINT_FILE)
    path = str(tmp_path / 'res' / 'res_img_1.txt')
    write(path, f'{flat(BOX)}\n', encoding='utf-16-le')
    with pytest.raises(DataError, match=re.escape(f'{path}:1: not UTF-8 text: NUL byte') + '.*UTF-16'):
        score(str(tmp_path / 'gt'), str(tmp_path / 'res'))
