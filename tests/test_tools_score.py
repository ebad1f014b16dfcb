"""python -m tools.score: result files against ground truth, on folders and zip files built here.

Expected numbers: the official ICDAR 2015 script's values for the two documented cases (a zero-area and a
self-intersecting detection) and hand-worked boxes."""
import json
import os
import subprocess
import sys
import zipfile

import pytest

from tools.score import main, parse_result_text, score

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

GT_1 = '0,0,100,0,100,20,0,20,hello\n'                                 # one box, 100 x 20
GT_2 = '743,145,779,146,780,163,746,163,word\n'                        # the official example's quadrilateral
GT_3 = '0,0,40,0,40,10,0,10,a\n200,0,240,0,240,10,200,10,###\n'        # one cared box, one don't care
RES_1 = '0,0,100,0,100,20,0,20\n10,10,20,10,30,10,15,10\n'              # the box and a zero-area detection
RES_2 = '759,176,766,138,782,169,732,155\n'                            # self-intersecting, IoU > 0.5 officially
# image 3 has no result file: its cared ground truth is missed


def write_folder(path, files):
    path.mkdir()
    for name, text in files.items():
        (path / name).write_text(text)
    return str(path)


def write_zip(path, files):
    with zipfile.ZipFile(path, 'w') as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return str(path)


GT_FILES = {'gt_img_1.txt': GT_1, 'gt_img_2.txt': GT_2, 'gt_img_3.txt': GT_3}
RES_FILES = {'res_img_1.txt': RES_1, 'res_img_2.txt': RES_2}


def final_line(output):
    line = output.strip().splitlines()[-1]
    assert line.startswith('Calculated!')
    return json.loads(line[len('Calculated!'):])


@pytest.mark.parametrize('container', ['folder', 'zip'])
def test_official_numbers_on_folders_and_zip_files(tmp_path, capsys, container):
    make = write_folder if container == 'folder' else write_zip
    suffix = '' if container == 'folder' else '.zip'
    gt = make(tmp_path / f'gt{suffix}', GT_FILES)
    res = make(tmp_path / f'res{suffix}', RES_FILES)
    assert main(['--gt', gt, '--submission', res, '--per_image']) == 0
    output = capsys.readouterr().out
    # matched: image 1 the box (the zero-area detection counts, unmatched), image 2 the self-intersecting one,
    # image 3 none. Cared detections 2 + 1 + 0 = 3, cared ground truths 1 + 1 + 1 = 3.
    assert final_line(output) == {'precision': 2 / 3, 'recall': 2 / 3, 'hmean': pytest.approx(2 / 3), 'AP': 0}
    lines = output.strip().splitlines()
    assert lines[0].startswith('img_1: ') and json.loads(lines[0][7:])['precision'] == 0.5
    assert json.loads(lines[1][7:])['recall'] == 1.0 and json.loads(lines[1][7:])['precision'] == 1.0
    assert json.loads(lines[2][7:]) == {'precision': 0, 'recall': 0.0, 'hmean': 0.0, 'matched': 0,
                                        'gt_care': 1, 'det_care': 0}
    assert 'scored 3 images (icdar2015): 2 with a result file, 1 without one' in output


def test_the_official_final_line_is_printed_exactly(tmp_path, capsys):
    gt = write_folder(tmp_path / 'gt', {'gt_img_1.txt': GT_1})
    res = write_folder(tmp_path / 'res', {'res_img_1.txt': RES_1})
    assert main(['--gt', gt, '--submission', res]) == 0
    # precision 1 / 2, recall 1 / 1, hmean 2 * 0.5 * 1 / 1.5, as json.dumps writes the script's dict
    assert capsys.readouterr().out.strip().splitlines()[-1] == \
        'Calculated!{"precision": 0.5, "recall": 1.0, "hmean": 0.6666666666666666, "AP": 0}'
    # nothing detected anywhere: the script's integer zeros
    empty = write_folder(tmp_path / 'empty', {})
    assert main(['--gt', gt, '--submission', empty]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == \
        'Calculated!{"precision": 0, "recall": 0.0, "hmean": 0, "AP": 0}'


def test_a_quoted_dont_care_ground_truth_is_dont_care(tmp_path):
    # The official script unquotes transcriptions: "###" is don't care, so a detection on it is not counted.
    gt = write_folder(tmp_path / 'gt',
                      {'gt_img_1.txt': '0,0,100,0,100,20,0,20,hello\n200,0,240,0,240,10,200,10,"###"\n'})
    res = write_folder(tmp_path / 'res', {'res_img_1.txt': '0,0,100,0,100,20,0,20\n200,0,240,0,240,10,200,10\n'})
    assert score(gt, res)['method']['precision'] == 1.0


def test_drop_switch_gives_the_original_dbnet_numbers(tmp_path):
    gt = write_folder(tmp_path / 'gt', GT_FILES)
    res = write_folder(tmp_path / 'res', RES_FILES)
    dropped = score(gt, res, invalid_polygons='drop')
    # both invalid detections left out: image 1 matched 1 of 1 detection, image 2 no detection
    assert dropped['method']['precision'] == 1.0 and dropped['method']['recall'] == 1 / 3
    assert dropped['per_image']['img_2']['det_care'] == 0


def test_scores_and_spaces_and_crlf_in_result_lines(tmp_path):
    gt = write_folder(tmp_path / 'gt', {'gt_img_1.txt': GT_1})
    res = write_folder(tmp_path / 'res', {'res_img_1.txt': '\ufeff 0, 0,100,0,100,20,0,20 ,0.91\r\n\r\n'})
    assert score(gt, res)['method']['hmean'] == 1.0
    assert parse_result_text('1,2,3,4,5,6,0.5\n', 'f') == [{'points': [[1, 2], [3, 4], [5, 6]], 'score': 0.5}]


@pytest.mark.parametrize('line, message', [
    ('0,0,10,0,10,10,abc', "res_img_1.txt:2: 'abc' is not a number"),
    ('0,0,10,0,10,10,nan,0', 'res_img_1.txt:2: non-finite'),
    ('0,0,10,0,10,10,0,inf', 'res_img_1.txt:2: non-finite'),
    ('0,0,10,0,10,10,7', 'res_img_1.txt:2: odd number of coordinates'),
    ('0,0,10,0,0.5', 'res_img_1.txt:2: fewer than 3 points'),
    ('0,0,10,0', 'res_img_1.txt:2: fewer than 3 points'),
])
def test_malformed_result_lines_name_file_and_line(tmp_path, capsys, line, message):
    gt = write_folder(tmp_path / 'gt', {'gt_img_1.txt': GT_1})
    res = write_zip(tmp_path / 'res.zip', {'res_img_1.txt': '0,0,100,0,100,20,0,20\n' + line + '\n'})
    assert main(['--gt', gt, '--submission', res]) == 2
    error = capsys.readouterr().err
    assert error.startswith('error: ') and message in error and 'res.zip:res_img_1.txt' in error


def test_submission_files_must_belong_to_images_with_ground_truth(tmp_path, capsys):
    gt = write_folder(tmp_path / 'gt', {'gt_img_1.txt': GT_1})
    res = write_folder(tmp_path / 'res', {'res_img_1.txt': RES_1, 'res_img_9.txt': ''})
    assert main(['--gt', gt, '--submission', res]) == 2
    assert 'res_img_9.txt: image img_9 has no ground truth' in capsys.readouterr().err
    other = write_folder(tmp_path / 'other', {'res_img_1.txt': RES_1, 'notes.txt': ''})
    assert main(['--gt', gt, '--submission', other]) == 2
    assert 'notes.txt: not a result file' in capsys.readouterr().err
    assert main(['--gt', str(tmp_path / 'missing'), '--submission', other]) == 2
    assert 'no such folder or zip file' in capsys.readouterr().err


def test_ground_truth_errors_name_the_zip_member(tmp_path, capsys):
    gt = write_zip(tmp_path / 'gt.zip', {'gt_img_1.txt': '0,0,100,0,100,20,0\n'})
    res = write_folder(tmp_path / 'res', {})
    assert main(['--gt', gt, '--submission', res]) == 2
    assert 'gt.zip:gt_img_1.txt:1' in capsys.readouterr().err


def test_other_ground_truth_formats_and_deteval(tmp_path, capsys):
    # Total-Text naming (poly_gt_<stem>.txt) with DetEval: one detection on the ground truth exactly
    record = "x: [[0 100 100 0]], y: [[0 0 20 20]], ornt: [u'h'], transcriptions: [u'hello']\n"
    gt = write_folder(tmp_path / 'gt', {'poly_gt_img11.txt': record, 'poly_gt_img12.txt': record,
                                        'readme.md': 'not ground truth'})
    res = write_folder(tmp_path / 'res', {'res_img11.txt': '0,0,100,0,100,20,0,20,0.9\n'})
    assert main(['--gt', gt, '--submission', res, '--protocol', 'deteval', '--gt_format', 'totaltext']) == 0
    output = capsys.readouterr().out
    # img11: one-to-one (recall 1, precision 1); img12: missed. DetEval sums: recall 1 / 2, precision 1 / 1
    assert final_line(output) == {'precision': 1.0, 'recall': 0.5, 'hmean': pytest.approx(2 / 3)}
    assert 'note: 1 file(s)' in output and 'readme.md' in output
    assert 'scored 2 images (deteval): 1 with a result file, 1 without one' in output
    # CTW1500 test naming (<stem>.txt, absolute coordinates) with the IoU protocol
    gt = write_folder(tmp_path / 'ctw', {'1001.txt': '0,0,100,0,100,20,0,20\n'})
    res = write_folder(tmp_path / 'ctw_res', {'res_1001.txt': '0,0,50,0,100,0,100,20,50,20,0,20\n'})
    assert score(gt, res, gt_format='ctw1500')['method']['hmean'] == 1.0


def test_bad_switches_are_errors(tmp_path, capsys):
    gt = write_folder(tmp_path / 'gt', {'gt_img_1.txt': GT_1})
    with pytest.raises(ValueError, match='gt_format'):
        score(gt, gt, gt_format='paddle')
    with pytest.raises(SystemExit):
        main(['--gt', gt, '--submission', gt, '--invalid_polygons', 'keep'])


def test_runs_as_a_module(tmp_path):
    gt = write_zip(tmp_path / 'gt.zip', GT_FILES)
    res = write_zip(tmp_path / 'res.zip', RES_FILES)
    completed = subprocess.run([sys.executable, '-m', 'tools.score', '--gt', gt, '--submission', res],
                               cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert final_line(completed.stdout)['precision'] == pytest.approx(2 / 3)


def test_deteval_version_switch(tmp_path, capsys):
    # the DetEval docstring's case: ground truths [0,100]x[0,20] and [101,109]x[2,18], one detection
    # [0,110]x[0,20]: the current script counts a merge (P 0.8, R 0.8), the pre-2019 one a one-to-one (P 1, R 0.5)
    gt = write_folder(tmp_path / 'gt', {'img_1.jpg.txt': '0,0,100,0,100,20,0,20,a\n101,2,109,2,109,18,101,18,b\n'})
    res = write_folder(tmp_path / 'res', {'res_img_1.txt': '0,0,110,0,110,20,0,20\n'})
    current = score(gt, res, protocol='deteval')['method']
    assert (current['precision'], current['recall']) == pytest.approx((0.8, 0.8))
    assert main(['--gt', gt, '--submission', res, '--protocol', 'deteval', '--deteval_version', 'pre-2019']) == 0
    assert final_line(capsys.readouterr().out) == {'precision': 1.0, 'recall': 0.5, 'hmean': pytest.approx(2 / 3)}


def test_ground_truth_without_any_ground_truth_file_is_an_error(tmp_path, capsys):
    gt = write_folder(tmp_path / 'gt', {'readme.md': 'nothing'})
    res = write_folder(tmp_path / 'res', {})
    assert main(['--gt', gt, '--submission', res]) == 2
    assert 'no file named as icdar2015 ground truth' in capsys.readouterr().err
