"""Ground-truth readers, image reading and ImageDataset bookkeeping, on hand-written fixtures."""
import os

import cv2
import numpy as np
import pytest

from data import ImageDataset
from data.ground_truth import sanitize_line
from data.image_io import DataError, read_image
from data.readers import (read_converted, read_ctw1500, read_icdar2015, read_td500, read_totaltext,
                          parse_paddle_label, synthtext_lines)


def write(path, text, encoding='utf-8'):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w', encoding=encoding) as handle:
        handle.write(text)
    return str(path)


def test_icdar2015_bom_commas_and_dont_care(tmp_path):
    path = write(tmp_path / 'gt_img_1.txt',
                 '377,117,463,117,465,130,378,130,Genaxis Theatre\n'
                 '493,115,519,115,519,131,493,131,[06]\n'
                 '374,155,409,155,409,170,374,170,###\n'
                 '10,10,20,10,20,20,10,20,a,b\n', encoding='utf-8-sig')
    lines = read_icdar2015(path)
    assert [line['text'] for line in lines] == ['Genaxis Theatre', '[06]', '###', 'a,b']
    assert lines[0]['poly'] == [[377, 117], [463, 117], [465, 130], [378, 130]]


def test_icdar2015_quoted_transcriptions_are_read_as_the_official_script_reads_them(tmp_path):
    # rrc_evaluation_funcs.py: a transcription in double quotes loses them (\\\\ -> \\, \\" -> "), so "###" is
    # don't care there; text that is not wholly quoted stays as written.
    path = write(tmp_path / 'gt_img_1.txt',
                 '0,0,10,0,10,10,0,10,"###"\n'
                 '0,0,10,0,10,10,0,10, "say \\"hi\\", a\\\\b" \n'
                 '0,0,10,0,10,10,0,10,plain "quote"\n')
    assert [line['text'] for line in read_icdar2015(path)] == ['###', 'say "hi", a\\b', 'plain "quote"']


def test_icdar2015_malformed_line_names_file_and_line(tmp_path):
    path = write(tmp_path / 'gt.txt', '1,2,3,4,5,6,7,8,ok\n1,2,3,x,5,6,7,8,bad\n')
    with pytest.raises(DataError, match=r'gt.txt:2'):
        read_icdar2015(path)


def test_converted_polygon_label_with_comma_and_td500_difficult(tmp_path):
    path = write(tmp_path / 'img1.jpg.txt', '1,2,10,2,10,8,6,9,1,8,hello\n0,0,4,0,4,4,0,4,1\n0,0,4,0,4,4,0,4,1,000\n')
    lines = read_converted(path)
    assert lines[0]['poly'] == [[1, 2], [10, 2], [10, 8], [6, 9], [1, 8]] and lines[0]['text'] == 'hello'
    assert lines[1]['text'] == '1' and len(lines[1]['poly']) == 4
    assert lines[2]['text'] == '1,000' and len(lines[2]['poly']) == 4  # numeric label after 8 coordinates
    td = read_converted(path, difficult_label='1')
    assert [line['text'] for line in td] == ['hello', '###', '1,000']


def test_totaltext_official_wrapped_records(tmp_path):
    path = write(tmp_path / 'poly_gt_img11.txt',
                 "x: [[115 503 494 115]], y: [[322 346 426 404]], ornt: [u'm'], transcriptions: [u'nauGHTY']\n"
                 "x: [[734 1058 1061 744 ...\n".replace(' ...\n', '') +
                 "]], y: [[8 100 150 60]], ornt: [u'c'],\n transcriptions: [u'Bend']\n"
                 "x: [[10 20 20]], y: [[1 1 9]], ornt: [u'#'], transcriptions: [u'#']\n")
    lines = read_totaltext(path)
    assert lines[0] == {'poly': [[115, 322], [503, 346], [494, 426], [115, 404]], 'text': 'nauGHTY'}
    assert lines[1]['poly'] == [[734, 8], [1058, 100], [1061, 150], [744, 60]] and lines[1]['text'] == 'Bend'
    assert lines[2]['text'] == '###'


def test_totaltext_stray_content_names_its_line(tmp_path):
    path = write(tmp_path / 'poly_gt_img1.txt',
                 "x: [[1 2 3]], y: [[1 2 3]], ornt: [u'c'], transcriptions: [u'a']\n\nstray junk\n")
    with pytest.raises(DataError, match=r'poly_gt_img1.txt:3: unparsed Total-Text content'):
        read_totaltext(path)


def test_totaltext_malformed_record(tmp_path):
    path = write(tmp_path / 'poly_gt_img1.txt', "\n\nx: [[1 2 3]], y: [[1 2]], ornt: [u'c'], transcriptions: [u'a']\n")
    with pytest.raises(DataError, match=r'poly_gt_img1.txt:3'):
        read_totaltext(path)


def test_td500_rotated_rectangle(tmp_path):
    path = write(tmp_path / 'IMG_0059.gt', '0 0 100 50 40 20 0\n1 1 0 0 20 10 1.5707963267948966\n')
    lines = read_td500(path)
    assert np.allclose(lines[0]['poly'], [[100, 50], [140, 50], [140, 70], [100, 70]])
    assert lines[0]['text'] != '###' and lines[1]['text'] == '###'
    # a 20x10 box centred at (10, 5) rotated by 90 degrees becomes 10 wide and 20 tall about the centre
    rotated = np.array(lines[1]['poly'])
    assert np.allclose(rotated.min(axis=0), [5, -5]) and np.allclose(rotated.max(axis=0), [15, 15])


def test_ctw1500_offsets_absolute_and_xml(tmp_path):
    offsets = [4 * i for i in range(1, 29)]
    path = write(tmp_path / '0001.txt', ','.join(map(str, [100, 200, 300, 400] + offsets)) + '\n')
    lines = read_ctw1500(path)
    assert len(lines[0]['poly']) == 14 and lines[0]['poly'][0] == [104, 208]
    absolute = ','.join(str(v) for v in range(28))
    path = write(tmp_path / '1001.txt', f'{absolute},####Hello World\n{absolute},####\n')
    lines = read_ctw1500(path)
    assert lines[0]['text'] == 'Hello World' and lines[0]['poly'][1] == [2, 3] and lines[1]['text'] == '###'
    path = write(tmp_path / '0002.xml', '<Annotations><image><box><label>Curve</label>'
                 '<segs>0,0,10,0,10,10,0,10</segs></box></image></Annotations>')
    assert read_ctw1500(path) == [{'poly': [[0, 0], [10, 0], [10, 10], [0, 10]], 'text': 'Curve'}]


def test_paddle_label_line():
    row = 'imgs/a.jpg\t[{"transcription": "Hi", "points": [[1, 2], [9, 2], [9, 8], [1, 8]]},' \
          ' {"transcription": "###", "points": [[0, 0], [3, 0], [3, 3]]}]'
    image_path, lines = parse_paddle_label(row, 'labels.txt:1')
    assert image_path == 'imgs/a.jpg' and lines[0]['text'] == 'Hi' and lines[1]['text'] == '###'
    with pytest.raises(DataError, match='labels.txt:7'):
        parse_paddle_label('a.jpg\t[{"points": 3}]', 'labels.txt:7')


def test_synthtext_single_and_multiple_words():
    one = synthtext_lines(np.array([[0, 10, 10, 0], [0, 0, 5, 5]]), ['Hello'], 'gt.mat')
    assert one == [{'poly': [[0, 0], [10, 0], [10, 5], [0, 5]], 'text': 'Hello'}]
    boxes = np.zeros((2, 4, 3))
    assert [line['text'] for line in synthtext_lines(boxes, ['two words\n', 'three'], 'gt.mat')] == \
        ['two', 'words', 'three']
    with pytest.raises(DataError, match='3 word boxes but 2 words'):
        synthtext_lines(boxes, ['a b'], 'gt.mat')


def test_read_image_ignores_exif_and_converts_formats(tmp_path):
    from PIL import Image
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, :20] = (255, 0, 0)  # RGB red on the left half
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90" orientation tag
    path = str(tmp_path / 'exif.jpg')
    Image.fromarray(pixels).save(path, exif=exif, quality=95)

    def stored(image_path):
        return read_image(image_path, orientation='stored')

    image = stored(path)
    assert image.shape == (20, 40, 3)  # stored shape, not rotated
    assert image[10, 5, 2] > 200 and image[10, 35, 2] < 50  # BGR: red channel last, left half
    gray = str(tmp_path / 'gray.png')
    cv2.imwrite(gray, np.full((5, 6), 77, np.uint8))
    assert stored(gray).shape == (5, 6, 3) and (stored(gray) == 77).all()
    rgba = str(tmp_path / 'rgba.png')
    cv2.imwrite(rgba, np.dstack([np.full((5, 6, 3), 9, np.uint8), np.full((5, 6), 128, np.uint8)]))
    assert stored(rgba).shape == (5, 6, 3) and (stored(rgba) == 9).all()
    deep = str(tmp_path / 'deep.png')
    cv2.imwrite(deep, np.full((5, 6, 3), 0x8000, np.uint16))
    assert stored(deep).dtype == np.uint8 and (stored(deep) == 0x80).all()
    broken = write(tmp_path / 'broken.jpg', 'not an image')
    with pytest.raises(DataError, match='broken.jpg'):
        stored(broken)


def test_sanitize_degenerate_polygons():
    from shapely.geometry import Polygon
    assert sanitize_line({'poly': [[0, 0], [5, 5]], 'text': 'a'})['text'] == '###'
    assert sanitize_line({'poly': [[0, 0], [5, 5], [10, 10]], 'text': 'a'})['text'] == '###'  # zero area
    simple = {'poly': [[0, 0], [10, 0], [10, 10], [0, 10]], 'text': 'a'}
    assert sanitize_line(simple) == simple
    # 10 x 10 square with its 2nd and 3rd corners swapped: two triangles of 25 px^2 meeting at (5, 5); the
    # repair restores the 100 px^2 square (the old one kept a 25 px^2 triangle)
    bowtie = sanitize_line({'poly': [[0, 0], [10, 10], [10, 0], [0, 10]], 'text': 'a'})
    assert bowtie == {'poly': [[0, 0], [10, 0], [10, 10], [0, 10]], 'text': 'a'}
    # 40 x 12 box with its 3rd and 4th corners swapped (triangles of 120 px^2): back to 480 px^2
    bowtie = sanitize_line({'poly': [[0, 0], [40, 0], [0, 12], [40, 12]], 'text': 'b'})
    assert bowtie['text'] == 'b' and Polygon(bowtie['poly']).is_valid and Polygon(bowtie['poly']).area == 480
    # a spike (out to (5, 20) and back) on a 10 x 10 square: one valid part, its area 100 px^2 kept, text kept
    spike = sanitize_line({'poly': [[0, 0], [10, 0], [10, 10], [5, 10], [5, 20], [5, 10], [0, 10]], 'text': 'c'})
    assert spike['text'] == 'c' and Polygon(spike['poly']).area == 100
    # five points whose sides cross: don't care over the convex hull, the 20 x 10 box plus the triangle
    # (0, 0), (20, 0), (10, -5) above it: 200 + 20 * 5 / 2 = 250 px^2
    crossing = sanitize_line({'poly': [[0, 0], [20, 0], [20, 10], [10, -5], [0, 10]], 'text': 'd'})
    assert crossing['text'] == '###' and Polygon(crossing['poly']).area == 250
    with pytest.raises(DataError, match='gt.txt:3: non-finite'):
        sanitize_line({'poly': [[0, 0], [10, float('nan')], [10, 10]], 'text': 'e'}, 'gt.txt:3')


NON_FINITE = ['nan', 'inf', '-inf', 'NaN', '-Infinity', '+nan', '1e999']


@pytest.mark.parametrize('bad', NON_FINITE)
def test_non_finite_coordinates_name_file_and_line(tmp_path, bad):
    good = '1,2,30,2,30,20,1,20'
    cases = [
        (read_icdar2015, 'gt_img_1.txt', f'{good},ok\n1,2,3,{bad},5,6,7,8,word\n', 2),
        (read_converted, 'img.jpg.txt', f'{good},ok\n\n10,10,50,10,50,30,{bad},70,NANLAST\n', 3),
        (lambda path: read_converted(path, difficult_label='1'), 'td.jpg.txt', f'{bad},1,2,3,4,5,6,7,1\n', 1),
        (read_totaltext, 'poly_gt_img1.txt',
         "x: [[1 9 9]], y: [[1 1 9]], ornt: [u'c'], transcriptions: [u'a']\n"
         f"x: [[1 9\n 9]], y: [[1 1\n {bad}]], ornt: [u'c'],\n transcriptions: [u'b']\n", 4),
        (read_td500, 'IMG_1.gt', f'0 0 1 2 30 20 0\n1 0 1 2 30 20 {bad}\n', 2),
        (read_ctw1500, '0001.txt', ','.join(['1'] * 32) + '\n' + ','.join(['1'] * 31 + [bad]) + '\n', 2),
        (read_ctw1500, '1001.txt', ','.join(['1'] * 28) + ',####a\n' + ','.join(['1'] * 27 + [bad]) + ',####b\n', 2),
        (read_ctw1500, '0002.xml', '<Annotations>\n<image>\n<box><label>a</label><segs>0,0,9,0,9,9</segs></box>\n'
         f'<box><label>b</label>\n<segs>0,0,9,0,9,{bad}</segs></box>\n</image>\n</Annotations>\n', 5),
    ]
    for reader, name, text, line in cases:
        path = write(tmp_path / name, text)
        with pytest.raises(DataError, match=rf'{name}:{line}\b.*non-finite'):
            reader(path)
    row = f'a.jpg\t[{{"transcription": "x", "points": [[0, 0], [9, 0], ["{bad}", 9]]}}]'
    with pytest.raises(DataError, match='Label.txt:4: non-finite'):
        parse_paddle_label(row, 'Label.txt:4')
    boxes = np.zeros((2, 4, 2))
    boxes[1, 2, 1] = float(bad)
    with pytest.raises(DataError, match='gt.mat: image 3: word 1: non-finite'):
        synthtext_lines(boxes, ['a b'], 'gt.mat: image 3')


@pytest.mark.parametrize('token', ['NaN', 'Infinity', '-Infinity', '1e999'])
def test_paddle_json_non_finite_numbers(token):
    row = f'a.jpg\t[{{"transcription": "x", "points": [[0, 0], [9, {token}], [9, 9]]}}]'
    with pytest.raises(DataError, match='Label.txt:2: non-finite'):
        parse_paddle_label(row, 'Label.txt:2')
    with pytest.raises(DataError, match='Label.txt:2: expected numeric'):
        parse_paddle_label('a.jpg\t[{"points": [[0, 0], [9, "x"], [9, 9]]}]', 'Label.txt:2')


def make_converted_dataset(root, names=('a.jpg', 'b.jpg', 'c.jpg'), split='train'):
    for index, name in enumerate(names):
        image = np.full((32, 48, 3), 40 * index, np.uint8)
        cv2.imwrite(str(root / f'{split}_images' / name) if (root / f'{split}_images').exists()
                    else _mk(root / f'{split}_images', name, image), image)
        write(root / f'{split}_gts' / f'{name}.txt', f'1,1,20,1,20,10,1,10,w{index}\n')
    write(root / f'{split}_list.txt', ''.join(n + '\n' for n in names))
    return str(root), str(root / f'{split}_list.txt')


def _mk(directory, name, image):
    os.makedirs(directory, exist_ok=True)
    return str(directory / name)


def test_dataset_sample_contract_and_inference(tmp_path):
    data_dir, data_list = make_converted_dataset(tmp_path)
    dataset = ImageDataset(data_dir=[data_dir], data_list=[data_list], processes=[])
    assert dataset.is_training and dataset.gt_formats == ['converted'] and len(dataset) == 3
    sample = dataset[1]
    assert sample['data_id'] == 'b.jpg' and sample['filename'].endswith(os.path.join('train_images', 'b.jpg'))
    assert sample['image'].shape == (32, 48, 3) and sample['image'].dtype == np.uint8 and sample['image'][0, 0, 0] == 40
    assert sample['lines'] == [{'poly': [[1, 1], [20, 1], [20, 10], [1, 10]], 'text': 'w1'}]
    test_dir, test_list = make_converted_dataset(tmp_path / 'TD500', split='test')
    dataset = ImageDataset(data_dir=[data_dir, test_dir], data_list=[data_list, test_list], processes=[],
                           is_training=False)
    assert len(dataset) == 6 and dataset.gt_formats == ['converted', 'converted_td500'] and not dataset.is_training


def test_bad_samples_skipped_and_counted_or_raised(tmp_path, caplog):
    data_dir, data_list = make_converted_dataset(tmp_path)
    write(tmp_path / 'train_images' / 'b.jpg', 'garbage')
    write(tmp_path / 'train_gts' / 'c.jpg.txt', '1,1,20,1,20,10,1,10,ok\n1,1,oops\n')
    dataset = ImageDataset(data_dir=[data_dir], data_list=[data_list], processes=[])
    assert dataset[1]['data_id'] == 'a.jpg'  # b is unreadable, c has a bad line: wraps around to a
    assert any('b.jpg' in r.getMessage() for r in caplog.records)
    assert any('c.jpg.txt:2' in r.getMessage() for r in caplog.records)
    reports = dataset.take_bad_samples()
    assert [os.path.basename(path) for path, _ in reports] == ['b.jpg', 'c.jpg'] and dataset.take_bad_samples() == []
    assert 'c.jpg.txt:2' in reports[1][1]
    raising = ImageDataset(data_dir=[data_dir], data_list=[data_list], processes=[], on_bad_sample='raise')
    with pytest.raises(DataError, match='c.jpg.txt:2'):
        raising[2]


def test_synthtext_mat_and_paddle_datasets(tmp_path):
    import scipy.io
    os.makedirs(tmp_path / 'synth' / '8')
    cv2.imwrite(str(tmp_path / 'synth' / '8' / 'x_0.jpg'), np.zeros((30, 40, 3), np.uint8))
    cv2.imwrite(str(tmp_path / 'synth' / '8' / 'x_1.jpg'), np.zeros((30, 40, 3), np.uint8))
    imnames = np.empty((1, 2), dtype=object)
    imnames[0, 0], imnames[0, 1] = np.array(['8/x_0.jpg']), np.array(['8/x_1.jpg'])
    word_boxes = np.empty((1, 2), dtype=object)
    word_boxes[0, 0] = np.array([[1.0, 9, 9, 1], [2.0, 2, 6, 6]])  # 2x4: one word
    word_boxes[0, 1] = np.zeros((2, 4, 2))
    texts = np.empty((1, 2), dtype=object)
    texts[0, 0] = np.array(['Hi'])
    texts[0, 1] = np.array(['ab  ', 'cd  '])
    mat = str(tmp_path / 'synth' / 'gt.mat')
    scipy.io.savemat(mat, {'imnames': imnames, 'wordBB': word_boxes, 'txt': texts})
    dataset = ImageDataset(data_dir=[str(tmp_path / 'synth')], data_list=[mat], processes=[], is_training=True)
    assert dataset.gt_formats == ['synthtext'] and len(dataset) == 2
    assert dataset[0]['lines'] == [{'poly': [[1, 2], [9, 2], [9, 6], [1, 6]], 'text': 'Hi'}]
    assert [line['text'] for line in dataset[1]['lines']] == ['###', '###']  # zero-area boxes become don't care
    label_file = write(tmp_path / 'synth' / 'Label.txt',
                       '8/x_0.jpg\t[{"transcription": "Yo", "points": [[0, 0], [8, 0], [8, 4], [0, 4]]}]\n')
    paddle = ImageDataset(data_dir=[str(tmp_path / 'synth')], data_list=[label_file], processes=[], gt_format='paddle')
    assert paddle[0]['lines'][0]['text'] == 'Yo' and paddle[0]['image'].shape == (30, 40, 3)


@pytest.mark.parametrize('training', [True, False])
def test_non_finite_ground_truth_through_the_dataset(tmp_path, training):
    split = 'train' if training else 'test'
    data_dir, data_list = make_converted_dataset(tmp_path, split=split)
    write(tmp_path / f'{split}_gts' / 'b.jpg.txt', '1,1,20,1,20,10,1,10,ok\n1,1,20,1,20,nan,1,10,bad\n')
    raising = ImageDataset(data_dir=[data_dir], data_list=[data_list], processes=[], on_bad_sample='raise')
    assert raising.is_training == training
    with pytest.raises(DataError, match='b.jpg.txt:2: non-finite'):
        raising[1]
