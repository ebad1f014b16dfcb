"""One path from an image to detections: eval.py, demo.py and the Python API agree on the same pixels, and the
demo's outputs are safe (issue 14)."""
from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

import demo
import eval as eval_script
from inference_helpers import REPO_ROOT, save_checkpoint, tiny_model, write_experiment

THRESH, BOX_THRESH = 0.5, 0.4
SIZES = {'wide': (70, 200), 'tall': (210, 90), 'square': (128, 128), 'panorama': (40, 330), 'tiny': (9, 13)}
ORIENTATIONS = (1, 3, 6, 8)


def _scene(height, width, seed):
    """Dark text-like bars on a light noisy background, so the random model gives detections."""
    rng = np.random.default_rng(seed)
    image = rng.integers(170, 255, (height, width, 3), dtype=np.uint8)
    for _ in range(3):
        y, x = int(rng.integers(0, max(1, height - 8))), int(rng.integers(0, max(1, width - 20)))
        image[y:y + 8, x:x + 20] = rng.integers(0, 60, 3, dtype=np.uint8)
    return image


# oneDNN's results may differ in the last bits between thread counts, and --threads auto (the default) changes the
# count with the machine's load: comparisons of exact result lines fix it
FIXED_THREADS = ['--threads', '1']


@pytest.fixture(scope='module')
def setup(module_tmp):
    """A data set (converted ground truth) of PNGs of several aspect ratios, JPEGs with EXIF orientations 1, 3, 6
    and 8, and for each JPEG its displayed pixels as a PNG."""
    tmp = module_tmp('consistency')
    data = tmp / 'data'
    (data / 'test_images').mkdir(parents=True)
    (data / 'test_gts').mkdir()
    names = []
    for index, (name, (height, width)) in enumerate(SIZES.items()):
        Image.fromarray(_scene(height, width, index)).save(data / 'test_images' / f'{name}.png')
        names.append(f'{name}.png')
    for orientation in ORIENTATIONS:
        stored = Image.fromarray(_scene(60, 150, 10 + orientation))
        exif = stored.getexif()
        exif[0x0112] = orientation
        tagged = data / 'test_images' / f'exif{orientation}.jpg'
        stored.save(tagged, exif=exif.tobytes(), quality=95)
        from PIL import ImageOps
        with Image.open(tagged) as opened:
            ImageOps.exif_transpose(opened).convert('RGB').save(data / 'test_images' / f'exif{orientation}_shown.png')
        names += [f'exif{orientation}.jpg', f'exif{orientation}_shown.png']
    for name in names:
        (data / 'test_gts' / f'{name}.txt').write_text('2,2,20,2,20,10,2,10,word\n')
    (data / 'test_list.txt').write_text(''.join(name + '\n' for name in names))
    experiment = write_experiment(str(tmp), str(data), thresh=THRESH, box_thresh=BOX_THRESH)
    checkpoint = save_checkpoint(tiny_model('deformable_resnet18'), str(tmp / 'model.pth'))
    return {'tmp': tmp, 'data': data, 'exp': experiment, 'ckpt': checkpoint, 'names': names}


@pytest.fixture(autouse=True)
def in_repo_root(monkeypatch, tmp_path):
    monkeypatch.chdir(REPO_ROOT)
    monkeypatch.setattr(eval_script, 'run_name', lambda args: str(tmp_path / 'run'))


def _lines(path):
    with open(path) as stream:
        return [line.strip() for line in stream if line.strip()]


@pytest.fixture(scope='module')
def eval_results(setup, module_tmp):
    result_dir = module_tmp('eval_results')
    code = eval_script.main([setup['exp'], '--resume', setup['ckpt'], '--device', 'cpu', '--image_short_side', '64',
                             '--result_dir', str(result_dir), *FIXED_THREADS])
    assert code == 0
    return {name: _lines(result_dir / f'res_{os.path.splitext(name)[0]}.txt') for name in setup['names']}


def _demo(setup, out, *extra):
    code = demo.main([setup['exp'], '--resume', setup['ckpt'], '--device', 'cpu', '--image_path',
                      str(setup['data'] / 'test_images'), '--image_short_side', '64', '--thresh', str(THRESH),
                      '--box_thresh', str(BOX_THRESH), '--result_dir', str(out), *FIXED_THREADS, *extra])
    assert code == 0
    return {name: _lines(out / f'{os.path.splitext(name)[0]}.txt') for name in setup['names']}


def test_eval_and_demo_give_identical_detections_on_the_same_pixels(setup, eval_results, tmp_path):
    shown = _demo(setup, tmp_path / 'shown')                                   # EXIF applied (a person's photo)
    stored = _demo(setup, tmp_path / 'stored', '--orientation', 'stored')     # pixels as stored, as eval.py
    assert sum(len(lines) for lines in eval_results.values()) > 10             # a test of something
    for name in SIZES:
        assert shown[f'{name}.png'] == eval_results[f'{name}.png'], name
    for orientation in ORIENTATIONS:
        tagged, displayed = f'exif{orientation}.jpg', f'exif{orientation}_shown.png'
        # the demo sees the photo as displayed: its detections are eval's on the displayed pixels
        assert shown[tagged] == eval_results[displayed], orientation
        # with --orientation stored it sees what eval.py sees
        assert stored[tagged] == eval_results[tagged], orientation
    assert any(eval_results[f'exif{o}.jpg'] != eval_results[f'exif{o}_shown.png'] for o in (3, 6, 8))


def test_python_api_gives_the_demo_detections(setup, tmp_path):
    from inference.detector import TextDetector
    from data.image_io import read_image
    detector = TextDetector(setup['exp'], setup['ckpt'], device='cpu', image_short_side=64, thresh=THRESH,
                            box_thresh=BOX_THRESH)
    demo_lines = _demo(setup, tmp_path / 'demo')
    paths = [str(setup['data'] / 'test_images' / name) for name in setup['names']]
    results = detector(paths)
    assert [result.source for result in results] == paths
    for name, result in zip(setup['names'], results):
        assert result.lines() == demo_lines[name]
        assert result.image_size == result.image.shape[:2]
        assert result.input_size == result.probability.shape and all(side % 32 == 0 for side in result.input_size)
    # an array gives what its path gives; a gray 2-D array is accepted
    path = paths[0]
    array = read_image(path, orientation='displayed')
    assert detector(array).lines() == detector(path).lines()
    assert detector(array).source == '<array 0>'
    gray = detector(array[:, :, 1])
    assert gray.image.shape == array.shape
    # box_thresh: argument > opts > file
    strict = TextDetector(setup['exp'], setup['ckpt'], image_short_side=64, thresh=THRESH, box_thresh=0.99,
                          opts=['structure.representer.box_thresh=0.1'])
    assert strict.representer.box_thresh == 0.99
    assert TextDetector(setup['exp'], setup['ckpt'], opts=['structure.representer.box_thresh=0.1']
                        ).representer.box_thresh == 0.1


def test_demo_keeps_results_of_images_sharing_a_stem_apart(setup, tmp_path):
    images = tmp_path / 'images'
    images.mkdir()
    Image.fromarray(_scene(70, 200, 1)).save(images / 'photo.jpg')
    Image.fromarray(_scene(100, 100, 2)).save(images / 'photo.png')
    Image.fromarray(_scene(100, 100, 3)).save(images / 'other.png')
    out = tmp_path / 'out'
    assert demo.main([setup['exp'], '--resume', setup['ckpt'], '--device', 'cpu', '--image_path', str(images),
                      '--image_short_side', '64', '--visualize', '--result_dir', str(out)]) == 0
    assert sorted(os.listdir(out)) == ['other.jpg', 'other.txt', 'photo_jpg.jpg', 'photo_jpg.txt', 'photo_png.jpg',
                                       'photo_png.txt']
    from inference.detector import TextDetector
    detector = TextDetector(setup['exp'], setup['ckpt'], image_short_side=64)
    assert _lines(out / 'photo_jpg.txt') == detector(str(images / 'photo.jpg')).lines()
    assert _lines(out / 'photo_png.txt') == detector(str(images / 'photo.png')).lines()


def test_demo_never_overwrites_its_inputs(setup, tmp_path, capsys):
    images = tmp_path / 'images'
    images.mkdir()
    Image.fromarray(_scene(70, 200, 1)).save(images / 'photo.jpg')
    before = (images / 'photo.jpg').read_bytes()
    code = demo.main([setup['exp'], '--resume', setup['ckpt'], '--device', 'cpu', '--image_path', str(images),
                      '--visualize', '--result_dir', str(images)])
    assert code == 2
    assert 'would overwrite the input image' in capsys.readouterr().err
    assert (images / 'photo.jpg').read_bytes() == before and sorted(os.listdir(images)) == ['photo.jpg']
    # the same folder is fine when nothing would be overwritten (only .txt results)
    assert demo.main([setup['exp'], '--resume', setup['ckpt'], '--device', 'cpu', '--image_path', str(images),
                      '--result_dir', str(images)]) == 0
    assert (images / 'photo.jpg').read_bytes() == before


def test_bad_result_dir_is_an_error_before_any_work(setup, tmp_path, capsys, monkeypatch):
    blocker = tmp_path / 'a_file'
    blocker.write_text('keep me')
    import structure.weights
    calls = []
    original = structure.weights.load_trained_model
    monkeypatch.setattr(structure.weights, 'load_trained_model', lambda *a, **k: calls.append(1) or original(*a, **k))
    image = str(setup['data'] / 'test_images' / 'wide.png')
    assert demo.main([setup['exp'], '--resume', setup['ckpt'], '--image_path', image, '--result_dir',
                      str(blocker)]) == 2
    assert 'exists and is not a directory' in capsys.readouterr().err
    assert eval_script.main([setup['exp'], '--resume', setup['ckpt'], '--result_dir', str(blocker)]) == 2
    captured = capsys.readouterr()
    assert 'exists and is not a directory' in captured.err and 'precision' not in captured.out
    assert calls == [] and blocker.read_text() == 'keep me'  # refused before the model was even loaded


def test_demo_skips_a_decompression_bomb_and_goes_on(setup, tmp_path, capsys):
    images = tmp_path / 'images'
    images.mkdir()
    Image.new('1', (16000, 12000)).save(images / 'huge.png')  # 192 megapixels, a few kB on disk
    Image.fromarray(_scene(70, 200, 1)).save(images / 'small.png')
    out = tmp_path / 'out'
    code = demo.main([setup['exp'], '--resume', setup['ckpt'], '--device', 'cpu', '--image_path', str(images),
                      '--image_short_side', '64', '--result_dir', str(out)])
    captured = capsys.readouterr()
    assert code == 0
    assert 'huge.png' in captured.out + captured.err and '1 unreadable image(s) skipped' in captured.out
    assert sorted(os.listdir(out)) == ['small.txt']


def test_eval_result_files_without_score(setup, tmp_path):
    out = tmp_path / 'res'
    assert eval_script.main([setup['exp'], '--resume', setup['ckpt'], '--device', 'cpu', '--thresh', str(THRESH),
                             '--result_dir', str(out), '--no_score']) == 0
    lines = [line for name in os.listdir(out) for line in _lines(out / name)]
    assert lines and all(len(line.split(',')) == 8 and all(v.lstrip('-').isdigit() for v in line.split(','))
                         for line in lines)


def test_eval_speed_on_an_empty_list_is_a_clear_error(setup, tmp_path, capsys):
    empty = tmp_path / 'empty'
    (empty / 'test_images').mkdir(parents=True)
    (empty / 'test_gts').mkdir()
    (empty / 'test_list.txt').write_text('')
    experiment = write_experiment(str(tmp_path), str(empty))
    assert eval_script.main([experiment, '--resume', setup['ckpt'], '--device', 'cpu', '--speed']) == 2
    assert 'no images' in capsys.readouterr().err


def test_eval_stops_at_a_bad_sample_or_leaves_it_out_by_request(setup, tmp_path, capsys):
    import shutil
    data = tmp_path / 'data'
    shutil.copytree(setup['data'], data)
    (data / 'test_images' / 'wide.png').write_bytes(b'not an image')         # unreadable
    with open(data / 'test_gts' / 'tall.png.txt', 'a') as stream:            # malformed ground-truth line
        stream.write('1,2,3\n')
    experiment = write_experiment(str(tmp_path), str(data), thresh=THRESH, box_thresh=BOX_THRESH)
    base = [experiment, '--resume', setup['ckpt'], '--device', 'cpu']
    assert eval_script.main(base) == 2
    captured = capsys.readouterr()
    assert 'wide.png' in captured.err and '--skip_bad_samples' in captured.err and 'precision' not in captured.out
    out = tmp_path / 'res'
    assert eval_script.main(base + ['--skip_bad_samples', '--result_dir', str(out)]) == 0
    captured = capsys.readouterr().out
    count = len(setup['names']) - 2
    assert f'({count} images,' in captured
    left_out = [line for line in captured.splitlines() if 'left out (--skip_bad_samples)' in line]
    assert len(left_out) == 2 and 'wide.png' in left_out[0] and 'tall.png.txt' in left_out[1]
    assert len(os.listdir(out)) == count and not (out / 'res_wide.txt').exists()
    # the same numbers as a list without the two bad samples
    good = [name for name in setup['names'] if name not in ('wide.png', 'tall.png')]
    (data / 'test_list.txt').write_text(''.join(name + '\n' for name in good))
    assert eval_script.main(base) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith('synthetic: precision'))
    assert line in captured


def test_demo_refuses_outputs_that_would_collide_or_overwrite(setup, tmp_path, capsys):
    images = tmp_path / 'images'
    images.mkdir()
    Image.fromarray(_scene(70, 200, 1)).save(images / 'x.png')
    Image.fromarray(_scene(70, 200, 2)).save(images / 'x_heatmap.png')
    out = tmp_path / 'out'
    base = [setup['exp'], '--resume', setup['ckpt'], '--device', 'cpu', '--image_path', str(images)]
    assert demo.main(base + ['--visualize', '--heatmap', '--result_dir', str(out)]) == 2
    assert 'would both write' in capsys.readouterr().err and not out.exists()
    # an upper-case extension: IMG.JPG and the drawing IMG.jpg are one file on macOS and Windows
    upper = tmp_path / 'upper'
    upper.mkdir()
    Image.fromarray(_scene(70, 200, 3)).save(upper / 'IMG.JPG', format='JPEG')
    before = (upper / 'IMG.JPG').read_bytes()
    assert demo.main([setup['exp'], '--resume', setup['ckpt'], '--image_path', str(upper), '--visualize',
                      '--result_dir', str(upper)]) == 2
    assert 'would overwrite the input image' in capsys.readouterr().err
    assert sorted(os.listdir(upper)) == ['IMG.JPG'] and (upper / 'IMG.JPG').read_bytes() == before
    # bad flags are errors before any work; every image unreadable is exit status 1
    assert demo.main(base + ['--max_image_pixels', '-5', '--result_dir', str(out)]) == 2
    assert '--max_image_pixels -5' in capsys.readouterr().err and not out.exists()
    broken = tmp_path / 'broken'
    broken.mkdir()
    (broken / 'a.png').write_bytes(b'not a png')
    assert demo.main([setup['exp'], '--resume', setup['ckpt'], '--image_path', str(broken), '--result_dir',
                      str(out)]) == 1


def test_python_api_takes_path_objects_and_leaves_a_given_config_alone(setup):
    import pathlib
    from concern.config import load_config
    from inference.detector import TextDetector
    from data.image_io import DataError
    config = load_config(setup['exp'])
    detector = TextDetector(config, setup['ckpt'], image_short_side=64, box_thresh=0.99, thresh=THRESH)
    assert detector.representer.box_thresh == 0.99
    assert TextDetector(config, setup['ckpt']).representer.box_thresh == BOX_THRESH  # the file's value
    path = setup['data'] / 'test_images' / 'wide.png'
    assert detector(pathlib.Path(path)).lines() == detector(str(path)).lines()
    assert detector(os.fsencode(str(path))).source == str(path)
    with pytest.raises(ValueError, match='max_pixels'):
        TextDetector(config, setup['ckpt'], max_pixels=-5)
    with pytest.raises(DataError, match='empty image'):
        detector(np.zeros((0, 0, 3), np.uint8))


@pytest.mark.parametrize('entry', ['eval', 'demo'])
def test_flags_win_over_opt_which_wins_over_the_file(setup, entry, capsys):
    import yaml
    main = eval_script.main if entry == 'eval' else demo.main
    extra = ['--image_path', str(setup['data'] / 'test_images')] if entry == 'demo' else []
    base = [setup['exp'], '--resume', setup['ckpt'], '--print-config-only', *extra]

    def printed(*flags):
        assert main(base + list(flags)) == 0
        return yaml.safe_load(capsys.readouterr().out)['Experiment']

    opt = ['--opt', 'structure.representer.box_thresh=0.7']
    assert printed()['structure']['representer']['box_thresh'] == BOX_THRESH
    assert printed(*opt)['structure']['representer']['box_thresh'] == 0.7
    assert printed('--box_thresh', '0.55', *opt)['structure']['representer']['box_thresh'] == 0.55
    if entry == 'eval':
        tree = printed('--polygon', '--opt', 'evaluation.is_output_polygon=false')
        assert tree['evaluation']['is_output_polygon'] is True
        assert printed('--opt', 'evaluation.is_output_polygon=true')['evaluation']['is_output_polygon'] is True


def test_tiled_eval_and_demo_agree_and_tile(setup, eval_results, tmp_path):
    tiles = ['--tile', 'on', '--tile_size', '64', '--tile_overlap', '32']
    result_dir = tmp_path / 'eval_tiled'
    assert eval_script.main([setup['exp'], '--resume', setup['ckpt'], '--device', 'cpu', '--image_short_side', '64',
                             '--result_dir', str(result_dir), *FIXED_THREADS, *tiles]) == 0
    tiled = {name: _lines(result_dir / f'res_{os.path.splitext(name)[0]}.txt') for name in setup['names']}
    demo_tiled = _demo(setup, tmp_path / 'demo_tiled', '--orientation', 'stored', *tiles)
    assert tiled == demo_tiled  # one tiled path: eval.py and demo.py wire the same tiles
    # 64-px tiles change the network's context: the tiled detections are not the whole-image ones
    assert any(tiled[name] != eval_results[name] for name in setup['names'])
