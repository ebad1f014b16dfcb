"""tools.score on untrusted input (issue 25): zip bombs, lying zip headers, too many members, too many lines
and bytes are refused quickly, naming the file and the limit; a large result file scores fast and gives the
numbers of intersecting every pair."""
import io
import struct
import time
import tracemalloc
import zipfile

import numpy as np
import pytest
import shapely

from structure.measurers.protocols.icdar2015_eval import DetectionIoUEvaluator
from structure.measurers.protocols.icdar2015_eval.iou import _intersection_areas, _official_geometry, _valid_only
from tools.score import DEFAULT_LIMITS, Limits, ScoreError, count_directory_entries, main, parse_result_points, \
    parse_result_text, read_limited, score, zip_directory_size

GT_1 = '0,0,100,0,100,20,0,20,hello\n'
BOMB_BYTES = 256 << 20  # newlines: about 260 kB compressed, four times the default limit of one file


def write_folder(path, files):
    path.mkdir()
    for name, text in files.items():
        (path / name).write_text(text)
    return str(path)


@pytest.fixture(scope='module')
def bomb_zip(module_tmp):
    """A zip of one result file of BOMB_BYTES newlines (honest header), and its bytes."""
    path = module_tmp('bomb') / 'bomb.zip'
    with zipfile.ZipFile(path, 'w', zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        with archive.open('res_img_1.txt', 'w') as member:
            chunk = b'\n' * (1 << 20)
            for _ in range(BOMB_BYTES >> 20):
                member.write(chunk)
    return path


def refused_quickly(capsys, argv, seconds=30.0, peak_bytes=32 << 20):
    """main(argv) returns 2 within ``seconds`` and allocating at most ``peak_bytes``; its error message. The
    memory bound is what tells a streaming read from a whole one (tracemalloc: the same on any machine); the time
    bound only catches the old minutes (130 s for the 256 MiB bomb), with a wide margin for a loaded CI machine."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        assert main(argv) == 2
    finally:
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert elapsed < seconds, elapsed
    assert peak < peak_bytes, peak
    error = capsys.readouterr().err
    assert error.startswith('error: ')
    return error


def test_zip_bomb_is_refused_from_its_header_before_inflating(tmp_path, capsys, bomb_zip):
    assert bomb_zip.stat().st_size < 2 << 20
    gt = write_folder(tmp_path / 'gt', {'gt_img_1.txt': GT_1})
    error = refused_quickly(capsys, ['--gt', gt, '--submission', str(bomb_zip)])
    assert f'{bomb_zip}:res_img_1.txt: {BOMB_BYTES} bytes decompressed, more than the limit of ' \
           f'{DEFAULT_LIMITS.max_file_bytes} bytes per file (--max_file_bytes)' in error


def test_zip_bomb_with_a_lying_header_is_refused(tmp_path, capsys, bomb_zip):
    # the same archive, its headers claiming 1000 bytes: reading stops at the claim and the CRC tells
    data = bytearray(bomb_zip.read_bytes())
    local = data.index(b'PK\x03\x04')
    central = data.index(b'PK\x01\x02')
    struct.pack_into('<I', data, local + 22, 1000)
    struct.pack_into('<I', data, central + 24, 1000)
    liar = tmp_path / 'liar.zip'
    liar.write_bytes(bytes(data))
    gt = write_folder(tmp_path / 'gt', {'gt_img_1.txt': GT_1})
    error = refused_quickly(capsys, ['--gt', gt, '--submission', str(liar)])
    assert f'{liar}:res_img_1.txt: cannot be read from the zip file' in error


def test_bytes_are_counted_while_reading_whatever_the_header_says():
    limits = Limits(max_file_bytes=5000)
    with pytest.raises(ScoreError, match=r'sub.zip:res_img_1.txt: more than the limit of 5000 bytes per file '
                                         r'\(--max_file_bytes\)'):
        read_limited(io.BytesIO(b'x' * 20000), 'sub.zip:res_img_1.txt', limits, declared=10)
    budget = [0]
    limits = Limits(max_total_bytes=3000)
    read_limited(io.BytesIO(b'x' * 2000), 'a', limits, budget=budget)
    with pytest.raises(ScoreError, match=r"b: the files read so far hold more than the limit of 3000 bytes in "
                                         r"total \(--max_total_bytes\)"):
        read_limited(io.BytesIO(b'x' * 2000), 'b', limits, budget=budget)


def test_too_many_lines_are_refused_at_the_default_limit(tmp_path, capsys):
    gt = write_folder(tmp_path / 'gt', {'gt_img_1.txt': GT_1})
    submission = tmp_path / 'res.zip'
    with zipfile.ZipFile(submission, 'w', zipfile.ZIP_DEFLATED) as archive:
        archive.writestr('res_img_1.txt', '\n' * (DEFAULT_LIMITS.max_lines + 1))
    error = refused_quickly(capsys, ['--gt', gt, '--submission', str(submission)])
    assert f'res.zip:res_img_1.txt: more than the limit of {DEFAULT_LIMITS.max_lines} lines per file ' \
           '(--max_lines)' in error
    # the option raises it
    assert main(['--gt', gt, '--submission', str(submission), '--max_lines', str(DEFAULT_LIMITS.max_lines + 1)]) == 0


def test_too_many_members_are_refused(tmp_path, capsys):
    gt = write_folder(tmp_path / 'gt', {'gt_img_1.txt': GT_1})
    submission = tmp_path / 'res.zip'
    with zipfile.ZipFile(submission, 'w') as archive:
        for index in range(1, 13):
            archive.writestr(f'res_img_{index}.txt', '')
    error = refused_quickly(capsys, ['--gt', gt, '--submission', str(submission), '--max_files', '10'])
    assert f'submission {submission}: 12 entries, more than the limit of 10 files (--max_files)' in error
    many_gt = write_folder(tmp_path / 'many_gt', {f'gt_img_{index}.txt': GT_1 for index in range(1, 13)})
    error = refused_quickly(capsys, ['--gt', many_gt, '--submission', str(submission), '--max_files', '11'])
    assert f'ground truth {many_gt}: 12 entries, more than the limit of 11 files (--max_files)' in error
    assert main(['--gt', many_gt, '--submission', str(submission), '--max_files', '12']) == 0


def test_total_size_is_refused_from_the_headers_and_folder_files_by_their_size(tmp_path, capsys):
    gt = write_folder(tmp_path / 'gt', {'gt_img_1.txt': GT_1, 'gt_img_2.txt': GT_1})
    line = '0,0,100,0,100,20,0,20\n'
    submission = tmp_path / 'res.zip'
    with zipfile.ZipFile(submission, 'w') as archive:
        archive.writestr('res_img_1.txt', line * 100)
        archive.writestr('res_img_2.txt', line * 100)
    error = refused_quickly(capsys, ['--gt', gt, '--submission', str(submission), '--max_total_bytes', '3000'])
    assert f'submission {submission}: its files declare {2 * 100 * len(line)} bytes in total, more than the ' \
           'limit of 3000 bytes (--max_total_bytes)' in error
    folder = write_folder(tmp_path / 'res', {'res_img_1.txt': line * 100})
    error = refused_quickly(capsys, ['--gt', gt, '--submission', folder, '--max_file_bytes', '1000'])
    assert f'res_img_1.txt: {100 * len(line)} bytes decompressed, more than the limit of 1000 bytes' in error
    assert main(['--gt', gt, '--submission', str(submission)]) == 0


def test_ground_truth_is_read_within_the_limits_too(tmp_path, capsys):
    gt = tmp_path / 'gt.zip'
    with zipfile.ZipFile(gt, 'w') as archive:
        archive.writestr('gt_img_1.txt', GT_1 * 50)
    res = write_folder(tmp_path / 'res', {})
    error = refused_quickly(capsys, ['--gt', str(gt), '--submission', res, '--max_lines', '10'])
    assert f'{gt}:gt_img_1.txt: more than the limit of 10 lines per file (--max_lines)' in error


def test_bad_limit_values_are_errors(tmp_path, capsys):
    gt = write_folder(tmp_path / 'gt', {'gt_img_1.txt': GT_1})
    assert main(['--gt', gt, '--submission', gt, '--max_lines', '0']) == 2
    assert 'max_lines: expected a positive integer, got 0' in capsys.readouterr().err


# ------------------------------------------------------------------ parsing and scoring many detections

def test_vectorised_parsing_reads_what_the_line_parser_reads():
    cases = ['1,2,3,4,5,6\n7,8,9,10,11,12\n', ' 1, 2 ,3,4,5,6,0.5\r\n\r\n  \n7,8,9,10,11,12,1\n', '1.5,2e1,3,4,5,6',
             '', '\n\n']
    for text in cases:
        expected = [item['points'] for item in parse_result_text(text, 'f')]
        got = parse_result_points(text, 'f')
        assert isinstance(got, np.ndarray)
        assert [points.tolist() for points in got] == expected
    # mixed point counts and Python-only spellings go line by line, with the same result
    for text in ['1,2,3,4,5,6\n1,2,3,4,5,6,7,8\n', '1_0,2,3,4,5,6\n']:
        assert [points.tolist() for points in parse_result_points(text, 'f')] == \
            [item['points'] for item in parse_result_text(text, 'f')]
    for text, message in [('1,2,3,4,5,6\n1,2,3,4,5,nan\n', 'f:2: non-finite'), ('1,2,3,4,5,6,7\n', 'f:1: odd'),
                          ('1,2,3,4\n', 'f:1: fewer than 3 points'), ('1,2,3,4,5,x\n', "f:1: 'x' is not a number")]:
        with pytest.raises(ScoreError, match=message):
            parse_result_points(text, 'f')


def _random_polygons(rng, count, points, spread):
    centres = rng.uniform(0, spread, (count, 1, 2))
    return centres + rng.uniform(-30, 30, (count, points, 2)).round()


def every_pair_tables(gt, det, invalid_polygons, ignore, area_precision_constraint=0.5):
    """The IoU table and the detections' don't-care flags from every polygon built and every pair intersected."""
    if invalid_polygons == 'official':
        gt_regions, gt_area = _official_geometry(gt, 'gt')
        det_regions, det_area = _official_geometry(det, 'pred')  # needed=None: every detection's region
    else:
        gt_regions, gt_area = _valid_only(gt)[:2]
        det_regions, det_area = _valid_only(det)[:2]
    inter = shapely.area(shapely.intersection(gt_regions[:, None], det_regions[None, :]))
    union = gt_area[:, None] + det_area[None, :] - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union != 0)
    covered = np.divide(inter[ignore], det_area[None, :], out=np.zeros_like(inter[ignore]),
                        where=det_area[None, :] != 0)
    return iou, (covered > area_precision_constraint).any(axis=0), inter


@pytest.mark.parametrize('invalid_polygons', ['official', 'drop'])
def test_intersections_of_meeting_boxes_only_equal_intersecting_every_pair(invalid_polygons):
    # review item 10: prepare()'s own path (boxes from the points, only the detections meeting a ground truth
    # built, only the meeting pairs intersected) against every polygon built and every pair intersected; random
    # quadrilaterals, many self-intersecting or degenerate, most pairs far apart
    rng = np.random.default_rng(7)
    gt = list(_random_polygons(rng, 15, 4, 400))
    det = list(_random_polygons(rng, 300, 4, 400)) + [np.array([[5.0, 5], [5, 5], [5, 5], [5, 5]])]
    det += [points + rng.uniform(-2, 2, points.shape).round() for points in gt]  # matches and don't-care ones
    ignore = np.arange(len(gt)) % 5 == 0
    iou, det_dont_care, every_pair = every_pair_tables(gt, det, invalid_polygons, ignore)
    evaluator = DetectionIoUEvaluator(invalid_polygons=invalid_polygons)
    gt_items = [{'points': points, 'ignore': bool(flag)} for points, flag in zip(gt, ignore)]
    for pred in ([{'points': points} for points in det], np.stack(det)):
        tables = evaluator.prepare(gt_items, pred)
        assert np.array_equal(tables.iou, iou)
        assert np.array_equal(tables.det_dont_care, det_dont_care) and det_dont_care.any()
    meeting = _intersection_areas(*[_official_geometry(side, name)[0] for side, name in ((gt, 'gt'), (det, 'pred'))]
                                  )[0]
    assert 0 < len(meeting) < every_pair.size / 4 and (every_pair > 0).sum() > 10 and (iou > 0.5).sum() > 0


def test_array_detections_score_as_the_dict_ones():
    rng = np.random.default_rng(3)
    gt_points = _random_polygons(rng, 12, 4, 200)
    gt = [{'points': points, 'ignore': index % 4 == 0} for index, points in enumerate(gt_points)]
    # near copies of the ground truth (matches, don't-care detections) among random ones
    det = np.concatenate([gt_points + rng.uniform(-2, 2, gt_points.shape).round(), _random_polygons(rng, 400, 4, 200)])
    for invalid_polygons in ('official', 'drop'):
        evaluator = DetectionIoUEvaluator(invalid_polygons=invalid_polygons)
        as_dicts = evaluator.evaluate_image(gt, [{'points': points} for points in det])
        as_array = evaluator.evaluate_image(gt, det)
        assert as_dicts == as_array and as_dicts['matched'] > 0


def test_many_detections_far_from_the_ground_truth_score_in_seconds(tmp_path, monkeypatch):
    # 100 ground truths x 100,000 detections: intersecting every pair (10**7) took minutes and gigabytes
    rng = np.random.default_rng(0)
    gt_lines = ''.join(f'{x},{y},{x + 40},{y},{x + 40},{y + 10},{x},{y + 10},w\n'
                       for x, y in rng.integers(0, 1000, (100, 2)))
    x = rng.integers(2000, 3000, 100_000)
    y = rng.integers(0, 1000, 100_000)
    det = np.stack([x, y, x + 30, y, x + 30, y + 9, x, y + 9], 1)
    gt = write_folder(tmp_path / 'gt', {'gt_img_1.txt': gt_lines})
    (tmp_path / 'res').mkdir()
    np.savetxt(tmp_path / 'res' / 'res_img_1.txt', det, fmt='%d', delimiter=',')
    # what keeps it fast, counted (not timed: a loaded 2-core CI machine): no pair intersected and no detection
    # built as a polygon, as none meets a ground truth's box
    from structure.measurers.protocols.icdar2015_eval import iou
    intersected, built = [], []
    intersection_areas, official_geometry = iou._intersection_areas, iou._official_geometry

    def counting_intersections(gt_regions, det_regions, meets=None):
        found = intersection_areas(gt_regions, det_regions, meets)
        intersected.append(len(found[0]))
        return found

    def counting_geometry(point_arrays, side, needed=None, stacked=None):
        regions, areas = official_geometry(point_arrays, side, needed, stacked)
        if side == 'pred':
            built.append(sum(region is not None for region in regions))
        return regions, areas
    monkeypatch.setattr(iou, '_intersection_areas', counting_intersections)
    monkeypatch.setattr(iou, '_official_geometry', counting_geometry)
    start = time.perf_counter()
    scored = score(gt, str(tmp_path / 'res'))
    assert time.perf_counter() - start < 120.0  # about 1 s here; intersecting every pair took minutes
    assert intersected == [0] and built == [0]
    assert scored['per_image']['img_1']['det_care'] == 100_000 and scored['per_image']['img_1']['matched'] == 0


@pytest.mark.parametrize('version', ['current', 'pre-2019'])
def test_deteval_tables_and_matching_equal_intersecting_every_pair(version):
    from structure.measurers.protocols.deteval import DetEvalEvaluator
    from structure.measurers.protocols.deteval.deteval import _raw_polygons, _repaired, _safe_divide
    rng = np.random.default_rng(11)
    gt_points = _random_polygons(rng, 12, 4, 300)
    det = np.concatenate([gt_points + rng.uniform(-3, 3, gt_points.shape).round(), _random_polygons(rng, 300, 4, 300),
                          np.array([[[5.0, 5], [5, 5], [5, 5], [5, 5]]])])
    gt = [{'points': points, 'ignore': index % 5 == 0} for index, points in enumerate(gt_points)]
    evaluator = DetEvalEvaluator(version=version)
    tables = evaluator.prepare(gt, [{'points': points} for points in det])
    # the former computation: every (ground truth, detection) pair intersected
    cared = [points for index, points in enumerate(gt_points) if index % 5]
    gt_raw, det_raw = _raw_polygons(cared), _raw_polygons(list(det))
    inter = shapely.area(shapely.intersection(_repaired(gt_raw)[:, None], _repaired(det_raw)[None]))
    assert np.array_equal(tables.sigma, np.round(_safe_divide(inter, shapely.area(gt_raw)[:, None]), 2))
    assert np.array_equal(tables.tau, np.round(_safe_divide(inter, shapely.area(det_raw)[None, :]), 2))
    dont_care = _repaired(_raw_polygons([points for index, points in enumerate(gt_points) if index % 5 == 0]))
    covered = shapely.area(shapely.intersection(dont_care[:, None], _repaired(det_raw)[None]))
    assert np.array_equal(tables.det_dont_care, (covered / (shapely.area(det_raw)[None] + 1.0) > 0.5).any(axis=0))
    assert tables.det_dont_care.any() and (tables.sigma > 0.7).any()
    # the merge step's selection of detections, done before its loop, gives the loop's result
    result = evaluator.match(tables)
    assert result['one_to_one'] > 0


def end_records(count, directory_size, zip64=False):
    """Only the end of a zip file: its end of central directory record (and ZIP64's), declaring ``count``
    entries in a directory of ``directory_size`` bytes (what a zip of that many entries ends with)."""
    if not zip64:
        return struct.pack('<4s4H2LH', b'PK\x05\x06', 0, 0, count, count, directory_size, 0, 0)
    record = struct.pack('<4sQ2H2L4Q', b'PK\x06\x06', 44, 45, 45, 0, 0, count, count, directory_size, 0)
    locator = struct.pack('<4sLQL', b'PK\x06\x07', 0, 0, 1)
    return record + locator + struct.pack('<4s4H2LH', b'PK\x05\x06', 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF,
                                          0xFFFFFFFF, 0)


def test_the_entry_count_is_read_from_the_end_record_before_the_directory(tmp_path, capsys, monkeypatch):
    # review item 8: zipfile.ZipFile reads the whole central directory (10**7 entries: gigabytes) before the
    # count could be checked; the end record's count and size are checked first, and ZipFile never runs here
    gt = write_folder(tmp_path / 'gt', {'gt_img_1.txt': GT_1})
    honest = tmp_path / 'res.zip'
    with zipfile.ZipFile(honest, 'w') as archive:
        for index in range(1, 13):
            archive.writestr(f'res_img_{index}.txt', '')
    zip64 = tmp_path / 'zip64.zip'
    zip64.write_bytes(end_records(10 ** 7, 46 * 10 ** 7, zip64=True))
    lying = tmp_path / 'lying.zip'
    lying.write_bytes(end_records(1, 46 * 10 ** 7))

    def refused(*args, **kwargs):
        raise AssertionError('zipfile.ZipFile read the central directory')
    monkeypatch.setattr(zipfile, 'ZipFile', refused)
    error = refused_quickly(capsys, ['--gt', gt, '--submission', str(honest), '--max_files', '10'])
    assert f'submission {honest}: 12 entries, more than the limit of 10 files (--max_files)' in error
    error = refused_quickly(capsys, ['--gt', gt, '--submission', str(zip64)])
    assert f'submission {zip64}: {10 ** 7} entries, more than the limit of 100000 files (--max_files)' in error
    error = refused_quickly(capsys, ['--gt', gt, '--submission', str(lying)])
    assert f'submission {lying}: a central directory of {46 * 10 ** 7} bytes, more than 1 KiB per entry of the ' \
           'limit of 100000 files (--max_files)' in error


def test_a_folders_ground_truth_is_read_once_by_its_reader_within_the_limits(tmp_path, capsys, monkeypatch):
    # review item 8: path() read every ground-truth file of a folder in full before the reader read it again;
    # now its size comes from the file system and its lines are counted by the reader
    import tools.score as score_module
    gt = write_folder(tmp_path / 'gt', {'gt_img_1.txt': GT_1 * 20, 'gt_img_2.txt': GT_1})
    res = write_folder(tmp_path / 'res', {'res_img_1.txt': '0,0,100,0,100,20,0,20\n'})
    read = []

    def recording(stream, display, *args, **kwargs):
        read.append(display)
        return read_limited(stream, display, *args, **kwargs)
    monkeypatch.setattr(score_module, 'read_limited', recording)
    assert score(gt, res)['per_image']['img_1']['matched'] == 1
    assert read == [str(tmp_path / 'res' / 'res_img_1.txt')]  # the result file only
    error = refused_quickly(capsys, ['--gt', gt, '--submission', res, '--max_lines', '10'])
    assert f'{tmp_path / "gt" / "gt_img_1.txt"}: more than the limit of 10 lines per file (--max_lines)' in error
    error = refused_quickly(capsys, ['--gt', gt, '--submission', res, '--max_file_bytes', str(len(GT_1) * 20 - 1)])
    assert f'gt_img_1.txt: {len(GT_1) * 20} bytes decompressed, more than the limit of' in error
    error = refused_quickly(capsys, ['--gt', gt, '--submission', res, '--max_total_bytes', str(len(GT_1) * 20)])
    assert f'its files hold {len(GT_1) * 21} bytes in total, more than the limit of' in error


def zip64_archive(path, members):
    """A zip of ``members`` (name -> text) that ends as a ZIP64 archive does: its ZIP64 end record and locator,
    then an end record whose count, size and offset are the 0xFFFF / 0xFFFFFFFF placeholders."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, 'w') as archive:
        for name, text in members.items():
            archive.writestr(name, text)
    data = buffer.getvalue()
    end = data.rfind(b'PK\x05\x06')
    fields = struct.unpack('<4s4H2LH', data[end:end + 22])
    count, size, offset = fields[4], fields[5], fields[6]
    record = struct.pack('<4sQ2H2L4Q', b'PK\x06\x06', 44, 45, 45, 0, 0, count, count, size, offset)
    locator = struct.pack('<4sLQL', b'PK\x06\x07', 0, end, 1)
    path.write_bytes(data[:end] + record + locator + struct.pack('<4s4H2LH', b'PK\x05\x06', 0, 0, 0xFFFF, 0xFFFF,
                                                                 0xFFFFFFFF, 0xFFFFFFFF, 0))
    return path


def empty_results_zip(count):
    """The bytes (a bytearray, to edit) of a zip of ``count`` empty result files res_img_1.txt .. res_img_N.txt."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, 'w') as archive:
        for index in range(1, count + 1):
            archive.writestr(f'res_img_{index}.txt', '')
    return bytearray(buffer.getvalue())


def spy_on_zipfile(monkeypatch):
    """The list to which every ``zipfile.ZipFile(...)`` from now on appends its first argument (the real class
    still opens it): a test asserts what was opened, or that nothing was."""
    opened = []
    real_zipfile = zipfile.ZipFile

    def spying(*args, **kwargs):
        opened.append(args[0])
        return real_zipfile(*args, **kwargs)
    monkeypatch.setattr(zipfile, 'ZipFile', spying)
    return opened


def test_the_end_record_is_the_one_zipfile_uses_and_a_zip_without_one_is_refused(tmp_path, capsys, monkeypatch):
    # second review item 1: the last 'PK\5\6' was taken as the end record; written into the directory-offset field
    # it made the search give up (no record whole after it) and skip --max_files, while zipfile, which looks at
    # the last 22 bytes first, opened the file. The record is found as zipfile finds it; no record: refused
    gt = write_folder(tmp_path / 'gt', {'gt_img_1.txt': GT_1})
    data = empty_results_zip(12)
    data[-6:-2] = b'PK\x05\x06'  # the end record's directory-offset field
    edited = tmp_path / 'edited.zip'
    edited.write_bytes(bytes(data))
    assert len(zipfile.ZipFile(edited).infolist()) == 12  # zipfile still opens it
    garbage = tmp_path / 'garbage.zip'
    garbage.write_bytes(b'not a zip, but PK\x05\x06 near its end')
    opened = spy_on_zipfile(monkeypatch)
    error = refused_quickly(capsys, ['--gt', gt, '--submission', str(edited), '--max_files', '10'])
    assert f'submission {edited}: 12 entries, more than the limit of 10 files (--max_files)' in error
    assert opened == []  # refused by the end record, before zipfile read the directory
    error = refused_quickly(capsys, ['--gt', gt, '--submission', str(garbage)])
    assert f'submission {garbage}: neither a folder nor a zip file (no end of central directory record)' in error
    assert opened == []


@pytest.mark.parametrize('offset', [2 ** 63 - 1, 2 ** 64 - 1])
def test_a_zip64_end_record_is_read_before_its_locator_as_zipfile_reads_it(tmp_path, capsys, offset):
    # second review item 2: the ZIP64 record was read at the locator's offset (2**63 - 1: a raw OSError; 2**64 - 1:
    # an error naming no file), and max(classic, ZIP64) refused a ZIP64 archive for its classic placeholders.
    # zipfile (3.11) reads it right before the locator and uses its values: so does the check now
    gt = write_folder(tmp_path / 'gt', {'gt_img_1.txt': GT_1, 'gt_img_2.txt': GT_1})
    far = tmp_path / 'far.zip'
    data = end_records(10 ** 7, 46 * 10 ** 7, zip64=True)
    far.write_bytes(data[:56] + struct.pack('<4sLQL', b'PK\x06\x07', 0, offset, 1) + data[76:])
    error = refused_quickly(capsys, ['--gt', gt, '--submission', str(far)])
    assert f'submission {far}: {10 ** 7} entries, more than the limit of 100000 files (--max_files)' in error
    cramped = tmp_path / 'cramped.zip'
    cramped.write_bytes(data[56:])  # a locator with no room for the ZIP64 record before it: zipfile's OSError
    error = refused_quickly(capsys, ['--gt', gt, '--submission', str(cramped)])
    assert f'submission {cramped}: cannot read its zip end record: ' in error
    archive = zip64_archive(tmp_path / 'zip64.zip', {'res_img_1.txt': '0,0,100,0,100,20,0,20\n',
                                                     'res_img_2.txt': ''})
    assert [member.filename for member in zipfile.ZipFile(archive).infolist()] == ['res_img_1.txt', 'res_img_2.txt']
    assert main(['--gt', gt, '--submission', str(archive), '--max_files', '10']) == 0
    assert score(gt, str(archive), limits=Limits(max_files=10))['per_image']['img_1']['matched'] == 1


@pytest.mark.parametrize('separator', ['\r', '\r\n', '\u2028'])
def test_the_line_limit_counts_every_line_boundary_the_reader_splits_at(tmp_path, capsys, separator):
    # second review item 7: the ground-truth reader counted only '\n' against --max_lines, while it splits the text
    # with str.splitlines ('\r', '\u2028', ...): a file of '\r'-ended lines passed any line limit
    lines = separator.join([GT_1.strip()] * 20) + separator
    gt_folder = tmp_path / 'gt'
    gt_folder.mkdir()
    (gt_folder / 'gt_img_1.txt').write_bytes(lines.encode('utf-8'))
    gt_zip = tmp_path / 'gt.zip'
    with zipfile.ZipFile(gt_zip, 'w') as archive:
        archive.writestr('gt_img_1.txt', lines.encode('utf-8'))
    res = write_folder(tmp_path / 'res', {'res_img_1.txt': '0,0,100,0,100,20,0,20\n'})
    for gt, display in ((str(gt_folder), str(gt_folder / 'gt_img_1.txt')), (str(gt_zip), f'{gt_zip}:gt_img_1.txt')):
        error = refused_quickly(capsys, ['--gt', gt, '--submission', res, '--max_lines', '10'])
        assert f'{display}: more than the limit of 10 lines per file (--max_lines)' in error
        assert main(['--gt', gt, '--submission', res, '--max_lines', '20']) == 0
        capsys.readouterr()


def test_a_zip_whose_end_record_understates_its_entries_is_refused_by_walking_its_directory(tmp_path, capsys,
                                                                                             monkeypatch):
    # second review item 5: an end record declaring 1 entry for a directory of 12 passed --max_files 10 (its size is
    # far below 1 KiB per entry) and zipfile then built every entry; the directory's 46-byte headers are now walked
    # and counted, up to max_files + 1, before zipfile opens it
    gt = write_folder(tmp_path / 'gt', {'gt_img_1.txt': GT_1})
    data = empty_results_zip(12)
    end = data.rfind(b'PK\x05\x06')
    struct.pack_into('<2H', data, end + 8, 1, 1)  # entries on this disk, entries in total
    lying = tmp_path / 'lying.zip'
    lying.write_bytes(bytes(data))
    assert len(zipfile.ZipFile(lying).infolist()) == 12  # what zipfile builds, whatever the count says
    for limit, refused in ((10, True), (11, True), (12, False)):
        opened = spy_on_zipfile(monkeypatch)
        if refused:
            error = refused_quickly(capsys, ['--gt', gt, '--submission', str(lying), '--max_files', str(limit)])
            assert f'submission {lying}: its central directory holds more than {limit} entries (its end record ' \
                   f'declares 1), more than the limit of {limit} files (--max_files)' in error
            assert opened == []
        else:
            assert main(['--gt', gt, '--submission', str(lying), '--max_files', str(limit)]) == 2  # no gt for img_2
            assert 'image img_2 has no ground truth' in capsys.readouterr().err and opened == [str(lying)]
        monkeypatch.undo()
    # the walk starts where zipfile infers the directory's start, before the ZIP64 records too
    zip64 = zip64_archive(tmp_path / 'zip64.zip', {f'res_img_{index}.txt': '' for index in range(1, 13)})
    count, size, start = zip_directory_size(str(zip64))
    assert count == 12 and count_directory_entries(str(zip64), start, size, 100) == 12
    assert count_directory_entries(str(zip64), start, size, 5) == 5
    _, size, start = zip_directory_size(str(lying))
    assert count_directory_entries(str(lying), start, size, 100) == 12
