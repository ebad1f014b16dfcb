"""data.image_io.read_image, the one reader: both EXIF policies (orientations 1-8, JPEG and PNG), the rule for
every Pillow mode (pixel values asserted), the OpenCV fallback, every failure a DataError naming the file, the
decompression-bomb limit, and the evaluation visualizer drawing on stored pixels."""
import os
import re
import struct
import threading
import time
import warnings
import zlib

import cv2
import numpy as np
import pytest
import torch
from PIL import Image, ImageOps, TiffImagePlugin

from data.image_io import DEFAULT_MAX_PIXELS, ORIENTATIONS, DataError, read_image, to_bgr_uint8

ORIENTATION_TAG = 0x0112


def stored(path, **kwargs):
    return read_image(str(path), orientation='stored', **kwargs)


def displayed(path, **kwargs):
    return read_image(str(path), orientation='displayed', **kwargs)


def check_bgr(image, shape):
    assert image.shape == shape and image.dtype == np.uint8
    assert image.flags['C_CONTIGUOUS'] and image.flags['WRITEABLE']


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack('>I', len(payload)) + kind + payload + struct.pack('>I', zlib.crc32(kind + payload))


def write_png(path, width, height, bit_depth, colour_type, scanlines: bytes) -> str:
    """A PNG written byte by byte (for what Pillow cannot save: 16-bit gray + alpha, a header that lies)."""
    header = struct.pack('>IIBBBBB', width, height, bit_depth, colour_type, 0, 0, 0)
    with open(path, 'wb') as handle:
        handle.write(b'\x89PNG\r\n\x1a\n' + png_chunk(b'IHDR', header) + png_chunk(b'IDAT', zlib.compress(scanlines))
                     + png_chunk(b'IEND', b''))
    return str(path)


def blocks_rgb(height=32, width=48):
    """RGB, 16x16 blocks of distinct saturated colours: no symmetry, JPEG-friendly."""
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255),
               (128, 64, 0), (0, 128, 64), (64, 0, 128)]
    pixels = np.zeros((height, width, 3), np.uint8)
    for row in range(0, height, 16):
        for column in range(0, width, 16):
            pixels[row:row + 16, column:column + 16] = colours[(row // 16 * 3 + column // 16) % len(colours)]
    return pixels


# the EXIF orientations as a viewer applies them, on an (H, W, C) array, written independently of Pillow
EXIF_TRANSFORMS = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],                     # mirrored left-right
    3: lambda a: a[::-1, ::-1],                  # rotated 180
    4: lambda a: a[::-1, :],                     # mirrored top-bottom
    5: lambda a: a.transpose(1, 0, 2),           # transposed (mirror + rotate 270 clockwise)
    6: lambda a: np.rot90(a, -1),                # rotated 90 clockwise
    7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1],  # transversed (mirror + rotate 90 clockwise)
    8: lambda a: np.rot90(a, 1),                 # rotated 90 counter-clockwise
}


# ---------------------------------------------------------------------------------------------- the API
def test_orientation_is_keyword_only_required_and_checked(tmp_path):
    path = str(tmp_path / 'a.png')
    cv2.imwrite(path, np.zeros((2, 3, 3), np.uint8))
    assert ORIENTATIONS == ('stored', 'displayed')
    with pytest.raises(TypeError):
        read_image(path)  # no default: every caller states its EXIF policy
    with pytest.raises(TypeError):
        read_image(path, 'stored')  # keyword-only
    with pytest.raises(ValueError, match=r"orientation: expected one of \('stored', 'displayed'\), got 'rotated'"):
        read_image(path, orientation='rotated')
    for bad in (0, -5, 2.5, True, '100'):
        with pytest.raises(ValueError, match='max_pixels'):
            read_image(path, orientation='stored', max_pixels=bad)


def test_default_limit_is_pillows_own_error_threshold():
    assert DEFAULT_MAX_PIXELS == 178956970 == 2 * int(1024 * 1024 * 1024 // 4 // 3)
    assert Image.MAX_IMAGE_PIXELS is None or DEFAULT_MAX_PIXELS == 2 * Image.MAX_IMAGE_PIXELS  # as Pillow ships


def test_jpeg_reads_as_opencv_decodes_it_and_path_like_is_accepted(tmp_path):
    rng = np.random.default_rng(0)
    original = cv2.GaussianBlur(rng.integers(0, 256, (72, 128, 3), dtype=np.uint8), (5, 5), 0)
    path = tmp_path / 'photo.jpg'
    cv2.imwrite(str(path), original)
    image = stored(path)  # a pathlib.Path
    check_bgr(image, (72, 128, 3))
    assert np.array_equal(image, cv2.imread(str(path), cv2.IMREAD_COLOR))  # same libjpeg-turbo IDCT: bit-exact
    assert np.array_equal(displayed(path), image)  # no EXIF: both policies agree


# ---------------------------------------------------------------------------------------------- EXIF
@pytest.mark.parametrize('extension', ['jpg', 'png', 'tif'])
@pytest.mark.parametrize('orientation', range(1, 9))
def test_exif_orientation_both_policies(tmp_path, extension, orientation):
    # JPEG and PNG: the EXIF block's tag; TIFF: its own Orientation tag, which Pillow applies while decoding
    pixels = blocks_rgb()
    path = str(tmp_path / f'o{orientation}.{extension}')
    if extension == 'tif':
        tags = TiffImagePlugin.ImageFileDirectory_v2()
        tags[ORIENTATION_TAG] = orientation
        Image.fromarray(pixels).save(path, tiffinfo=tags)
    else:
        exif = Image.Exif()
        exif[ORIENTATION_TAG] = orientation
        options = {'quality': 100, 'subsampling': 0} if extension == 'jpg' else {}
        Image.fromarray(pixels).save(path, exif=exif, **options)
    with Image.open(path) as check:
        assert check.getexif()[ORIENTATION_TAG] == orientation  # the tag really is in the file
    as_stored = stored(path)
    check_bgr(as_stored, (32, 48, 3))
    expected_stored = pixels[:, :, ::-1]
    tolerance = 0 if extension == 'png' else 8
    assert np.abs(as_stored.astype(int) - expected_stored).max() <= tolerance  # EXIF ignored
    as_displayed = displayed(path)
    expected_shape = (48, 32, 3) if orientation >= 5 else (32, 48, 3)
    check_bgr(as_displayed, expected_shape)
    # the same decoded pixels, transposed as a viewer would: exact
    assert np.array_equal(as_displayed, EXIF_TRANSFORMS[orientation](as_stored))
    with Image.open(path) as reference:  # and exactly what PIL.ImageOps.exif_transpose gives
        assert np.array_equal(as_displayed, np.asarray(ImageOps.exif_transpose(reference).convert('RGB'))[:, :, ::-1])


def test_exif_orientation_outside_1_to_8_is_ignored(tmp_path):
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = 9
    path = str(tmp_path / 'o9.png')
    Image.fromarray(blocks_rgb()).save(path, exif=exif)
    assert np.array_equal(displayed(path), stored(path))


# ---------------------------------------------------------------------------------------------- modes
def test_mode_1_bit(tmp_path):
    bits = np.zeros((3, 5), bool)
    bits[1, 2] = bits[0, 0] = True
    path = str(tmp_path / 'bits.png')
    Image.fromarray(bits).save(path)
    assert Image.open(path).mode == '1'
    image = stored(path)
    check_bgr(image, (3, 5, 3))
    assert np.array_equal(image[:, :, 0], bits.astype(np.uint8) * 255) and (image == image[:, :, :1]).all()


def test_mode_l_gray(tmp_path):
    gray = np.arange(15, dtype=np.uint8).reshape(3, 5) * 17
    path = str(tmp_path / 'gray.png')
    Image.fromarray(gray).save(path)
    image = stored(path)
    check_bgr(image, (3, 5, 3))
    assert all(np.array_equal(image[:, :, channel], gray) for channel in range(3))


def test_mode_la_gray_alpha_drops_alpha(tmp_path):
    path = str(tmp_path / 'la.png')
    Image.new('LA', (5, 3), (100, 7)).save(path)
    assert Image.open(path).mode == 'LA'
    image = stored(path)
    check_bgr(image, (3, 5, 3))
    assert (image == 100).all()


def palette_image(transparency=None):
    image = Image.fromarray(np.array([[0, 1, 2], [2, 1, 0]], np.uint8), 'P')
    image.putpalette([10, 20, 30, 200, 100, 50, 0, 255, 0] + [0] * (256 * 3 - 9))
    if transparency is not None:
        image.info['transparency'] = transparency
    return image


@pytest.mark.parametrize('transparency', [None, 1], ids=['opaque', 'transparent'])
@pytest.mark.parametrize('extension', ['png', 'gif'])
def test_mode_p_palette_colours_transparency_ignored(tmp_path, extension, transparency):
    path = str(tmp_path / f'palette.{extension}')
    palette_image(transparency).save(path, **({'transparency': transparency} if transparency is not None else {}))
    with Image.open(path) as check:
        assert check.mode == 'P' and (transparency is None or 'transparency' in check.info)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        image = stored(path)
    check_bgr(image, (2, 3, 3))
    expected = np.array([[(30, 20, 10), (50, 100, 200), (0, 255, 0)],
                         [(0, 255, 0), (50, 100, 200), (30, 20, 10)]], np.uint8)  # BGR of the palette entries
    assert np.array_equal(image, expected)


def test_mode_rgb_is_bgr(tmp_path):
    pixels = np.zeros((2, 3, 3), np.uint8)
    pixels[0, 0] = (200, 100, 50)  # RGB
    path = str(tmp_path / 'rgb.png')
    Image.fromarray(pixels).save(path)
    image = stored(path)
    check_bgr(image, (2, 3, 3))
    assert image[0, 0].tolist() == [50, 100, 200] and image[1, 2].tolist() == [0, 0, 0]


def test_mode_rgba_drops_alpha_colours_as_stored(tmp_path):
    pixels = np.zeros((2, 3, 4), np.uint8)
    pixels[..., :3] = (200, 100, 50)
    pixels[0, 0, 3] = 0      # fully transparent: colour kept, not composited onto black or white
    pixels[0, 1, 3] = 128
    pixels[1, :, 3] = 255
    path = str(tmp_path / 'rgba.png')
    Image.fromarray(pixels, 'RGBA').save(path)
    image = stored(path)
    check_bgr(image, (2, 3, 3))
    assert (image == np.array([50, 100, 200], np.uint8)).all()


@pytest.mark.parametrize('extension', ['jpg', 'tif'])
def test_mode_cmyk(tmp_path, extension):
    path = str(tmp_path / f'cmyk.{extension}')
    Image.new('CMYK', (4, 3), (10, 20, 30, 40)).save(path)
    assert Image.open(path).mode == 'CMYK'
    image = stored(path)
    check_bgr(image, (3, 4, 3))
    # (255 - C) * (255 - K) / 255 per channel, B G R
    expected = [(255 - c) * (255 - 40) / 255 for c in (30, 20, 10)]
    assert np.abs(image.astype(float) - expected).max() <= 1.5
    if extension == 'jpg':
        assert np.abs(image.astype(int) - cv2.imread(path, cv2.IMREAD_COLOR)).max() <= 1  # OpenCV agrees


def test_mode_ycbcr_tiff(tmp_path):
    path = str(tmp_path / 'ycc.tif')
    Image.new('YCbCr', (4, 3), (100, 120, 140)).save(path)
    assert Image.open(path).mode == 'YCbCr'
    image = stored(path)
    check_bgr(image, (3, 4, 3))
    y, cb, cr = 100, 120 - 128, 140 - 128  # JFIF: R = Y + 1.402 Cr, G = Y - .344 Cb - .714 Cr, B = Y + 1.772 Cb
    expected = [y + 1.772 * cb, y - 0.344136 * cb - 0.714136 * cr, y + 1.402 * cr]
    assert np.abs(image.astype(float) - expected).max() <= 1


SIXTEEN = np.array([[0x0000, 0x00FF, 0x0100, 0x7FFF], [0x8000, 0x80FF, 0xFF00, 0xFFFF]], np.uint16)
SIXTEEN_HIGH_BYTE = (SIXTEEN >> 8).astype(np.uint8)  # [[0, 0, 1, 127], [128, 128, 255, 255]]


@pytest.mark.parametrize('name', ['gray16.png', 'gray16.tif', 'gray16_big_endian.tif', 'gray16.pgm'])
def test_mode_16_bit_gray_keeps_the_high_byte(tmp_path, name):
    path = str(tmp_path / name)
    if name == 'gray16_big_endian.tif':
        Image.fromarray(SIXTEEN.astype('>u2')).save(path)
    else:
        cv2.imwrite(path, SIXTEEN)
    mode = Image.open(path).mode
    assert mode == {'gray16.png': 'I;16', 'gray16.tif': 'I;16', 'gray16_big_endian.tif': 'I;16B',
                    'gray16.pgm': 'I'}[name]
    for image in (stored(path), displayed(path)):
        check_bgr(image, (2, 4, 3))
        assert all(np.array_equal(image[:, :, channel], SIXTEEN_HIGH_BYTE) for channel in range(3))
        assert image[1, 0, 0] == 128  # 0x8000 is mid-grey, not white (PIL's convert('RGB') clips it to 255)


def test_mode_16_bit_gray_png_mid_grey(tmp_path):
    path = str(tmp_path / 'mid.png')
    cv2.imwrite(path, np.full((4, 6), 0x8000, np.uint16))
    assert (displayed(path) == 128).all() and (stored(path) == 128).all()


@pytest.mark.parametrize('extension', ['png', 'tif'])
def test_mode_16_bit_rgb(tmp_path, extension):
    bgr16 = np.dstack([np.full((2, 3), value, np.uint16) for value in (0x10FF, 0x80FF, 0xF001)])
    path = str(tmp_path / f'rgb16.{extension}')
    cv2.imwrite(path, bgr16)
    image = stored(path)
    check_bgr(image, (2, 3, 3))
    assert (image == np.array([0x10, 0x80, 0xF0], np.uint8)).all()  # high bytes, B G R


def test_mode_16_bit_rgba_png_drops_alpha(tmp_path):
    bgra16 = np.dstack([np.full((2, 3), value, np.uint16) for value in (0x10FF, 0x80FF, 0xF001, 0x0001)])
    path = str(tmp_path / 'rgba16.png')
    cv2.imwrite(path, bgra16)
    assert (stored(path) == np.array([0x10, 0x80, 0xF0], np.uint8)).all()


def test_mode_16_bit_gray_alpha_png(tmp_path):
    # colour type 4 (gray + alpha), 16 bits: gray 0x80FF, alpha 0x1234 in every pixel
    path = write_png(tmp_path / 'la16.png', 4, 3, 16, 4, b''.join(b'\x00' + b'\x80\xff\x12\x34' * 4 for _ in range(3)))
    image = stored(path)
    check_bgr(image, (3, 4, 3))
    assert (image == 0x80).all()


def test_mode_i_32_bit_int_on_the_16_bit_scale(tmp_path):
    values = np.array([[-5, 0, 0x00FF, 0x8000], [0xFFFF, 70000, 2 ** 31 - 1, 0x0100]], np.int32)
    path = str(tmp_path / 'int32.tif')
    Image.fromarray(values).save(path)
    assert Image.open(path).mode == 'I'
    image = stored(path)
    check_bgr(image, (2, 4, 3))
    assert image[:, :, 1].tolist() == [[0, 0, 0, 128], [255, 255, 255, 1]]


@pytest.mark.parametrize('values, expected', [
    ([[0.0, 0.25], [0.5, 1.0]], [[0, 63], [127, 255]]),                    # maximum <= 1: [0, 1] scale
    ([[0.0, 100.7], [300.0, -2.0]], [[0, 100], [255, 0]]),                 # else [0, 255], clipped
    ([[float('nan'), 0.5], [1.0, 0.0]], [[0, 127], [255, 0]]),             # NaN -> 0
], ids=['unit', 'byte', 'nan'])
def test_mode_f_32_bit_float(tmp_path, values, expected):
    path = str(tmp_path / 'float.tif')
    Image.fromarray(np.array(values, np.float32)).save(path)
    assert Image.open(path).mode == 'F'
    image = stored(path)
    check_bgr(image, (2, 2, 3))
    assert image[:, :, 2].tolist() == expected


@pytest.mark.parametrize('extension', ['png', 'jpg', 'gif', 'tif'])
def test_one_by_one(tmp_path, extension):
    path = str(tmp_path / f'dot.{extension}')
    Image.new('RGB', (1, 1), (255, 255, 255)).save(path)
    image = displayed(path)
    check_bgr(image, (1, 1, 3))
    assert (image >= 250).all()


def test_multi_frame_tiff_first_page(tmp_path):
    path = str(tmp_path / 'pages.tif')
    first, second = Image.new('RGB', (4, 3), (200, 0, 0)), Image.new('RGB', (6, 5), (0, 0, 200))
    first.save(path, save_all=True, append_images=[second])
    assert Image.open(path).n_frames == 2
    image = stored(path)
    check_bgr(image, (3, 4, 3))
    assert (image == np.array([0, 0, 200], np.uint8)).all()


def test_animated_gif_first_frame(tmp_path):
    path = str(tmp_path / 'anim.gif')
    frames = [Image.new('RGB', (4, 3), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert Image.open(path).n_frames == 3
    image = stored(path)
    check_bgr(image, (3, 4, 3))
    assert (image == np.array([0, 0, 255], np.uint8)).all()


def test_large_image(tmp_path):
    # 2100 x 2100 RGB is 17.6 MB in Pillow's memory, above its 16 MiB block
    rows, columns = np.mgrid[0:2100, 0:2100]
    pixels = np.dstack([rows % 251, columns % 253, (rows * 7 + columns * 3) % 256]).astype(np.uint8)
    path = str(tmp_path / 'large.png')
    cv2.imwrite(path, pixels, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    assert np.array_equal(stored(path), pixels)


def test_opencv_fallback_for_a_format_pillow_cannot_identify(tmp_path):
    path = str(tmp_path / 'radiance.hdr')
    cv2.imwrite(path, np.full((3, 4, 3), 0.5, np.float32))
    with pytest.raises(Image.UnidentifiedImageError):
        Image.open(path)
    for image in (stored(path), displayed(path)):
        check_bgr(image, (3, 4, 3))
        assert (np.abs(image.astype(int) - 127) <= 1).all()  # float rule of to_bgr_uint8: [0, 1] scale
    with pytest.raises(DataError, match=re.escape(path) + '.*exceeds the limit of 11 pixels'):
        stored(path, max_pixels=11)


def test_to_bgr_uint8_arrays():
    assert to_bgr_uint8(np.full((2, 2), 0x8000, np.uint16)).tolist() == [[[128] * 3] * 2] * 2
    assert to_bgr_uint8(np.array([[np.nan, 1.0]], np.float32))[0, :, 0].tolist() == [0, 255]
    bgra = np.dstack([np.full((2, 2, 3), 9, np.uint8), np.zeros((2, 2), np.uint8)])
    assert (to_bgr_uint8(bgra) == 9).all()
    with pytest.raises(DataError, match='<array 3>: unsupported image dtype int64'):
        to_bgr_uint8(np.zeros((2, 2), np.int64), '<array 3>')


# ---------------------------------------------------------------------------------------------- failures
def jpeg_bytes():
    rng = np.random.default_rng(2)
    _, encoded = cv2.imencode('.jpg', cv2.GaussianBlur(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8), (3, 3), 0))
    return encoded.tobytes()


@pytest.mark.parametrize('extension', ['jpg', 'png'])
def test_truncated_file_is_a_data_error_naming_it_and_quiet(tmp_path, capfd, extension):
    whole = jpeg_bytes() if extension == 'jpg' else cv2.imencode('.png', blocks_rgb(240, 320))[1].tobytes()
    path = str(tmp_path / f'half.{extension}')
    with open(path, 'wb') as handle:
        handle.write(whole[:len(whole) // 2])
    assert cv2.imread(path, cv2.IMREAD_COLOR) is not None or extension == 'png'  # OpenCV decodes a half JPEG
    capfd.readouterr()
    for orientation in ORIENTATIONS:
        with pytest.raises(DataError, match=re.escape(path) + r': cannot decode image \(image file is truncated'):
            read_image(path, orientation=orientation)
    captured = capfd.readouterr()
    assert captured.err == '' and captured.out == ''  # no libjpeg "Premature end of JPEG file"


@pytest.mark.parametrize('case', ['empty', 'text', 'missing', 'directory'])
def test_unusable_file_is_a_data_error_naming_it(tmp_path, case):
    path = str(tmp_path / 'image.jpg')
    expected = {'empty': 'empty file', 'text': 'not an image Pillow or OpenCV can read',
                'missing': 'image file not found', 'directory': 'is a directory'}[case]
    if case == 'empty':
        open(path, 'wb').close()
    elif case == 'text':
        with open(path, 'w') as handle:
            handle.write('this is a text file renamed .jpg\n')
    elif case == 'directory':
        os.mkdir(path)
    for orientation in ORIENTATIONS:
        with pytest.raises(DataError, match=re.escape(path) + ': ' + expected):
            read_image(path, orientation=orientation)


@pytest.mark.parametrize('case', ['cut_in_header', 'noise_in_header', 'noise_after_scan_start', 'flipped_bytes'])
def test_corrupt_jpeg_is_a_data_error_never_opencvs_lenient_decode(tmp_path, capfd, case):
    whole = jpeg_bytes()
    scan = whole.index(b'\xff\xda')  # start of scan: headers before, entropy-coded data after
    noise = bytes(np.random.default_rng(3).integers(0, 256, 4000, dtype=np.uint8))
    middle = len(whole) // 2
    data = {'cut_in_header': whole[:100], 'noise_in_header': whole[:scan - 9] + noise,
            'noise_after_scan_start': whole[:scan + 20] + noise + b'\xff\xd9',
            'flipped_bytes': whole[:middle] + bytes(b ^ 0x55 for b in whole[middle:middle + 200]) + whole[middle + 200:]
            }[case]
    path = str(tmp_path / 'corrupt.jpg')
    with open(path, 'wb') as handle:
        handle.write(data)
    capfd.readouterr()
    for orientation in ORIENTATIONS:
        with pytest.raises(DataError, match=re.escape(path) + ': cannot decode image'):
            read_image(path, orientation=orientation)
    assert capfd.readouterr().err == ''


# ---------------------------------------------------------------------------------------------- decompression bomb
def test_bomb_refused_from_the_header_naming_file_size_limit_and_remedy(tmp_path):
    # a 16000 x 12000 header (192 M pixels, above Pillow's 178956970) over 100 bytes of pixel data: anything
    # that decoded the pixels would fail on the data instead, and would need 192 MB
    path = write_png(tmp_path / 'bomb.png', 16000, 12000, 8, 0, b'\x00' * 100)
    limit_before = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # no DecompressionBombWarning either
        for orientation in ORIENTATIONS:
            start = time.perf_counter()
            with pytest.raises(DataError) as raised:
                read_image(path, orientation=orientation)
            assert time.perf_counter() - start < 0.5
            message = str(raised.value)
            assert message.startswith(path + ': ')
            assert '16000x12000' in message and '192000000' in message and '178956970' in message
            assert 'max_pixels=' in message and '--max_image_pixels' in message
        # past the size check with a larger limit or none: Pillow's own DecompressionBombError does not
        # stop it, the (fake) pixel data does
        for max_pixels in (None, 200_000_000):
            with pytest.raises(DataError, match=re.escape(path) + r': cannot decode image'):
                stored(path, max_pixels=max_pixels)
    assert Image.MAX_IMAGE_PIXELS == limit_before  # Pillow's global restored


def test_max_pixels_refuses_and_allows_a_moderate_image(tmp_path):
    path = str(tmp_path / 'moderate.png')
    cv2.imwrite(path, np.full((300, 400, 3), 77, np.uint8))
    with pytest.raises(DataError, match=re.escape(path) + r': image of 400x300 = 120000 pixels exceeds the limit '
                                                           r'of 119999 pixels'):
        stored(path, max_pixels=119_999)
    assert (stored(path, max_pixels=120_000) == 77).all()
    assert (displayed(path, max_pixels=None) == 77).all()


@pytest.mark.parametrize('extension', ['png', 'tif'])  # TIFF: Pillow checks again while decoding (tile size)
@pytest.mark.parametrize('pillow_limit', [1000, 100_000], ids=['pillow_error', 'pillow_warning'])
def test_pillows_own_limit_neither_stops_nor_warns_nor_changes(tmp_path, monkeypatch, extension, pillow_limit):
    # a process whose Pillow limit is below the image (120000 pixels): above 2x = Pillow's error, above 1x =
    # Pillow's warning; the reader's own max_pixels decides, Pillow's global is left as it was
    path = str(tmp_path / f'moderate.{extension}')
    Image.new('RGB', (400, 300), (1, 2, 3)).save(path)
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', pillow_limit)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        for orientation in ORIENTATIONS:
            assert (read_image(path, orientation=orientation) == np.array([3, 2, 1], np.uint8)).all()
        assert (stored(path, max_pixels=None) == np.array([3, 2, 1], np.uint8)).all()
    assert Image.MAX_IMAGE_PIXELS == pillow_limit
    with pytest.raises(Image.DecompressionBombError if pillow_limit == 1000 else Image.DecompressionBombWarning):
        with warnings.catch_warnings():
            warnings.simplefilter('error')
            Image.open(path)  # Pillow alone would have refused / warned


def test_concurrent_reads_restore_pillows_limit(tmp_path):
    paths = []
    for index in range(4):
        paths.append(str(tmp_path / f'{index}.png'))
        cv2.imwrite(paths[-1], np.full((30, 40, 3), index * 50, np.uint8))
    limit_before, failures = Image.MAX_IMAGE_PIXELS, []

    def worker(index):
        try:
            for _ in range(25):
                assert (stored(paths[index]) == index * 50).all()
        except Exception as error:  # pragma: no cover - reported below
            failures.append(error)

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures and Image.MAX_IMAGE_PIXELS == limit_before


# ---------------------------------------------------------------------------------------------- visualizer
def test_visualizer_draws_on_stored_pixels_of_an_exif_rotated_image(tmp_path):
    from structure.visualizers import SegDetectorVisualizer
    pixels = np.full((40, 100, 3), 255, np.uint8)
    pixels[:, :50] = (255, 0, 0)  # RGB red on the left half, as stored
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = 6  # a viewer shows it rotated 90 clockwise, 100 x 40
    path = str(tmp_path / 'rotated.jpg')
    Image.fromarray(pixels).save(path, exif=exif, quality=95)
    assert displayed(path).shape == (100, 40, 3)
    batch = {'filename': [path], 'shape': [(40, 100)], 'image': torch.zeros(1, 3, 32, 96),
             'polygons': [[np.array([[60, 10], [90, 10], [90, 30], [60, 30]], np.float32)]], 'ignore_tags': [[False]]}
    images = SegDetectorVisualizer(line_width=1).visualize(batch, ([np.zeros((0, 4, 2), np.int32)], [[]]),
                                                           torch.zeros(1, 1, 32, 96))
    canvas = images['rotated_output']
    assert canvas.shape == (40, 100, 3)  # the stored shape, where the ground truth was annotated
    assert canvas[20, 10, 2] > 200 and canvas[20, 10, 0] < 50  # the stored red left half (BGR)
    assert tuple(canvas[10, 75]) == (0, 255, 0)  # ground truth drawn where it is on the stored pixels


def test_visualizer_falls_back_to_the_network_input_for_a_truncated_file(tmp_path):
    from structure.visualizers import SegDetectorVisualizer
    whole = jpeg_bytes()
    path = str(tmp_path / 'cut.jpg')
    with open(path, 'wb') as handle:
        handle.write(whole[:len(whole) // 2])
    batch = {'filename': [path], 'shape': [(64, 128)], 'image': torch.zeros(1, 3, 32, 64),
             'polygons': [[]], 'ignore_tags': [[]]}
    canvas = SegDetectorVisualizer().visualize(batch, ([[]], [[]]), torch.zeros(1, 1, 32, 64))['cut_output']
    assert canvas.shape == (64, 128, 3) and canvas[50, 100].tolist() == [123, 117, 104]  # the mean, not grey JPEG
