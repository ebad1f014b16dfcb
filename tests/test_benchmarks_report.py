"""What `python -m benchmarks` copies from each benchmark's output into docs/benchmarks.md."""
from benchmarks.__main__ import report_body


def test_caption_on_the_first_line_is_kept_with_its_table():
    output = 'Post-processing, 736x1280 map.\n\n| mode | ms |\n|---|---|\n| box | 2.5 |\n'
    assert report_body(output) == output.strip()


def test_progress_lines_before_the_caption_are_left_out():
    output = "{'dtype': 'fp32'}\n{'dtype': 'bf16'}\n\nTraining iteration, batch 4.\n\n| dtype | ms |\n|---|---|\n"
    assert report_body(output) == 'Training iteration, batch 4.\n\n| dtype | ms |\n|---|---|'


def test_output_without_a_table_is_kept_whole():
    assert report_body('\nno GPU here\n') == 'no GPU here'


def test_existing_sections_keeps_known_benchmarks_only(tmp_path):
    from benchmarks.__main__ import BENCHMARKS, existing_sections
    title_dcn = dict(BENCHMARKS)['dcn']
    title_eval = dict(BENCHMARKS)['eval']
    report = tmp_path / 'benchmarks.md'
    report.write_text(f'# Benchmarks\n\nheader\n\n## GPU check (`tools/gpu_check.sh`)\n\nnote\n\n'
                      f'## {title_dcn}\n\nRun on 2026-01-01.\n\n| a |\n|---|\n\n## {title_eval}\n\n| b |\n|---|\n')
    sections = existing_sections(str(report))
    assert sections == {title_dcn: 'Run on 2026-01-01.\n\n| a |\n|---|', title_eval: '| b |\n|---|'}
    assert existing_sections(str(tmp_path / 'missing.md')) == {}
